"""`WebSearch` + `SerpAPIProvider` against a fake SerpAPI server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from zerosearch_env.config import EnvConfig
from zerosearch_env.search import SearchRequest, make_backend
from zerosearch_env.search.web import SerpAPIProvider, WebSearch, WebSearchError

from tests.http_helpers import JSONHandler, loopback_server


class FakeSerpAPI(JSONHandler):
    """Answers like SerpAPI: organic_results for a good key, {"error": ...} with 401 otherwise."""

    seen: list[dict] = []
    flaky_left = {"n": 0}

    def do_GET(self):  # noqa: N802 - http.server's naming
        q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        FakeSerpAPI.seen.append(q)
        if q.get("api_key") != "test-key":
            return self.send_json(401, {"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"})
        if q.get("q") == "flaky" and FakeSerpAPI.flaky_left["n"] > 0:
            FakeSerpAPI.flaky_left["n"] -= 1
            return self.send_json(503, {"error": "try again"})
        if q.get("q") == "nothing":
            return self.send_json(200, {"search_metadata": {"status": "Success"}, "organic_results": []})
        n = int(q.get("num", "10"))
        results = [{"position": i + 1, "title": f"{q['q']} result {i + 1}", "link": f"https://example.org/{i}",
                    "snippet": f"Snippet {i + 1} about {q['q']}."} for i in range(n + 2)]
        results.insert(1, {"position": 99, "link": "https://example.org/empty"})  # no title/snippet: skipped
        return self.send_json(200, {"search_metadata": {"status": "Success"}, "organic_results": results})



@pytest.fixture(scope="module")
def fake_url():
    with loopback_server(FakeSerpAPI) as base:
        yield f"{base}/search.json"


def test_results_from_organic_results(fake_url, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", "test-key")
    FakeSerpAPI.seen.clear()
    backend = WebSearch(SerpAPIProvider(base_url=fake_url), max_workers=4)
    out = backend.search([SearchRequest("capital of Ostrand", top_k=3), SearchRequest("Velmora", top_k=1),
                          SearchRequest("nothing", top_k=2)])
    assert [len(x) for x in out] == [3, 1, 0]
    d = out[0][0]
    assert (d.id, d.title, d.text, d.score) == ("https://example.org/0", "capital of Ostrand result 1",
                                                "Snippet 1 about capital of Ostrand.", 1.0)
    assert all(doc.title for doc in out[0])  # the item without title/snippet was skipped
    assert {q["q"] for q in FakeSerpAPI.seen} == {"capital of Ostrand", "Velmora", "nothing"}
    assert FakeSerpAPI.seen[0]["engine"] == "google"
    stats = backend.stats()
    assert stats["api_queries"] == 3 and stats["errors"] == 0 and stats["usd"] == pytest.approx(0.045)
    backend.close()


def test_missing_key_is_a_clear_error(monkeypatch, fake_url):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SERPAPI_API_KEY"):
        SerpAPIProvider(base_url=fake_url)
    monkeypatch.setenv("MY_KEY", "test-key")
    assert SerpAPIProvider(base_url=fake_url, api_key_env="MY_KEY").search_one("x", 1)


def test_wrong_key_error_message_and_no_leak(fake_url):
    provider = SerpAPIProvider(api_key="bad-key-123", base_url=fake_url, backoff_s=0)
    with pytest.raises(WebSearchError, match="HTTP 401: Invalid API key") as err:
        WebSearch(provider).search([SearchRequest("x")])
    assert "bad-key-123" not in str(err.value)


def test_retries_transient_errors(fake_url):
    FakeSerpAPI.flaky_left["n"] = 2
    provider = SerpAPIProvider(api_key="test-key", base_url=fake_url, max_retries=2, backoff_s=0.01)
    assert len(provider.search_one("flaky", 2)) == 2
    FakeSerpAPI.flaky_left["n"] = 5
    with pytest.raises(WebSearchError, match="failed after 2 attempts.*HTTP 503"):
        SerpAPIProvider(api_key="test-key", base_url=fake_url, max_retries=1, backoff_s=0).search_one("flaky", 2)
    FakeSerpAPI.flaky_left["n"] = 0


def test_from_config(fake_url, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", "test-key")
    backend = make_backend(EnvConfig(backend="web", backend_options={"provider": "serpapi", "base_url": fake_url,
                                                                     "max_workers": 2}))
    assert backend.identity() == "web:serpapi"
    assert backend.search([SearchRequest("Kallen", top_k=2)])[0][1].title == "Kallen result 2"
    with pytest.raises(ValueError, match="unknown web search provider"):
        make_backend(EnvConfig(backend="web", backend_options={"provider": "bing"}))
    with pytest.raises(ValueError, match="http://"):
        SerpAPIProvider(api_key="k", base_url="ftp://x")


def test_api_key_never_reaches_a_log_line(fake_url, caplog):
    """httpx logs each request URL at INFO and httpcore traces at DEBUG: with every logger of the
    path captured at DEBUG, no record may carry the key, while the fake API still receives it."""
    import logging

    key = "sk-live-7f3a9c2e"
    for name in ("httpx", "httpcore", "zerosearch_env"):
        caplog.set_level(logging.DEBUG, logger=name)
    FakeSerpAPI.seen.clear()
    good = SerpAPIProvider(api_key="test-key", base_url=fake_url, max_retries=1, backoff_s=0)
    assert len(good.search_one("capital of Ostrand", 2)) == 2
    assert FakeSerpAPI.seen[-1]["api_key"] == "test-key"  # the key did reach the API
    FakeSerpAPI.flaky_left["n"] = 5
    with pytest.raises(WebSearchError, match="HTTP 503"):
        good.search_one("flaky", 2)
    FakeSerpAPI.flaky_left["n"] = 0
    bad = SerpAPIProvider(api_key=key, base_url=fake_url, max_retries=1, backoff_s=0)
    with pytest.raises(WebSearchError, match="HTTP 401") as err:
        WebSearch(bad).search([SearchRequest("x")])
    assert FakeSerpAPI.seen[-1]["api_key"] == key
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP Request: GET" in m for m in messages)  # httpx did log the requests
    assert not [m for m in messages if key in m or "test-key" in m]
    assert key not in str(err.value)
    good.close()
    bad.close()


def test_environment_proxy_is_used(fake_url, monkeypatch):
    # the fake API doubles as a forward proxy: it answers "GET http://host/path?query" request lines
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake_url.rsplit("/", 1)[0])
    FakeSerpAPI.seen.clear()
    provider = SerpAPIProvider(api_key="test-key", base_url="http://serpapi.invalid/search.json", max_retries=0)
    assert [d.title for d in provider.search_one("Velmora", 1)] == ["Velmora result 1"]
    assert FakeSerpAPI.seen[-1]["api_key"] == "test-key"
    provider.close()

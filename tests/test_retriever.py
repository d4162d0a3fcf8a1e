"""`RetrieverClient` against our own `/retrieve` server running on loopback."""

from __future__ import annotations

import httpx
import pytest

from tests.serve_backend import KeywordSearch
from zerosearch_env.config import EnvConfig
from zerosearch_env.search import SearchRequest, make_backend
from zerosearch_env.search.retriever import RetrieverClient, RetrieverError, parse_contents, parse_item
from zerosearch_env.server import BackgroundServer, create_app, free_port


@pytest.fixture(scope="module")
def served():
    backend = KeywordSearch()
    with BackgroundServer(create_app(backend, api_key="k1", batch_window_ms=1)) as srv:
        yield srv, backend


def test_matches_backend_in_one_http_call(served):
    srv, backend = served
    client = RetrieverClient(srv.url, api_key="k1")
    reqs = [SearchRequest("capital of Ostrand", top_k=3), SearchRequest("Kallen Labs", top_k=1),
            SearchRequest("painter sister", top_k=2)]
    got = client.search(reqs)
    want = backend.search(reqs)
    assert [[d.id for d in lst] for lst in got] == [[d.id for d in lst] for lst in want]
    assert [len(x) for x in got] == [3, 1, 2]
    assert got[0][0].title == want[0][0].title and got[0][0].text == want[0][0].text
    assert got[0][0].score == want[0][0].score
    assert client.stats()["http_calls"] == 1 and client.stats()["queries"] == 3
    assert client.search([]) == []


def test_bare_items_and_from_config(served):
    srv, _ = served
    cfg = EnvConfig(backend="retriever", backend_options={"url": srv.url + "/retrieve", "api_key": "k1",
                                                          "return_scores": False})
    client = make_backend(cfg)
    docs = client.search([SearchRequest("Brisk Harbour port", top_k=2)])[0]
    assert docs[0].title == "Brisk Harbour" and docs[0].score is None
    with pytest.raises(ValueError, match="needs backend_options.url"):
        make_backend(EnvConfig(backend="retriever"))
    with pytest.raises(ValueError, match="unknown retriever options"):
        make_backend(EnvConfig(backend="retriever", backend_options={"url": srv.url, "bogus": 1}))


def test_4xx_raises_with_server_message(served):
    srv, _ = served
    client = RetrieverClient(srv.url, api_key="wrong", max_retries=3, backoff_s=0.0)
    with pytest.raises(RetrieverError, match="HTTP 401"):
        client.search([SearchRequest("x")])
    assert client.stats()["http_calls"] == 1  # no retry on a client error


def test_retries_server_errors_then_succeeds():
    class Flaky(KeywordSearch):
        failures = 2

        def search(self, requests):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("warming up")
            return super().search(requests)

    with BackgroundServer(create_app(Flaky(), batch_window_ms=0)) as srv:
        client = RetrieverClient(srv.url, max_retries=3, backoff_s=0.01)
        docs = client.search([SearchRequest("Velmora", top_k=1)])
        assert docs[0][0].id in {"d0", "d1", "d2"}
        assert client.stats()["retries"] == 2 and client.stats()["http_calls"] == 3
        Flaky.failures = 0

    class Down(KeywordSearch):
        def search(self, requests):
            raise RuntimeError("index offline")

    with BackgroundServer(create_app(Down(), batch_window_ms=0)) as srv:
        client = RetrieverClient(srv.url, max_retries=1, backoff_s=0.0)
        with pytest.raises(RetrieverError, match="failed after 2 attempts.*HTTP 500.*index offline"):
            client.search([SearchRequest("Velmora")])


def test_unreachable_server_is_a_clear_error():
    client = RetrieverClient(f"http://127.0.0.1:{free_port()}", timeout_s=1, max_retries=1, backoff_s=0.01)
    with pytest.raises(RetrieverError, match="failed after 2 attempts"):
        client.search([SearchRequest("x")])
    with pytest.raises(ValueError, match="http://"):
        RetrieverClient("127.0.0.1:8000")


def test_parsing_helpers():
    assert parse_contents('"Velmora"\nThe capital.') == ("Velmora", "The capital.")
    assert parse_contents("no title line") == ("", "no title line")
    d = parse_item({"document": {"id": 7, "contents": '"A"\nB'}, "score": 1}, 0)
    assert (d.id, d.title, d.text, d.score) == ("7", "A", "B", 1.0)
    with pytest.raises(RetrieverError, match="neither"):
        parse_item({"document": {"id": 1}}, 0)
    with pytest.raises(RetrieverError, match="expected an object"):
        parse_item("text", 0)


def test_malformed_answers_are_clear_errors():
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/retrieve")
    async def wrong():
        return {"result": [[{"document": {"id": "a", "contents": "x"}}]]}  # one list for any query count

    with BackgroundServer(app) as srv:
        client = RetrieverClient(srv.url, max_retries=0)
        with pytest.raises(RetrieverError, match="1 result lists for 2 queries"):
            client.search([SearchRequest("a"), SearchRequest("b")])
        assert httpx.get(srv.url + "/nope").status_code == 404

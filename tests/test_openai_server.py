"""The OpenAI-compatible engine server (`zerosearch_env.engines.openai_server`) on loopback, serving a
tiny random Llama through TransformersEngine: body-size limit and micro-batching."""

from __future__ import annotations

import asyncio
import json

import httpx

from zerosearch_env.engines import TransformersEngine
from zerosearch_env.engines.openai_server import create_app
from zerosearch_env.server import BackgroundServer


def chat(content: str, **extra) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 3, "seed": 1, **extra}


def test_body_over_the_limit_is_a_413_before_the_engine(tiny_model_dir):
    app = create_app(TransformersEngine(tiny_model_dir, dtype="float32"), "tiny", max_body_bytes=4096)
    with BackgroundServer(app) as srv:
        url = srv.url + "/v1/chat/completions"
        assert httpx.post(url, json=chat("hello"), timeout=60).status_code == 200
        big = json.dumps(chat("x" * 8000)).encode()
        r = httpx.post(url, content=big, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413 and "limit is 4096" in r.json()["error"]["message"]
        # no Content-Length (chunked): refused while streaming
        r = httpx.post(url, content=iter([big[:3000], big[3000:]]), headers={"content-type": "application/json"},
                       timeout=60)
        assert r.status_code == 413 and "limit of 4096" in r.json()["error"]["message"]
        assert httpx.post(url, content=b"{not json", timeout=60).status_code == 400
    assert app.state.batcher.batches == 1  # only the small request reached the engine


class CountingEngine(TransformersEngine):
    """TransformersEngine that records the batch size of every generate call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def generate(self, conversations, params=None, *, seeds=None):
        self.calls.append(len(conversations))
        return super().generate(conversations, params, seeds=seeds)


def test_concurrent_requests_share_engine_calls(tiny_model_dir):
    engine = CountingEngine(tiny_model_dir, dtype="float32")
    app = create_app(engine, "tiny", max_batch_size=16, batch_wait_s=0.2)

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            bodies = [chat(f"question {i}", seed=i) for i in range(6)] + [chat("other", temperature=0.0)]
            return await asyncio.gather(*[client.post(url, json=b) for b in bodies])

    with BackgroundServer(app) as srv:
        responses = asyncio.run(burst(srv.url + "/v1/chat/completions"))
    assert all(r.status_code == 200 for r in responses)
    assert all(isinstance(r.json()["choices"][0]["message"]["content"], str) for r in responses)
    # one micro-batch; in it one generate call for the six alike requests, one for the greedy one
    assert app.state.batcher.batches == 1 and sorted(engine.calls) == [1, 6]

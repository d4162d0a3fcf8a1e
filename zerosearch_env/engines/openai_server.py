"""A small OpenAI-compatible chat server for any `LLMEngine` (FastAPI), with micro-batching.

Concurrent `/v1/chat/completions` requests are gathered for up to `batch_wait_s` (or until
`max_batch_size` are waiting) and answered by one `engine.generate` call per group of identical
sampling settings; each request keeps its own seed. Serving a `TransformersEngine` this way lets
many rollout workers share one copy of the simulator model:

    python -m zerosearch_env.engines.openai_server --model PATH --port 8000

Also `/health` and `/v1/models`. Needs the `server` extra (fastapi, uvicorn).
"""


import argparse
import asyncio
import inspect
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from zerosearch_env.engines.base import LLMEngine, SamplingParams


class RequestError(ValueError):
    """A request body the server cannot honour (answered with HTTP 400)."""


def parse_chat_request(body: Any) -> tuple[list[dict], SamplingParams, bool]:
    """(messages, sampling params, include_stop_str_in_output) from an OpenAI chat request body."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RequestError("every message needs string 'role' and 'content'")
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise RequestError("'stop' must be a string or a list of strings")
    try:
        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or 256)
        temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
        top_p = float(body.get("top_p", 1.0) if body.get("top_p") is not None else 1.0)
        seed = body.get("seed")
        seed = None if seed is None else int(seed)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"bad sampling parameter: {exc}") from None
    if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
        raise RequestError("need max_tokens >= 1, temperature >= 0, 0 < top_p <= 1")
    params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                            stop=tuple(stop))
    return [{"role": m["role"], "content": m["content"]} for m in messages], params, bool(
        body.get("include_stop_str_in_output", False))


@dataclass
class _Pending:
    messages: list[dict]
    params: SamplingParams
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects requests for a short window and runs them through the engine in batches."""

    def __init__(self, engine: LLMEngine, max_batch_size: int = 16, batch_wait_s: float = 0.01):
        self.engine = engine
        self.max_batch_size = max(1, int(max_batch_size))
        self.batch_wait_s = max(0.0, float(batch_wait_s))
        self.queue: asyncio.Queue[_Pending] | None = None
        self.task: asyncio.Task | None = None
        self.batches = 0
        try:
            self._per_row_seeds = "seeds" in inspect.signature(engine.generate).parameters
        except (TypeError, ValueError):
            self._per_row_seeds = False

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def submit(self, messages: list[dict], params: SamplingParams) -> str:
        assert self.queue is not None, "MicroBatcher.start() was not called"
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(messages, params, fut))
        return await fut

    async def _loop(self) -> None:
        assert self.queue is not None
        while True:
            items = [await self.queue.get()]
            deadline = time.monotonic() + self.batch_wait_s
            while len(items) < self.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), timeout=left))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple, list[_Pending]] = {}
            for item in items:
                p = item.params
                key = (p.max_new_tokens, p.temperature, p.top_p, p.stop) + (() if self._per_row_seeds else (p.seed,))
                groups.setdefault(key, []).append(item)
            for group in groups.values():
                await self._run(group)

    async def _run(self, group: list[_Pending]) -> None:
        live = [g for g in group if not g.future.done()]  # a cancelled client need not be served
        if not live:
            return
        params = live[0].params
        convs = [g.messages for g in live]
        try:
            if self._per_row_seeds:
                seeds = [g.params.seed if g.params.seed is not None else int(uuid.uuid4().int % 2**62) for g in live]
                texts = await asyncio.to_thread(self.engine.generate, convs, params, seeds=seeds)
            else:
                texts = await asyncio.to_thread(self.engine.generate, convs, params)
            self.batches += 1
        except Exception as exc:  # every waiting request gets the error
            for g in live:
                if not g.future.done():
                    g.future.set_exception(exc)
            return
        for g, text in zip(live, texts):
            if not g.future.done():
                g.future.set_result(text)


def create_app(engine: LLMEngine, served_model_name: str = "default", max_batch_size: int = 16,
               batch_wait_s: float = 0.01):
    """A FastAPI app serving `engine` under the OpenAI chat-completions API."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    batcher = MicroBatcher(engine, max_batch_size, batch_wait_s)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="zerosearch engine server", lifespan=lifespan)
    app.state.batcher = batcher
    tokenizer = getattr(engine, "tokenizer", None)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if tokenizer is not None else 0

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": served_model_name, "object": "model", "owned_by": "zerosearch"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "body is not JSON", "type": "invalid_request_error"}}, 400)
        try:
            messages, params, keep_stop = parse_chat_request(body)
        except RequestError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        if body.get("model") not in (None, served_model_name):
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} is not served here; "
                                                      f"use {served_model_name!r}", "type": "invalid_request_error"}}, 404)
        try:
            text = await batcher.submit(messages, params)
        except ValueError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        stop_reason = next((s for s in params.stop if s and text.endswith(s)), None)
        if stop_reason is not None and not keep_stop:
            text = text[: -len(stop_reason)]
        n_out = count(text)
        finish = "stop" if stop_reason is not None or n_out < params.max_new_tokens else "length"
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
            "model": served_model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "stop_reason": stop_reason}],
            "usage": {"prompt_tokens": 0, "completion_tokens": n_out, "total_tokens": n_out},
        }

    return app


def main(argv: list[str] | None = None) -> int:
    """Serve a `TransformersEngine` (default: the small default model) over HTTP."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--served-model-name", default="default")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    import uvicorn

    from zerosearch_env.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(args.model, device=args.device, dtype=args.dtype, max_batch_size=args.max_batch_size)
    app = create_app(engine, args.served_model_name, args.max_batch_size, args.batch_wait_ms / 1000)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A small OpenAI-compatible chat server for any `LLMEngine` (FastAPI), with micro-batching.

Concurrent `/v1/chat/completions` requests are gathered for up to `batch_wait_s` (or until
`max_batch_size` are waiting; `zerosearch_env.batching`) and answered by one `engine.generate` call
per group of identical sampling settings; each request keeps its own seed. A body over
`max_body_bytes` is refused with HTTP 413 before it is read whole. Serving a `TransformersEngine` this way lets
many rollout workers share one copy of the simulator model:

    python -m zerosearch_env.engines.openai_server --model PATH --port 8000

Also `/health` and `/v1/models`. Needs the `server` extra (fastapi, uvicorn).
"""


import argparse
import asyncio
import inspect
import json
import time
import uuid
from typing import Any

from zerosearch_env.batching import MicroBatcher
from zerosearch_env.engines.base import LLMEngine, SamplingParams
from zerosearch_env.http_body import BodyTooLarge, read_limited_body


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


Chat = tuple[list[dict], SamplingParams]  # one request: (messages, sampling params)


def generate_batches(engine: LLMEngine):
    """The micro-batch handler: one `engine.generate` call (in a worker thread) per group of requests
    with the same sampling settings. An engine that takes per-row `seeds` gets each request's own seed
    (a random one when it sent none), so a request's text does not depend on its neighbours; other
    engines are also grouped by seed. A failing group's error goes to that group's requests alone."""
    try:
        per_row_seeds = "seeds" in inspect.signature(engine.generate).parameters
    except (TypeError, ValueError):
        per_row_seeds = False

    async def run(batch: list[Chat]) -> list[str | Exception]:
        groups: dict[tuple, list[int]] = {}
        for i, (_, p) in enumerate(batch):
            key = (p.max_new_tokens, p.temperature, p.top_p, p.stop) + (() if per_row_seeds else (p.seed,))
            groups.setdefault(key, []).append(i)
        out: list[str | Exception] = [""] * len(batch)
        for rows in groups.values():
            convs, params = [batch[i][0] for i in rows], batch[rows[0]][1]
            try:
                if per_row_seeds:
                    seeds = [batch[i][1].seed if batch[i][1].seed is not None else int(uuid.uuid4().int % 2**62)
                             for i in rows]
                    texts = await asyncio.to_thread(engine.generate, convs, params, seeds=seeds)
                else:
                    texts = await asyncio.to_thread(engine.generate, convs, params)
            except Exception as exc:
                texts = [exc] * len(rows)
            for i, text in zip(rows, texts):
                out[i] = text
        return out

    return run


def create_app(engine: LLMEngine, served_model_name: str = "default", max_batch_size: int = 16,
               batch_wait_s: float = 0.01, max_body_bytes: int = 4 << 20):
    """A FastAPI app serving `engine` under the OpenAI chat-completions API (`app.state.batcher.batches`
    counts the batches handed to the engine)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be >= 1")
    batcher = MicroBatcher(generate_batches(engine), window_s=max(0.0, float(batch_wait_s)),
                           max_batch=max(1, int(max_batch_size)))

    @asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.aclose()

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
            body = json.loads(await read_limited_body(request, max_body_bytes))
        except BodyTooLarge as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, 413)
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
            text = await batcher.submit((messages, params))
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
    parser.add_argument("--max-body-bytes", type=int, default=4 << 20, help="larger request bodies get HTTP 413")
    args = parser.parse_args(argv)
    import uvicorn

    from zerosearch_env.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(args.model, device=args.device, dtype=args.dtype, max_batch_size=args.max_batch_size)
    app = create_app(engine, args.served_model_name, args.max_batch_size, args.batch_wait_ms / 1000,
                     max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

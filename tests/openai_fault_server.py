"""An OpenAI-compatible test server (TransformersEngine + tiny model) that misbehaves on request.

Run: python tests/openai_fault_server.py --model DIR --port P. POST /control {"mode": ..., "count": n,
"delay_s": x} sets how the next `count` chat requests (all, when count is -1) are treated:
  ok         answered normally,
  error500   HTTP 500,
  stall      the reply is held for delay_s (past the client's timeout), then answered,
  malformed  HTTP 200 with a body that is not JSON,
  slow       answered normally after delay_s (to kill the process while requests are in flight).
Every successful answer starts with "<rid=X-Request-Id>" so clients can check order and duplicates;
GET /stats returns counters and the request ids answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from zerosearch_env.engines.openai_server import create_app
from zerosearch_env.engines.transformers_engine import TransformersEngine


def build(model: str):
    engine = TransformersEngine(model, dtype="float32", max_batch_size=16)
    app = create_app(engine, "tiny", max_batch_size=16, batch_wait_s=0.02)
    state = {"mode": "ok", "count": 0, "delay_s": 0.0, "received": 0, "answered": [], "faults": 0, "in_flight": 0}

    @app.post("/control")
    async def control(request: Request) -> dict:
        body = await request.json()
        state.update(mode=body.get("mode", "ok"), count=int(body.get("count", -1)), delay_s=float(body.get("delay_s", 0)))
        return {"ok": True}

    @app.get("/stats")
    async def stats() -> dict:
        return {k: state[k] for k in ("received", "answered", "faults", "in_flight", "mode", "count")}

    @app.middleware("http")
    async def faults(request: Request, call_next):
        if request.url.path != "/v1/chat/completions":
            return await call_next(request)
        state["received"] += 1
        rid = request.headers.get("x-request-id", "")
        mode = state["mode"] if state["count"] != 0 else "ok"
        if state["count"] > 0:
            state["count"] -= 1
        if mode == "error500":
            state["faults"] += 1
            return JSONResponse({"error": {"message": "injected failure"}}, 500)
        if mode == "malformed":
            state["faults"] += 1
            return Response(b'{"choices": [{"message": {"content": "cut', 200, media_type="application/json")
        state["in_flight"] += 1
        try:
            if mode in ("stall", "slow"):
                await asyncio.sleep(state["delay_s"])
            response = await call_next(request)
            body = b"".join([chunk async for chunk in response.body_iterator])
        finally:
            state["in_flight"] -= 1
        if response.status_code != 200:
            return Response(body, response.status_code, media_type="application/json")
        data = json.loads(body)
        data["choices"][0]["message"]["content"] = f"<rid={rid}>" + data["choices"][0]["message"]["content"]
        state["answered"].append(rid)
        return JSONResponse(data)

    return app


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, log_level="warning")

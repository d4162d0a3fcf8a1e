"""Load test of `zerosearch serve`: N concurrent single-query clients for T seconds, on loopback.

Phases, each against a fresh `zerosearch serve` subprocess on 127.0.0.1:
  1. bm25 with micro-batching (window --window-ms, up to 64 queries per backend call)
  2. bm25 without it (--max-batch 1: one backend call per request), the side-by-side baseline
  3. the simulator, where micro-batching matters most (many clients, few LLM batches), once per
     --sim-models entry: "tiny" (a random 2-layer Llama with the small model's tokenizer, built
     here: fast, shows many batching rounds), "default" (the small model) or a model folder

Each client loops: POST one query in the Search-R1 schema, wait for the answer, repeat, until T
seconds have passed or it has sent --max-requests-per-client. Reported per phase: requests,
errors (must be 0), requests/s, p50/p99 latency, and the server's backend calls for its requests.
The last line is a JSON object of the figures.

    python benchmarks/serve_load.py --clients 32 --seconds 10 --sim-clients 16 --sim-seconds 30 \
        --sim-models tiny,default
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerosearch_env.server import free_port  # noqa: E402


def start_serve(args: list[str], timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """`zerosearch serve ARGS` on a free loopback port; returns (process, base URL) once healthy."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = open(os.devnull, "w")
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve {' '.join(args)} exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not come up in time")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive JSON client over asyncio streams (one connection per client).

    The load generator must not be the bottleneck: httpx spends several CPU-milliseconds per
    request, more than the server, on this 2-core machine. This client writes the request bytes and
    reads the status line, headers and Content-Length body, nothing more.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, obj: dict) -> tuple[int, bytes]:
        body = json.dumps(obj).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(head + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" not in headers:
            raise RuntimeError(f"response without Content-Length: {lines[0]}")
        data = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def load(url: str, queries: list[str], clients: int, seconds: float, max_per_client: int,
               topk: int = 3, warmup: int = 1) -> dict:
    """Run the clients; returns latencies (s), error messages, wall time and server counters."""
    host, port = url.split("//")[1].split(":")
    port = int(port)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(timeout=120) as admin:
        for i in range(warmup):  # the first call may build lazily loaded state
            await admin.post(url + "/retrieve", json={"queries": [queries[i % len(queries)]], "topk": topk})
        before = (await admin.get(url + "/health")).json()["stats"]
        t_start = time.perf_counter()
        deadline = t_start + seconds

        async def one_client(c: int) -> None:
            conn = KeepAliveClient(host, port)
            n = 0
            try:
                while n < max_per_client and time.perf_counter() < deadline:
                    q = queries[(c * 7919 + n) % len(queries)]
                    t0 = time.perf_counter()
                    try:
                        status, data = await asyncio.wait_for(
                            conn.post_json("/retrieve", {"queries": [q], "topk": topk, "return_scores": True}), 300)
                        if status != 200 or len(json.loads(data)["result"]) != 1:
                            errors.append(f"HTTP {status}: {data[:120]!r}")
                    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, RuntimeError) as e:
                        errors.append(f"{type(e).__name__}: {e}")
                        await conn.close()
                    latencies.append(time.perf_counter() - t0)
                    n += 1
            finally:
                await conn.close()

        await asyncio.gather(*[one_client(c) for c in range(clients)])
        wall = time.perf_counter() - t_start
        after = (await admin.get(url + "/health")).json()["stats"]
    return {"latencies": latencies, "errors": errors, "wall": wall,
            "requests": after["requests"] - before["requests"],
            "backend_calls": after["backend_calls"] - before["backend_calls"],
            "max_batch": after["max_batch_seen"]}


def phase(name: str, serve_args: list[str], queries: list[str], clients: int, seconds: float,
          max_per_client: int) -> dict:
    proc, url = start_serve(serve_args)
    try:
        res = asyncio.run(load(url, queries, clients, seconds, max_per_client))
    finally:
        stop(proc)
    lat = sorted(res["latencies"])
    n = len(lat)
    out = {
        "phase": name, "clients": clients, "seconds": round(res["wall"], 2), "requests": n,
        "errors": len(res["errors"]), "rps": n / res["wall"] if res["wall"] else 0.0,
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * lat[min(n - 1, int(0.99 * n))] if lat else None,
        "server_requests": res["requests"], "backend_calls": res["backend_calls"],
        "queries_per_backend_call": res["requests"] / res["backend_calls"] if res["backend_calls"] else None,
        "largest_batch": res["max_batch"],
    }
    print(f"{name:>16}: {n} requests from {clients} clients in {out['seconds']}s -> {out['rps']:.1f} req/s, "
          f"p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, errors {out['errors']}, "
          f"{out['backend_calls']} backend calls for {out['server_requests']} requests "
          f"(largest batch {out['largest_batch']})", flush=True)
    if res["errors"]:
        print("   first errors:", res["errors"][:3], flush=True)
    return out


def tiny_model(folder: Path) -> Path:
    """A randomly initialised 2-layer Llama (hidden 64) with the small model's tokenizer, saved once."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from zerosearch_env.models import default_model_path

    tok = AutoTokenizer.from_pretrained(default_model_path())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    LlamaForCausalLM(cfg).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests-per-client", type=int, default=2000)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--sim-clients", type=int, default=16)
    ap.add_argument("--sim-seconds", type=float, default=30.0)
    ap.add_argument("--sim-window-ms", type=float, default=20.0)
    ap.add_argument("--sim-option", action="append", default=["words_per_doc=20", "max_regenerations=0"],
                    help="simulator backend option KEY=VALUE (repeatable)")
    ap.add_argument("--sim-models", default="tiny", help="comma-separated: tiny, default, or model folders")
    ap.add_argument("--skip-sim", action="store_true")
    args = ap.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.seconds > 300 or args.sim_seconds > 600:
        ap.error("need clients >= 1 and 0 < seconds <= 300 (sim-seconds <= 600)")

    from zerosearch_env.data import load_tasks

    queries = [t.question for t in load_tasks("world", "test", 0)]
    figures: dict = {}
    batched = phase("bm25 batched", ["--backend", "bm25", "--batch-window-ms", str(args.window_ms), "--max-batch", "64"],
                    queries, args.clients, args.seconds, args.max_requests_per_client)
    unbatched = phase("bm25 unbatched", ["--backend", "bm25", "--batch-window-ms", "0", "--max-batch", "1"],
                      queries, args.clients, args.seconds, args.max_requests_per_client)
    for key in ("rps", "p50_ms", "p99_ms", "errors", "requests", "backend_calls"):
        figures[f"bm25_{key}"] = batched[key]
        figures[f"bm25_unbatched_{key}"] = unbatched[key]
    figures["bm25_batched_over_unbatched_rps"] = batched["rps"] / unbatched["rps"] if unbatched["rps"] else None
    figures["bm25_calls_per_request"] = batched["backend_calls"] / batched["server_requests"] if batched["server_requests"] else None
    if not args.skip_sim:
        from zerosearch_env.search.dense import cache_root

        for model in [m.strip() for m in args.sim_models.split(",") if m.strip()]:
            sim_args = ["--backend", "simulator", "--batch-window-ms", str(args.sim_window_ms), "--max-batch", "64"]
            if model == "tiny":
                sim_args += ["-o", f"model={tiny_model(cache_root() / 'bench-tiny-llama')}"]
            elif model != "default":
                sim_args += ["-o", f"model={model}"]
            for opt in args.sim_option:
                sim_args += ["-o", opt]
            tag = model if model in ("tiny", "default") else "custom"
            sim = phase(f"simulator {tag}", sim_args, queries, args.sim_clients, args.sim_seconds,
                        args.max_requests_per_client)
            for key in ("rps", "p50_ms", "p99_ms", "errors", "requests", "backend_calls", "largest_batch"):
                figures[f"sim_{tag}_{key}"] = sim[key]
            figures[f"sim_{tag}_requests_per_backend_call"] = sim["queries_per_backend_call"]
    figures["clients"] = args.clients
    figures["seconds"] = args.seconds
    figures["total_errors"] = sum(v for k, v in figures.items() if k.endswith("errors") and isinstance(v, int))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}))
    return 0 if figures["total_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

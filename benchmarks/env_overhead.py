"""Env overhead: the cost of `SearchEnv.step` around an instant backend, and the wall-time gain of
`SearchVectorEnv` (one batched call per step) over N single envs stepped one by one when every
backend call takes a fixed latency.

Last output line: a JSON object with `step_overhead_us_median` and `vector_speedup`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Sequence

from zerosearch_env import SearchEnv, make_vec
from zerosearch_env.data.task import Task
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

TASKS = [Task(f"t{i}", f"Who founded organisation number {i}?", (f"Founder {i}",)) for i in range(64)]
DOCS = [Document(f"d{j}", f"Title {j}", "A short fixed document text about a founder. " * 4) for j in range(3)]


class InstantSearch(SearchBackend):
    name = "instant"

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return [DOCS[: r.top_k] for r in requests]


class SleepySearch(SearchBackend):
    """Every call takes `latency_s`, however many requests it holds (a batched GPU server)."""

    name = "sleepy"

    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.calls = 0

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        self.calls += 1
        time.sleep(self.latency_s)
        return [DOCS[: r.top_k] for r in requests]


def step_overhead_us(repeats: int) -> tuple[float, float]:
    """Median microseconds of a search-turn `env.step` (env only) and of the bare backend call."""
    env = SearchEnv(backend=InstantSearch(), tasks=TASKS, max_turns=64)
    env.reset(seed=0)
    turn = "<think>I should look this up.</think><search>founder of organisation number 7</search>"
    req = [SearchRequest("founder of organisation number 7")]
    step_times, backend_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        env.step(turn)
        t1 = time.perf_counter_ns()
        env.backend.search_with_info(req)
        t2 = time.perf_counter_ns()
        step_times.append(t1 - t0)
        backend_times.append(t2 - t1)
        if env.episode_done:
            env.reset()
    step = statistics.median(step_times) / 1000
    backend = statistics.median(backend_times) / 1000
    return step - backend, backend


def episode_turns(i: int) -> list[str]:
    return [f"<search>first query {i}</search>", f"<search>second query {i}</search>", f"<answer>Founder {i}</answer>"]


def run_single(n: int, latency_s: float) -> float:
    backend = SleepySearch(latency_s)
    envs = [SearchEnv(backend=backend, tasks=TASKS) for _ in range(n)]
    t0 = time.perf_counter()
    for i, env in enumerate(envs):
        env.reset(options={"task_id": f"t{i}"})
        for turn in episode_turns(i):
            env.step(turn)
    return time.perf_counter() - t0


def run_vector(n: int, latency_s: float) -> float:
    backend = SleepySearch(latency_s)
    vec = make_vec(n, backend=backend, tasks=TASKS)
    t0 = time.perf_counter()
    vec.reset(options={"per_env": [{"task_id": f"t{i}"} for i in range(n)]})
    for k in range(3):
        vec.step([episode_turns(i)[k] for i in range(n)])
    assert not vec.active.any() and backend.calls == 2
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20000)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    args = ap.parse_args()

    overhead, backend_us = step_overhead_us(args.repeats)
    print(f"env.step overhead (search turn, instant backend): median {overhead:.2f} us "
          f"(bare backend call {backend_us:.2f} us)")
    lat = args.latency_ms / 1000
    single = run_single(args.episodes, lat)
    vector = run_vector(args.episodes, lat)
    speedup = single / vector
    print(f"{args.episodes} episodes x (2 searches + answer), backend {args.latency_ms:.0f} ms per call: "
          f"single envs {single:.2f} s, vector env {vector:.3f} s -> {speedup:.1f}x")
    print(json.dumps({"step_overhead_us_median": round(overhead, 3), "backend_call_us_median": round(backend_us, 3),
                      "single_s": round(single, 4), "vector_s": round(vector, 4), "vector_speedup": round(speedup, 2),
                      "episodes": args.episodes, "latency_ms": args.latency_ms}))


if __name__ == "__main__":
    main()

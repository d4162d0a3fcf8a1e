"""Evaluation loop: run an `Agent` on a list of tasks through a `SearchVectorEnv`, then summarise.

`run_episodes` keeps every sub-env busy: each slot is reset with the next task as soon as its
episode ends (`reset_mask` + `per_env` options), and every vector step sends one batched backend
call for all the slots that searched. It returns one JSON-serialisable record per task, in task
order; `summarize` turns records into the headline figures with a per-kind breakdown.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any, Sequence

import numpy as np

from zerosearch_env.data.task import Task
from zerosearch_env.rewards import format_reward, normalize_answer

__all__ = ["run_episodes", "summarize", "info_at", "holds_answer", "paired_em_difference", "env_for", "sample_tasks",
           "greedy_agent"]


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python values, recursively (JSON-serialisable)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def info_at(infos: dict, i: int) -> dict:
    """Sub-env `i`'s info dict out of a vector env's `infos[key][i]` / `infos["_" + key][i]` form."""
    out: dict = {}
    for key, arr in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if isinstance(arr, dict):
            if mask is None or bool(mask[i]):
                out[key] = info_at(arr, i)
            continue
        if mask is not None and not bool(mask[i]):
            continue
        out[key] = _plain(arr[i])
    return out


def holds_answer(text: str, answers: Sequence[str]) -> bool:
    """Does `text` contain a gold alias as a whole-word span? (`knowledge.mentions`, the one
    answer-containment rule: case, punctuation, articles, diacritics and possessives folded)."""
    from zerosearch_env.search.knowledge import mentions

    return mentions(text, answers)


def env_for(cfg, backend: str, noise: float = 0.0, calibration: bool = False):
    """A `TrainConfig`'s env with `backend` ("bm25", or "simulator" at a fixed noise probability,
    with the config's simulator options) and, if asked, the calibration prompt."""
    if backend == "simulator":
        env = cfg.env.updated(backend="simulator", backend_options={**cfg.simulator, "curriculum": float(noise)})
    else:
        env = cfg.env.updated(backend="bm25", backend_options={})
    return env.updated(calibration=True) if calibration else env


def sample_tasks(env, split: str, n: int, seed: int) -> list[Task]:
    """`n` questions (0: all) of the env's dataset `split`, in a seeded shuffle: the sample
    `zerosearch eval --split S --n N --seed SEED` draws, also at the end of training (`eval_tasks`)."""
    from zerosearch_env.data import load_tasks

    tasks = load_tasks(env.dataset, split=split, world_seed=env.world_seed)
    random.Random(seed).shuffle(tasks)
    return tasks[:n] if n > 0 else tasks


def greedy_agent(policy, env, seed: int = 0):
    """A policy as it is evaluated: greedy decoding, plus the stated confidence in calibration mode."""
    from agents.policy import PolicyAgent

    agent = PolicyAgent(policy, greedy=True, seed=seed)
    if env.calibration:  # generation stops at </answer>: the confidence is a short continuation
        from agents.calibration import ConfidenceAgent

        agent = ConfidenceAgent(agent)
    return agent


def _new_record(task: Task) -> dict:
    return {
        "task_id": task.id, "kind": task.kind, "template": task.template, "question": task.question,
        "answers": list(task.answers), "answer": None, "em": 0.0, "f1": 0.0, "num_searches": 0,
        "invalid_actions": 0, "turns": 0, "agent_turns": [], "format_ok": 0.0, "search_latency_s": [],
        "results_hold_answer": [], "confidence": None, "terminated": False, "truncated": False,
    }


def run_episodes(agent, vec_env, tasks: Sequence[Task], progress: bool = True, desc: str | None = None) -> list[dict]:
    """Run one episode per task with `agent` on `vec_env`; one record per task, in task order.

    A record holds task_id, kind, template, answer, em, f1, num_searches, invalid_actions, turns,
    agent_turns (texts), format_ok (`format_reward` of the agent turns), search_latency_s (wall
    time of each vector step in which this episode searched, i.e. of the batched backend call it
    took part in), results_hold_answer (per search: does the feedback contain a gold alias) and
    confidence (when the env runs in calibration mode). Tasks must be known to the env (it looks
    them up by `task_id`).
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    n = vec_env.num_envs
    envs = getattr(vec_env, "envs", None)
    if envs:
        known = {t.id for t in envs[0].tasks}
        missing = [t.id for t in tasks if t.id not in known]
        if missing:
            raise ValueError(f"{len(missing)} task(s) unknown to the vector env (e.g. {missing[:3]}); "
                             "build it with tasks= holding them")
    records: list[dict | None] = [None] * len(tasks)
    slot_task: list[int | None] = [None] * n
    transcripts = [""] * n
    reset_infos: list[dict] = [{} for _ in range(n)]
    infos: list[dict] = [{} for _ in range(n)]
    next_task = 0
    if hasattr(agent, "reset"):
        agent.reset()
    bar = tqdm(total=len(tasks), desc=desc or f"eval {getattr(agent, 'name', type(agent).__name__)}",
               disable=not progress, leave=False)

    def fill(slots: list[int]) -> None:
        nonlocal next_task
        mask = np.zeros(n, dtype=bool)
        per_env: list[dict | None] = [None] * n
        for s in slots:
            if next_task >= len(tasks):
                slot_task[s] = None
                continue
            k = next_task
            next_task += 1
            slot_task[s] = k
            mask[s] = True
            per_env[s] = {"task_id": tasks[k].id, "episode_id": f"{tasks[k].id}#{k}"}
            records[k] = _new_record(tasks[k])
        if mask.any():
            obs, inf = vec_env.reset(options={"reset_mask": mask, "per_env": per_env})
            for s in np.flatnonzero(mask):
                transcripts[s] = obs[s]
                reset_infos[s] = info_at(inf, int(s))
                infos[s] = dict(reset_infos[s])

    try:
        fill(list(range(n)))
        while True:
            live = [s for s in range(n) if slot_task[s] is not None]
            if not live:
                break
            turns = agent.act([transcripts[s] for s in live], [infos[s] for s in live])
            if not isinstance(turns, (list, tuple)) or len(turns) != len(live):
                raise ValueError(f"{type(agent).__name__}.act returned {len(turns) if isinstance(turns, (list, tuple)) else type(turns).__name__} "
                                 f"turns for {len(live)} episodes")
            actions: list[Any] = [None] * n
            for s, turn in zip(live, turns):
                actions[s] = turn
            t0 = time.perf_counter()
            obs, _, terms, truncs, inf = vec_env.step(actions)
            dt = time.perf_counter() - t0
            done_slots = []
            for s, turn in zip(live, turns):
                rec = records[slot_task[s]]
                step_info = info_at(inf, s)
                text = turn if isinstance(turn, str) else ""
                transcripts[s] += text + obs[s]
                infos[s] = {**reset_infos[s], **step_info}
                rec["agent_turns"].append(text)
                rec["turns"] = int(step_info.get("turn", rec["turns"] + 1))
                rec["invalid_actions"] = int(step_info.get("invalid_actions", rec["invalid_actions"]))
                rec["num_searches"] = int(step_info.get("num_searches", rec["num_searches"]))
                if step_info.get("action") == "search":
                    rec["search_latency_s"].append(dt)
                    rec["results_hold_answer"].append(holds_answer(obs[s], rec["answers"]))
                if step_info.get("action") == "answer":
                    rec["answer"] = step_info.get("answer")
                    rec["em"] = float(step_info.get("em") or 0.0)
                    rec["f1"] = float(step_info.get("f1") or 0.0)
                    if "confidence" in step_info:
                        rec["confidence"] = step_info["confidence"]
                if bool(terms[s]) or bool(truncs[s]):
                    rec["terminated"], rec["truncated"] = bool(terms[s]), bool(truncs[s])
                    rec["format_ok"] = format_reward(rec["agent_turns"])
                    done_slots.append(s)
                    bar.update(1)
            if done_slots:
                fill(done_slots)
    finally:
        bar.close()
    return [r for r in records if r is not None]


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def _block(records: Sequence[dict]) -> dict:
    searches = sum(r["num_searches"] for r in records)
    turns = sum(r["turns"] for r in records)
    holds = [h for r in records for h in r["results_hold_answer"]]
    lat = [x for r in records for x in r["search_latency_s"]]
    conf = [(r["confidence"], r["em"]) for r in records if r.get("confidence") is not None]
    out = {
        "n": len(records),
        "em": _mean([r["em"] for r in records]),
        "f1": _mean([r["f1"] for r in records]),
        "format_compliance": _mean([r["format_ok"] for r in records]),
        "searches_per_episode": searches / len(records) if records else 0.0,
        "invalid_rate": sum(r["invalid_actions"] for r in records) / turns if turns else 0.0,
        "answered": _mean([float(r["answer"] is not None) for r in records]),
        "answer_in_results": _mean([float(h) for h in holds]) if holds else None,
        "search_latency_p50_ms": 1000.0 * statistics.median(lat) if lat else None,
    }
    if conf:
        out["brier"] = _mean([(q - c) ** 2 for q, c in conf])
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def summarize(records: Sequence[dict]) -> dict:
    """Headline figures (em, f1, format_compliance, searches_per_episode, invalid_rate — invalid
    turns over all turns —, answer_in_results — share of searches whose results hold a gold
    alias —, search_latency_p50_ms, n) and the same figures per kind under `by_kind`."""
    out = _block(records)
    kinds = sorted({r["kind"] for r in records})
    out["by_kind"] = {k: _block([r for r in records if r["kind"] == k]) for k in kinds}
    return out


def paired_em_difference(records_a: Sequence[dict], records_b: Sequence[dict]) -> dict:
    """EM of B minus EM of A on the questions both evaluated (matched by `task_id`), paired.

    Returns n, em_a, em_b, diff, se (standard error of the mean per-question difference),
    b_only / a_only (questions only B / only A got right) and p_mcnemar: the exact two-sided
    McNemar p-value, i.e. a binomial test of b_only against a_only with probability 1/2. Pairing
    removes the question-difficulty variance that two independent standard errors carry.
    Raises ValueError when the two sets share no question.
    """
    a = {r["task_id"]: float(r["em"]) for r in records_a}
    b = {r["task_id"]: float(r["em"]) for r in records_b}
    common = [t for t in a if t in b]
    if not common:
        raise ValueError("paired_em_difference: the two record sets share no task_id")
    d = [b[t] - a[t] for t in common]
    n = len(d)
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n) if n > 1 else float("nan")
    b_only = sum(1 for t in common if b[t] > a[t])
    a_only = sum(1 for t in common if a[t] > b[t])
    k, m = min(a_only, b_only), a_only + b_only
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2.0 ** m if m else 1.0
    return {"n": n, "em_a": sum(a[t] for t in common) / n, "em_b": sum(b[t] for t in common) / n,
            "diff": mean, "se": se, "b_only": b_only, "a_only": a_only, "p_mcnemar": min(1.0, 2.0 * tail)}

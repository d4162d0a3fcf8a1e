"""Multi-turn rollouts over `SearchVectorEnv`, assembled from token ids.

One rollout batch is `len(tasks) * group_size` episodes run side by side on a vector env with as
many sub-envs. Each vector step the policy writes one turn for every active episode (one batched
generation), the env answers every search of that step in one backend call, and each episode's
trajectory grows by the agent's sampled ids (`env_mask` 1, their log-probabilities) followed by the
environment feedback tokenised once (`env_mask` 0, log-probability 0).

The `group_size` samples of one task share an `episode_id`, so a step-aware simulator draws the same
useful/noisy pattern for all of them: GRPO compares answers, not luck of the draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from agents.policy import Policy
from zerosearch_env.data.task import Task


@dataclass
class Trajectory:
    """One episode as token ids.

    `completion_ids` interleaves agent tokens (`env_mask` 1) and environment tokens (`env_mask` 0);
    `logprobs` holds the sampling log-probability of each agent token and 0.0 at environment
    positions; `turn_ends[k]` is the index in `completion_ids` of the last token of agent turn k.
    `reward` is the environment's reward for the episode (F1 or EM of the agent's own answer).
    """

    prompt: str
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turn_ends: list[int] = field(default_factory=list)
    segments: list[tuple[str, bool]] = field(default_factory=list)  # (text, is_agent) in order
    reward: float = 0.0
    group: int = 0
    task: Task | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def add(self, ids: Sequence[int], text: str, agent: bool, logprobs: Sequence[float] | None = None) -> None:
        """Append one segment: agent tokens (with their log-probabilities) or environment tokens."""
        ids = list(ids)
        if agent and logprobs is not None and len(logprobs) != len(ids):
            raise ValueError("need one log-probability per agent token")
        self.completion_ids += ids
        self.env_mask += [1 if agent else 0] * len(ids)
        self.logprobs += (list(logprobs) if agent and logprobs is not None else [0.0] * len(ids))
        self.segments.append((text, agent))
        if agent and ids:
            self.turn_ends.append(len(self.completion_ids) - 1)

    @property
    def agent_text(self) -> str:
        """The agent's own text only (environment feedback left out)."""
        return "".join(t for t, a in self.segments if a)

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.segments)


def rollout_episode_ids(tasks: Sequence[Task], group_size: int, step: int, salt: str = "") -> list[str]:
    """One episode id per sample; the samples of one task (a group) share it."""
    return [f"{t.id}@{salt}{step}:{gi}" for gi, t in enumerate(tasks) for _ in range(group_size)]


def collect_rollouts(policy: Policy, vec_env, tasks: Sequence[Task], group_size: int, step: int,
                     generator: torch.Generator | None = None, greedy: bool = False,
                     max_completion_tokens: int = 1024, salt: str = "") -> list[Trajectory]:
    """Run `len(tasks) * group_size` episodes to the end; return one `Trajectory` per episode.

    `vec_env` must have exactly that many sub-envs and know every task id. `vec_env.set_training_step(step)`
    is called first, so a step-dependent backend (the simulator's noise curriculum) sees the step.
    An episode whose completion grows past `max_completion_tokens` is cut there (truncated,
    reward 0); the env is then fed empty (invalid, search-free) turns until every episode ends.
    """
    n = len(tasks) * group_size
    if vec_env.num_envs != n:
        raise ValueError(f"the vector env has {vec_env.num_envs} sub-envs; {len(tasks)} tasks x {group_size} need {n}")
    vec_env.set_training_step(step)
    episode_ids = rollout_episode_ids(tasks, group_size, step, salt)
    per_env = [{"task_id": tasks[i // group_size].id, "episode_id": episode_ids[i]} for i in range(n)]
    obs, _ = vec_env.reset(options={"per_env": per_env})
    trajs = [Trajectory(prompt=o, prompt_ids=policy.prompt_ids(o), group=i // group_size, task=tasks[i // group_size])
             for i, o in enumerate(obs)]
    search_infos: list[list[dict]] = [[] for _ in range(n)]
    final: list[dict] = [{} for _ in range(n)]
    cut = np.zeros(n, dtype=bool)
    keys = [f"rollout:{i}:{e}" for i, e in enumerate(episode_ids)]  # the group's samples share an episode id
    policy.forget()  # the weights may have changed since anything was kept
    while True:
        active = vec_env.active
        live = [i for i in range(n) if active[i] and not cut[i]]
        if not active.any():
            break
        turns = policy.generate_turns([trajs[i].prompt_ids + trajs[i].completion_ids for i in live],
                                      greedy=greedy, generator=generator, cache_keys=[keys[i] for i in live])
        actions: list[str | None] = ["" if active[i] else None for i in range(n)]
        for i, turn in zip(live, turns):
            actions[i] = turn.text
            trajs[i].add(turn.ids, turn.text, agent=True, logprobs=turn.logprobs)
        obs, rewards, terms, truncs, infos = vec_env.step(actions)
        for i in live:
            info = unbatch_info(infos, i)
            final[i] = info
            if info.get("search_info"):
                search_infos[i].append(info["search_info"])
            trajs[i].reward = float(rewards[i])
            ended = bool(terms[i] or truncs[i])
            if not ended and obs[i]:
                trajs[i].add(policy.encode(obs[i]), obs[i], agent=False)
            if not ended and len(trajs[i].completion_ids) >= max_completion_tokens:
                cut[i] = True
                trajs[i].reward = 0.0
    policy.forget()
    for i, t in enumerate(trajs):
        info = final[i]
        noisy = [s.get("mode") == "noisy" for s in search_infos[i] if "mode" in s]
        t.info = {
            "task_id": t.task.id, "kind": t.task.kind, "episode_id": episode_ids[i],
            "em": float(info.get("em") or 0.0), "f1": float(info.get("f1") or 0.0),
            "answered": info.get("action") == "answer" and not cut[i],
            "num_searches": int(info.get("num_searches") or 0), "turns": int(info.get("turn") or 0),
            "invalid_actions": int(info.get("invalid_actions") or 0), "cut": bool(cut[i]),
            "answer": info.get("answer"), "noisy_searches": int(sum(noisy)),
            "search_infos": search_infos[i],
        }
    return trajs


def collect_groups(policy: Policy, vec_env, tasks: Sequence[Task], group_size: int, step: int = 0,
                   generator: torch.Generator | None = None, salt: str = "", progress: bool = False,
                   desc: str = "sampling", **kwargs) -> list[Trajectory]:
    """`group_size` trajectories for each of any number of `tasks`, through a vector env whose
    sub-envs are a multiple of `group_size`: the tasks run in chunks of `vec_env.num_envs //
    group_size` (the last chunk padded with its own last task, whose extra samples are dropped).
    Returns the trajectories task by task, `group_size` each."""
    if group_size < 1 or vec_env.num_envs % group_size:
        raise ValueError(f"the vector env's {vec_env.num_envs} sub-envs are not a multiple of {group_size}")
    from tqdm.auto import tqdm

    per_chunk = vec_env.num_envs // group_size
    tasks = list(tasks)
    trajs: list[Trajectory] = []
    bar = tqdm(total=len(tasks), desc=desc, unit="question", disable=not progress)
    for s in range(0, len(tasks), per_chunk):
        real = tasks[s:s + per_chunk]
        chunk = real + [real[-1]] * (per_chunk - len(real))  # fixed-size vector env: pad, then drop
        got = collect_rollouts(policy, vec_env, chunk, group_size, step, generator=generator, salt=salt, **kwargs)
        trajs += got[: len(real) * group_size]
        bar.update(len(real))
    bar.close()
    return trajs


def unbatch_info(infos: dict, i: int) -> dict:
    """Sub-env `i`'s info from gymnasium's batched info dict (nested dicts included)."""
    out: dict = {}
    for k, v in infos.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict):
            out[k] = unbatch_info(v, i)
            continue
        mask = infos.get("_" + k)
        if mask is not None and not mask[i]:
            continue
        x = v[i]
        out[k] = x.item() if isinstance(x, np.generic) else x
    return out


def trajectory_metrics(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Batch means: reward, EM, F1, searches per episode, invalid-action rate (per turn), answer rate,
    noisy share of searches, agent tokens per episode."""
    if not trajs:
        return {}
    n = len(trajs)
    turns = sum(max(1, t.info.get("turns", 0)) for t in trajs)
    searches = sum(t.info.get("num_searches", 0) for t in trajs)
    return {
        "reward": float(np.mean([t.reward for t in trajs])),
        "em": float(np.mean([t.info.get("em", 0.0) for t in trajs])),
        "f1": float(np.mean([t.info.get("f1", 0.0) for t in trajs])),
        "searches_per_episode": searches / n,
        "invalid_rate": sum(t.info.get("invalid_actions", 0) for t in trajs) / turns,
        "answer_rate": float(np.mean([bool(t.info.get("answered")) for t in trajs])),
        "noisy_search_share": (sum(t.info.get("noisy_searches", 0) for t in trajs) / searches) if searches else 0.0,
        "agent_tokens": float(np.mean([sum(t.env_mask) for t in trajs])),
    }

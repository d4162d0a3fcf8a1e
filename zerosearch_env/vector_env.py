"""`SearchVectorEnv`: N `SearchEnv`s stepped together with ONE backend call per vector step."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from gymnasium.spaces import Tuple as TupleSpace
from gymnasium.vector import VectorEnv

from zerosearch_env.config import EnvConfig
from zerosearch_env.data.task import Task
from zerosearch_env.env import SearchEnv, _search_with_info
from zerosearch_env.search.base import SearchBackend


class SearchVectorEnv(VectorEnv):
    """A batch of search episodes sharing one backend.

    `step(actions)` parses every active sub-env's turn, sends every query of that step to the
    backend in ONE `search` call, then finishes each sub-env. Sub-envs whose episode has ended send
    nothing and return `("", 0.0, False, False)` with `info["active"] = False`: autoreset is
    disabled by default so that multi-turn rollouts keep each finished trajectory as it is. Pass
    `autoreset=True` for gymnasium's next-step autoreset instead.

    `reset(seed=..., options={"reset_mask": mask})` resets only the sub-envs where `mask` is true;
    `options` may also hold `"per_env": [dict | None, ...]` with options for each sub-env
    (`task_id`, `question`/`answers`, `episode_id`).

    Observations are tuples of strings; rewards, terminations and truncations are numpy arrays;
    `infos` follows gymnasium's convention (`infos[key][i]` with the mask `infos["_" + key]`).
    """

    metadata = {"render_modes": [], "autoreset_mode": None}

    def __init__(
        self,
        num_envs: int,
        config: EnvConfig | dict | None = None,
        backend: SearchBackend | None = None,
        tasks: Sequence[Task] | None = None,
        autoreset: bool = False,
        **overrides: Any,
    ):
        if num_envs < 1:
            raise ValueError("num_envs must be >= 1")
        first = SearchEnv(config, backend=backend, tasks=tasks, **overrides)
        self.envs = [first] + [
            SearchEnv(first.config, backend=first.backend, tasks=first.tasks) for _ in range(num_envs - 1)
        ]
        self.config = first.config
        self.backend = first.backend
        # One independent generator per sub-env from one root seed (cheap, and reproducible when
        # config.seed is set); reset(seed=...) still reseeds explicitly.
        for env, child in zip(self.envs, np.random.SeedSequence(self.config.seed).spawn(num_envs)):
            env.np_random = np.random.Generator(np.random.PCG64(child))
        self.num_envs = num_envs
        self.autoreset = autoreset
        if autoreset:
            from gymnasium.vector import AutoresetMode

            self.metadata = {**self.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = TupleSpace([first.observation_space] * num_envs)
        self.action_space = TupleSpace([first.action_space] * num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self.backend_calls = 0

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        options = dict(options or {})
        mask = np.asarray(options.pop("reset_mask", np.ones(self.num_envs, dtype=bool)), dtype=bool)
        if mask.shape != (self.num_envs,):
            raise ValueError(f"reset_mask must have shape ({self.num_envs},)")
        per_env = options.pop("per_env", None) or [None] * self.num_envs
        if len(per_env) != self.num_envs:
            raise ValueError(f"options['per_env'] needs {self.num_envs} entries")
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
        obs: list[str] = [""] * self.num_envs
        infos: list[tuple[int, dict]] = []
        for i, env in enumerate(self.envs):
            if not mask[i]:
                continue
            o, info = env.reset(seed=seeds[i], options={**options, **(per_env[i] or {})})
            obs[i] = o
            self._needs_reset[i] = False
            infos.append((i, info))
        return tuple(obs), self._batch_infos(infos)

    def step(self, actions: Sequence[str | None]):
        if len(actions) != self.num_envs:
            raise ValueError(f"need {self.num_envs} actions, got {len(actions)}")
        n = self.num_envs
        obs: list[str] = [""] * n
        rewards = np.zeros(n, dtype=np.float64)
        terms = np.zeros(n, dtype=bool)
        truncs = np.zeros(n, dtype=bool)
        infos: list[tuple[int, dict]] = []
        pending: list[tuple[int, Any]] = []
        finished: list[int] = []
        for i, env in enumerate(self.envs):
            if self._needs_reset[i] and self.autoreset:
                obs[i], info = env.reset()
                self._needs_reset[i] = False
                infos.append((i, {**info, "active": False, "autoreset": True}))
                continue
            if env.episode_done:
                finished.append(i)
                continue
            pending.append((i, env.begin_step(actions[i])))
        searches = [(i, req) for i, req in pending if req is not None]
        results: dict[int, tuple] = {}
        if searches:
            docs, sinfo = _search_with_info(self.backend, [req for _, req in searches])
            self.backend_calls += 1
            results = {i: (d, s) for (i, _), d, s in zip(searches, docs, sinfo)}
        for i, _ in pending:
            d, s = results.get(i, (None, None))
            obs[i], rewards[i], terms[i], truncs[i], info = self.envs[i].end_step(d, s)
            info["active"] = True
            if terms[i] or truncs[i]:
                self._needs_reset[i] = True
            infos.append((i, info))
        for i in finished:
            infos.append((i, {"active": False}))
        return tuple(obs), rewards, terms, truncs, self._batch_infos(infos)

    def _batch_infos(self, items: list[tuple[int, dict]]) -> dict:
        """gymnasium's vector info layout: `infos[key]` an array over sub-envs (object dtype unless
        every value is a bool/int/float) and `infos["_" + key]` the mask of sub-envs that set it.
        (Equivalent to `VectorEnv._add_info`, built once per step instead of once per sub-env.)"""
        columns: dict[str, list[tuple[int, Any]]] = {}
        for i, info in items:
            for k, v in info.items():
                columns.setdefault(k, []).append((i, v))
        out: dict = {}
        for k, vals in columns.items():
            mask = np.zeros(self.num_envs, dtype=bool)
            if all(type(v) in (bool, int, float) for _, v in vals):
                kind = {type(v) for _, v in vals}
                dtype = bool if kind == {bool} else (np.int64 if kind == {int} else np.float64)
                arr = np.zeros(self.num_envs, dtype=dtype)
            else:
                arr = np.full(self.num_envs, None, dtype=object)
            for i, v in vals:
                arr[i] = v
                mask[i] = True
            out[k], out["_" + k] = arr, mask
        return out

    def set_training_step(self, step: int) -> None:
        for env in self.envs:
            env._training_step = int(step)
        self.backend.set_training_step(int(step))

    @property
    def active(self) -> np.ndarray:
        """Boolean mask of sub-envs whose episode is still running."""
        return np.array([not e.episode_done for e in self.envs], dtype=bool)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def make_vec(num_envs: int, config: EnvConfig | dict | None = None, backend: SearchBackend | None = None,
             tasks: Sequence[Task] | None = None, autoreset: bool = False, **overrides: Any) -> SearchVectorEnv:
    """Build a `SearchVectorEnv` of `num_envs` sub-envs sharing one backend."""
    return SearchVectorEnv(num_envs, config, backend=backend, tasks=tasks, autoreset=autoreset, **overrides)

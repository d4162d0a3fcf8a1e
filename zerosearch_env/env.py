"""`SearchEnv`: one question, a search tool, a turn budget."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import gymnasium as gym

from zerosearch_env.config import EnvConfig
from zerosearch_env.data.task import Task
from zerosearch_env.prompts import build_prompt
from zerosearch_env.protocol import Action, invalid_feedback, parse_action, render_documents
from zerosearch_env.rewards import parse_confidence, score_answer
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest
from zerosearch_env.spaces import UnicodeText


@dataclass(slots=True)
class _Episode:
    task: Task
    episode_id: str
    turn: int = 0
    num_searches: int = 0
    invalid_actions: int = 0
    invalid_streak: int = 0
    done: bool = False
    answer: str | None = None
    queries: list[str] = field(default_factory=list)


class SearchEnv(gym.Env[str, str]):
    """A question-answering episode in which the agent may call a search tool.

    ## Observation
    Text. `reset` returns the prompt (instructions, then the question); every `step` returns only
    the *new* feedback: an `<information>Doc 1 (Title: ...) ...</information>` block after a
    search, an invalid-action notice after a malformed turn, and "" after an answer. Every
    observation is at most `max_obs_chars` characters.

    ## Action
    Text: one assistant turn. The first complete `<search>query</search>` or
    `<answer>text</answer>` decides the action (see `zerosearch_env.protocol`); anything else is an
    invalid action, which costs a turn and never raises.

    ## Reward
    0 for searches and invalid actions. On an answer, token F1 (default, `reward="f1"`) or exact
    match (`reward="em"`) of the agent's answer against the gold aliases; hedged and over-long
    answers score 0.

    ## Episode end
    Terminated on an answer; truncated when `max_turns` turns are spent without one, or (when
    `max_invalid_streak` is set) after that many invalid actions in a row.

    ## Info
    JSON-serialisable and deterministic: `turn`, `action`, `query`, `doc_ids`, `num_searches`,
    `answer`, `em`, `f1`, `invalid_actions`, `task_id`, `episode_id`, and `search_info` (what
    the backend reports about the call, e.g. the simulator's mode and gate result).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        config: EnvConfig | dict | None = None,
        backend: SearchBackend | str | None = None,
        tasks: Sequence[Task] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        if isinstance(backend, str):  # a backend name, as in gymnasium.make(..., backend="bm25")
            overrides["backend"], backend = backend, None
        if config is None:
            config = EnvConfig(**overrides)
        elif isinstance(config, dict):
            config = EnvConfig(**{**config, **overrides})
        elif overrides:
            config = config.updated(**overrides)
        self.config: EnvConfig = config
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        if tasks is None:
            from zerosearch_env.data import load_tasks

            tasks = load_tasks(config.dataset, split=config.split, world_seed=config.world_seed)
        self.tasks: list[Task] = list(tasks)
        if not self.tasks:
            raise ValueError("SearchEnv needs at least one task")
        self._task_index = {t.id: i for i, t in enumerate(self.tasks)}
        if backend is None:
            from zerosearch_env.search import make_backend

            backend = make_backend(config)
        self.backend: SearchBackend = backend
        self.observation_space = UnicodeText(max_length=config.max_obs_chars)
        self.action_space = UnicodeText(max_length=config.max_action_chars)
        self._episode: _Episode | None = None
        self._resets = 0
        self._transcript: list[str] = []
        self._training_step: int | None = None

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        if seed is None and self._np_random is None:
            seed = self.config.seed  # first reset of a fresh env: the configured seed, if any
        super().reset(seed=seed)
        options = options or {}
        task = self._choose_task(options)
        # Drawn from the seeded generator: the same seed gives the same episode id (and so the same
        # simulator draws), different episodes of one env get different ids.
        nonce = int(self.np_random.integers(1 << 31))
        episode_id = str(options.get("episode_id", f"{task.id}#{nonce:08x}"))
        self._resets += 1
        self._episode = _Episode(task=task, episode_id=episode_id)
        room = self.config.max_obs_chars - len(build_prompt("", calibration=self.config.calibration))
        prompt = build_prompt(task.question, calibration=self.config.calibration, max_question_chars=max(16, room))
        prompt = prompt[: self.config.max_obs_chars]
        self._transcript = [prompt]
        return prompt, {"task_id": task.id, "episode_id": episode_id, "question": task.question,
                        "answers": list(task.answers), "kind": task.kind, "turn": 0}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        pending = self.begin_step(action)
        if pending is None:
            return self.end_step(None, None)
        (docs,), (search_info,) = _search_with_info(self.backend, [pending])
        return self.end_step(docs, search_info)

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return "".join(self._transcript)
        return None

    def close(self) -> None:
        self._episode = None

    # ----------------------------------------------------------------- split step (for batching)
    def begin_step(self, action: str) -> SearchRequest | None:
        """Parse the turn; return the search request to run, or None when no search is needed.

        `SearchVectorEnv` calls this on every sub-env, runs all requests in one backend call, then
        calls `end_step` on each.
        """
        ep = self._require_episode()
        if ep.done:
            raise RuntimeError("the episode has ended: call reset() before step()")
        self._pending_action = act = parse_action(
            action if isinstance(action, str) else None,
            max_query_chars=self.config.max_query_chars,
            max_answer_chars=self.config.max_answer_chars,
        )
        if isinstance(action, str):
            self._transcript.append(action[: self.config.max_obs_chars])
        if act.kind != "search":
            return None
        return SearchRequest(
            query=act.content, top_k=self.config.top_k, question=ep.task.question,
            answers=ep.task.answers, episode_id=ep.episode_id, search_index=ep.num_searches,
            step=self._training_step, supporting_titles=tuple(ep.task.supporting_titles),
        )

    def end_step(self, docs: list[Document] | None, search_info: dict | None) -> tuple[str, float, bool, bool, dict]:
        ep = self._require_episode()
        act: Action = self._pending_action
        cfg = self.config
        ep.turn += 1
        reward, em, f1 = 0.0, None, None
        terminated = False
        doc_ids: list[str] = []
        if act.kind == "search":
            docs = list(docs or [])[: cfg.top_k]
            ep.num_searches += 1
            ep.queries.append(act.content)
            doc_ids = [d.id for d in docs]
            obs = render_documents(docs, cfg.max_doc_chars, cfg.max_obs_chars)
        elif act.kind == "answer":
            ep.answer = act.content
            em, f1 = score_answer(act.content, ep.task.answers, cfg.max_length_ratio)
            reward = em if cfg.reward == "em" else f1
            terminated = True
            obs = ""
        else:
            ep.invalid_actions += 1
            obs = invalid_feedback(act.reason)
        ep.invalid_streak = ep.invalid_streak + 1 if act.kind == "invalid" else 0
        obs = obs[: cfg.max_obs_chars]
        streak_out = cfg.max_invalid_streak is not None and ep.invalid_streak >= cfg.max_invalid_streak
        truncated = not terminated and (ep.turn >= cfg.max_turns or streak_out)
        ep.done = terminated or truncated
        self._transcript.append(obs)
        info = {
            "task_id": ep.task.id, "episode_id": ep.episode_id, "turn": ep.turn, "action": act.kind,
            "query": act.content if act.kind == "search" else None, "doc_ids": doc_ids,
            "num_searches": ep.num_searches, "answer": ep.answer, "em": em, "f1": f1,
            "invalid_actions": ep.invalid_actions, "invalid_reason": act.reason or None,
            "search_info": search_info or {},
        }
        if act.kind == "answer" and cfg.calibration:
            info["confidence"] = parse_confidence(act.confidence_text)
        return obs, float(reward), terminated, truncated, info

    # ----------------------------------------------------------------- trainer hooks
    def set_training_step(self, step: int) -> None:
        """Tell the env (and a step-dependent backend such as the simulator) the trainer's step."""
        self._training_step = int(step)
        self.backend.set_training_step(int(step))

    @property
    def task(self) -> Task | None:
        return None if self._episode is None else self._episode.task

    @property
    def episode_done(self) -> bool:
        return self._episode is None or self._episode.done

    # ----------------------------------------------------------------- helpers
    def _require_episode(self) -> _Episode:
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        return self._episode

    def _choose_task(self, options: dict) -> Task:
        if "task_id" in options:
            tid = str(options["task_id"])
            if tid not in self._task_index:
                raise KeyError(f"unknown task_id {tid!r}")
            return self.tasks[self._task_index[tid]]
        if "question" in options:
            answers = options.get("answers", ())
            answers = (answers,) if isinstance(answers, str) else tuple(str(a) for a in answers)
            question = str(options["question"])
            tid = "custom-" + format(zlib.crc32(question.encode("utf-8", "replace")), "08x")
            return Task(id=tid, question=question, answers=answers, split="custom")
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]


def _search_with_info(backend: SearchBackend, requests: list[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
    """Run one batched backend call; returns results and per-request info dicts."""
    results, infos = backend.search_with_info(requests)
    if len(results) != len(requests):
        raise RuntimeError(f"{type(backend).__name__} returned {len(results)} result lists for {len(requests)} requests")
    return results, infos

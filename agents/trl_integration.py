"""TRL (`trl==1.16.0`) integration: GRPOTrainer trains on our multi-turn rollouts.

Two ways to plug the environment into `trl.GRPOTrainer`:

1. `SearchRollout` (recommended): a `rollout_func` that runs our batched multi-turn rollouts
   (`agents.rollout.collect_rollouts`) with the trainer's own model and returns `prompt_ids`,
   `completion_ids`, `logprobs` and `env_mask` (TRL multiplies its loss mask by `env_mask`, so only
   agent tokens carry gradient) plus per-sample fields (`env_reward`, `em`, `f1`, `num_searches`,
   `invalid_actions`, `agent_text`, `answers`) that TRL forwards to reward functions.
2. `SearchToolEnv`: an `environment_factory` class for TRL's native tool-calling loop, with tools
   `search(query)` and `answer(text)` and `get_reward()`. Picklable: it holds only its config and
   builds its backend lazily.

Reward functions follow TRL's signature `fn(prompts, completions, **kwargs) -> list[float]` and
score only the agent's own answer: `answer_f1_reward` / `answer_em_reward` read the answer from
`agent_text` when the rollout supplied it, otherwise from the completion with every
`<information>` block removed, so an answer that appears only inside documents never scores.

`CurriculumCallback` advances the curriculum with `state.global_step` and adds the noise
probability, the backend's gate statistics, searches per episode, EM, F1 and the invalid-action
rate to TRL's logs. `StepCallback` runs a trainer's per-step bookkeeping inside TRL's loop (the
`grpo.trainer: trl` path's metrics rows, checkpoints, and a resume at TRL's step).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import torch
from transformers import TrainerCallback

from agents.policy import Policy
from agents.rollout import collect_rollouts, trajectory_metrics
from zerosearch_env.config import EnvConfig
from zerosearch_env.data.task import Task
from zerosearch_env.protocol import extract_answer, parse_action, render_documents, strip_information
from zerosearch_env.rewards import exact_match, f1_score


# ---------------------------------------------------------------------------------- rewards
def _completion_text(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):  # conversational: [{"role": "assistant", "content": ...}, ...]
        return "".join(m.get("content", "") if isinstance(m.get("content"), str) else "" for m in c
                       if isinstance(m, dict) and m.get("role") == "assistant")
    return ""


def agent_answer(completion: Any, agent_text: str | None = None) -> str | None:
    """The agent's final answer: from its own text when known, else from the completion with the
    environment's `<information>` blocks removed."""
    text = agent_text if isinstance(agent_text, str) else strip_information(_completion_text(completion))
    return extract_answer(text)


def _golds(answers: Any) -> list[str]:
    if answers is None:
        return []
    if isinstance(answers, str):
        return [answers]
    return [str(a) for a in answers]


def answer_f1_reward(prompts: Sequence[Any], completions: Sequence[Any], answers: Sequence[Any] | None = None,
                     agent_text: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
    """Token F1 of the agent's own answer against the gold aliases (`answers` dataset column)."""
    if answers is None:
        raise ValueError("answer_f1_reward needs an 'answers' column in the dataset")
    texts = agent_text if agent_text is not None else [None] * len(completions)
    return [f1_score(agent_answer(c, t), _golds(a)) for c, a, t in zip(completions, answers, texts)]


def answer_em_reward(prompts: Sequence[Any], completions: Sequence[Any], answers: Sequence[Any] | None = None,
                     agent_text: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
    """Exact match of the agent's own answer against the gold aliases."""
    if answers is None:
        raise ValueError("answer_em_reward needs an 'answers' column in the dataset")
    texts = agent_text if agent_text is not None else [None] * len(completions)
    return [exact_match(agent_answer(c, t), _golds(a)) for c, a, t in zip(completions, answers, texts)]


def env_reward(prompts: Sequence[Any], completions: Sequence[Any], env_reward: Sequence[float] | None = None,
               **kwargs: Any) -> list[float]:
    """The environment's own episode reward, as returned by `SearchRollout` (the env scores only the
    agent's answer action)."""
    if env_reward is None:
        raise ValueError("env_reward needs the 'env_reward' field that SearchRollout returns")
    return [float(r) for r in env_reward]


# ---------------------------------------------------------------------------------- rollout_func
class SearchRollout:
    """`rollout_func(prompts, trainer)` for `GRPOTrainer`.

    `tasks` are the training tasks; each prompt TRL passes (the `prompt` column, i.e.
    `build_prompt(task.question)`, repeated `num_generations` times in a row) is mapped back to its
    task. One vector env per batch size is kept and reused; `set_training_step(global_step)` is called
    on it every batch. `last_metrics` holds the latest batch's metrics for `CurriculumCallback`,
    `last_em` its per-episode exact matches (what a trainer updates an adaptive curriculum with).
    Sampling draws from `generator` (default: a CPU generator seeded with `seed`).
    """

    def __init__(self, tasks: Sequence[Task], env_config: EnvConfig, backend=None, max_new_tokens: int = 96,
                 max_completion_tokens: int = 1024, seed: int = 0, generator: torch.Generator | None = None):
        from zerosearch_env.prompts import build_prompt

        self.tasks = list(tasks)
        self.by_prompt = {build_prompt(t.question, calibration=env_config.calibration): t for t in self.tasks}
        self.env_config = env_config
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.max_completion_tokens = max_completion_tokens
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._envs: dict[int, Any] = {}
        self.last_metrics: dict[str, float] = {}
        self.last_em: list[float] = []
        self.calls = 0

    def dataset_rows(self, tasks: Sequence[Task] | None = None) -> list[dict]:
        """Rows for a `datasets.Dataset` (`prompt`, `answers`, `task_id`, `kind`, `supporting_titles`),
        one per task of `tasks` in their order (default: the rollout's tasks)."""
        from zerosearch_env.prompts import build_prompt

        return [{"prompt": build_prompt(t.question, calibration=self.env_config.calibration),
                 "answers": list(t.answers), "task_id": t.id, "kind": t.kind,
                 "supporting_titles": list(t.supporting_titles)}
                for t in (self.tasks if tasks is None else tasks)]

    def vec_env(self, n: int):
        if n not in self._envs:
            from zerosearch_env.vector_env import make_vec

            env = make_vec(n, self.env_config, backend=self.backend, tasks=self.tasks)
            self.backend = env.backend
            self._envs[n] = env
        return self._envs[n]

    def __call__(self, prompts: Sequence[Any], trainer) -> dict[str, list]:
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        groups: list[tuple[Task, int]] = []  # consecutive identical prompts form one group
        for t in texts:
            if t not in self.by_prompt:
                raise KeyError("rollout_func got a prompt that is not one of its tasks' prompts")
            task = self.by_prompt[t]
            if groups and groups[-1][0] is task and groups[-1][1] < trainer.num_generations:
                groups[-1] = (task, groups[-1][1] + 1)
            else:
                groups.append((task, 1))
        sizes = {g for _, g in groups}
        if len(sizes) != 1:
            raise ValueError(f"prompts do not come in equal groups: {sorted(sizes)}")
        g = sizes.pop()
        tasks = [t for t, _ in groups]
        policy = Policy(trainer.model, trainer.processing_class, max_new_tokens=self.max_new_tokens,
                        temperature=trainer.temperature)
        step = int(trainer.state.global_step)
        trajs = collect_rollouts(policy, self.vec_env(len(texts)), tasks, g, step, generator=self.generator,
                                 max_completion_tokens=self.max_completion_tokens, salt="trl")
        self.calls += 1
        self.last_metrics = trajectory_metrics(trajs)
        self.last_em = [float(t.info["em"]) for t in trajs]
        return {
            "prompt_ids": [t.prompt_ids for t in trajs],
            "completion_ids": [t.completion_ids for t in trajs],
            "logprobs": [t.logprobs for t in trajs],
            "env_mask": [t.env_mask for t in trajs],
            "env_reward": [t.reward for t in trajs],
            "em": [t.info["em"] for t in trajs],
            "f1": [t.info["f1"] for t in trajs],
            "num_searches": [t.info["num_searches"] for t in trajs],
            "invalid_actions": [t.info["invalid_actions"] for t in trajs],
            "agent_text": [t.agent_text for t in trajs],
        }


# ---------------------------------------------------------------------------------- callback
class CurriculumCallback(TrainerCallback):
    """Advances the curriculum with the trainer's global step and logs the search figures.

    On every step begin it calls `set_training_step(global_step)` on the rollout's env backend
    (which moves the simulator's noise probability); on every log it adds `noise_probability`
    (from `curriculum.probability(step)`), the backend's `stats()` under `gate/...`, and the latest
    rollout metrics (searches per episode, EM, F1, invalid rate) under `rollout/...`.
    """

    def __init__(self, rollout: SearchRollout | None = None, curriculum=None, backend=None):
        self.rollout = rollout
        self.curriculum = curriculum
        self.backend = backend
        self.history: list[dict] = []

    def _backend(self):
        if self.backend is not None:
            return self.backend
        return None if self.rollout is None else self.rollout.backend

    def on_step_begin(self, args, state, control, **kwargs):
        backend = self._backend()
        if backend is not None:
            backend.set_training_step(int(state.global_step))
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return control
        step = max(0, int(state.global_step) - 1)  # the step these logs describe (TRL logs after counting it)
        if self.curriculum is not None:
            logs["noise_probability"] = float(self.curriculum.probability(step))
        backend = self._backend()
        if backend is not None:
            for k, v in (backend.stats() or {}).items():
                if isinstance(v, (int, float)):
                    logs[f"gate/{k}"] = float(v)
        if self.rollout is not None:
            for k, v in self.rollout.last_metrics.items():
                logs[f"rollout/{k}"] = float(v)
        self.history.append({"step": step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})
        return control


class StepCallback(TrainerCallback):
    """Runs a trainer's own bookkeeping inside TRL's loop; `agents.trainer` keeps its `checkpoint/`,
    `metrics.jsonl` and `--resume` on the `grpo.trainer: trl` path with it.

    - After every optimizer step's log: `after_step(step, logs, optimizer, lr_scheduler)`, `step` being
      TRL's global step (the steps done, this one included).
    - `start_step > 0` (a resumed run): TRL's global step starts there (so the LR schedule, the
      curriculum and the stopping point continue), and before the first step
      `restore(optimizer, lr_scheduler)` loads the saved optimizer, scheduler and RNG states. (Before the
      first step rather than at train begin: TRL reseeds and its data loader draws from the global RNG
      in between, which the uninterrupted run did before its checkpoint.) TRL's own
      `resume_from_checkpoint` is not used: it reads only the Trainer's checkpoint layout, whose
      `trainer_state.json` collides with ours and which would hold a second copy of the weights.
    """

    def __init__(self, trainer, after_step: Callable[[int, dict, Any, Any], None], start_step: int = 0,
                 restore: Callable[[Any, Any], None] | None = None):
        if start_step > 0 and restore is None:
            raise ValueError("a run that starts after step 0 needs the saved states: pass restore")
        self.trainer = trainer
        self.after_step = after_step
        self.start_step = int(start_step)
        self.restore = restore

    def on_train_begin(self, args, state, control, **kwargs):
        if self.start_step > 0:
            state.global_step = self.start_step
            # the Trainer's loss average and throughput count steps from these (set before this event)
            self.trainer._globalstep_last_logged = self.start_step
            self.trainer._initial_global_step = self.start_step
        return control

    def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self.restore is not None:
            self.restore(optimizer, lr_scheduler)
            self.restore = None
        return control

    def on_log(self, args, state, control, logs=None, optimizer=None, lr_scheduler=None, **kwargs):
        if logs is not None and "loss" in logs:  # a step's log, not the end-of-training summary
            self.after_step(int(state.global_step), logs, optimizer, lr_scheduler)
        return control


# ---------------------------------------------------------------------------------- environment_factory
def _env_config(config: EnvConfig | dict | None) -> EnvConfig:
    return config if isinstance(config, EnvConfig) else EnvConfig(**(config or {}))


class SearchToolEnv:
    """An environment for TRL's `environment_factory` (native tool calling).

    TRL calls `reset(**row)` with the dataset row (it needs `question` or `prompt`, and `answers`),
    exposes the public methods `search` and `answer` as tools, and calls `get_reward()` once the
    rollout ends. The reward is the F1 (or EM, per the env config) of the text passed to `answer`:
    documents returned by `search` never score. `search_infos` holds the backend's info for each of
    the episode's searches (the simulator's mode and `p_noisy`).

    All instances with the same config share one backend per process (`shared_backend`, built on
    first use): TRL makes one env per rollout slot, and each must not load its own simulator model.
    To move the simulator's noise with training, hand that backend to a `CurriculumCallback`, which
    sets TRL's global step on it before every step::

        trainer = GRPOTrainer(..., environment_factory=lambda: SearchToolEnv(env_config),
                              callbacks=[CurriculumCallback(backend=SearchToolEnv.shared_backend(env_config))])

    Instances pickle: they hold only their config and episode, and look the shared backend up.
    """

    _shared: dict[str, Any] = {}  # EnvConfig JSON -> backend
    _shared_lock = threading.Lock()

    def __init__(self, env_config: EnvConfig | dict | None = None):
        self.env_config = _env_config(env_config)
        self.question: str = ""
        self.answers: list[str] = []
        self.supporting_titles: tuple[str, ...] = ()  # the task's hop articles (the simulator's knowledge reads them)
        self.final_answer: str | None = None
        self.num_searches = 0
        self.episode_id = ""
        self.search_infos: list[dict] = []

    @classmethod
    def shared_backend(cls, env_config: EnvConfig | dict | None = None):
        """The one backend of every `SearchToolEnv` with this config in this process."""
        from zerosearch_env.search import make_backend

        config = _env_config(env_config)
        key = config.model_dump_json()
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = make_backend(config)
            return cls._shared[key]

    @classmethod
    def release_shared_backends(cls) -> None:
        """Close and forget every shared backend (the next search builds a new one)."""
        with cls._shared_lock:
            backends, cls._shared = list(cls._shared.values()), {}
        for backend in backends:
            backend.close()

    @property
    def backend(self):
        return SearchToolEnv.shared_backend(self.env_config)

    def reset(self, **row: Any) -> str | None:
        """Start an episode for one dataset row."""
        self.question = str(row.get("question") or row.get("prompt") or "")
        self.answers = _golds(row.get("answers"))
        self.supporting_titles = tuple(str(t) for t in row.get("supporting_titles") or ())
        self.final_answer = None
        self.num_searches = 0
        self.search_infos = []
        self.episode_id = str(row.get("task_id", "")) + "#" + str(row.get("episode", 0))
        return None

    def search(self, query: str) -> str:
        """Search the encyclopedia.

        Args:
            query: What to look for.

        Returns:
            The top documents as text.
        """
        from zerosearch_env.search import SearchRequest

        act = parse_action(f"<search>{query}</search>", max_query_chars=self.env_config.max_query_chars)
        if act.kind != "search":
            return f"Invalid search: {act.reason}."
        req = SearchRequest(query=act.content, top_k=self.env_config.top_k, question=self.question,
                            answers=tuple(self.answers), episode_id=self.episode_id, search_index=self.num_searches,
                            supporting_titles=self.supporting_titles)
        self.num_searches += 1
        (docs,), (info,) = self.backend.search_with_info([req])
        self.search_infos.append(info)
        return render_documents(docs, self.env_config.max_doc_chars, self.env_config.max_obs_chars)

    def answer(self, text: str) -> str:
        """Give the final answer.

        Args:
            text: The answer, a short phrase.

        Returns:
            A confirmation.
        """
        if self.final_answer is None:
            self.final_answer = " ".join(str(text).split())
        return "Answer recorded."

    def get_reward(self) -> float:
        if self.final_answer is None:
            return 0.0
        if self.env_config.reward == "em":
            return exact_match(self.final_answer, self.answers, self.env_config.max_length_ratio)
        return f1_score(self.final_answer, self.answers, self.env_config.max_length_ratio)

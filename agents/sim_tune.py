"""Tuning the simulator on real search traffic (`zerosearch sim-tune`): the data, its labels, and the SFT run.

ZeroSearch fine-tunes its simulator on (query, documents) pairs taken from interactions with a real
engine, labelled useful or noisy, so that the simulator learns what real results for a query look
like. This module does the same in four steps, every knob in `SimTuneConfig`:

1. **Collect** (`collect_pairs`): each agent of `config.agents` (`oracle`, `random`, or a checkpoint
   folder: `agents.commands.compare.build_agent`) plays episodes on TRAINING-split questions against a
   real backend (`bm25`, `dense`, `retriever=URL`, `web`; `agents.compare.build_backend`), wrapped in
   `RecordingSearch`, which keeps every request the env sent and the real documents that came back.
   One pair per search: the query the agent actually issued, its question, and those documents.
2. **Label** (`label_pair`, rule `config.label_rule`):
   - "reached" (default; per pair, from the world's hop chain): the pair is *useful* when one returned
     document holds a link of the question's chain, i.e. names both ends of it (`knowledge.mentions`
     over the document's title and text): for supporting titles s_0..s_n-1 (hop order), the links are
     (s_i, s_i+1) for a bridge question ("next_hop": the query reached an article naming the next
     hop) and (s_n-1, a gold alias) for the last hop ("answer": an article stating the answer about
     the entity it is asked of); for a comparison question, a document titled with a compared entity
     ("compared_article": the article holding the compared date). A question without supporting
     titles (a loaded data set) needs a document holding a gold alias ("answer"). Otherwise *noisy*.
   - "trajectory" (ZeroSearch's way): every pair of an episode whose final answer was an exact
     match is useful, every pair of a wrong episode noisy ("trajectory_correct" / "trajectory_wrong").
3. **Balance** (`balance_pairs`): exact duplicates (same query, label and documents) are dropped, then
   the larger class is down-sampled (seeded) to the smaller one's size (`config.balance`), and each
   class capped at `config.max_per_class`.
4. **Render and train**: each kept pair becomes a chat example, prompt = exactly the messages the
   simulator sends its engine for that query in that mode (`SimulatedSearch.prompt_messages` of a
   simulator built with the same prompt style, knowledge source, words per document and seed; mode
   useful or noisy = the label), completion = the real documents in the format the simulator's parser
   reads (`format_target`: `Doc i (Title: t) text` for the "default" style, `Doc i: text` for the
   ZeroSearch styles). TRL's `SFTTrainer` fine-tunes the simulator model on them (loss on the
   completion only; full fine-tuning or LoRA through peft, merged into the weights at the end).

Outputs (`run_sim_tune`, in `out`): `model/` (a plain transformers folder: use it as
`backend_options.model`, with `prompt_settings.json` saying the prompt settings it was tuned with),
`pairs.jsonl` (every labelled pair, `kept` marking those trained on), `train.jsonl` (the rendered
examples), `data_card.json` / `data_card.md` (counts, label balance before and after balancing, by
reason and by agent, the sources, prompt style, seed), `config.json`, `metrics.jsonl` and
`loss.png`, and `trainer/` (checkpoints, for `resume`).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zerosearch_env.data.task import Task
from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams
from zerosearch_env.search.base import DelegatingSearch, Document, SearchBackend, SearchRequest
from zerosearch_env.search.knowledge import mentions

__all__ = ["SimTuneConfig", "Pair", "PromptOnlyEngine", "RecordingSearch", "label_pair", "collect_pairs",
           "balance_pairs", "format_target", "prompt_simulator", "render_example", "build_data", "train_simulator",
           "run_sim_tune", "SimTuneError", "USEFUL", "NOISY", "LABEL_RULES"]

USEFUL, NOISY = "useful", "noisy"
LABEL_RULES = ("reached", "trajectory")
SETTINGS_FILE = "prompt_settings.json"
_DONE = ".sim-tune-complete"


class SimTuneError(ValueError):
    """A sim-tune input or state that cannot be used (the message says why and what to do)."""


class SimTuneConfig(BaseModel):
    """Every setting of a sim-tune run (the CLI fills it from its flags; `config.json` keeps it)."""

    model_config = ConfigDict(extra="forbid")

    # data: where the traffic comes from
    dataset: str = Field("world", description="'world' or a FlashRAG JSONL / Search-R1 parquet file")
    world_seed: int = 0
    corpus: str | None = Field(None, description="corpus file for bm25/dense when the dataset is a file")
    backend: str = Field("bm25", description="the real backend: bm25, dense, retriever=URL or web")
    agents: list[str] = Field(default_factory=lambda: ["oracle", "random"],
                              description="agents whose searches are recorded: oracle, random or a checkpoint folder")
    n_questions: int = Field(400, ge=0, description="training questions per agent (0: all of the split)")
    max_turns: int = Field(4, ge=1, le=64)
    num_envs: int = Field(16, ge=1)
    agent_max_new_tokens: int = Field(96, ge=8, description="a checkpoint agent's tokens per turn")
    top_k: int | None = Field(None, ge=1, le=50,
                              description="documents per search (None: 5 for the ZeroSearch styles, else 3)")
    max_doc_chars: int = Field(600, ge=16, description="each document's text is capped there, as in the simulator")
    # labels and balance
    label_rule: Literal["reached", "trajectory"] = "reached"
    balance: bool = Field(True, description="down-sample the larger class to the smaller one's size")
    max_per_class: int | None = Field(None, ge=1)
    # the simulator's prompt (train and serve prompts must be the same)
    prompt_style: str = "default"
    knowledge: str | None = Field(None, description="world | answer_hint | none | oracle (None: world for the world)")
    words_per_doc: int = Field(30, ge=1, description="the length the default style's prompt asks for")
    # the model and the SFT run
    model: str | None = Field(None, description="simulator model folder (None: the default small model)")
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (None: epochs)")
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: float = Field(0.03, ge=0, description="warm-up steps (an int) or a fraction of the steps (< 1)")
    lr_scheduler: str = "cosine"
    max_length: int = Field(1024, ge=32, description="tokens per example (longer ones are cut at the end)")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 on CUDA with bf16 or a CPU with native bf16, else fp32")
    gradient_checkpointing: bool | None = Field(None, description=(
        "recompute activations in the backward pass (None: on when training on a CPU, off on CUDA; see "
        "resolve_gradient_checkpointing for the measured memory)"))
    save_steps: int = Field(50, ge=1, description="a resumable checkpoint every this many steps")
    logging_steps: int = Field(5, ge=1)
    device: str = Field("auto", description="auto (CUDA when present) or cpu")
    seed: int = 0

    @field_validator("prompt_style")
    @classmethod
    def _style(cls, v: str) -> str:
        from zerosearch_env.search.simulator.styles import check_style

        return check_style(v)

    @field_validator("knowledge")
    @classmethod
    def _knowledge(cls, v: str | None) -> str | None:
        from zerosearch_env.search.simulator.backend import KNOWLEDGE_OPTIONS

        if v is not None and v not in KNOWLEDGE_OPTIONS:
            raise ValueError(f"unknown knowledge {v!r}; choose one of {', '.join(KNOWLEDGE_OPTIONS)}")
        return v

    @field_validator("agents")
    @classmethod
    def _agents(cls, v: list[str]) -> list[str]:
        if not v or any(not isinstance(a, str) or not a.strip() for a in v):
            raise ValueError("give at least one agent (oracle, random or a checkpoint folder)")
        if "closed_book" in v:
            raise ValueError("the closed_book agent never searches: it records no traffic")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate agents in {v}")
        return v

    def resolved_top_k(self) -> int:
        from zerosearch_env.search.simulator.styles import DEFAULT_STYLE, ZEROSEARCH_DOCS

        if self.top_k is not None:
            return self.top_k
        return 3 if self.prompt_style == DEFAULT_STYLE else ZEROSEARCH_DOCS

    def data_fields(self) -> dict:
        """The settings the data depends on (a resumed run may change only the others)."""
        keys = ("dataset", "world_seed", "corpus", "backend", "agents", "n_questions", "max_turns", "agent_max_new_tokens",
                "top_k", "max_doc_chars", "label_rule", "balance", "max_per_class", "prompt_style", "knowledge",
                "words_per_doc", "seed")
        return {k: getattr(self, k) for k in keys}


# --------------------------------------------------------------------------- recording real traffic


@dataclass
class Pair:
    """One search an agent made on a real backend, with the documents it got and its label."""

    task_id: str
    question: str
    answers: tuple[str, ...]
    supporting_titles: tuple[str, ...]
    question_kind: str
    agent: str
    query: str
    top_k: int
    episode_id: str
    search_index: int
    documents: list[dict]
    trajectory_em: float | None = None
    label: str | None = None
    reason: str | None = None
    kept: bool = False
    extra: dict = field(default_factory=dict)

    def docs(self) -> list[Document]:
        return [Document(d["id"], d["title"], d["text"], d.get("score")) for d in self.documents]

    def request(self) -> SearchRequest:
        """The request as the env sent it (what the simulator's prompt is built from)."""
        return SearchRequest(self.query, top_k=self.top_k, question=self.question, answers=tuple(self.answers),
                             episode_id=self.episode_id, search_index=self.search_index,
                             supporting_titles=tuple(self.supporting_titles))

    def to_json(self) -> dict:
        d = asdict(self)
        d["answers"], d["supporting_titles"] = list(self.answers), list(self.supporting_titles)
        return d

    @classmethod
    def from_json(cls, row: dict) -> "Pair":
        row = dict(row)
        row["answers"], row["supporting_titles"] = tuple(row["answers"]), tuple(row["supporting_titles"])
        return cls(**row)


class RecordingSearch(DelegatingSearch):
    """Wraps a real backend and keeps every (request, documents) it answered. `close()` leaves the
    wrapped backend open (it is shared by the agents of a run)."""

    def __init__(self, inner: SearchBackend):
        super().__init__(inner)
        self.calls: list[tuple[SearchRequest, list[Document]]] = []
        self._lock = threading.Lock()

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self.search_with_info(requests)[0]

    def search_with_info(self, requests: Sequence[SearchRequest]):
        requests = list(requests)
        docs, infos = self.inner.search_with_info(requests)
        with self._lock:
            self.calls += [(r, list(d)) for r, d in zip(requests, docs)]
        return docs, infos


def _names(text: str, name: str) -> bool:
    return mentions(text, [name])


def label_pair(task: Task, documents: Sequence[Document]) -> tuple[str, str]:
    """(label, reason) of one pair under the "reached" rule (see the module doc)."""
    texts = [f"{d.title}. {d.text}" for d in documents]
    titles = list(task.supporting_titles)
    if not titles:
        return (USEFUL, "answer") if any(mentions(t, task.answers) for t in texts) else (NOISY, "none")
    if task.kind == "comparison":
        for d in documents:
            if any(_names(d.title, s) for s in titles):
                return USEFUL, "compared_article"
        return NOISY, "none"
    for text in texts:
        if _names(text, titles[-1]) and mentions(text, task.answers):
            return USEFUL, "answer"
    for text in texts:
        if any(_names(text, a) and _names(text, b) for a, b in zip(titles, titles[1:])):
            return USEFUL, "next_hop"
    return NOISY, "none"


def _episode_task_id(episode_id: str) -> str:
    return episode_id.rsplit("#", 1)[0]  # agents.evaluate.run_episodes names episodes "<task id>#<k>"


def collect_pairs(config: SimTuneConfig, tasks: Sequence[Task], env_tasks: Sequence[Task], backend: SearchBackend,
                  progress: bool = True) -> list[Pair]:
    """Run every agent of `config.agents` on `tasks` against `backend` and return one labelled pair
    per search it made (in the order the searches were made)."""
    from agents.commands.compare import build_agent
    from agents.evaluate import run_episodes
    from zerosearch_env import EnvConfig, make_vec

    env_config = EnvConfig(dataset=config.dataset, world_seed=config.world_seed, split="train",
                           top_k=config.resolved_top_k(), max_turns=config.max_turns,
                           max_doc_chars=config.max_doc_chars, seed=config.seed)
    by_id = {t.id: t for t in env_tasks}
    pairs: list[Pair] = []
    for spec in config.agents:
        agent = build_agent(spec, list(env_tasks), config.seed, config.agent_max_new_tokens)
        recorder = RecordingSearch(backend)
        vec = make_vec(min(config.num_envs, len(tasks)), env_config, backend=recorder, tasks=list(env_tasks))
        try:
            records = run_episodes(agent, vec, tasks, progress=progress, desc=f"sim-tune traffic ({spec})")
        finally:
            vec.close()
        em = {r["task_id"]: float(r["em"]) for r in records}
        for request, docs in recorder.calls:
            task = by_id.get(_episode_task_id(request.episode_id))
            if task is None:
                raise RuntimeError(f"a recorded search has an unknown episode id {request.episode_id!r}")
            pair = Pair(task.id, task.question, tuple(task.answers), tuple(task.supporting_titles), task.kind,
                        spec, request.query, int(request.top_k), request.episode_id, int(request.search_index),
                        [_doc_dict(d, config.max_doc_chars) for d in docs], trajectory_em=em.get(task.id))
            if config.label_rule == "reached":
                pair.label, pair.reason = label_pair(task, pair.docs())
            else:
                good = (pair.trajectory_em or 0.0) >= 1.0
                pair.label, pair.reason = (USEFUL, "trajectory_correct") if good else (NOISY, "trajectory_wrong")
            pairs.append(pair)
    return pairs


def _doc_dict(doc: Document, max_chars: int) -> dict:
    from zerosearch_env.search.simulator.parsing import _truncate

    text = _truncate(" ".join(doc.text.split()), max_chars)
    return {"id": doc.id, "title": " ".join(doc.title.split()), "text": text, "score": doc.score}


def balance_pairs(pairs: Sequence[Pair], balance: bool = True, max_per_class: int | None = None,
                  seed: int = 0) -> dict:
    """Mark the pairs to train on (`kept`): exact duplicates (query, label, document ids) and pairs
    without documents dropped, then (with `balance`) the larger class down-sampled to the smaller
    one's size, each class capped at `max_per_class`; seeded. Returns the counts."""
    seen: set = set()
    by_label: dict[str, list[Pair]] = {USEFUL: [], NOISY: []}
    duplicates = empty = 0
    for p in pairs:
        p.kept = False
        if not p.documents:
            empty += 1
            continue
        key = (" ".join(p.query.lower().split()), p.label, tuple(d["id"] for d in p.documents))
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        by_label[p.label].append(p)
    rng = random.Random(seed)
    target = {k: len(v) for k, v in by_label.items()}
    if balance:
        m = min(target.values())
        target = {k: m for k in target}
    if max_per_class is not None:
        target = {k: min(v, max_per_class) for k, v in target.items()}
    for label, group in by_label.items():
        for p in rng.sample(group, target[label]) if target[label] < len(group) else group:
            p.kept = True
    return {"duplicates_dropped": duplicates, "empty_dropped": empty,
            "distinct": {k: len(v) for k, v in by_label.items()}, "kept": dict(target)}


# --------------------------------------------------------------------------- rendering


class PromptOnlyEngine(LLMEngine):
    """An engine that renders nothing: it lets a `SimulatedSearch` build its prompts (for the
    training data) without loading a model. `generate` is an error."""

    name = "prompt-only"

    def generate(self, conversations, params: SamplingParams | None = None, *, seeds=None) -> list[str]:
        raise RuntimeError("PromptOnlyEngine only builds prompts; it cannot generate")


def prompt_simulator(config: SimTuneConfig, mode: str, engine: LLMEngine | None = None):
    """A `SimulatedSearch` whose every request draws `mode` (noise 0 or 1), with the prompt settings
    of `config`: its `prompt_messages(request)` is the training prompt of a pair of that label."""
    from curricula import ConstantCurriculum

    from zerosearch_env import EnvConfig
    from zerosearch_env.search.simulator import SimulatedSearch, knowledge_option

    env = EnvConfig(dataset=config.dataset, world_seed=config.world_seed, max_doc_chars=config.max_doc_chars)
    return SimulatedSearch(engine or PromptOnlyEngine(), curriculum=ConstantCurriculum(0.0 if mode == USEFUL else 1.0),
                           seed=config.world_seed, words_per_doc=config.words_per_doc,
                           max_doc_chars=config.max_doc_chars, knowledge=knowledge_option(env, config.knowledge),
                           prompt_style=config.prompt_style)


def format_target(documents: Sequence[dict], prompt_style: str) -> str:
    """The documents as the simulator's parser reads them: `Doc i (Title: t) text` lines for the
    default style, `Doc i: text` for the ZeroSearch styles (whose documents are untitled)."""
    from zerosearch_env.search.simulator.styles import DEFAULT_STYLE

    if prompt_style == DEFAULT_STYLE:
        return "\n".join(f"Doc {i} (Title: {d['title']}) {d['text']}" for i, d in enumerate(documents, 1))
    return "\n".join(f"Doc {i}: {d['text']}" for i, d in enumerate(documents, 1))


def render_example(pair: Pair, simulators: dict[str, Any], prompt_style: str) -> dict:
    """One SFT example (TRL's conversational prompt-completion form) for a labelled pair;
    `simulators`: label -> `prompt_simulator(config, label)`."""
    prompt: list[Message] = simulators[pair.label].prompt_messages(pair.request())
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": format_target(pair.documents, prompt_style)}],
            "label": pair.label, "reason": pair.reason, "query": pair.query, "task_id": pair.task_id, "agent": pair.agent}


# --------------------------------------------------------------------------- the data


def _load_data(config: SimTuneConfig) -> tuple[list[Task], list[Task], list | None]:
    from zerosearch_env.data import load_corpus, load_tasks
    from zerosearch_env.data.task import select_split

    all_tasks = load_tasks(config.dataset, "all", config.world_seed)
    try:
        train = select_split(all_tasks, "train", config.dataset)
    except ValueError as e:
        raise SimTuneError(f"no training questions in {config.dataset!r}: {e}") from None
    if config.n_questions and config.n_questions < len(train):
        train = random.Random(config.seed).sample(train, config.n_questions)
    documents = None
    if config.backend in ("bm25", "dense"):
        documents = load_corpus(config.dataset, config.world_seed, path=config.corpus)
    return all_tasks, train, documents


def real_backend(config: SimTuneConfig, documents=None) -> SearchBackend:
    """The real backend of `config.backend` (a simulator is refused: the data must be real)."""
    from agents.compare import build_backend, parse_backend_specs
    from zerosearch_env import EnvConfig

    try:
        specs = parse_backend_specs(config.backend)
    except ValueError as e:
        raise SimTuneError(f"backend: {e}") from None
    if len(specs) != 1 or specs[0].kind == "simulator":
        raise SimTuneError(f"backend {config.backend!r}: give one real backend: bm25, dense, retriever=URL or web")
    env = EnvConfig(dataset=config.dataset, world_seed=config.world_seed, top_k=config.resolved_top_k(),
                    max_doc_chars=config.max_doc_chars)
    return build_backend(specs[0], env, documents)


def build_data(config: SimTuneConfig, out: Path | None = None, progress: bool = True,
               backend: SearchBackend | None = None) -> tuple[list[Pair], list[dict], dict]:
    """Collect, label, balance and render: (pairs, examples, data card). With `out`, writes
    pairs.jsonl, train.jsonl, data_card.json and data_card.md there. `backend`: an already built
    real backend (not closed here); default `real_backend(config)`."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    all_tasks, train, documents = _load_data(config)
    if not train:
        raise SimTuneError(f"no training questions in {config.dataset!r}")
    own = backend is None
    backend = backend or real_backend(config, documents)
    try:
        pairs = collect_pairs(config, train, all_tasks, backend, progress)
        identity = backend.identity()
    finally:
        if own:
            backend.close()
    if not pairs:
        raise SimTuneError(f"no tuning data: the agents {config.agents} made no searches on {len(train)} questions")
    counts = balance_pairs(pairs, config.balance, config.max_per_class, config.seed)
    kept = [p for p in pairs if p.kept]
    if not kept:
        have = Counter(p.label for p in pairs)
        raise SimTuneError(f"no tuning data after balancing: {dict(have)} labelled pairs; balancing needs both "
                           "labels (add an agent whose searches miss, e.g. random, or pass --no-balance)")
    simulators = {label: prompt_simulator(config, label) for label in (USEFUL, NOISY)}
    examples = [render_example(p, simulators, config.prompt_style)
                for p in tqdm(kept, desc="sim-tune render", disable=not progress, leave=False)]
    card = data_card(config, pairs, counts, train, identity, time.perf_counter() - t0)
    if out is not None:
        write_data(out, pairs, examples, card)
    return pairs, examples, card


def data_card(config: SimTuneConfig, pairs: Sequence[Pair], counts: dict, train: Sequence[Task], backend_identity: str,
              seconds: float) -> dict:
    kept = [p for p in pairs if p.kept]

    def balance(ps) -> dict:
        c = Counter(p.label for p in ps)
        n = len(ps)
        return {"pairs": n, USEFUL: c[USEFUL], NOISY: c[NOISY], "useful_share": c[USEFUL] / n if n else None}

    rules = {"reached": "useful when a returned document names both ends of a link of the question's hop chain "
                        "(next hop, or the last hop's entity and a gold alias; for comparisons the compared "
                        "entity's article); noisy otherwise (agents.sim_tune.label_pair)",
             "trajectory": "useful when the episode's final answer was an exact match, noisy otherwise"}
    return {
        "label_rule": config.label_rule, "label_rule_text": rules[config.label_rule],
        "all_pairs": balance(pairs), "kept_pairs": balance(kept),
        "by_reason": dict(Counter(p.reason for p in pairs)), "kept_by_reason": dict(Counter(p.reason for p in kept)),
        "by_agent": {a: balance([p for p in pairs if p.agent == a]) for a in config.agents},
        "by_question_kind": {k: balance([p for p in pairs if p.question_kind == k])
                             for k in sorted({p.question_kind for p in pairs})},
        "balancing": counts,
        "sources": {"dataset": config.dataset, "world_seed": config.world_seed, "split": "train",
                    "questions": len(train), "questions_with_searches": len({p.task_id for p in pairs}),
                    "backend": config.backend, "backend_identity": backend_identity, "agents": list(config.agents),
                    "top_k": config.resolved_top_k(), "max_turns": config.max_turns},
        "prompt": {"prompt_style": config.prompt_style, "knowledge": config.knowledge, "words_per_doc": config.words_per_doc,
                   "max_doc_chars": config.max_doc_chars},
        "seed": config.seed, "build_seconds": seconds,
    }


def _write_jsonl(path: Path, rows) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_data(out: Path, pairs: Sequence[Pair], examples: Sequence[dict], card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "pairs.jsonl", (p.to_json() for p in pairs))
    _write_jsonl(out / "train.jsonl", examples)
    (out / "data_card.md").write_text(card_markdown(card), encoding="utf-8")
    (out / "data_card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")  # written last: marks the data done


def card_markdown(card: dict) -> str:
    a, k, s, p = card["all_pairs"], card["kept_pairs"], card["sources"], card["prompt"]

    def share(x) -> str:
        return "-" if x is None else f"{x:.3f}"

    lines = ["# sim-tune data card", "",
             f"Pairs (query, real documents) recorded from {', '.join(s['agents'])} on {s['questions']} training "
             f"questions of {s['dataset']} (world seed {s['world_seed']}) against {s['backend']} (top {s['top_k']}).", "",
             f"Label rule `{card['label_rule']}`: {card['label_rule_text']}.", "",
             "| | pairs | useful | noisy | useful share |", "|---|---|---|---|---|",
             f"| all | {a['pairs']} | {a['useful']} | {a['noisy']} | {share(a['useful_share'])} |",
             f"| trained on | {k['pairs']} | {k['useful']} | {k['noisy']} | {share(k['useful_share'])} |"]
    for name, b in card["by_agent"].items():
        lines.append(f"| agent {name} | {b['pairs']} | {b['useful']} | {b['noisy']} | {share(b['useful_share'])} |")
    lines += ["", f"Reasons: {card['by_reason']}; duplicates dropped {card['balancing']['duplicates_dropped']}, "
                  f"empty results dropped {card['balancing']['empty_dropped']}.",
              f"Prompt style `{p['prompt_style']}`, knowledge {p['knowledge'] or 'default'}, {p['words_per_doc']} words "
              f"per document; seed {card['seed']}.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- training


def _resolve_precision(precision: str, cuda: bool) -> bool:
    """True for bf16 (see `SimTuneConfig.precision`)."""
    import torch

    if precision == "fp32":
        return False
    if precision == "bf16":
        return True
    if cuda:
        return torch.cuda.is_bf16_supported()
    from zerosearch_env.models import cpu_supports_bf16

    return cpu_supports_bf16()


def resolve_gradient_checkpointing(config: SimTuneConfig, cuda: bool) -> bool:
    """Whether to train with gradient (activation) checkpointing: `config.gradient_checkpointing`
    when set, else on for a CPU run and off on CUDA.

    Why on by default on a CPU (issue 14: the 135M model must stay under 8 GB; SmolLM2-135M, full
    fine-tune, bf16 autocast, batch 4, sdpa attention, OMP_NUM_THREADS=1, world 0's 248 examples of
    295-706 tokens; peak RSS from getrusage, one fresh process each, 2 Dec 2026):

    - one step on the 4 shortest examples 3.01 GB, on the 4 longest 4.89 GB (eager attention 8.19 GB;
      the model loads with sdpa); with checkpointing, the 4 longest 3.01 GB;
    - over the run the resting RSS grows (glibc keeps freed activation memory in its heap): the first
      12 steps of the real run peaked at 6.56 GB without checkpointing (resting 3.6 -> 5.8 GB),
      4.39 GB with it (2.5 -> 3.6 GB), in about the same time (224 s vs 220 s); the whole 62-step run
      peaked at 9.01 GB without it (623 s), 5.87 GB with it (1063 s on the CPU shared with another
      training run; resting 2.5 -> 5.2 GB, still creeping, so much longer runs have less margin);
    - saving a checkpoint (optimizer state) did not raise the peak; malloc_trim after each step took
      the 12-step peak only to 6.06 GB; MALLOC_MMAP_THRESHOLD_=1048576 (big tensors mmapped, so
      returned when freed) kept the resting RSS flat at ~2.2 GB: 12-step peak 5.38 GB alone, 3.08 GB
      with checkpointing (that one took 322 s, not made a default here).

    On CUDA the activations are on the GPU, so the faster path stays the default there."""
    if config.gradient_checkpointing is not None:
        return config.gradient_checkpointing
    return not cuda


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2)  # kB on Linux


def train_simulator(config: SimTuneConfig, examples: Sequence[dict], out: Path, resume: bool = False,
                    progress: bool = True) -> dict:
    """Fine-tune the simulator model on `examples` with TRL's `SFTTrainer`; writes `out/model`
    (merged weights + tokenizer + prompt settings), `out/metrics.jsonl`, `out/loss.png`, and
    checkpoints under `out/trainer` (`resume`: continue from the last one). Returns a summary."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise SimTuneError("no examples to train on")
    source = config.model
    if source is None:
        from zerosearch_env.models import default_model_path

        source = str(default_model_path())
    if not Path(source).is_dir():
        raise SimTuneError(f"model {source!r}: no such folder (give a transformers model folder)")
    cuda = torch.cuda.is_available() and config.device != "cpu"
    bf16 = _resolve_precision(config.precision, cuda)
    checkpointing = resolve_gradient_checkpointing(config, cuda)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    trainer_dir = out / "trainer"
    checkpoints = sorted(trainer_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if trainer_dir.is_dir() else []
    resume_from = str(checkpoints[-1]) if resume and checkpoints else None
    args = SFTConfig(
        output_dir=str(trainer_dir), num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, warmup_steps=config.warmup,
        lr_scheduler_type=config.lr_scheduler, max_length=config.max_length, completion_only_loss=True,
        packing=False, bf16=bf16, use_cpu=not cuda, activation_checkpointing=checkpointing,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps, save_total_limit=2,
        report_to=[], seed=config.seed, data_seed=config.seed, disable_tqdm=not progress,
        dataloader_num_workers=0, shuffle_dataset=True,
    )
    rows = [{"prompt": e["prompt"], "completion": e["completion"]} for e in examples]
    metrics_path = out / "metrics.jsonl"
    if not resume_from and metrics_path.exists():
        metrics_path.unlink()

    class _Metrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                row = {"step": state.global_step, "epoch": state.epoch,
                       **{k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}}
                with metrics_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

    trainer = _completion_loss_trainer(SFTTrainer)(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        peft_config=peft_config, callbacks=[_Metrics()])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - t0
    trained = trainer.model
    base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    checkpointed = bool(base.is_activation_checkpointing)  # what the trained model ran with
    if config.lora:
        trained = trained.merge_and_unload()
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / _DONE).unlink(missing_ok=True)
    trained.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    settings = {"prompt_style": config.prompt_style, "knowledge": config.knowledge, "words_per_doc": config.words_per_doc,
                "max_doc_chars": config.max_doc_chars, "top_k": config.resolved_top_k(), "base_model": source,
                "label_rule": config.label_rule, "examples": len(examples), "steps": int(trainer.state.global_step)}
    (model_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    (model_dir / _DONE).write_text("ok\n", encoding="utf-8")
    plot_loss(metrics_path, out / "loss.png")
    return {"steps": int(trainer.state.global_step), "train_loss": float(result.training_loss),
            "train_seconds": seconds, "resumed_from": resume_from, "bf16": bf16, "lora": config.lora,
            "gradient_checkpointing": checkpointed,
            "device": "cuda" if cuda else "cpu", "peak_rss_gb": _peak_rss_gb(), "model_dir": str(model_dir)}


def _completion_loss_trainer(sft_trainer_cls):
    """`SFTTrainer` whose loss runs the LM head on the completion's positions only (TRL's fused
    head scores every position on a CPU, the prompt included: on this CPU 5x the work of the
    documents alone and most of the memory). Same loss: the mean negative log-likelihood of the
    completion tokens over the accumulation window."""
    import torch
    import torch.nn.functional as F

    class CompletionLossSFTTrainer(sft_trainer_cls):
        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.accelerator.num_processes > 1 or hasattr(model, "module"):
                # a distributed wrapper syncs gradients through its own forward: TRL's loss keeps it
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            device = inputs["input_ids"].device
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
                hidden = getattr(base, base.base_model_prefix)(
                    input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False,
                ).last_hidden_state[:, :-1][mask]
                logits = base.get_output_embeddings()(hidden)
            logits = logits.float()
            target = labels[mask]
            count = num_items_in_batch if num_items_in_batch is not None else mask.sum() * self.args.gradient_accumulation_steps
            loss = F.cross_entropy(logits, target, reduction="sum") / torch.as_tensor(count, device=device).clamp(min=1)
            with torch.no_grad():
                n = int(mask.sum())
                if n:
                    mode = "train" if model.training else "eval"
                    self._metrics[mode]["mean_token_accuracy"].append(float((logits.argmax(-1) == target).float().mean()))
            return (loss, None) if return_outputs else loss

    return CompletionLossSFTTrainer


def plot_loss(metrics_path: Path, path: Path) -> None:
    """The training loss (and learning rate) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_jsonl(metrics_path) if metrics_path.exists() else []
    rows = [r for r in rows if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    if any("learning_rate" in r for r in rows):
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in rows if "learning_rate" in r], [r["learning_rate"] for r in rows if "learning_rate" in r],
                 color="grey", lw=0.8, ls="--", label="learning rate")
        ax2.set_ylabel("learning rate")
    ax.set_title("zerosearch sim-tune")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- the whole run


def _check_resume(config: SimTuneConfig, out: Path, resume: bool) -> bool:
    """Whether `out` holds data to reuse; errors for a folder holding another run."""
    saved = out / "config.json"
    if not saved.exists():
        if out.exists() and any(out.iterdir()):
            raise SimTuneError(f"{out} is not empty and holds no sim-tune run; choose another --out")
        return False
    if not resume:
        raise SimTuneError(f"{out} already holds a sim-tune run; pass --resume to continue it, or choose another --out")
    try:
        old = SimTuneConfig.model_validate_json(saved.read_text(encoding="utf-8"))
    except ValueError as e:
        raise SimTuneError(f"{saved}: not a sim-tune config ({e})") from None
    diff = sorted(k for k, v in config.model_dump().items() if old.model_dump()[k] != v)
    if diff:
        raise SimTuneError(f"--resume: the settings differ from the run in {out}: {', '.join(diff)} "
                           "(resume with the same settings, or choose another --out)")
    return (out / "data_card.json").exists() and (out / "train.jsonl").exists()


def run_sim_tune(config: SimTuneConfig, out: str | Path, resume: bool = False, progress: bool = True,
                 log=print) -> dict:
    """Build the data (or reuse it on `resume`), then fine-tune; returns {card, training, out}."""
    out = Path(out)
    have_data = _check_resume(config, out, resume)
    if resume and (out / "model" / _DONE).exists():
        log(f"sim-tune: {out / 'model'} is already complete; nothing to do")
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8")) if (out / "summary.json").exists() else {}
        return {"out": str(out), "card": json.loads((out / "data_card.json").read_text(encoding="utf-8")),
                "training": summary.get("training"), "skipped": True}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.model_dump_json(indent=2), encoding="utf-8")
    if have_data:
        examples = _read_jsonl(out / "train.jsonl")
        card = json.loads((out / "data_card.json").read_text(encoding="utf-8"))
        log(f"sim-tune: reusing the data in {out} ({len(examples)} examples)")
    else:
        _, examples, card = build_data(config, out, progress)
    k = card["kept_pairs"]
    log(f"sim-tune data: {card['all_pairs']['pairs']} pairs ({card['all_pairs']['useful']} useful, "
        f"{card['all_pairs']['noisy']} noisy; rule {card['label_rule']}); training on {k['pairs']} "
        f"({k['useful']} useful, {k['noisy']} noisy) in the {config.prompt_style} prompt style")
    training = train_simulator(config, examples, out, resume=resume, progress=progress)
    summary = {"out": str(out), "card": card, "training": training}
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary

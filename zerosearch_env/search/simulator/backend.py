"""`SimulatedSearch`: an LLM writes the search results (the ZeroSearch idea), with a noise
curriculum, a knowledge source and a verification gate.

For every search call the backend draws *useful* or *noisy* with probability `p_noisy =
curriculum.probability(step)`. The draw is one uniform number per call, hashed from
`(seed, episode_id, search_index)`, so it is reproducible and identical for all group members
that issue the same call.

What the simulator may know about a query comes from its knowledge source
(`zerosearch_env.search.knowledge`): the built-in world's facts for the entities the query names
("world"), ZeroSearch's hop-aware answer hint ("answer_hint"), or nothing ("none"). A useful prompt
asks for what a good engine returns for this query, written from that knowledge; a noisy prompt
for plausible documents around the query that state none of it (`prompts.grounded_messages`).
`prompt_style` picks how a request is put to the engine and its output read (`styles`): our
grounded prompt ("default"), or ZeroSearch's formats: the input its fine-tuned checkpoints were
trained on ("zerosearch-sft") and its un-tuned one-shot prompt ("zerosearch-prompt").

All requests of one `search()` call go to the engine in ONE `generate` call. The gate
(`gate.check`) then verifies every result against the knowledge: leakage (the final answer only
where the query reached it, never in noisy results), consistency with the world's facts, and
relevance. Failing results are regenerated together (one more engine call per round, new sampling
seed) up to `max_regenerations` times, then replaced by a fallback written from the knowledge's
facts alone (`gate.fallback_documents`; no engine call) or, with `repair=False`, flagged;
`fallback_unit="document"` replaces only the documents that fail a per-document check and keeps
the engine's others (`gate.mixed_documents`; gate "partial"). Engine
failures (an exception, a timeout, None or empty text) count as failing results, are counted
(`engine_failures`) and warned about above `engine_failure_warn` of the outputs; they never pass.

`knowledge="oracle"` keeps the behaviour from before knowledge sources as an ablation (the transfer
experiment's baseline): the gold answer in every useful prompt whatever the query, the
answer-checking gate, and its repair (`oracle.repair`: the answer sentence inserted, or the alias
redacted).
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest
from zerosearch_env.search.knowledge import KNOWLEDGE_SOURCES, AnswerHintKnowledge, Knowledge, KnowledgeSource
from zerosearch_env.search.simulator.gate import (ENGINE_FAILURE, GATE_VERSION, check, fallback_documents,
                                                  mixed_documents, title_documents)
from zerosearch_env.search.simulator.noise import NOISY, USEFUL, draw_mode, request_seed
from zerosearch_env.search.simulator.oracle import _alias_tokens, gate_passes, repair
from zerosearch_env.search.simulator.parsing import default_title, doc_id, parse_documents, parse_segments
from zerosearch_env.search.simulator.prompts import (GROUNDED_PROMPT_VERSION, PROMPT_VERSION, build_messages,
                                                     grounded_messages)
from zerosearch_env.search.simulator.styles import (DEFAULT_STYLE, STYLE_VERSIONS, ZEROSEARCH_DOCS, ZEROSEARCH_WORDS,
                                                    check_style, style_messages, style_segments)

logger = logging.getLogger(__name__)

ORACLE = "oracle"
KNOWLEDGE_OPTIONS = (*KNOWLEDGE_SOURCES, ORACLE)

if TYPE_CHECKING:  # pragma: no cover
    from zerosearch_env.config import EnvConfig

@dataclass(slots=True)
class _Job:
    """One request's progress through generation and the gate."""

    request: SearchRequest
    mode: str
    p_noisy: float
    knowledge: Knowledge | None  # None for the oracle ablation
    messages: list[Message]
    k: int
    docs: list[Document]
    attempts: int = 0
    gate: str = "pending"
    reason: str | None = None  # the check the last attempt failed
    engine_failed: bool = False  # the last attempt's engine output was missing or empty
    own: int | None = None  # how many leading documents the engine wrote (None: all of them)


_COUNTERS = ("requests", "useful", "noisy", "useful_first_pass", "noisy_first_pass", "useful_gated", "noisy_gated",
             "ungated", "regenerations", "repairs", "flags", "engine_calls", "empty_results", "fallbacks",
             "engine_outputs", "engine_failures", "engine_failure_fallbacks", "failed_leak", "failed_consistency", "failed_unsupported",
             "failed_relevance", "failed_answer_missing", "failed_engine_failure", "failed_answer",
             "failed_prompt_echo", "partial_fallbacks", "kept_documents")
FALLBACK_UNITS = ("result", "document")


class SimulatedSearch(SearchBackend):
    """Search results written by an LLM from what it knows about the query, useful or noisy on a
    curriculum, checked by a gate against that knowledge.

    Args:
        engine: any `LLMEngine` (transformers, an OpenAI-compatible server, vLLM).
        curriculum: a `curricula.Curriculum` giving p(noisy) per training step (default constant 0).
        knowledge: what the simulator knows about a query: a `KnowledgeSource`
            (`WorldKnowledge(world)`, "world": the built-in world's facts for the entities the
            query names; `AnswerHintKnowledge()`, "answer_hint": the question, and the gold answer
            once the query reaches the answer-bearing article; `NoKnowledge()`, "none": the
            engine's own memory), or "oracle": the behaviour before knowledge sources (the answer
            in every useful prompt, the answer-checking gate and its repair), kept only as an
            ablation. Default `AnswerHintKnowledge()`; `from_config` picks "world" for the
            built-in world (`knowledge_for_env`).
        seed: seeds the useful/noisy draw (and is part of `identity()`).
        words_per_doc: the document length asked for.
        max_regenerations: regeneration rounds for results that fail the gate.
        gate: run the verification gate at all; repair: replace results that still fail after the
            regenerations by the knowledge fallback (oracle: repair them) (True) or flag them (False).
        sampling: the engine's sampling parameters; `max_new_tokens` defaults to a budget for
            `top_k * words_per_doc` words.
        max_doc_chars: each document's text is capped at this many characters.
        engine_failure_warn: warn (`warnings.warn` and the log) once the share of engine outputs
            that failed exceeds this, over at least 8 outputs.
        prompt_style: how requests are put to the engine (`styles.PROMPT_STYLES`): "default" (the
            grounded prompt), "zerosearch-sft" (the input ZeroSearch's fine-tuned simulator
            checkpoints were trained on; one user message, `Doc i:` output) or "zerosearch-prompt"
            (ZeroSearch's un-tuned one-shot style). The ZeroSearch styles ask for five documents of
            about 30 words (`words_per_doc` applies to "default" only); see `simulator.styles`.
        fallback_unit: what a failing result loses to the knowledge fallback: "result" (all its
            documents) or "document" (only those that fail a per-document check: leak, prompt
            echo, consistency, support; the engine's passing documents stay first, the fallback
            fills the rest, and the whole result falls back when the mix still fails the gate).

    Per-request info (`search_with_info`): mode, p_noisy, knowledge (the source's name), gate
    ("pass", "fallback", "partial", "flagged", "ungated"; oracle: "repaired"), attempts, fallback (some
    or all documents are the knowledge fallback), own_documents (how many leading documents the
    engine wrote), reason (the check the last attempt failed, or None), engine_failure (the last
    attempt's engine output was missing). `stats()` counts them.
    """

    name = "simulator"

    def __init__(
        self,
        engine: LLMEngine,
        curriculum: Any = None,
        seed: int = 0,
        words_per_doc: int = 40,
        max_regenerations: int = 2,
        gate: bool = True,
        repair: bool = True,
        sampling: SamplingParams | None = None,
        max_doc_chars: int = 600,
        knowledge: KnowledgeSource | str | None = None,
        engine_failure_warn: float = 0.2,
        prompt_style: str = DEFAULT_STYLE,
        fallback_unit: str = "result",
    ):
        if not isinstance(engine, LLMEngine):
            raise TypeError(f"engine must be an LLMEngine, got {type(engine).__name__}")
        if curriculum is None:
            from curricula import ConstantCurriculum

            curriculum = ConstantCurriculum(0.0)
        if not callable(getattr(curriculum, "probability", None)):
            raise TypeError("curriculum must have a probability(step) method")
        if words_per_doc < 1 or max_regenerations < 0 or max_doc_chars < 16:
            raise ValueError("need words_per_doc >= 1, max_regenerations >= 0, max_doc_chars >= 16")
        if knowledge is None:
            knowledge = AnswerHintKnowledge()
        if isinstance(knowledge, str) and knowledge != ORACLE:
            raise ValueError(f"knowledge must be a KnowledgeSource or {ORACLE!r}, got {knowledge!r} "
                             "(build a named source with knowledge_from_config)")
        if not isinstance(knowledge, str) and not isinstance(knowledge, KnowledgeSource):
            raise TypeError(f"knowledge must be a KnowledgeSource, got {type(knowledge).__name__}")
        self.engine = engine
        self.curriculum = curriculum
        self.knowledge: KnowledgeSource | None = None if knowledge == ORACLE else knowledge
        self.seed = int(seed)
        self.words_per_doc = int(words_per_doc)
        self.max_regenerations = int(max_regenerations)
        self.gate = bool(gate)
        self.repair = bool(repair)
        self.sampling = sampling
        self.max_doc_chars = int(max_doc_chars)
        self.engine_failure_warn = float(engine_failure_warn)
        self.prompt_style = check_style(prompt_style)
        if fallback_unit not in FALLBACK_UNITS:
            raise ValueError(f"fallback_unit must be one of {', '.join(FALLBACK_UNITS)}, got {fallback_unit!r}")
        self.fallback_unit = fallback_unit
        self._warned = False
        self._step = 0
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    @property
    def oracle(self) -> bool:
        """True for the oracle ablation (`knowledge="oracle"`)."""
        return self.knowledge is None

    @property
    def knowledge_name(self) -> str:
        return ORACLE if self.knowledge is None else self.knowledge.name

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, config: "EnvConfig", curriculum: Any = None) -> SearchBackend:
        """Build from `config.backend_options` (a `curriculum` object, when given, is used as is
        instead of the options' spec: the trainer shares its own, see `make_backend`):

        engine ("transformers" | "openai" | "vllm"), model (path/name; default small model),
        base_urls / api_key (openai), device / dtype (transformers), curriculum (a spec dict for
        `curricula.from_spec`), knowledge ("world" | "answer_hint" | "none" | "oracle"; default
        "world" for the built-in world, "answer_hint" for a loaded data set, see
        `knowledge_for_env`; "oracle" is the ablation), seed (default `config.world_seed`),
        words_per_doc, max_regenerations, gate, repair, temperature, top_p, max_new_tokens,
        engine_failure_warn, prompt_style ("default" | "zerosearch-sft" | "zerosearch-prompt"),
        fallback_unit ("result" | "document"), and cache_dir (wrap the simulator in a `CachedSearch` there).
        """
        opts = dict(config.backend_options)
        known = {"engine", "model", "base_urls", "api_key", "device", "dtype", "curriculum", "seed",
                 "words_per_doc", "max_regenerations", "gate", "repair", "temperature", "top_p",
                 "max_new_tokens", "cache_dir", "engine_options", "knowledge", "engine_failure_warn",
                 "prompt_style", "fallback_unit"}
        unknown = set(opts) - known
        if unknown:
            raise ValueError(f"simulator: unknown backend_options {sorted(unknown)}; known: {sorted(known)}")
        knowledge = knowledge_option(config, opts.get("knowledge"))
        prompt_style = check_style(opts.get("prompt_style", DEFAULT_STYLE))
        engine = make_engine(opts.get("engine", "transformers"), opts)
        if curriculum is None and opts.get("curriculum") is not None:
            from curricula import from_spec

            curriculum = from_spec(opts["curriculum"])
        sampling = None
        if any(key in opts for key in ("temperature", "top_p", "max_new_tokens")):
            base = SamplingParams()
            sampling = SamplingParams(
                max_new_tokens=int(opts.get("max_new_tokens", base.max_new_tokens)),
                temperature=float(opts.get("temperature", base.temperature)),
                top_p=float(opts.get("top_p", base.top_p)),
                seed=base.seed,
            )
        backend: SearchBackend = cls(
            engine, curriculum=curriculum, seed=int(opts.get("seed", config.world_seed)),
            words_per_doc=int(opts.get("words_per_doc", 40)),
            max_regenerations=int(opts.get("max_regenerations", 2)), gate=bool(opts.get("gate", True)),
            repair=bool(opts.get("repair", True)), sampling=sampling, max_doc_chars=config.max_doc_chars,
            knowledge=knowledge, engine_failure_warn=float(opts.get("engine_failure_warn", 0.2)),
            prompt_style=prompt_style, fallback_unit=str(opts.get("fallback_unit", "result")),
        )
        if opts.get("cache_dir"):
            from zerosearch_env.search.cache import CachedSearch

            backend = CachedSearch(backend, opts["cache_dir"])
        return backend

    # ------------------------------------------------------------------ SearchBackend API
    def identity(self) -> str:
        engine = getattr(self.engine, "name", type(self.engine).__name__)
        version = PROMPT_VERSION if self.oracle else GROUNDED_PROMPT_VERSION
        knowledge = ORACLE if self.knowledge is None else self.knowledge.identity()
        # the default style adds nothing, so caches filled before prompt styles stay valid
        style = "" if self.prompt_style == DEFAULT_STYLE else f"|style={self.prompt_style}:{STYLE_VERSIONS[self.prompt_style]}"
        return (f"{self.name}|{version}|engine={engine}|words={self.words_per_doc}|seed={self.seed}"
                f"|gate={int(self.gate)}:{GATE_VERSION}:{self.max_regenerations}:{int(self.repair)}|chars={self.max_doc_chars}"
                f"|knowledge={knowledge}|sampling={self._params(3)!r}{style}"
                + ("" if self.fallback_unit == "result" else f"|fallback={self.fallback_unit}"))

    def set_training_step(self, step: int) -> None:
        self._step = int(step)

    @property
    def training_step(self) -> int:
        return self._step

    def p_noisy(self, step: int | None = None) -> float:
        """The curriculum's noisy probability at `step` (default: the current training step)."""
        p = float(self.curriculum.probability(self._step if step is None else int(step)))
        return min(1.0, max(0.0, p))

    def mode_of(self, request: SearchRequest) -> tuple[str, float]:
        """(mode, p_noisy) for one request: the call's single reproducible draw."""
        p = self.p_noisy(request.step)
        return draw_mode(p, self.seed, request.episode_id, request.search_index, request.query), p

    def call_info(self, request: SearchRequest) -> dict:
        mode, p = self.mode_of(request)
        return {"mode": mode, "p_noisy": p}

    def cache_key_fields(self, request: SearchRequest) -> tuple:
        """What a cache must key on: everything the documents are written from (the knowledge is a
        function of these and of `identity()`); the episode and index matter only through the
        mode draw."""
        mode, _ = self.mode_of(request)
        return (request.query, request.top_k, mode, request.question or "", tuple(request.answers),
                tuple(request.supporting_titles))

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self.search_with_info(requests)[0]

    def prompt_messages(self, request: SearchRequest) -> list[Message]:
        """The messages the engine gets for `request` (its mode drawn as a search would draw it)."""
        return self._job(request).messages

    def _job(self, request: SearchRequest) -> _Job:
        mode, p = self.mode_of(request)
        k = max(1, int(request.top_k))
        knowledge = None if self.knowledge is None else self.knowledge.lookup(request)
        if self.prompt_style != DEFAULT_STYLE:
            if knowledge is None:  # the oracle ablation: the request's question and gold answer
                question, answer = request.question, (request.answers[0] if request.answers else None)
            else:
                question, answer = knowledge.question, knowledge.answer_hint
            messages = style_messages(self.prompt_style, request.query, mode, question, answer)
        elif knowledge is None:
            messages = build_messages(request, mode, k, self.words_per_doc)
        else:
            messages = grounded_messages(request, knowledge, mode, k, self.words_per_doc)
        return _Job(request, mode, p, knowledge, messages, k, [])

    def _verdict(self, job: _Job) -> str | None:
        """The check the job's current documents fail (None: they pass). The oracle ablation checks
        the gold answer only, as before knowledge sources (its engine failures are counted, not gated)."""
        if job.knowledge is None:
            return None if gate_passes(job.docs, job.request.answers, job.mode) else "answer"
        if job.engine_failed:
            return ENGINE_FAILURE
        return check(job.docs, job.knowledge, job.mode)

    def search_with_info(self, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
        requests = list(requests)
        for r in requests:
            if not isinstance(r, SearchRequest):
                raise TypeError(f"expected SearchRequest, got {type(r).__name__}")
        if not requests:
            return [], []
        jobs = [self._job(r) for r in requests]
        counts = dict.fromkeys(_COUNTERS, 0)
        counts["requests"] = len(jobs)
        self._generate(jobs, attempt=0, counts=counts)
        for job in jobs:
            counts[job.mode] += 1
            # the oracle gate checks the gold answer: without one there is nothing to check
            if not self.gate or (self.oracle and not _alias_tokens(job.request.answers)):
                job.gate = "ungated"
                counts["ungated"] += 1
                continue
            counts[f"{job.mode}_gated"] += 1
            job.reason = self._verdict(job)
            if job.reason is None:
                job.gate = "pass"
                counts[f"{job.mode}_first_pass"] += 1
        for attempt in range(1, self.max_regenerations + 1):
            failing = [j for j in jobs if j.gate == "pending"]
            if not failing:
                break
            counts["regenerations"] += len(failing)
            self._generate(failing, attempt=attempt, counts=counts)
            for job in failing:
                job.reason = self._verdict(job)
                if job.reason is None:
                    job.gate = "pass"
        for job in jobs:
            if job.gate != "pending":
                continue
            counts[f"failed_{job.reason}"] += 1
            if not self.repair:
                job.gate = "flagged"
                counts["flags"] += 1
            elif job.knowledge is None:
                job.docs = repair(job.docs, job.request, job.mode, self.max_doc_chars)[: job.k]
                job.gate = "repaired"
                counts["repairs"] += 1
            else:
                mixed = (mixed_documents(job.docs, job.knowledge, job.mode, job.k, self.max_doc_chars)
                         if self.fallback_unit == "document" and not job.engine_failed else None)
                if mixed is not None:
                    job.docs, job.own = mixed
                    job.gate = "partial"
                    counts["partial_fallbacks"] += 1
                    counts["kept_documents"] += job.own
                    continue
                job.docs, job.own = fallback_documents(job.knowledge, job.mode, job.k, self.max_doc_chars), 0
                job.gate = "fallback"
                counts["fallbacks"] += 1
                counts["engine_failure_fallbacks"] += job.engine_failed
        counts["empty_results"] = sum(1 for j in jobs if not j.docs)
        with self._lock:
            for key, v in counts.items():
                self._counts[key] += v
            outputs, failures = self._counts["engine_outputs"], self._counts["engine_failures"]
            warn = not self._warned and outputs >= 8 and failures / outputs > self.engine_failure_warn
            self._warned = self._warned or warn
        if warn:
            message = (f"simulator engine {getattr(self.engine, 'name', '?')}: {failures} of {outputs} outputs failed "
                       f"(exception, timeout, None or empty text; above {self.engine_failure_warn:.0%}); their results "
                       "are marked engine_failure in the info, see stats()['engine_failures']")
            logger.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        infos = [{"mode": j.mode, "p_noisy": j.p_noisy, "knowledge": self.knowledge_name, "gate": j.gate,
                  "attempts": j.attempts, "fallback": j.gate in ("fallback", "partial"),
                  "own_documents": len(j.docs) if j.own is None else j.own,
                  "reason": None if j.gate in ("pass", "ungated") else j.reason, "engine_failure": j.engine_failed}
                 for j in jobs]
        return [j.docs for j in jobs], infos

    def stats(self) -> dict:
        """Cumulative counters, first-try gate pass rates per mode, the fallback share (of
        requests) and the engine-failure share (of engine outputs). `failed_<check>` counts the
        results that still failed a check after the regenerations (then replaced or flagged);
        `engine_failure_fallbacks` those of them whose last engine output was missing."""
        with self._lock:
            c = dict(self._counts)
        for mode in (USEFUL, NOISY):
            gated = c[f"{mode}_gated"]
            c[f"{mode}_first_pass_rate"] = c[f"{mode}_first_pass"] / gated if gated else None
        c["fallback_share"] = c["fallbacks"] / c["requests"] if c["requests"] else None
        c["partial_share"] = c["partial_fallbacks"] / c["requests"] if c["requests"] else None
        c["engine_failure_share"] = c["engine_failures"] / c["engine_outputs"] if c["engine_outputs"] else None
        c["knowledge"] = self.knowledge_name
        c["prompt_style"] = self.prompt_style
        c["p_noisy"] = self.p_noisy()
        c["training_step"] = self._step
        return c

    def close(self) -> None:
        self.engine.close()

    # ------------------------------------------------------------------ helpers
    def _params(self, k: int) -> SamplingParams:
        if self.sampling is not None:
            return self.sampling
        words = self.words_per_doc
        if self.prompt_style != DEFAULT_STYLE:  # the ZeroSearch styles always ask for five of 30 words
            k, words = ZEROSEARCH_DOCS, ZEROSEARCH_WORDS
        # about 1.6 tokens per English word plus the "Doc i (Title: ...)" headers
        return SamplingParams(max_new_tokens=int(k * (words * 1.6 + 16)), temperature=0.7, top_p=0.95, seed=0)

    def _generate(self, jobs: list[_Job], attempt: int, counts: dict) -> None:
        """ONE engine call for all `jobs`, each seeded by `request_seed` (a new seed per retry
        round); unseeded (`sampling.seed` None) sampling stays unseeded. An engine exception
        (a timeout, a server error) fails every job of the call; a None or empty text fails its
        job; both are counted as engine failures."""
        params = self._params(max(j.k for j in jobs))
        if attempt:
            params = replace(params, temperature=max(params.temperature, 0.7))
        seeds = None if params.seed is None else [
            request_seed(self.seed, params.seed, self.cache_key_fields(j.request), attempt) for j in jobs]
        counts["engine_calls"] += 1
        counts["engine_outputs"] += len(jobs)
        try:
            texts = self.engine.generate([j.messages for j in jobs], params, seeds=seeds)
        except Exception as exc:  # noqa: BLE001 - an engine's failure is counted and surfaced, see the docstring
            logger.warning("simulator engine %s failed on %d prompts: %r", getattr(self.engine, "name", "?"), len(jobs), exc)
            texts = [None] * len(jobs)
        if len(texts) != len(jobs):
            raise RuntimeError(f"engine {getattr(self.engine, 'name', '?')} returned {len(texts)} texts for {len(jobs)} prompts")
        for job, text in zip(jobs, texts):
            job.attempts += 1
            job.engine_failed = not (isinstance(text, str) and text.strip())
            counts["engine_failures"] += job.engine_failed
            text = text if isinstance(text, str) else ""
            if self.prompt_style != DEFAULT_STYLE:
                segments = style_segments(text, job.k, self.max_doc_chars)
                if job.knowledge is None:  # the oracle ablation titles untitled documents with the query
                    segments = [(title or default_title(job.request.query), body) for title, body in segments]
                    job.docs = [Document(id=doc_id(title, body), title=title, text=body) for title, body in segments]
                else:
                    job.docs = title_documents(segments, job.knowledge, job.request.query)
            elif job.knowledge is None:
                job.docs = parse_documents(text, job.k, job.request.query, self.max_doc_chars)
            else:
                job.docs = title_documents(parse_segments(text, job.k, self.max_doc_chars), job.knowledge,
                                           job.request.query)


def knowledge_option(config: "EnvConfig", name: str | None = None) -> KnowledgeSource | str:
    """The `knowledge` argument for `config`'s data set from the option `name` ("world",
    "answer_hint", "none", "oracle"; None: "world" for the built-in world, else "answer_hint")."""
    from zerosearch_env.search.knowledge import knowledge_for_env

    if name is not None and name not in KNOWLEDGE_OPTIONS:
        raise ValueError(f"simulator: unknown knowledge {name!r}; choose one of {', '.join(KNOWLEDGE_OPTIONS)}")
    return ORACLE if name == ORACLE else knowledge_for_env(config, name)


def make_engine(kind: str, opts: dict) -> LLMEngine:
    """An engine from `backend_options` ("transformers", "openai" or "vllm")."""
    extra = dict(opts.get("engine_options") or {})
    if kind == "transformers":
        from zerosearch_env.engines import TransformersEngine

        for key in ("device", "dtype"):
            if key in opts:
                extra[key] = opts[key]
        return TransformersEngine(opts.get("model"), **extra)
    if kind == "openai":
        from zerosearch_env.engines import OpenAIEngine

        if not opts.get("base_urls"):
            raise ValueError("simulator engine 'openai' needs backend_options.base_urls")
        if opts.get("api_key") is not None:
            extra["api_key"] = opts["api_key"]
        return OpenAIEngine(opts["base_urls"], opts.get("model") or "default", **extra)
    if kind == "vllm":
        from zerosearch_env.engines import VLLMEngine

        return VLLMEngine(opts.get("model"), **extra)
    raise ValueError(f"unknown simulator engine {kind!r}; choose 'transformers', 'openai' or 'vllm'")

"""`SimulatedSearch`: an LLM writes the search results (the ZeroSearch idea), with a noise
curriculum and a verification gate.

For every search call the backend draws *useful* or *noisy* with probability `p_noisy =
curriculum.probability(step)`. The draw is one uniform number per call, hashed from
`(seed, episode_id, search_index)`, so it is reproducible and identical for all group members
that issue the same call. A useful prompt carries the gold answer and asks for documents that
state it; a noisy prompt asks for plausible documents that do not help.

All requests of one `search()` call go to the engine in ONE `generate` call. The verification
gate (not in ZeroSearch, whose simulator invents wrong facts) then checks every result: a useful
result must contain a normalised gold alias in at least one document, a noisy one must contain
none. Failing results are regenerated together (one more engine call per round, new sampling seed)
up to `max_regenerations` times, then repaired (useful: a sentence stating the answer goes at the
front of the first document; noisy: the alias is redacted) or, with `repair=False`, flagged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest
from zerosearch_env.search.simulator.gate import _alias_tokens, gate_passes, repair
from zerosearch_env.search.simulator.noise import NOISY, USEFUL, draw_mode, request_seed
from zerosearch_env.search.simulator.parsing import parse_documents
from zerosearch_env.search.simulator.prompts import PROMPT_VERSION, build_messages

if TYPE_CHECKING:  # pragma: no cover
    from zerosearch_env.config import EnvConfig

@dataclass(slots=True)
class _Job:
    """One request's progress through generation and the gate."""

    request: SearchRequest
    mode: str
    p_noisy: float
    messages: list[Message]
    k: int
    docs: list[Document]
    attempts: int = 0
    gate: str = "pending"


_COUNTERS = ("requests", "useful", "noisy", "useful_first_pass", "noisy_first_pass", "useful_gated", "noisy_gated",
             "ungated", "regenerations", "repairs", "flags", "engine_calls", "empty_results")


class SimulatedSearch(SearchBackend):
    """Search results written by an LLM, useful or noisy on a curriculum, checked by a gate.

    Args:
        engine: any `LLMEngine` (transformers, an OpenAI-compatible server, vLLM).
        curriculum: a `curricula.Curriculum` giving p(noisy) per training step (default constant 0).
        seed: seeds the useful/noisy draw (and is part of `identity()`).
        words_per_doc: the document length asked for.
        max_regenerations: regeneration rounds for results that fail the gate.
        gate: run the verification gate at all; repair: repair (True) or flag (False) results that
            still fail after the regenerations.
        sampling: the engine's sampling parameters; `max_new_tokens` defaults to a budget for
            `top_k * words_per_doc` words.
        max_doc_chars: each document's text is capped at this many characters.
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
        self.engine = engine
        self.curriculum = curriculum
        self.seed = int(seed)
        self.words_per_doc = int(words_per_doc)
        self.max_regenerations = int(max_regenerations)
        self.gate = bool(gate)
        self.repair = bool(repair)
        self.sampling = sampling
        self.max_doc_chars = int(max_doc_chars)
        self._step = 0
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, config: "EnvConfig", curriculum: Any = None) -> SearchBackend:
        """Build from `config.backend_options` (a `curriculum` object, when given, is used as is
        instead of the options' spec: the trainer shares its own, see `make_backend`):

        engine ("transformers" | "openai" | "vllm"), model (path/name; default small model),
        base_urls / api_key (openai), device / dtype (transformers), curriculum (a spec dict for
        `curricula.from_spec`), seed (default `config.world_seed`), words_per_doc,
        max_regenerations, gate, repair, temperature, top_p, max_new_tokens, and cache_dir (wrap
        the simulator in a `CachedSearch` there).
        """
        opts = dict(config.backend_options)
        known = {"engine", "model", "base_urls", "api_key", "device", "dtype", "curriculum", "seed",
                 "words_per_doc", "max_regenerations", "gate", "repair", "temperature", "top_p",
                 "max_new_tokens", "cache_dir", "engine_options"}
        unknown = set(opts) - known
        if unknown:
            raise ValueError(f"simulator: unknown backend_options {sorted(unknown)}; known: {sorted(known)}")
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
        )
        if opts.get("cache_dir"):
            from zerosearch_env.search.cache import CachedSearch

            backend = CachedSearch(backend, opts["cache_dir"])
        return backend

    # ------------------------------------------------------------------ SearchBackend API
    def identity(self) -> str:
        engine = getattr(self.engine, "name", type(self.engine).__name__)
        return (f"{self.name}|{PROMPT_VERSION}|engine={engine}|words={self.words_per_doc}|seed={self.seed}"
                f"|gate={int(self.gate)}:{self.max_regenerations}:{int(self.repair)}|chars={self.max_doc_chars}"
                f"|sampling={self._params(3)!r}")

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
        """What a cache must key on: the episode and index matter only through the mode draw."""
        mode, _ = self.mode_of(request)
        return (request.query, request.top_k, mode, request.question or "", tuple(request.answers))

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self.search_with_info(requests)[0]

    def search_with_info(self, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
        requests = list(requests)
        for r in requests:
            if not isinstance(r, SearchRequest):
                raise TypeError(f"expected SearchRequest, got {type(r).__name__}")
        if not requests:
            return [], []
        jobs = []
        for r in requests:
            mode, p = self.mode_of(r)
            k = max(1, int(r.top_k))
            jobs.append(_Job(r, mode, p, build_messages(r, mode, k, self.words_per_doc), k, []))
        counts = dict.fromkeys(_COUNTERS, 0)
        counts["requests"] = len(jobs)
        self._generate(jobs, attempt=0, counts=counts)
        for job in jobs:
            counts[job.mode] += 1
            if not self.gate or not _alias_tokens(job.request.answers):
                job.gate = "ungated"
                counts["ungated"] += 1
                continue
            counts[f"{job.mode}_gated"] += 1
            if gate_passes(job.docs, job.request.answers, job.mode):
                job.gate = "pass"
                counts[f"{job.mode}_first_pass"] += 1
        for attempt in range(1, self.max_regenerations + 1):
            failing = [j for j in jobs if j.gate == "pending"]
            if not failing:
                break
            counts["regenerations"] += len(failing)
            self._generate(failing, attempt=attempt, counts=counts)
            for job in failing:
                if gate_passes(job.docs, job.request.answers, job.mode):
                    job.gate = "pass"
        for job in jobs:
            if job.gate != "pending":
                continue
            if self.repair:
                job.docs = repair(job.docs, job.request, job.mode, self.max_doc_chars)[: job.k]
                job.gate = "repaired"
                counts["repairs"] += 1
            else:
                job.gate = "flagged"
                counts["flags"] += 1
        counts["empty_results"] = sum(1 for j in jobs if not j.docs)
        with self._lock:
            for key, v in counts.items():
                self._counts[key] += v
        infos = [{"mode": j.mode, "p_noisy": j.p_noisy, "gate": j.gate, "attempts": j.attempts} for j in jobs]
        return [j.docs for j in jobs], infos

    def stats(self) -> dict:
        """Cumulative counters plus first-try gate pass rates per mode."""
        with self._lock:
            c = dict(self._counts)
        for mode in (USEFUL, NOISY):
            gated = c[f"{mode}_gated"]
            c[f"{mode}_first_pass_rate"] = c[f"{mode}_first_pass"] / gated if gated else None
        c["p_noisy"] = self.p_noisy()
        c["training_step"] = self._step
        return c

    def close(self) -> None:
        self.engine.close()

    # ------------------------------------------------------------------ helpers
    def _params(self, k: int) -> SamplingParams:
        if self.sampling is not None:
            return self.sampling
        # about 1.6 tokens per English word plus the "Doc i (Title: ...)" headers
        return SamplingParams(max_new_tokens=int(k * (self.words_per_doc * 1.6 + 16)), temperature=0.7, top_p=0.95, seed=0)

    def _generate(self, jobs: list[_Job], attempt: int, counts: dict) -> None:
        """ONE engine call for all `jobs`, each seeded by `request_seed` (a new seed per retry
        round); unseeded (`sampling.seed` None) sampling stays unseeded."""
        params = self._params(max(j.k for j in jobs))
        if attempt:
            params = replace(params, temperature=max(params.temperature, 0.7))
        seeds = None if params.seed is None else [
            request_seed(self.seed, params.seed, self.cache_key_fields(j.request), attempt) for j in jobs]
        texts = self.engine.generate([j.messages for j in jobs], params, seeds=seeds)
        counts["engine_calls"] += 1
        if len(texts) != len(jobs):
            raise RuntimeError(f"engine {getattr(self.engine, 'name', '?')} returned {len(texts)} texts for {len(jobs)} prompts")
        for job, text in zip(jobs, texts):
            job.docs = parse_documents(text if isinstance(text, str) else "", job.k, job.request.query, self.max_doc_chars)
            job.attempts += 1


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

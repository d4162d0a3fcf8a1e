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

import hashlib
import json
import re
import string
import threading
import unicodedata
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from zerosearch_env.engines.base import LLMEngine, Message, SamplingParams
from zerosearch_env.rewards import normalize_answer
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

if TYPE_CHECKING:  # pragma: no cover
    from zerosearch_env.config import EnvConfig

PROMPT_VERSION = "sim-v1"
USEFUL, NOISY = "useful", "noisy"
REDACTED = "[redacted]"

# --------------------------------------------------------------------------- the noise draw


def noise_uniform(seed: int, episode_id: str, search_index: int, query: str = "") -> float:
    """A uniform number in [0, 1) from blake2b of (seed, episode_id, search_index).

    Requests without an episode id (direct `search` calls) are keyed by their query instead, so two
    different anonymous queries do not share one draw. Never uses Python's salted `hash()`.
    """
    key = episode_id if episode_id else "\x00query:" + query
    digest = hashlib.blake2b(f"{int(seed)}\x1f{key}\x1f{int(search_index)}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / float(1 << 64)


def draw_mode(p_noisy: float, seed: int, episode_id: str, search_index: int, query: str = "") -> str:
    """"noisy" when the call's uniform draw falls below `p_noisy`, else "useful"."""
    return NOISY if noise_uniform(seed, episode_id, search_index, query) < p_noisy else USEFUL


def request_seed(seed: int, sampling_seed: int, key_fields: tuple, attempt: int) -> int:
    """The sampling seed of one request's generation round: 63 bits of blake2b over the simulator's
    seed, the sampling seed, the request's `cache_key_fields` (what its documents are written from:
    query, top_k, mode, question, gold answers) and the regeneration round. Not the episode, the
    step or the position in the batch, so a request's documents do not depend on the batch it
    shares and a cache's de-duplication changes nothing. Never uses Python's salted `hash()`."""
    blob = json.dumps([int(seed), int(sampling_seed), list(key_fields), int(attempt)], ensure_ascii=False,
                      separators=(",", ":"))
    return int.from_bytes(hashlib.blake2b(blob.encode("utf-8"), digest_size=8).digest(), "big") >> 1


# --------------------------------------------------------------------------- prompts

_SYSTEM = (
    "You are a web search engine. For a search query you write the result documents the engine "
    "returns: short, factual-sounding encyclopedia or news passages. Output only the documents."
)


def build_messages(request: SearchRequest, mode: str, k: int, words_per_doc: int) -> list[Message]:
    """The chat prompt asking for `k` documents of about `words_per_doc` words in `mode`."""
    lines = [f"Search query: {request.query}"]
    if request.question:
        lines.append(f"The searcher is trying to answer: {request.question}")
    if mode == USEFUL:
        if request.answers:
            lines.append(f"The correct answer is: {request.answers[0]}")
            task = (f"Write {k} documents of about {words_per_doc} words each that are relevant to the query. "
                    f"At least one document must clearly state that the answer is {request.answers[0]}.")
        else:
            task = f"Write {k} documents of about {words_per_doc} words each that are relevant to the query."
    else:
        task = (f"Write {k} documents of about {words_per_doc} words each that look relevant to the query "
                "but do not contain the answer to the question: mention related names, places and dates, "
                "never the answer itself.")
    lines.append(task)
    lines.append("Use exactly this format, one document per line:")
    lines.extend(f"Doc {i} (Title: <title>) <text>" for i in range(1, min(k, 3) + 1))
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


# --------------------------------------------------------------------------- parsing

_HEADER = re.compile(
    r"""^[ \t>*_#\-]*
        (?: (?:doc(?:ument)?|result|passage|source|article)[ \t]*\#?[ \t]*(?P<n1>\d{1,3})(?!\d)
          | \[(?P<n2>\d{1,3})\]
          | (?P<n3>\d{1,3})[.):](?!\d)
        )[ \t*_]*""",
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
# "Doc 2: ..." / "Document 2 (Title: ...)" in the middle of a line (small models run documents together)
_INLINE_HEADER = re.compile(r"(?<![\w])(?:doc(?:ument)?)[ \t]*#?[ \t]*(?P<n1>\d{1,3})(?!\d)[ \t*_]*(?=[:(\-\u2013\u2014])",
                            re.IGNORECASE)
_TITLE_PAREN = re.compile(r"^[\s:\-\u2013\u2014|]*\(\s*title\s*:\s*(?P<t>[^)\n]*)\)", re.IGNORECASE)
_TITLE_LABEL = re.compile(r"^[\s:\-\u2013\u2014|]*\**title\**\s*:\s*(?P<t>[^\n]*?)\s*(?:\n|(?=\b(?:text|content|body)\s*:)|$)",
                          re.IGNORECASE)
_TITLE_BOLD = re.compile(r"^[\s:\-\u2013\u2014|]*(?:\*\*|__)(?P<t>[^*_\n]{1,200})(?:\*\*|__)[ \t]*[:\-\u2013\u2014]?", re.IGNORECASE)
_TITLE_HASH = re.compile(r"^\s*#{1,6}[ \t]+(?P<t>[^\n]{1,200})\n")
_BODY_LABEL = re.compile(r"^[\s:\-\u2013\u2014|]*\**(?:text|content|body|snippet)\**\s*:\s*", re.IGNORECASE)
_LEADING_SEP = re.compile(r"^[\s:\-\u2013\u2014|.]+")
_PREAMBLE = re.compile(r"^(?:sure|here (?:are|is)|certainly|of course|okay|ok)\b", re.IGNORECASE)
_PLACEHOLDERS = {"<text>", "<title>", "text", "<title> <text>", "(title: <title>) <text>"}
_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*$", re.MULTILINE)


def _clean(text: str) -> str:
    return " ".join(text.replace("**", "").replace("__", "").split())


def _truncate(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def _split_title(segment: str, numbered: bool) -> tuple[str | None, str]:
    """(title or None, body) of one document's raw text."""
    for pattern in (_TITLE_PAREN, _TITLE_LABEL, _TITLE_BOLD, _TITLE_HASH):
        m = pattern.match(segment)
        if m and _clean(m.group("t")):
            return _clean(m.group("t")), segment[m.end():]
    if numbered:
        # "Doc 2 - Some Title" on its own line, followed by the body on the next lines
        first, sep, rest = segment.strip().partition("\n")
        first = first.strip(" \t:-\u2013\u2014|")
        if sep and rest.strip() and first and len(first.split()) <= 12 and not first.endswith((".", "!", "?")):
            return _clean(first), rest
    return None, segment


def _is_preamble(paragraph: str) -> bool:
    words = paragraph.split()
    return len(words) < 25 and (paragraph.rstrip().endswith(":") or bool(_PREAMBLE.match(paragraph.strip())))


def _segments(text: str) -> tuple[list[str], bool]:
    """Raw per-document segments and whether the text was numbered."""
    found = {m.start(): m for m in _HEADER.finditer(text)}
    for m in _INLINE_HEADER.finditer(text):
        if not any(h.start() <= m.start() < h.end() for h in found.values()):
            found[m.start()] = m
    headers = [found[pos] for pos in sorted(found)]
    if headers:
        segs = [text[m.end(): (headers[i + 1].start() if i + 1 < len(headers) else len(text))]
                for i, m in enumerate(headers)]
        return segs, True
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]
    if len(paragraphs) == 1:
        lines = [ln for ln in paragraphs[0].splitlines() if ln.strip()]
        if len(lines) > 1 and all(len(ln.split()) >= 8 for ln in lines):
            paragraphs = lines
    return [p for p in paragraphs if not _is_preamble(p)], False


def doc_id(title: str, text: str) -> str:
    """A deterministic id from the document's content."""
    return "sim-" + hashlib.blake2b(f"{title}\n{text}".encode("utf-8"), digest_size=8).hexdigest()


def default_title(query: str) -> str:
    """The title given to a document that has none: the query, cleaned and capped."""
    return _truncate(_clean(query), 80) or "Search result"


def parse_documents(text: str, k: int, query: str = "", max_doc_chars: int = 600) -> list[Document]:
    """Parse generated text into at most `k` documents, never inventing any.

    Understands "Doc 1: ...", "Doc 1 (Title: T) ...", "Document 1 ...", "1. ...", "1) ...",
    "[1] ...", markdown decorations, "Title: T" lines, bold or heading titles, and unnumbered
    paragraphs (a leading "Here are ...:" preamble is dropped). Too many documents are truncated to
    `k`; too few are returned as they are; empty output gives []. Each text is capped at
    `max_doc_chars`. Titles default to the query.
    """
    if not isinstance(text, str) or k <= 0:
        return []
    text = _FENCE.sub("", unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n"))
    if not text.strip():
        return []
    segments, numbered = _segments(text)
    docs: list[Document] = []
    for seg in segments:
        title, body = _split_title(seg, numbered)
        body = _BODY_LABEL.sub("", _LEADING_SEP.sub("", body), count=1)
        body = _truncate(_clean(body), max_doc_chars)
        if not body or body.lower() in _PLACEHOLDERS:
            continue  # empty, or the prompt's format line echoed back
        title = _truncate(title, 200) if title and title.lower() not in _PLACEHOLDERS else default_title(query)
        docs.append(Document(id=doc_id(title, body), title=title, text=body))
        if len(docs) == k:
            break
    return docs


# --------------------------------------------------------------------------- the gate


def _alias_tokens(answers: Sequence[str]) -> list[list[str]]:
    out, seen = [], set()
    for a in answers:
        toks = normalize_answer(a).split() if isinstance(a, str) else []
        if toks and tuple(toks) not in seen:
            seen.add(tuple(toks))
            out.append(toks)
    return out


def _contains_seq(tokens: list[str], seq: list[str]) -> bool:
    n = len(seq)
    first = seq[0]
    return any(tokens[i] == first and tokens[i:i + n] == seq for i in range(len(tokens) - n + 1))


def doc_contains_answer(doc: Document, answers: Sequence[str]) -> bool:
    """True when a normalised gold alias occurs, as a whole token sequence, in the title or text."""
    aliases = _alias_tokens(answers)
    if not aliases:
        return False
    tokens = normalize_answer(f"{doc.title} \n {doc.text}").split()
    return any(_contains_seq(tokens, a) for a in aliases)


def contains_answer(docs: Sequence[Document], answers: Sequence[str]) -> bool:
    """True when any document contains a gold alias (see `doc_contains_answer`)."""
    return any(doc_contains_answer(d, answers) for d in docs)


def gate_passes(docs: Sequence[Document], answers: Sequence[str], mode: str) -> bool:
    """Useful results must contain an alias somewhere; noisy results must contain none."""
    found = contains_answer(docs, answers)
    return found if mode == USEFUL else not found


_PUNCT_CHARS = set(string.punctuation) | {"\u2018", "\u2019", "\u201c", "\u201d", "\u2013", "\u2014"}


def _normalized_tokens_with_spans(text: str) -> list[tuple[str, int, int]]:
    """`normalize_answer`'s tokens of `text`, each with its (start, end) span in `text`."""
    tokens: list[tuple[str, int, int]] = []
    cur: list[str] = []
    start = end = -1
    for i, ch in enumerate(text):
        piece = unicodedata.normalize("NFKC", ch).lower()
        piece = "".join(c for c in piece if c not in _PUNCT_CHARS)
        if not piece:
            continue  # punctuation vanishes without splitting a token, as in normalize_answer
        for c in piece:
            if c.isspace():
                if cur:
                    tokens.append(("".join(cur), start, end))
                    cur = []
            else:
                if not cur:
                    start = i
                cur.append(c)
                end = i + 1
    if cur:
        tokens.append(("".join(cur), start, end))
    return [t for t in tokens if t[0] not in ("a", "an", "the")]


def redact_answers(text: str, answers: Sequence[str], placeholder: str = REDACTED) -> str:
    """Replace every occurrence of a gold alias (matched after normalisation) with `placeholder`."""
    aliases = sorted(_alias_tokens(answers), key=len, reverse=True)
    if not aliases or not text:
        return text
    toks = _normalized_tokens_with_spans(text)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(toks):
        for a in aliases:
            n = len(a)
            if [t[0] for t in toks[i:i + n]] == a:
                spans.append((toks[i][1], toks[i + n - 1][2]))
                i += n
                break
        else:
            i += 1
    for s, e in reversed(spans):
        text = text[:s] + placeholder + text[e:]
    return text


def answer_sentence(request: SearchRequest) -> str:
    """The sentence a repair inserts into a useful result."""
    answer = request.answers[0]
    if request.question:
        q = " ".join(request.question.split()).rstrip("?. ")
        return f"The answer to \"{q}\" is {answer}."
    return f"The answer is {answer}."


def repair(docs: list[Document], request: SearchRequest, mode: str, max_doc_chars: int) -> list[Document]:
    """Make a failing result pass the gate.

    Useful: the answer sentence goes at the front of the first document (a new document titled by
    the query when there is none), so truncation cannot cut it. Noisy: every alias is redacted from
    titles and texts; a document that would still leak (exotic unicode) is dropped.
    """
    if mode == USEFUL:
        sentence = answer_sentence(request)
        if not docs:
            title = default_title(request.query)
            text = _truncate(sentence, max_doc_chars)
            return [Document(id=doc_id(title, text), title=title, text=text)]
        first = docs[0]
        text = _truncate(f"{sentence} {first.text}", max_doc_chars)
        return [Document(id=doc_id(first.title, text), title=first.title, text=text), *docs[1:]]
    out = []
    for d in docs:
        title = redact_answers(d.title, request.answers)
        text = redact_answers(d.text, request.answers)
        fixed = Document(id=doc_id(title, text), title=title, text=text)
        if not doc_contains_answer(fixed, request.answers):
            out.append(fixed)
    return out


# --------------------------------------------------------------------------- the backend


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

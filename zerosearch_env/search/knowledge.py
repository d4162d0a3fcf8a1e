"""Knowledge sources: what the simulator may know about ONE search query.

The simulator writes its documents from a `Knowledge` record, which a `KnowledgeSource` builds
from the request; the gate later checks documents against the same record (relevance: a queried
entity is named; consistency: no known (subject, relation) gets another object; leakage: the final
answer appears only where `reached_answer` allows it). Three sources:

- `WorldKnowledge(world)` ("world", the default for the built-in world): the query is linked to
  world entities by name (`EntityLinker`), and the knowledge is the facts of the articles a search
  engine returns for it: each linked entity's own article and, up to `top_k` articles in all, the
  articles that name a linked entity (a search for a book finds its author's article, which says
  "... wrote <book>"). Only what the query reaches is known: an entity the query does not name
  contributes nothing unless its article names one that it does, and a garbage query gets nothing.
  The question and the gold answer are never given (a real engine sees only the query); the answer
  is in the facts only where a reached article states it. Measured on world 0 (test split, 478
  bridge questions, top_k 3; tests/test_knowledge.py::test_first_hop_answer_rate_close_to_bm25):
  a query naming the first-hop subject reaches the final answer for 0.389 of the questions against
  0.387 in BM25's top 3, with the same pattern per template (0.22 person_employer_year, 0 for
  person_birth_country and org_country, 0.9-1.0 for the rest: the answer-bearing article names
  the first-hop entity); with `related=False` (own articles only) 0.000; a query naming an
  unrelated question's subject 0.002 against BM25's 0.004.
- `AnswerHintKnowledge()` ("answer_hint", ZeroSearch's way; the default for loaded data sets): the
  question, and the gold answer as a hint, hop-aware where the request carries its task's
  `supporting_titles` (hop order; the last one is the answer-bearing article): the hint is given
  only when the query names the answer-bearing article's title; before that the question alone.
  A request without hop information gets the hint unconditionally, as ZeroSearch gives it.
- `NoKnowledge()` ("none"): nothing; the engine writes from its own memory (a large model on
  real-world questions). `reached_answer` is None: the source cannot tell.

`knowledge_from_config` builds one by name (the `backend_options.knowledge` option);
`knowledge_for_env` picks the default for an `EnvConfig`'s data set.

The linker (`EntityLinker`) matches names after folding case, punctuation, possessives, diacritics
and odd unicode (fullwidth forms, zero-width and soft-hyphen characters, non-breaking spaces). An
entity links when the query holds one of its *distinctive* tokens (a name token no other entity's
name has, of 3+ characters, not a stop word or generic word such as "river" or "guild"), or all
content tokens of one of its names. A surname alone, a river's or organisation's stem alone, or
extra words around a name therefore link; a shared given name or "guild" alone does not, nor does
a misspelt name (as with BM25). Measured on world 0 (tests/test_knowledge.py, 600 sampled entities
x 12 perturbations: case, punctuation, possessive, hyphen, diacritics, fullwidth, zero-width and
no-break characters, extra words, partial name, ...): recall 1.000, precision 1.000 (no other
entity linked); 400 entity-free questions and sentences and 20,094 English words (SmolLM2's
vocabulary) link nothing. The index is built once per world (0.2-0.7 s); a link costs about
0.1 ms and a whole lookup about 0.5 ms per query on one core.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence, runtime_checkable

from zerosearch_env.rewards import normalize_answer
from zerosearch_env.search.base import SearchRequest

if TYPE_CHECKING:  # pragma: no cover
    from zerosearch_env.config import EnvConfig
    from zerosearch_env.data.world import Entity, World

__all__ = ["Fact", "Knowledge", "KnowledgeSource", "EntityLinker", "WorldKnowledge", "AnswerHintKnowledge",
           "NoKnowledge", "KNOWLEDGE_SOURCES", "knowledge_from_config", "knowledge_for_env", "name_tokens", "answer_tokens",
           "mentions"]

# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Fact:
    """One structured fact, as stated by the article titled `source`, with its sentence."""

    subject: str
    relation: str
    object: str
    source: str
    sentence: str


@dataclass(frozen=True)
class Knowledge:
    """What the simulator may know for one query.

    entities: names the query links to, best first. facts: what the reached articles state.
    question / answer_hint: given to the simulator only where the source allows. reached_answer:
    True when the answer may appear in the results (the query reached the fact or article that
    holds it), False when it must not, None when the source cannot tell (`NoKnowledge`).
    answers: the gold aliases, for the gate's leakage check only (never put in a prompt).
    known: (normalised subject name or alias, relation) -> accepted objects (normalised names and
    aliases), for every entity the knowledge mentions: a document giving another object for a
    known pair contradicts the world (`contradicts`). texts: the reached articles' full text
    (facts and the world's descriptive sentences), for the gate's support check only.
    source: the knowledge source's name.
    """

    source: str
    entities: tuple[str, ...] = ()
    facts: tuple[Fact, ...] = ()
    question: str | None = None
    answer_hint: str | None = None
    reached_answer: bool | None = False
    answers: tuple[str, ...] = ()
    known: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    texts: tuple[str, ...] = ()

    @property
    def sentences(self) -> tuple[str, ...]:
        return tuple(f.sentence for f in self.facts)

    @property
    def is_empty(self) -> bool:
        return not (self.entities or self.facts or self.question or self.answer_hint)

    def contradicts(self, subject: str, relation: str, obj: str) -> bool | None:
        """True when `subject`'s `relation` is known and `obj` is not one of its objects, False when
        it is, None when the pair is unknown (nothing to check against)."""
        accepted = self.known.get((_norm(subject), relation))
        if accepted is None:
            return None
        return _norm(obj) not in accepted


@runtime_checkable
class KnowledgeSource(Protocol):
    """Builds the `Knowledge` for one request; `identity()` changes when lookups would differ."""

    name: str

    def lookup(self, request: SearchRequest) -> Knowledge: ...

    def identity(self) -> str: ...


# --------------------------------------------------------------------------- names and tokens

# Letters that NFKD does not decompose into a base letter plus marks.
_TRANSLIT = str.maketrans({"ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ð": "d", "Ð": "d",
                           "ß": "ss", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "þ": "th", "Þ": "th", "ı": "i"})
_POSSESSIVE = re.compile(r"(?<=\w)['\u2019\u02bc]s\b")
_APOSTROPHES = re.compile(r"['\u2019\u02bc`\u00b4]")
_WORD = re.compile(r"[^\W_]+")

STOPWORDS = frozenset(
    "a an and are as at be but by for from if in into is it its no not of on or such that the their then "
    "there these they this to was were will with which who whom whose what when where why how did does do "
    "about after before".split())
# Category words that appear in many names; they never link an entity on their own.
GENERIC_WORDS = frozenset(
    "river city town county state states united kingdom republic national international university college "
    "school institute company society foundation guild academy trust press bank works observatory "
    "conservatory church party club film album song band book novel series season war battle lake mountain "
    "island north south east west new old great saint st san family house hall street road park station "
    "museum award prize league team cup world".split())


def _fold(text: str) -> str:
    """`text` with compatibility forms (fullwidth, ligatures) folded, possessives, apostrophes,
    diacritics, zero-width and other format characters removed."""
    text = unicodedata.normalize("NFKC", str(text))
    text = _APOSTROPHES.sub("", _POSSESSIVE.sub("", text)).translate(_TRANSLIT)
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")


def name_tokens(text: str) -> list[str]:
    """Lower-case letter/digit tokens of `_fold(text)` (punctuation splits tokens: names)."""
    return _WORD.findall(_fold(text).casefold())


def answer_tokens(text: str) -> list[str]:
    """The tokens answers are compared on: `rewards.normalize_answer` (the EM normalisation:
    punctuation dropped without splitting, so "U.S.A." is "usa"; articles dropped) of `_fold(text)`."""
    return normalize_answer(_fold(text)).split()


def _norm(text: str) -> str:
    return " ".join(t for t in name_tokens(text) if t not in ("a", "an", "the"))


def _contains(tokens: Sequence[str], seq: Sequence[str]) -> bool:
    n = len(seq)
    return n > 0 and any(list(tokens[i:i + n]) == list(seq) for i in range(len(tokens) - n + 1))


def _alias_sequences(answers: Sequence[str]) -> list[list[str]]:
    return [seq for seq in (answer_tokens(a) for a in answers if isinstance(a, str)) if seq]


def mentions(text: str, answers: Sequence[str]) -> bool:
    """True when an alias of `answers` occurs in `text` as a whole token sequence (`answer_tokens`).
    The project's one answer-containment rule: the gate's leakage check, answer-in-results in
    evaluation and fidelity (`agents.evaluate.holds_answer`, `simulator.doc_contains_answer`)."""
    tokens = answer_tokens(text)
    return any(_contains(tokens, seq) for seq in _alias_sequences(answers))


class EntityLinker:
    """Links text to the keys of `names` (key -> its surface names: name and aliases).

    The index (token -> keys) is built once; `link` costs a few dictionary look-ups per query
    token. See the module docstring for the rule and its measured precision and recall.
    """

    def __init__(self, names: Mapping[str, Sequence[str]]):
        self._names: dict[str, list[tuple[str, ...]]] = {}
        by_token: dict[str, set[str]] = {}
        for key, surfaces in names.items():
            content = []
            for surface in surfaces:
                toks = tuple(t for t in name_tokens(surface) if t not in STOPWORDS)
                if toks and toks not in content:
                    content.append(toks)
            self._names[key] = content
            for toks in content:
                for t in toks:
                    by_token.setdefault(t, set()).add(key)
        self._by_token = {t: frozenset(keys) for t, keys in by_token.items()}
        self._distinctive = {key: frozenset(t for toks in content for t in toks
                                            if len(self._by_token[t]) == 1 and len(t) >= 3 and t not in GENERIC_WORDS)
                             for key, content in self._names.items()}

    def knows(self, key: str) -> bool:
        return key in self._names

    def link(self, text: str) -> list[str]:
        """Keys named by `text`, best first (a whole name before a partial one, then more matched
        tokens, then earlier in the text)."""
        tokens = name_tokens(text)
        position: dict[str, int] = {}
        for i, t in enumerate(tokens):
            position.setdefault(t, i)
        scored = []
        for key in {k for t in position for k in self._by_token.get(t, ())}:
            whole = any(all(t in position for t in toks) for toks in self._names[key])
            if not whole and not (self._distinctive[key] & position.keys()):
                continue
            matched = [position[t] for toks in self._names[key] for t in toks if t in position]
            scored.append((not whole, -len(set(matched)), min(matched), key))
        return [key for *_, key in sorted(scored)]


# --------------------------------------------------------------------------- the world


# Relations whose fact the OBJECT's article states as well (generate_world writes "X founded the
# <org>", "X wrote <book>" into the person's article and "The <river> flows through X" into the
# city's); tests check every fact against its source article's text.
_STATED_BY_OBJECT = frozenset({"founded_by", "written_by", "flows_through"})
# Attributes that duplicate a relation, or are spelled by the name itself.
_SKIPPED_ATTRS = frozenset({"birth_year", "founded_year", "published", "kind"})
_SENTENCES = {
    "located_in": "{s} is a city in {o}.",
    "capital": "The capital of {s} is {o}.",
    "flows_through": "{s} flows through the city of {o}.",
    "born_in": "{s} was born in {o}.",
    "birth_year": "{s} was born in {o}.",
    "member_of": "{s} worked for {o}.",
    "founded_by": "{s} was founded by {o}.",
    "founded_year": "{s} was founded in {o}.",
    "headquartered_in": "{s} is headquartered in {o}.",
    "written_by": "{s} was written by {o}.",
    "published_year": "{s} was published in {o}.",
    "currency": "The currency of {s} is the {o}.",
    "landscape": "{s} is known for its {o}.",
    "population": "{s} has about {o} inhabitants.",
    "established": "{s} was established around the year {o}.",
    "length_km": "{s} is about {o} kilometres long.",
    "sea": "{s} flows into the {o}.",
    "occupation": "{s} was a {o}.",
    "staff": "{s} employs about {o} people.",
    "genre": "{s} is a {o}.",
}


def _ref(entity: "Entity") -> str:
    """The entity as running text names it ("the Skofith River", "the Velmora Guild")."""
    return f"the {entity.name}" if entity.type in ("river", "organisation") else entity.name


def _sentence(relation: str, subject: "Entity", obj: str) -> str:
    if relation not in _SENTENCES:
        raise KeyError(f"no sentence template for the world relation {relation!r}")
    text = _SENTENCES[relation].format(s=_ref(subject), o=obj)
    return text[0].upper() + text[1:]


class WorldKnowledge:
    """Knowledge from the built-in world's facts for the entities a query names.

    related: besides the linked entities' own articles, give the facts of the articles that name
    them, up to the request's `top_k` articles in all (what a search engine returns); False gives
    the linked entities' own articles only (all of them).
    """

    name = "world"

    def __init__(self, world: "World", related: bool = True):
        self.world = world
        self.related = bool(related)
        self._identity = f"world:{world.seed}:{world.fingerprint()[:12]}:related={int(self.related)}"
        self._entities = {e.id: e for e in world.entities}
        self.linker = EntityLinker({e.id: (e.name, *e.aliases) for e in world.entities})
        self._by_name = {e.name: e.id for e in world.entities}
        article_len = {d.id: len(d.text) for d in world.documents}
        self._text = {d.id: d.text for d in world.documents}
        stated: dict[str, list[Fact]] = {eid: [] for eid in self._entities}  # article id -> its facts
        about: dict[str, list[Fact]] = {eid: [] for eid in self._entities}   # subject id -> its facts
        touches: dict[str, dict[str, int]] = {eid: {} for eid in self._entities}  # entity -> article -> facts
        for e in world.entities:
            for key, value in e.attrs:
                if key not in _SKIPPED_ATTRS:
                    shown = f"{value:,}" if key == "population" else str(value)
                    fact = Fact(e.name, key, shown, e.name, _sentence(key, e, shown))
                    stated[e.id].append(fact)
                    about[e.id].append(fact)
        for r in world.relations:
            subject = self._entities[r.subject]
            obj = self._entities.get(r.object) if isinstance(r.object, str) else None
            shown = _ref(obj) if obj is not None else str(r.object)
            articles = [subject.id] + ([obj.id] if obj is not None and r.predicate in _STATED_BY_OBJECT else [])
            for article in articles:
                fact = Fact(subject.name, r.predicate, obj.name if obj is not None else shown,
                            self._entities[article].name, _sentence(r.predicate, subject, shown))
                stated[article].append(fact)
                if article == subject.id:
                    about[subject.id].append(fact)
                for eid in {subject.id, obj.id if obj is not None else subject.id} - {article}:
                    touches[eid][article] = touches[eid].get(article, 0) + 1
        self._stated = {k: tuple(v) for k, v in stated.items()}
        self._about = {k: tuple(v) for k, v in about.items()}
        self._tokens = {f: answer_tokens(f.sentence) for facts in stated.values() for f in facts}
        surfaces = {e.name: frozenset(_norm(x) for x in (e.name, *e.aliases)) for e in world.entities}
        # entity -> ((subject alias, relation), accepted objects) for each of its facts
        self._known = {eid: tuple(((alias, f.relation), surfaces.get(f.object, frozenset({_norm(f.object)})))
                                  for f in facts for alias in surfaces[f.subject])
                       for eid, facts in self._about.items()}
        # articles naming an entity, as an engine ranks them: more mentions, then shorter, then id
        self._naming = {eid: tuple(sorted(arts, key=lambda a: (-arts[a], article_len.get(a, 0), a)))
                        for eid, arts in touches.items()}

    def identity(self) -> str:
        return self._identity

    def entity_facts(self, name: str) -> tuple[Fact, ...]:
        """Every fact whose subject is the entity titled `name` (a KeyError for a name the world
        lacks), whatever the query."""
        return self._about[self._by_name[name]]

    def article_facts(self, title: str) -> tuple[Fact, ...]:
        """The facts the article titled `title` states (a KeyError for a title the world lacks)."""
        return self._stated[self._by_name[title]]

    def _articles(self, linked: list[str], top_k: int) -> list[str]:
        """Entity ids of the articles a query linked to `linked` reaches, best first."""
        if not self.related:
            return linked
        chosen = list(linked[: max(1, top_k)])
        for eid in linked:
            for article in self._naming[eid]:
                if len(chosen) >= top_k:
                    return chosen
                if article not in chosen:
                    chosen.append(article)
        return chosen

    def lookup(self, request: SearchRequest) -> Knowledge:
        linked = self.linker.link(request.query)
        facts: list[Fact] = []
        seen: set[tuple[str, str, str]] = set()
        articles = self._articles(linked, max(1, int(request.top_k)))
        for article in articles:
            for f in self._stated[article]:
                if (f.subject, f.relation, f.object) not in seen:
                    seen.add((f.subject, f.relation, f.object))
                    facts.append(f)
        mentioned = {self._by_name[n] for f in facts for n in (f.subject, f.object) if n in self._by_name}
        known: dict[tuple[str, str], frozenset[str]] = {}
        for eid in mentioned | set(linked):
            for pair, accepted in self._known[eid]:
                known[pair] = known.get(pair, frozenset()) | accepted
        aliases = _alias_sequences(request.answers)
        reached = any(_contains(self._tokens[f], seq) for f in facts for seq in aliases)
        return Knowledge(source=self.name, entities=tuple(self._entities[e].name for e in linked), facts=tuple(facts),
                         reached_answer=reached, answers=tuple(request.answers), known=known,
                         texts=tuple(self._text[a] for a in articles if a in self._text))


# --------------------------------------------------------------------------- answer hint and none


class AnswerHintKnowledge:
    """The question, and the gold answer where the query has reached the answer-bearing article
    (the request's last `supporting_titles` entry); requests without them always get the hint.

    world: resolve titles with the world's names (its linker: aliases, shared tokens); without
    one, each request's titles are linked among themselves (a title is named by a distinctive
    token of its own or by all its content tokens).
    """

    name = "answer_hint"

    def __init__(self, world: "World | None" = None):
        self.linker = None if world is None else EntityLinker({e.name: (e.name, *e.aliases) for e in world.entities})

    def identity(self) -> str:
        return f"{self.name}:world_names={int(self.linker is not None)}"

    def names_title(self, query: str, title: str, titles: Sequence[str]) -> bool:
        """Does `query` name the article `title` (one of the task's `titles`)?"""
        if self.linker is not None and self.linker.knows(title):
            return title in self.linker.link(query)
        return title in EntityLinker({t: (t,) for t in titles}).link(query)

    def lookup(self, request: SearchRequest) -> Knowledge:
        titles = tuple(request.supporting_titles)
        named = tuple(t for t in dict.fromkeys(titles) if self.names_title(request.query, t, titles))
        reached = bool(request.answers) and (not titles or titles[-1] in named)
        return Knowledge(source=self.name, entities=named, question=request.question,
                         answer_hint=request.answers[0] if reached else None, reached_answer=reached,
                         answers=tuple(request.answers))


class NoKnowledge:
    """Nothing: the engine writes from its own memory."""

    name = "none"

    def identity(self) -> str:
        return self.name

    def lookup(self, request: SearchRequest) -> Knowledge:
        return Knowledge(source=self.name, reached_answer=None, answers=tuple(request.answers))


# --------------------------------------------------------------------------- by name

KNOWLEDGE_SOURCES = ("world", "answer_hint", "none")


def knowledge_from_config(name: str, world: "World | None" = None) -> KnowledgeSource:
    """The knowledge source called `name` ("world", "answer_hint" or "none"). "world" needs the
    built-in `world`; "answer_hint" resolves titles with the world's names when one is given."""
    if name == "world":
        if world is None:
            raise ValueError("knowledge 'world' needs the built-in world (dataset 'world'); "
                             "use 'answer_hint' or 'none' for a loaded data set")
        return WorldKnowledge(world)
    if name == "answer_hint":
        return AnswerHintKnowledge(world)
    if name == "none":
        return NoKnowledge()
    raise ValueError(f"unknown knowledge source {name!r}; choose one of {', '.join(KNOWLEDGE_SOURCES)}")


def knowledge_for_env(config: "EnvConfig", name: str | None = None) -> KnowledgeSource:
    """The source for `config` (`backend_options.knowledge`): `name`, or by default "world" for the
    built-in world and "answer_hint" for a loaded data set."""
    world = None
    if config.dataset == "world":
        from zerosearch_env.data.world import generate_world

        world = generate_world(config.world_seed)
    return knowledge_from_config(name or ("world" if world is not None else "answer_hint"), world=world)

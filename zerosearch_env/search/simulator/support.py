"""The gate's support check for useful results: does every sentence restate the knowledge?

The world is closed: what its facts do not say is invented. A useful document is what an engine
returns for the query, written from `Knowledge.facts`, so each of its sentences must be made of
the knowledge's words. A sentence is *unsupported* when

- vocabulary: a word in it is neither in the knowledge's fact sentences, names or reached
  articles (`Knowledge.texts`), nor a function word, nor a paraphrase of a relation the knowledge holds ("birthplace" where a `born_in` fact is
  given, "founder" where a `founded_by` one is). "Turkey", "German", "died", "capital" (when no
  capital fact is given), "father", "largest" and misspelt names all fail here; or
- attribution: a known name or number follows a preposition ("by X", "in X", "for X", "through X",
  "into X", "from X") and no fact of a relation that preposition can express links it to the
  nearest entity named before it (in this sentence, else the previous one) ("founded in 761, by Zaegux" for the city
  Zaegux; "He was born in Shuxgiald" after a sentence about someone else); or a relation noun
  ("capital of X", "founder of X", "author of X") names no object the world gives X nearby
  ("Kynser: the capital of Kylposhia", whose capital is Peimkeish).

A sentence found word for word in a reached article (`Knowledge.texts`) is supported.

This is stricter than `consistency.contradictions` (which flags a claim only when it contradicts
a known fact) and rejects some true paraphrases; those results are regenerated or replaced by the
fallback written from the facts, so the cost is a higher fallback share, never a false document.

Measured by hand on SmolLM2-135M-Instruct's gate-passing useful documents for the first- and
second-hop queries of world 0's bridge test questions (benchmarks/consistency_sample.py, labels in
benchmarks/results/consistency_after_gate/): see that folder's README for the errors per 100
documents before and after this check. World 0's own articles are never unsupported
(tests/test_simulator_gate.py::test_support_never_rejects_the_worlds_own_articles).
"""

from __future__ import annotations

import re
from typing import Iterable

from zerosearch_env.search.knowledge import STOPWORDS, Knowledge, name_tokens

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")

# words that state nothing about an entity: articles, pronouns, auxiliaries, connectives, hedges
FUNCTION_WORDS = STOPWORDS | frozenset(
    "he she his her him hers they them their it its this that these those one also known both well "
    "has have had having been being be is was were are am became becomes remains remained still "
    "which who whom whose where when while whereas since during over under between among within "
    "around about approximately nearly almost roughly some several many more most other another same "
    "each all only just called named so such here there now today currently later then first "
    "s any can could may might would should than as yet however including include includes".split())

# relation -> words that paraphrase it, allowed where the knowledge holds a fact of that relation
PARAPHRASES: dict[str, frozenset[str]] = {rel: frozenset(words.split()) for rel, words in {
    "located_in": "city town located situated lies lying part home",
    "capital": "capital city seat",
    "flows_through": "flows flow flowing runs running passes passing river through city",
    "born_in": "born birth birthplace native hometown home",
    "birth_year": "born birth year",
    "member_of": "worked works working work employed employee member members joined staff career",
    "founded_by": "founded founder founders founding established created started",
    "founded_year": "founded founding established year since",
    "headquartered_in": "headquartered headquarters based located offices office home",
    "written_by": "written wrote writer author authored work",
    "published_year": "published publication released appeared year",
    "currency": "currency official",
    "landscape": "known famous",
    "population": "inhabitants population residents people home",
    "established": "established founded year since settlement",
    "length_km": "long length kilometres kilometers km",
    "sea": "flows flow empties emptying into",
    "occupation": "worked work career profession",
    "staff": "employs employees employed people staff workers",
    "genre": "work",
}.items()}

# preposition -> relations it can state between an entity named near it and the name after it
PREPOSITION_RELATIONS: dict[str, frozenset[str]] = {p: frozenset(rels.split()) for p, rels in {
    "by": "founded_by written_by",
    "in": "born_in birth_year located_in headquartered_in founded_year published_year established flows_through",
    "from": "born_in located_in",
    "for": "member_of",
    "at": "member_of headquartered_in located_in",
    "through": "flows_through",
    "into": "sea",
}.items()}
# relation nouns: "the capital of X" claims X's capital is named nearby ("Kynser: the capital of
# Kylposhia" when Kylposhia's capital is Peimkeish fails)
NOUN_RELATIONS: dict[str, str] = {"capital": "capital", "currency": "currency", "founder": "founded_by",
                                  "author": "written_by", "writer": "written_by", "birthplace": "born_in",
                                  "headquarters": "headquartered_in", "hometown": "born_in"}
# words that may stand between a preposition and the name it introduces ("in the city of X")
_FILLER = frozenset("the a an city town village country year around about approximately nearly some of".split())


def _seq(text: str) -> tuple[str, ...]:
    return tuple(t for t in name_tokens(text) if t not in ("the", "a", "an"))


def _names(knowledge: Knowledge) -> set[tuple[str, ...]]:
    """Token sequences of every name, alias and object the knowledge holds."""
    out = {_seq(n) for f in knowledge.facts for n in (f.subject, f.object)} | {_seq(e) for e in knowledge.entities}
    for (subject, _), accepted in knowledge.known.items():
        out.add(tuple(subject.split()))
        out.update(tuple(o.split()) for o in accepted)
    return {n for n in out if n}


def _mentions(tokens: list[str], names: set[tuple[str, ...]]) -> list[tuple[int, int, tuple[str, ...]]]:
    """(start, end, name) of the names in `tokens`, longest first, not overlapping."""
    found = []
    taken = [False] * len(tokens)
    for seq in sorted(names, key=len, reverse=True):
        n = len(seq)
        for i in range(len(tokens) - n + 1):
            if tuple(tokens[i:i + n]) == seq and not any(taken[i:i + n]):
                found.append((i, i + n, seq))
                for j in range(i, i + n):
                    taken[j] = True
    return sorted(found)


class Support:
    """The support check for one `Knowledge` (built once per result, used for each sentence)."""

    def __init__(self, knowledge: Knowledge):
        self.knowledge = knowledge
        self.names = _names(knowledge)
        # object name or alias -> {(subject name or alias, relation)}: every alias of both ends
        self.links: dict[tuple[str, ...], set[tuple[tuple[str, ...], str]]] = {}
        for (subject, relation), accepted in knowledge.known.items():
            for o in accepted:
                self.links.setdefault(tuple(o.split()), set()).add((tuple(subject.split()), relation))
        for f in knowledge.facts:
            self.links.setdefault(_seq(f.object), set()).add((_seq(f.subject), f.relation))
        self.subjects = {subject for ties in self.links.values() for subject, _ in ties}
        relations = {f.relation for f in knowledge.facts} | {rel for _, rel in knowledge.known}
        self.vocabulary = set(FUNCTION_WORDS)
        for text in (*knowledge.sentences, *knowledge.texts):
            self.vocabulary.update(name_tokens(text))
        for seq in self.names:
            self.vocabulary.update(seq)
        for rel in relations:
            self.vocabulary |= PARAPHRASES.get(rel, frozenset())
        self._texts = [name_tokens(t) for t in knowledge.texts]

    def unknown_words(self, sentence: str) -> list[str]:
        return [t for t in name_tokens(sentence) if t not in self.vocabulary]

    def unattributed(self, sentence: str, context: Iterable[str]) -> list[str]:
        """Names and numbers after a preposition that no fact of a fitting relation ties to the
        nearest entity named before them in `sentence` (or, when none is, to one named in
        `context`, the previous sentence): "worked for the Diastant Academy in Shuxgiald" is about
        the academy, not about the person named first."""
        tokens = name_tokens(sentence)
        mentions = _mentions(tokens, self.names)
        earlier = {m[2] for text in context for m in _mentions(name_tokens(text), self.names) if m[2] in self.subjects}
        numbers = [(i, i + 1, (t,)) for i, t in enumerate(tokens) if t.isdigit()
                   and not any(s <= i < e for s, e, _ in mentions)]
        bad = []
        for start, _, name in sorted(mentions + numbers):
            i = start - 1
            while i >= 0 and tokens[i] in _FILLER:
                i -= 1
            relations = PREPOSITION_RELATIONS.get(tokens[i]) if i >= 0 else None
            if relations is None:
                continue
            before = [m[2] for m in mentions if m[1] <= i and m[2] != name and m[2] in self.subjects]
            subjects = {before[-1]} if before else earlier
            if not any(rel in relations and subject in subjects for subject, rel in self.links.get(name, ())):
                bad.append(" ".join(name))
        return bad

    def unsupported_nouns(self, sentence: str, context: Iterable[str]) -> list[str]:
        """"<relation noun> of X" where no fact of that relation ties X to a name in `sentence` or
        `context` (the world is closed: X without such a fact has none)."""
        tokens = name_tokens(sentence)
        nearby = {m[2] for text in (sentence, *context) for m in _mentions(name_tokens(text), self.names)}
        nearby |= {(t,) for text in (sentence, *context) for t in name_tokens(text) if t.isdigit()}
        bad = []
        for start, _, name in _mentions(tokens, self.names):
            i = start - 1
            while i >= 0 and tokens[i] in ("the", "a", "an"):
                i -= 1
            if i < 1 or tokens[i] != "of" or tokens[i - 1] not in NOUN_RELATIONS:
                continue
            relation = NOUN_RELATIONS[tokens[i - 1]]
            objects = self.knowledge.known.get((" ".join(name), relation), frozenset())
            if not any(tuple(o.split()) in nearby for o in objects):
                bad.append(f"{tokens[i - 1]} of {' '.join(name)}")
        return bad

    def quoted(self, sentence: str) -> bool:
        """True when the sentence is a passage of a reached article, word for word."""
        tokens = name_tokens(sentence)
        n = len(tokens)
        return n > 0 and any(tuple(t[i:i + n]) == tuple(tokens) for t in self._texts for i in range(len(t) - n + 1))

    def problems(self, text: str) -> list[str]:
        """One line per unsupported sentence of `text` (empty: every sentence is supported)."""
        out, previous = [], ""
        for sentence in (s.strip() for s in _SENTENCE_END.split(text)):
            if not sentence:
                continue
            if self.quoted(sentence):
                previous = sentence
                continue
            words = self.unknown_words(sentence)
            names = [] if words else self.unattributed(sentence, [previous]) + self.unsupported_nouns(sentence, [previous])
            if words:
                out.append(f"unknown words {words[:5]} in {sentence[:80]!r}")
            elif names:
                out.append(f"{names[:3]} not tied by a fact in {sentence[:80]!r}")
            previous = sentence
        return out


def unsupported(texts: Iterable[str], knowledge: Knowledge) -> list[str]:
    """The unsupported sentences of `texts` (see the module docstring); nothing to check without facts."""
    if not knowledge.facts:
        return []
    support = Support(knowledge)
    return [p for t in texts for p in support.problems(t)]

"""The gate's consistency check: does a document state a fact about a known entity that contradicts
the world (a hallucination)?

A sentence makes a claim when it names a known subject (`Knowledge.known`: a name or alias with a
relation) and, after it with no other name (a capitalised word) or possessive in between, a cue
phrase of that relation ("born in", "worked for", "founded by",
"headquartered in", "flows through", "capital ... is", "currency ... is", "published in", ...). The
claimed object is the phrase after the cue, up to the next punctuation or clause word. It is
consistent when an accepted object occurs in that phrase. It contradicts the world when none does
and the phrase starts with a name (a capitalised word, after "the", "city of", ...) for a relation
whose objects are names, or with a number for one whose objects are numbers, and no known subject
of the sentence with that relation accepts it. Anything else ("born in a small town", "born in
1843" for the birthplace, a pronoun subject, the object before the subject) claims nothing here:
the check prefers missing a contradiction to flagging a true sentence.

Measured on the hand-labelled sample in tests/data/consistency_sample.json (40 documents about
world 0's entities: 20 consistent, paraphrased or with distractor names, years and other subjects;
20 with one contradicting claim; tests/test_simulator_gate.py::test_consistency_precision_on_the_hand_labelled_sample): precision
1.00 (17 of 17 flagged documents contradict the world), recall 0.85 (17 of 20 contradicting
documents flagged; the three missed state the claim in a form the cues do not cover: "the main
office is in X", "X was the birthplace of Y", "in the country of X"). The sample was written by the
author of the cues, so treat these as an upper bound for a model's paraphrases. World 0's own 1440
articles, checked against the knowledge of a query for their titles, are never flagged
(tests/test_simulator_gate.py::test_consistency_never_flags_the_worlds_own_articles); a check costs
about 0.7 ms per document on one core.
"""

from __future__ import annotations

import re
from typing import Sequence

from zerosearch_env.search.knowledge import STOPWORDS, Knowledge, name_tokens

# relation -> cue phrases; the claimed object follows the cue
_CUES: dict[str, str] = {
    "born_in": r"\bborn\s+in\b|\bnative\s+of\b|\bbirthplace\s+(?:is|was)\b",
    "birth_year": r"\bborn\s+in\b|\bborn\s+(?:around|about)\b",
    "located_in": r"\b(?:city|town|located|situated|lies)\s+in\b",
    "capital": r"\bcapital\b[^.;]{0,40}?\b(?:is|was)\b",
    "flows_through": r"\bflows?\s+through\b|\bruns\s+through\b",
    "member_of": r"\b(?:worked|works|working)\s+(?:for|at)\b|\bmember\s+of\b|\bemployed\s+by\b",
    "founded_by": r"\b(?:founded|established|started|created)\s+by\b",
    "founded_year": r"\b(?:founded|established)\s+in\b",
    "headquartered_in": r"\bheadquartered\s+in\b|\bbased\s+in\b|\bheadquarters\s+(?:is|are|was|were)\s+in\b",
    "written_by": r"\b(?:written|authored)\s+by\b",
    "published_year": r"\bpublished\s+in\b",
    "established": r"\bestablished\s+(?:around|in)\b",
    "currency": r"\bcurrency\b[^.;]{0,40}?\b(?:is|was)\b",
    "sea": r"\bflows?\s+into\b|\bempties\s+into\b",
}
_CUE_RE = {rel: re.compile(cue, re.IGNORECASE) for rel, cue in _CUES.items()}
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")
_WORD = re.compile(r"[^\W_]+")
# the object phrase ends at punctuation or at a clause word
_PHRASE_END = re.compile(r"[,;:()\[\]!?]|\.(?:\s|$)|\s(?:and|but|where|which|who|while|whose|when|after|before|until)\s")
_LEADING = re.compile(r"^(?:the\s+|a\s+|an\s+|year\s+|(?:city|town|country|nation|river|village)\s+of\s+"
                      r"|around\s+|about\s+|the\s+year\s+)+", re.IGNORECASE)


def _numeric(accepted: frozenset[str]) -> bool:
    return all(o.replace(" ", "").isdigit() for o in accepted)


def _contains(tokens: Sequence[str], seq: Sequence[str]) -> bool:
    n = len(seq)
    return n > 0 and any(list(tokens[i:i + n]) == list(seq) for i in range(len(tokens) - n + 1))


def _claimed(phrase: str, numeric: bool) -> str | None:
    """The object a phrase asserts (a name or a number), or None when it asserts none."""
    phrase = _LEADING.sub("", phrase.strip())
    words = phrase.split()
    if not words:
        return None
    first = words[0].strip("\"'\u201c\u201d")
    if numeric:
        return first.replace(",", "") if first.replace(",", "").isdigit() else None
    return phrase if first[:1].isupper() and not first.replace(",", "").isdigit() else None


def _words(sentence: str) -> list[tuple[str, str, int]]:
    """(folded, original, start) for each word of `sentence`."""
    return [(''.join(name_tokens(m.group())), m.group(), m.start()) for m in _WORD.finditer(sentence)]


def _subject_of_cue(words: list[tuple[str, str, int]], subject: str, cue_end: int) -> bool:
    """Is `subject` the claim's subject: named before the end of the cue, with no other name (a
    capitalised word) and no possessive between its last mention and the cue?"""
    before = [w for w in words if w[2] < cue_end]
    folded = [w[0] for w in before]
    seq = subject.split()
    n = len(seq)
    last = max((i for i in range(len(folded) - n + 1) if folded[i:i + n] == seq), default=None)
    if last is None:
        return False
    between = before[last + n:]
    if between and between[0][0] == "s":  # "X's daughter was born in ...": not a claim about X
        return False
    return not any(orig[:1].isupper() and fold not in STOPWORDS for fold, orig, _ in between)


def sentence_contradictions(sentence: str, knowledge: Knowledge) -> list[tuple[str, str, str]]:
    """(subject, relation, claimed object) for each claim of `sentence` that contradicts the world."""
    tokens = name_tokens(sentence)
    if not tokens:
        return []
    found = []
    by_relation: dict[str, list[str]] = {}
    for (subject, relation) in knowledge.known:
        if relation in _CUE_RE and _contains(tokens, subject.split()):
            by_relation.setdefault(relation, []).append(subject)
    words = _words(sentence)
    for relation, subjects in by_relation.items():
        for cue in _CUE_RE[relation].finditer(sentence):
            named = [s for s in subjects if _subject_of_cue(words, s, cue.end())]
            if not named:
                continue
            rest = sentence[cue.end():]
            end = _PHRASE_END.search(rest)
            phrase = rest[: end.start()] if end else rest
            phrase_tokens = name_tokens(phrase)
            accepted = [knowledge.known[(s, relation)] for s in named]
            if any(_contains(phrase_tokens, o.split()) for objs in accepted for o in objs):
                continue
            claimed = _claimed(phrase, numeric=_numeric(accepted[0]))
            if claimed is None:
                continue
            if all(knowledge.contradicts(s, relation, claimed) for s in named):
                found.append((named[0], relation, claimed.strip()))
    return found


def contradictions(text: str, knowledge: Knowledge) -> list[tuple[str, str, str]]:
    """Every contradicting claim in `text` (see the module docstring)."""
    if not knowledge.known or not text:
        return []
    return [c for sentence in _SENTENCE_END.split(text) for c in sentence_contradictions(sentence, knowledge)]

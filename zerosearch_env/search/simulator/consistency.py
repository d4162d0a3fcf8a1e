"""The gate's consistency check: does a document state a fact about a known entity that contradicts
the world (a hallucination)?

A sentence makes a claim when it names a known subject (`Knowledge.known`: a name or alias with its
relations) and, after it, a cue phrase of a relation ("born in", "worked for", "founded by",
"headquartered in", "flows through", "capital ... is", "currency ... is", "published in", ...). The
subject must be the claim's: not right after a preposition (then it is an earlier claim's object),
and with no other name (a capitalised word) and no possessive between it and the cue. The claimed
object is the phrase after the cue, up to the next punctuation or clause word. The claim is
consistent when an accepted object occurs in that phrase. It contradicts the world when none does
and the phrase starts with a name (a capitalised word, after "the", "city of", ...) for a relation
whose objects are names, or with a number for one whose objects are numbers; or when the world
gives the entity no such relation at all and the cue is specific (`_CLOSED`: "Shybrox was founded
by X" for a city; the world is closed, so such a fact is invented). A sentence is flagged only when
no subject it may be about agrees. Anything else ("born in a small town", "born in 1843" for the
birthplace, a pronoun subject, the object before the subject) claims nothing here: the check
prefers missing a contradiction to flagging a true sentence.

Measured on the hand-labelled sample in tests/data/consistency_sample.json (44 documents about
world 0's entities: 22 consistent, paraphrased or with distractor names, years and other subjects;
22 with one contradicting or invented claim, one of them written by SmolLM2-135M-Instruct as the
simulator; tests/test_simulator_gate.py::test_consistency_precision_on_the_hand_labelled_sample):
precision 1.00 (19 of 19 flagged documents contradict the world), recall 0.86 (19 of 22; the three
missed state the claim in a form the cues do not cover: "the main office is in X", "X was the
birthplace of Y", "in the country of X"). The sample was written by the author of the cues, so
treat these as an upper bound for a model's paraphrases. World 0's own 1440 articles, checked
against the knowledge of a query for their titles, are never flagged
(tests/test_simulator_gate.py::test_consistency_never_flags_the_worlds_own_articles); a check costs
about 1 ms per document on one core.
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
# relations one cue may express, by subject ("founded in" for a city: its establishment)
_SAME = {"founded_year": ("founded_year", "established"), "established": ("established", "founded_year"),
         "located_in": ("located_in", "headquartered_in"), "headquartered_in": ("headquartered_in", "located_in")}
_OBJECT_MARKERS = frozenset("in for by of from through into at and with to near".split())
# cues specific enough that claiming one about an entity the world gives no such fact is an
# invention (the world is closed); "based in", "located in" are not ("X was based in Y" for a person)
_CLOSED = frozenset({"born_in", "birth_year", "capital", "flows_through", "member_of", "founded_by", "founded_year",
                     "written_by", "published_year", "established", "currency", "sea"})
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
    """Is `subject` the claim's subject: named before the end of the cue, not right after a
    preposition (then it is an earlier claim's object), with no other name (a capitalised word)
    and no possessive between its last mention and the cue?"""
    before = [w for w in words if w[2] < cue_end]
    folded = [w[0] for w in before]
    seq = subject.split()
    n = len(seq)
    last = max((i for i in range(len(folded) - n + 1) if folded[i:i + n] == seq), default=None)
    if last is None:
        return False
    start = last  # the start of the name the mention belongs to ("Drovkim Fiskiash" for "Fiskiash")
    while start > 0 and before[start - 1][1][:1].isupper() and before[start - 1][0] not in STOPWORDS:
        start -= 1
    if start > 0 and folded[start - 1] in _OBJECT_MARKERS:  # "born in X and worked for": X is an object
        return False
    between = before[last + n:]
    if between and between[0][0] == "s":  # "X's daughter was born in ...": not a claim about X
        return False
    return not any(orig[:1].isupper() and fold not in STOPWORDS for fold, orig, _ in between)


def _verdict(knowledge: Knowledge, subject: str, cue_relation: str, phrase: str) -> tuple[str, str] | None:
    """(relation, claimed object) when `phrase`, after a `cue_relation` cue about `subject`,
    contradicts the world; None when it agrees or claims nothing."""
    relation = next((r for r in _SAME.get(cue_relation, (cue_relation,)) if (subject, r) in knowledge.known), None)
    if relation is None:
        if cue_relation not in _CLOSED:
            return None
        # the world gives this entity no such fact, and it is closed: an invented one
        claimed = _claimed(phrase, numeric=False) or _claimed(phrase, numeric=True)
        return None if claimed is None else (cue_relation, claimed)
    accepted = knowledge.known[(subject, relation)]
    if any(_contains(name_tokens(phrase), o.split()) for o in accepted):
        return None
    claimed = _claimed(phrase, numeric=_numeric(accepted))
    return None if claimed is None else (relation, claimed)


def sentence_contradictions(sentence: str, knowledge: Knowledge) -> list[tuple[str, str, str]]:
    """(subject, relation, claimed object) for each claim of `sentence` that contradicts the world."""
    tokens = name_tokens(sentence)
    if not tokens:
        return []
    present = sorted({s for s, _ in knowledge.known if _contains(tokens, s.split())})
    if not present:
        return []
    words = _words(sentence)
    found = []
    for cue_relation, cue_re in _CUE_RE.items():
        for cue in cue_re.finditer(sentence):
            named = [s for s in present if _subject_of_cue(words, s, cue.end())]
            if not named:
                continue
            rest = sentence[cue.end():]
            end = _PHRASE_END.search(rest)
            phrase = rest[: end.start()] if end else rest
            verdicts = [_verdict(knowledge, s, cue_relation, phrase) for s in named]
            if all(verdicts):  # no subject the sentence may be about agrees with it
                relation, claimed = verdicts[0]
                found.append((named[0], relation, claimed.strip()))
    return found


def contradictions(text: str, knowledge: Knowledge) -> list[tuple[str, str, str]]:
    """Every contradicting claim in `text` (see the module docstring)."""
    if not knowledge.known or not text:
        return []
    return [c for sentence in _SENTENCE_END.split(text) for c in sentence_contradictions(sentence, knowledge)]

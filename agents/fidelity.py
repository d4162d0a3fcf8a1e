"""Simulator fidelity: the same queries through the simulator and a real search backend, side by side.

A *probe* is one query sent for one question (`make_probes`, or `recorded_probes` from an agent's
episodes). `measure(probes, backends, reference=...)` sends every probe to every backend (one
`search_with_info` call per batch of probes) and returns a report with, per backend:

- answer_in_results[query kind], and by question kind (single / bridge / comparison): the share of
  probes whose top-k results hold a gold alias. Query kinds: `first_hop` (the question's first-hop
  subject, before the bridge entity is known), `second_hop` (the answer-bearing article's title:
  the bridge entity, or the second compared entity), `unrelated` (the subject of a question that
  shares no article with this one), `garbage` (random letters and words), `wrong_answer` (the
  first-hop subject plus another question's answer of the same template: a plausible wrong guess),
  `right_answer` (the first-hop subject plus the gold answer), `recorded` (an agent's own queries).
  `guess_gap` = answer_in_results[right_answer] - answer_in_results[wrong_answer]: how much the
  results tell a right guess from a wrong one (compare it with the real backend's).
- first_hop_leak_rate: among first-hop probes whose query does NOT reach the answer (the world's
  knowledge for the query does not hold it), the share whose results hold it anyway.
- needed_in_useful_results: among first- and second-hop probes answered in useful mode and not by
  the fallback (the engine's own text, after the gate), the share whose results hold what the query
  needed (`agents.sim_tune.label_pair`: a document naming the first-hop entity and the next hop, the
  last hop's entity and the answer, or the compared entity's article); the real backend's is the
  reference. `needed_in_useful_results_n` is how many probes it counts.
- consistency_per_100_docs (and _useful_docs): documents with a claim that contradicts the world
  (`simulator.consistency.contradictions` against the world's knowledge for the query) per 100;
  on the real backend this is the check's false-positive floor.
- fallback_share, partial_share, engine_failure_share: from the simulator's `stats()` (None for real
  search); partial_share: results the per-document fallback mixed (`fallback_unit="document"`).
- doc_words (mean words per document), distinct_1 / distinct_2 (distinct n-grams / all n-grams over
  the backend's documents), overlap_with_reference (mean token Jaccard between a probe's documents
  and the reference backend's documents for the same probe).
- discriminator_auroc: a logistic regression on hashed word 1-2-gram and char 3-gram features
  (`discriminator_auroc`), trained on the documents of half the questions and evaluated on the
  other half (then the halves swapped; the mean), telling this backend's documents from the
  reference's by text alone. 0.5: indistinguishable; 1.0: always told apart.
  `discriminator_auroc_own_text`: the same with this backend's documents limited to those the
  engine wrote itself (not the gate's fallback documents), so it tells what a tuned model changed
  even where the fallback answers many probes.

The world-dependent figures (leak rate, consistency) need the built-in world's knowledge
(`WorldKnowledge`); with another data set they are None.

Several simulators can be measured side by side on the same probes (untuned vs tuned vs real): each
is one more backend, one column of the table; `parse_simulator_models` reads the command line's
`--sim NAME=DIR` / `--tuned-model DIR` (a model folder written by `zerosearch sim-tune`).
"""

from __future__ import annotations

import math
import random
import re
import string
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zerosearch_env.data.task import Task
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest
from zerosearch_env.search.simulator import contains_answer

__all__ = ["QUERY_KINDS", "Probe", "make_probes", "recorded_probes", "measure", "discriminator_auroc", "auroc",
           "format_table", "plot_report", "parse_simulator_models"]

QUERY_KINDS = ("first_hop", "second_hop", "unrelated", "garbage", "wrong_answer", "right_answer", "recorded")
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class Probe:
    """One query sent for one question."""

    task: Task
    kind: str
    query: str


def _garbage(rng: random.Random) -> str:
    """Random lower-case 'words' and a few common words: a query naming nothing."""
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8))) for _ in range(rng.randint(2, 3))]
    return " ".join(words + rng.sample(["the", "of", "report", "history", "list", "where"], 1))


def make_probes(tasks: Sequence[Task], pool: Sequence[Task] | None = None, seed: int = 0) -> list[Probe]:
    """The generated probes of every task (see the module doc); `pool` (default `tasks`) supplies
    the unrelated questions and wrong guesses. A task without `supporting_titles` gets only the
    garbage probe and the guesses (put into its question's text instead of a subject)."""
    rng = random.Random(seed)
    pool = list(pool if pool is not None else tasks)
    by_template: dict[str, list[Task]] = defaultdict(list)
    for t in pool:
        by_template[t.template].append(t)
    probes: list[Probe] = []
    for t in tasks:
        titles = t.supporting_titles
        subject = titles[0] if titles else t.question.rstrip("?")
        if titles:
            probes.append(Probe(t, "first_hop", titles[0]))
            if len(titles) > 1:
                probes.append(Probe(t, "second_hop", titles[-1]))
            others = [o for o in pool if o.supporting_titles and not set(o.supporting_titles) & set(titles)
                      and not _names(o.supporting_titles[0], t.answers)]
            if others:
                probes.append(Probe(t, "unrelated", rng.choice(others).supporting_titles[0]))
        probes.append(Probe(t, "garbage", _garbage(rng)))
        wrong = [a for o in by_template[t.template] or pool for a in o.answers[:1]
                 if not _names(a, t.answers) and not _names(subject, [a])]
        if wrong:
            probes.append(Probe(t, "wrong_answer", f"{subject} {rng.choice(sorted(set(wrong)))}"))
        probes.append(Probe(t, "right_answer", f"{subject} {t.answers[0]}"))
    return probes


def _names(text: str, answers: Sequence[str]) -> bool:
    return contains_answer([Document("", "", text)], answers)


def recorded_probes(records: Sequence[dict], tasks_by_id: dict[str, Task]) -> list[Probe]:
    """The queries of recorded episodes (`agents.evaluate.run_episodes` records: `task_id`,
    `agent_turns`), one probe per search; records of unknown tasks are an error."""
    from zerosearch_env.protocol import parse_action

    probes: list[Probe] = []
    unknown = sorted({str(r.get("task_id")) for r in records if r.get("task_id") not in tasks_by_id})
    if unknown:
        raise ValueError(f"{len(unknown)} recorded task id(s) are not questions of this data set (e.g. {unknown[:3]})")
    for r in records:
        if not isinstance(r.get("agent_turns"), list):
            raise ValueError(f"record of {r.get('task_id')} has no agent_turns (write the report with --records)")
        for turn in r["agent_turns"]:
            action = parse_action(turn)
            if action.kind == "search":
                probes.append(Probe(tasks_by_id[r["task_id"]], "recorded", action.content))
    return probes


def parse_simulator_models(specs: Sequence[str], taken: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """`["tuned=runs/st/model", ...]` -> [(name, folder)]: each folder must exist, each name be a
    plain word (letters, digits, - _ .) not in `taken` (the other columns' names) and unique."""
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, folder = str(spec).partition("=")
        name, folder = name.strip(), folder.strip()
        if not sep or not name or not folder:
            raise ValueError(f"--sim {spec!r}: give NAME=DIR, e.g. tuned=runs/sim-tune/model")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}", name):
            raise ValueError(f"--sim {spec!r}: the name must be a word of letters, digits, - _ . (at most 32)")
        if name in taken or name in {n for n, _ in out}:
            raise ValueError(f"--sim {spec!r}: the name {name!r} is already used")
        path = Path(folder)
        if not path.is_dir():
            raise ValueError(f"--sim {spec!r}: {folder} is not a model folder")
        out.append((name, path))
    return out


# --------------------------------------------------------------------------- text statistics


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct n-grams / all n-grams over `texts` (None when there are none)."""
    grams = [tuple(ws[i:i + n]) for ws in map(tokens, texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def jaccard(a: Sequence[Document], b: Sequence[Document]) -> float | None:
    """Token Jaccard between two result lists (None when both are empty)."""
    ta = {w for d in a for w in tokens(f"{d.title} {d.text}")}
    tb = {w for d in b for w in tokens(f"{d.title} {d.text}")}
    return len(ta & tb) / len(ta | tb) if ta | tb else None


# --------------------------------------------------------------------------- discriminator


def _features(texts: Sequence[str], dim: int) -> np.ndarray:
    """Hashed word 1-2-grams and char 3-grams (crc32: stable across processes), L2-normalised."""
    x = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        ws = tokens(text)
        feats = ws + [f"{a} {b}" for a, b in zip(ws, ws[1:])]
        low = f" {text.lower()} "
        feats += [f"#{low[j:j + 3]}" for j in range(len(low) - 2)]
        for f in feats:
            x[i, zlib.crc32(f.encode("utf-8")) % dim] += 1.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-9)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 300, lr: float = 2.0) -> np.ndarray:
    """Full-batch gradient descent on the L2-regularised logistic loss; returns weights (bias last)."""
    xb = np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])
    w = np.zeros(xb.shape[1], dtype=np.float64)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0]
        w -= lr * grad
    return w


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties count half); None without both classes."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if not pos or not neg:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def discriminator_auroc(positives: Sequence[tuple[str, str]], negatives: Sequence[tuple[str, str]],
                        seed: int = 0, dim: int = 4096) -> float | None:
    """How well text alone tells `positives` (e.g. simulated documents) from `negatives` (real ones):
    each item is (group, text), the group being the question. The questions are split in two halves
    (seeded); a logistic regression trained on one half's documents scores the other's; the AUROC of
    both directions, averaged. None when a half lacks either class."""
    groups = sorted({g for g, _ in positives} | {g for g, _ in negatives})
    random.Random(seed).shuffle(groups)
    half = set(groups[: len(groups) // 2])
    texts = [t for _, t in positives] + [t for _, t in negatives]
    y = np.array([1] * len(positives) + [0] * len(negatives), dtype=np.float64)
    in_half = np.array([g in half for g, _ in positives] + [g in half for g, _ in negatives])
    x = _features(texts, dim)
    results = []
    for train in (in_half, ~in_half):
        test = ~train
        if len(set(y[train])) < 2 or len(set(y[test])) < 2:
            return None
        w = _fit_logistic(x[train], y[train])
        scores = np.hstack([x[test], np.ones((int(test.sum()), 1), dtype=x.dtype)]) @ w
        results.append(auroc(scores, y[test]))
    return float(np.mean(results))


# --------------------------------------------------------------------------- the measurement


def _requests(probes: Sequence[Probe], top_k: int, prefix: str) -> list[SearchRequest]:
    return [SearchRequest(p.query, top_k=top_k, question=p.task.question, answers=p.task.answers,
                          episode_id=f"{prefix}-{i}", supporting_titles=p.task.supporting_titles)
            for i, p in enumerate(probes)]


def _run(backend: SearchBackend, requests: list[SearchRequest], batch: int, label: str, progress: bool):
    from tqdm.auto import tqdm

    docs: list[list[Document]] = []
    infos: list[dict] = []
    with tqdm(total=len(requests), desc=f"fidelity {label}", disable=not progress, leave=False) as bar:
        for start in range(0, len(requests), batch):
            chunk = requests[start:start + batch]
            d, i = backend.search_with_info(chunk)
            docs += d
            infos += i
            bar.update(len(chunk))
    return docs, infos


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _rates(hits: list[tuple[Probe, bool]]) -> dict:
    by_query: dict[str, list[bool]] = defaultdict(list)
    by_task: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for probe, hit in hits:
        by_query[probe.kind].append(hit)
        by_task[probe.task.kind][probe.kind].append(hit)
    return ({k: _mean(v) for k, v in by_query.items()},
            {tk: {k: _mean(v) for k, v in d.items()} for tk, d in by_task.items()})


def measure(probes: Sequence[Probe], backends: dict[str, SearchBackend], reference: str, *, knowledge=None,
            top_k: int = 3, batch: int = 16, seed: int = 0, progress: bool = True) -> dict:
    """Send every probe to every backend and compute the figures of the module doc.

    `backends`: label -> backend (not closed here); `reference`: the label of the real backend the
    others are compared with (overlap, discriminator); `knowledge`: a `WorldKnowledge` for the leak
    rate and the consistency check (None: those figures are None)."""
    from agents.sim_tune import label_pair
    from zerosearch_env.search.simulator.consistency import contradictions

    probes = list(probes)
    if not probes:
        raise ValueError("no probes to measure")
    if reference not in backends:
        raise ValueError(f"the reference backend {reference!r} is not among {sorted(backends)}")
    prefix = f"fidelity{seed}"
    requests = _requests(probes, top_k, prefix)
    looked_up = [knowledge.lookup(r) for r in requests] if knowledge is not None else None
    results = {label: _run(b, requests, batch, label, progress) for label, b in backends.items()}
    ref_docs = results[reference][0]
    rows = []
    for label, backend in backends.items():
        docs, infos = results[label]
        hits = [(p, contains_answer(d, r.answers)) for p, d, r in zip(probes, docs, requests)]
        by_query, by_task = _rates(hits)
        leak = consistency = consistency_useful = None
        needed = [label_pair(p.task, ds)[0] == "useful" for p, ds, info in zip(probes, docs, infos)
                  if p.kind in ("first_hop", "second_hop") and p.task.supporting_titles
                  and info.get("mode", "useful") == "useful" and not info.get("fallback")]
        if looked_up is not None:
            unreached = [hit for (p, hit), kn in zip(hits, looked_up) if p.kind == "first_hop" and not kn.reached_answer]
            leak = _mean(unreached)
            flags = [(bool(contradictions(doc.text, kn)), info.get("mode", "useful") == "useful")
                     for ds, kn, info in zip(docs, looked_up, infos) for doc in ds]
            consistency = 100 * _mean([f for f, _ in flags]) if flags else None
            useful = [f for f, u in flags if u]
            consistency_useful = 100 * _mean(useful) if useful else None
        texts = [d.text for ds in docs for d in ds]
        stats = backend.stats() if callable(getattr(backend, "stats", None)) else {}
        is_ref = label == reference
        rows.append({
            "backend": label, "reference": is_ref,
            "noise": backend.p_noisy() if callable(getattr(backend, "p_noisy", None)) else None,
            "probes": len(probes), "documents": len(texts), "empty_results": sum(1 for d in docs if not d),
            "answer_in_results": by_query, "answer_in_results_by_question_kind": by_task,
            "guess_gap": (None if by_query.get("right_answer") is None or by_query.get("wrong_answer") is None
                          else by_query["right_answer"] - by_query["wrong_answer"]),
            "first_hop_leak_rate": leak,
            "needed_in_useful_results": _mean(needed), "needed_in_useful_results_n": len(needed),
            "consistency_per_100_docs": consistency, "consistency_per_100_useful_docs": consistency_useful,
            "fallback_share": stats.get("fallback_share"), "partial_share": stats.get("partial_share"),
            "engine_failure_share": stats.get("engine_failure_share"),
            "doc_words": _mean(len(t.split()) for t in texts),
            "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "overlap_with_reference": None if is_ref else _mean(jaccard(a, b) for a, b in zip(docs, ref_docs)),
            "discriminator_auroc": None if is_ref else discriminator_auroc(
                [(p.task.id, f"{d.title} {d.text}") for p, ds in zip(probes, docs) for d in ds],
                [(p.task.id, f"{d.title} {d.text}") for p, ds in zip(probes, ref_docs) for d in ds], seed=seed),
            "discriminator_auroc_own_text": None if is_ref else discriminator_auroc(
                [(p.task.id, f"{d.title} {d.text}") for p, ds, info in zip(probes, docs, infos)
                 for d in ds[:info.get("own_documents", 0 if info.get("fallback") else len(ds))]],
                [(p.task.id, f"{d.title} {d.text}") for p, ds in zip(probes, ref_docs) for d in ds], seed=seed),
            "simulator_stats": {k: v for k, v in stats.items() if isinstance(v, (int, float, str)) or v is None}
            if "fallback_share" in stats else None,
        })
    kinds = Counter(p.task.kind for p in probes)
    return {"reference": reference, "top_k": top_k, "n_questions": len({p.task.id for p in probes}),
            "n_probes": len(probes), "probes_by_question_kind": dict(kinds),
            "probes_by_query_kind": dict(Counter(p.kind for p in probes)), "rows": rows,
            "examples": _examples(probes, requests, results)}


def _examples(probes, requests, results, per_kind: int = 2) -> list[dict]:
    """A few probes per query kind with every backend's first document (to read what differs)."""
    out, seen = [], Counter()
    for i, p in enumerate(probes):
        if seen[p.kind] >= per_kind:
            continue
        seen[p.kind] += 1
        out.append({"query_kind": p.kind, "query": p.query, "question": p.task.question, "answers": list(p.task.answers),
                    "first_document": {label: (docs[i][0].title + ": " + docs[i][0].text) if docs[i] else None
                                       for label, (docs, _) in results.items()}})
    return out


# --------------------------------------------------------------------------- output

_FIGURES = [("first-hop ans", lambda r: r["answer_in_results"].get("first_hop")),
            ("second-hop ans", lambda r: r["answer_in_results"].get("second_hop")),
            ("unrelated ans", lambda r: r["answer_in_results"].get("unrelated")),
            ("garbage ans", lambda r: r["answer_in_results"].get("garbage")),
            ("wrong-guess ans", lambda r: r["answer_in_results"].get("wrong_answer")),
            ("right-guess ans", lambda r: r["answer_in_results"].get("right_answer")),
            ("recorded ans", lambda r: r["answer_in_results"].get("recorded")),
            ("first-hop leak", lambda r: r["first_hop_leak_rate"]),
            ("needed in useful (no fallback)", lambda r: r.get("needed_in_useful_results")),
            ("contradictions/100 docs", lambda r: r["consistency_per_100_docs"]),
            ("contradictions/100 useful", lambda r: r["consistency_per_100_useful_docs"]),
            ("fallback share", lambda r: r["fallback_share"]),
            ("partial-fallback share", lambda r: r.get("partial_share")),
            ("engine-failure share", lambda r: r["engine_failure_share"]),
            ("words/doc", lambda r: r["doc_words"]),
            ("distinct-1", lambda r: r["distinct_1"]), ("distinct-2", lambda r: r["distinct_2"]),
            ("overlap w/ real (Jaccard)", lambda r: r["overlap_with_reference"]),
            ("discriminator AUROC", lambda r: r["discriminator_auroc"]),
            ("AUROC, own text only", lambda r: r.get("discriminator_auroc_own_text"))]


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}" if isinstance(v, float) else str(v)


def format_table(report: dict) -> str:
    """Figures as rows, backends as columns (plus answer-in-results by question kind)."""
    rows = report["rows"]
    table = [["figure"] + [r["backend"] for r in rows]]
    for name, get in _FIGURES:
        values = [get(r) for r in rows]
        if name == "recorded ans" and all(v is None for v in values):
            continue
        table.append([name] + [_fmt(v) for v in values])
    for qk in ("single", "bridge", "comparison", "qa"):
        for kind in ("first_hop", "second_hop"):
            values = [r["answer_in_results_by_question_kind"].get(qk, {}).get(kind) for r in rows]
            if any(v is not None for v in values):
                table.append([f"{qk} {kind.replace('_', '-')} ans"] + [_fmt(v) for v in values])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = (f"{report['n_questions']} questions ({', '.join(f'{k} {v}' for k, v in report['probes_by_question_kind'].items())} "
            f"probes), {report['n_probes']} probes, top {report['top_k']}; reference: {report['reference']}")
    return head + "\n" + "\n".join(lines)


def plot_report(report: dict, path: str | Path) -> None:
    """Bar charts: answer in results by query kind (one bar per backend), and the text figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    kinds = [k for k in QUERY_KINDS if any(r["answer_in_results"].get(k) is not None for r in rows)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(len(rows), 1)
    sim_colors = ["#4c72b0", "#55a868", "#8172b2", "#c44e52", "#64b5cd", "#937860"]  # the real backend is orange
    color_of = {r["backend"]: "#dd8452" for r in rows if r["reference"]}
    color_of.update({r["backend"]: sim_colors[j % len(sim_colors)] for j, r in enumerate(x for x in rows if not x["reference"])})
    for j, r in enumerate(rows):
        vals = [r["answer_in_results"].get(k) or 0.0 for k in kinds]
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(kinds))]
        bars = ax.bar(xs, vals, width, label=r["backend"] + (" (real)" if r["reference"] else ""),
                      color=color_of[r["backend"]])
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(kinds)), [k.replace("_", " ") for k in kinds], rotation=20)
    ax.set_ylim(0, 1.1)
    ax.set_title("final answer in the top-k results, by query kind")
    ax.legend(fontsize=8)
    others = [r for r in rows if not r["reference"]]
    figures = [("first-hop leak", "first_hop_leak_rate"), ("overlap w/ real", "overlap_with_reference"),
               ("discriminator AUROC", "discriminator_auroc"), ("fallback share", "fallback_share"),
               ("distinct-2", "distinct_2")]
    for j, r in enumerate(rows):
        vals = [r.get(key) for _, key in figures]
        xs = [i + (j - (len(rows) - 1) / 2) * width for i in range(len(figures))]
        ax2.bar(xs, [v or 0.0 for v in vals], width, color=color_of[r["backend"]])
    ax2.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax2.set_xticks(range(len(figures)), [f for f, _ in figures], rotation=20)
    ax2.set_ylim(0, 1.1)
    ax2.set_title(f"text figures (dashed: AUROC 0.5 = indistinguishable; {len(others)} simulator rows)")
    fig.suptitle(f"zerosearch fidelity: {report['n_questions']} questions, {report['n_probes']} probes, "
                 f"reference {report['reference']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

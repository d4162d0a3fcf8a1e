"""Compare search backends under one agent: the same questions, several engines, one table.

`compare(agent, tasks, specs, ...)` runs `agents.evaluate.run_episodes` once per backend spec
(each backend wrapped in `TimedBackend`, which times every backend call) and returns one row per
backend: EM, F1, searches per episode, latency per search, the share of searches whose results hold
a gold answer, and the estimated cost per 1,000 searches.

Backend specs (`parse_backend_specs`), comma-separated:
    sim:0  sim:0.5  sim:1        the simulator at a constant noise probability p
    bm25   dense                 local retrieval over the built-in world's corpus (or --corpus)
    retriever=http://H:P         a Search-R1 /retrieve server
    web                          a web search API (SerpAPI-style; key from SERPAPI_API_KEY)

Cost model (USD per 1,000 searches; see `CostModel`): a search costs the time the backend spent on
it (a backend call's wall time divided by the searches it answered) times the hourly price of the
machine that does the work: `gpu_usd_per_hour` for the simulator (its LLM runs on an accelerator in
a real deployment; on a CPU-only run the measured CPU time stands in for GPU time, which
overstates it), `cpu_usd_per_hour` for local and self-hosted retrieval (BM25, dense, a retriever
server), and the provider's list price per 1,000 queries for web APIs.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from zerosearch_env.search.base import DelegatingSearch, Document, SearchBackend, SearchRequest

__all__ = ["BackendSpec", "CostModel", "TimedBackend", "parse_backend_specs", "build_backend", "compare",
           "format_table", "save_report", "plot_report"]


@dataclass(frozen=True)
class BackendSpec:
    """One column of the comparison: a label, a backend kind, its options, and the noise level."""

    label: str
    kind: str
    options: dict = field(default_factory=dict)
    noise: float | None = None


def parse_backend_specs(text: str) -> list[BackendSpec]:
    """`"sim:0,sim:0.5,bm25,dense,retriever=http://127.0.0.1:8000"` -> specs (see module doc)."""
    specs: list[BackendSpec] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        if raw.startswith(("sim:", "simulator:")):
            value = raw.split(":", 1)[1]
            try:
                p = float(value)
            except ValueError:
                raise ValueError(f"backend spec {raw!r}: the noise level must be a number in [0, 1]") from None
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"backend spec {raw!r}: the noise level must be in [0, 1]")
            specs.append(BackendSpec(f"sim p={p:g}", "simulator", {}, p))
        elif raw.startswith("retriever="):
            url = raw.split("=", 1)[1]
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"backend spec {raw!r}: the retriever URL must start with http:// or https://")
            specs.append(BackendSpec("retriever", "retriever", {"url": url}))
        elif raw in ("bm25", "dense", "web"):
            specs.append(BackendSpec(raw, raw))
        elif raw in ("sim", "simulator"):
            raise ValueError(f"backend spec {raw!r}: give a noise level, e.g. sim:0.5")
        else:
            raise ValueError(f"unknown backend spec {raw!r}; use sim:P, bm25, dense, retriever=URL or web")
    if not specs:
        raise ValueError("no backends to compare")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate backends in {labels}")
    return specs


@dataclass(frozen=True)
class CostModel:
    """Prices behind the cost column (USD). Defaults: an H100-class GPU hour rented at about $2.50,
    one CPU core hour at about $0.05, SerpAPI-style web search at about $15 per 1,000 queries."""

    gpu_usd_per_hour: float = 2.50
    cpu_usd_per_hour: float = 0.05
    web_usd_per_1k: float | None = None  # None: the provider's own list price

    def per_1k(self, kind: str, seconds_per_search: float | None, backend: Any = None) -> tuple[float | None, str]:
        """(USD per 1,000 searches, a one-line statement of how it was computed)."""
        if kind == "web":
            price = self.web_usd_per_1k
            if price is None:
                price = float(getattr(getattr(backend, "provider", None), "usd_per_1k_queries", 0.0))
            return price, f"web API list price ${price:g} per 1k queries"
        if seconds_per_search is None:
            return None, "no searches made"
        if kind == "simulator":
            device = _engine_device(backend)
            how = f"{seconds_per_search * 1000:.1f} ms of simulator time per search x ${self.gpu_usd_per_hour:g}/GPU-hour"
            if device == "cpu":  # the label must say so: a GPU simulator is far faster per search
                how += " (measured on a CPU, priced at the GPU rate: overstates a GPU simulator's cost)"
            return 1000 * seconds_per_search * self.gpu_usd_per_hour / 3600, how
        return (1000 * seconds_per_search * self.cpu_usd_per_hour / 3600,
                f"{seconds_per_search * 1000:.2f} ms of retrieval time per search x ${self.cpu_usd_per_hour:g}/CPU-hour")


def _engine_device(backend: Any) -> str | None:
    """Where a simulator backend's engine runs ("cpu", "cuda:0", ...), None when unknown or remote."""
    seen = 0
    while backend is not None and seen < 8:  # unwrap CachedSearch / TimedBackend-style wrappers
        engine = getattr(backend, "engine", None)
        if engine is not None:
            device = getattr(engine, "device", None)
            return str(device).split(":")[0] if device is not None else None
        backend, seen = getattr(backend, "backend", None) or getattr(backend, "inner", None), seen + 1
    return None


class TimedBackend(DelegatingSearch):
    """Wraps a backend and records each call's wall time and request count (nothing else changes)."""

    def __init__(self, inner: SearchBackend):
        super().__init__(inner)
        self.call_seconds: list[float] = []
        self.call_sizes: list[int] = []
        self._lock = threading.Lock()

    def _timed(self, fn, requests):
        t0 = time.perf_counter()
        out = fn(requests)
        with self._lock:
            self.call_seconds.append(time.perf_counter() - t0)
            self.call_sizes.append(len(requests))
        return out

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self._timed(self.inner.search, list(requests))

    def search_with_info(self, requests: Sequence[SearchRequest]):
        return self._timed(self.inner.search_with_info, list(requests))

    def set_training_step(self, step: int) -> None:
        self.inner.set_training_step(step)

    def close(self) -> None:
        self.inner.close()

    @property
    def searches(self) -> int:
        return sum(self.call_sizes)

    @property
    def seconds(self) -> float:
        return sum(self.call_seconds)


def _constant_curriculum(p: float):
    from curricula import ConstantCurriculum

    return ConstantCurriculum(p)


def simulator_cli_options(engine: str, words_per_doc: int, knowledge: str | None = None, model: str | None = None,
                      base_urls: list[str] | None = None, device: str | None = None, **extra) -> dict:
    """The simulator's backend_options from command-line settings (None: the option's default)."""
    opts: dict = {"engine": engine, "words_per_doc": words_per_doc, **extra}
    if knowledge:
        opts["knowledge"] = knowledge
    if model:
        opts["model"] = model
    if base_urls:
        opts["base_urls"] = base_urls
    if engine == "transformers":
        opts["device"] = device
    return opts


def build_backend(spec: BackendSpec, config, documents=None, simulator_options: dict | None = None) -> SearchBackend:
    """Build the backend of `spec` for the dataset of `config` (`documents`: the corpus, when known)."""
    from zerosearch_env.search import make_backend

    if spec.kind == "simulator":
        from zerosearch_env.search.simulator import SimulatedSearch, knowledge_option, make_engine

        opts = dict(simulator_options or {})
        knowledge = knowledge_option(config, opts.pop("knowledge", None))
        engine = make_engine(opts.pop("engine", "transformers"), opts)
        known = {"words_per_doc", "max_regenerations", "gate", "repair", "seed", "prompt_style", "fallback_unit"}
        kwargs = {k: opts[k] for k in known if k in opts}
        kwargs.setdefault("seed", config.world_seed)
        return SimulatedSearch(engine, curriculum=_constant_curriculum(float(spec.noise)),
                               max_doc_chars=config.max_doc_chars, knowledge=knowledge, **kwargs)
    if spec.kind == "bm25" and documents is not None:
        from zerosearch_env.search.bm25 import BM25Search

        return BM25Search(documents)
    if spec.kind == "dense" and documents is not None:
        from zerosearch_env.search.dense import DenseSearch

        return DenseSearch(documents)
    return make_backend(config.updated(backend=spec.kind, backend_options=dict(spec.options)))


def compare(agent, tasks, specs: Sequence[BackendSpec], config, *, env_tasks=None, documents=None,
            num_envs: int = 16, cost: CostModel = CostModel(), simulator_options: dict | None = None,
            progress: bool = True, backends: dict[str, SearchBackend] | None = None,
            on_row=None) -> dict:
    """Run `agent` on `tasks` once per backend spec; returns the report (rows + records).

    `env_tasks` are the tasks the env can look up (default `tasks`); `backends` may hand in already
    built backends by label (they are not closed here); `on_row(partial_report)` is called after
    each backend (the CLI saves partial results there, so a long run that is cut short keeps them).
    """
    from agents.evaluate import run_episodes, summarize
    from zerosearch_env import make_vec

    tasks = list(tasks)
    if not tasks:
        raise ValueError("no questions to compare on")
    rows, records = [], []
    for spec in specs:
        given = (backends or {}).get(spec.label)
        t_build = time.perf_counter()
        inner = given if given is not None else build_backend(spec, config, documents, simulator_options)
        build_s = time.perf_counter() - t_build
        timed = TimedBackend(inner)
        vec = make_vec(min(num_envs, len(tasks)), config, backend=timed, tasks=env_tasks or tasks)
        try:
            t0 = time.perf_counter()
            recs = run_episodes(agent, vec, tasks, progress=progress, desc=f"compare {spec.label}")
            wall = time.perf_counter() - t0
        finally:
            vec.close()
            if given is None:
                inner.close()
        summary = summarize(recs)
        per_search = timed.seconds / timed.searches if timed.searches else None
        usd, how = cost.per_1k(spec.kind, per_search, inner)
        lat = sorted(timed.call_seconds)
        rows.append({
            "backend": spec.label, "kind": spec.kind, "noise": spec.noise,
            "n": summary["n"], "em": summary["em"], "f1": summary["f1"],
            "searches_per_episode": summary["searches_per_episode"],
            "latency_ms_per_search": None if per_search is None else 1000 * per_search,
            "backend_call_p50_ms": 1000 * statistics.median(lat) if lat else None,
            "answer_in_results": summary["answer_in_results"],
            "usd_per_1k_searches": usd, "cost_basis": how,
            "searches": timed.searches, "backend_calls": len(timed.call_seconds),
            "backend_seconds": timed.seconds, "build_seconds": build_s, "wall_seconds": wall,
            "invalid_rate": summary["invalid_rate"], "format_compliance": summary["format_compliance"],
        })
        records += [{"backend": spec.label, **r} for r in recs]
        if on_row is not None:
            on_row(_report(agent, tasks, cost, rows, records))
    return _report(agent, tasks, cost, rows, records)


def _report(agent, tasks, cost: CostModel, rows: list[dict], records: list[dict]) -> dict:
    return {"agent": getattr(agent, "name", type(agent).__name__), "n_questions": len(tasks),
            "cost_model": asdict(cost), "rows": list(rows), "records": list(records)}


_COLUMNS = [("backend", "backend", None), ("EM", "em", ".3f"), ("F1", "f1", ".3f"),
            ("searches/ep", "searches_per_episode", ".2f"), ("ms/search", "latency_ms_per_search", ".2f"),
            ("ans in results", "answer_in_results", ".3f"), ("$/1k searches", "usd_per_1k_searches", ".5f"),
            ("n", "n", "d")]


def format_table(report: dict) -> str:
    """The comparison as a plain-text table."""
    rows = [[c for c, _, _ in _COLUMNS]]
    for r in report["rows"]:
        cells = []
        for _, key, fmt in _COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else (str(v) if fmt is None else format(v, fmt)))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = sorted({r["cost_basis"] for r in report["rows"] if r.get("cost_basis") and "GPU rate" in r["cost_basis"]})
    foot = "".join(f"\n$/1k {r['backend']}: {r['cost_basis']}" for r in report["rows"] if r.get("cost_basis") in notes)
    return f"agent: {report['agent']}  questions: {report['n_questions']}\n" + "\n".join(lines) + foot


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def save_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write compare.json (rows, cost model), records.jsonl (one episode per line), compare.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in report.items() if k != "records"}
    summary["rows"] = [{k: _clean(v) for k, v in r.items()} for r in report["rows"]]
    paths = {"json": out / "compare.json", "records": out / "records.jsonl", "png": out / "compare.png"}
    paths["json"].write_text(json.dumps(summary, indent=2), encoding="utf-8")
    with paths["records"].open("w", encoding="utf-8") as f:
        for r in report["records"]:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    plot_report(summary, paths["png"])
    return paths


def plot_report(report: dict, path: str | Path) -> None:
    """A bar chart per figure (EM, F1, answer in results, searches/episode, ms/search, $/1k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("EM", "em", False), ("F1", "f1", False), ("answer in results", "answer_in_results", False),
              ("searches / episode", "searches_per_episode", False), ("ms / search (log)", "latency_ms_per_search", True),
              ("USD / 1k searches (log)", "usd_per_1k_searches", True)]
    labels = [r["backend"] for r in report["rows"]]
    colors = ["#4c72b0" if r["kind"] == "simulator" else "#dd8452" for r in report["rows"]]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, key, log) in zip(axes.flat, panels):
        vals = [r.get(key) for r in report["rows"]]
        heights = [0.0 if v is None else float(v) for v in vals]
        if log:
            heights = [max(h, 1e-6) for h in heights]
            ax.set_yscale("log")
        bars = ax.bar(range(len(labels)), heights, color=colors)
        for b, v in zip(bars, vals):
            ax.annotate("-" if v is None else f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(title)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        if not log and key in ("em", "f1", "answer_in_results"):
            ax.set_ylim(0, 1.1)
    fig.suptitle(f"zerosearch compare: agent {report['agent']}, {report['n_questions']} questions "
                 "(blue: simulator, orange: real search)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

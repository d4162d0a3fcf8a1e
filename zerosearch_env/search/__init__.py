"""Search backends: the simulator, real retrieval, and a cache that wraps any of them.

Heavy backends are imported lazily, so `import zerosearch_env` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zerosearch_env.search.base import DelegatingSearch, Document, FunctionSearch, SearchBackend, SearchRequest

# name -> "module:Class"; each class has `from_config(config: EnvConfig) -> SearchBackend`
BACKENDS: dict[str, str] = {
    "bm25": "zerosearch_env.search.bm25:BM25Search",
    "simulator": "zerosearch_env.search.simulator:SimulatedSearch",
    "dense": "zerosearch_env.search.dense:DenseSearch",
    "retriever": "zerosearch_env.search.retriever:RetrieverClient",
    "web": "zerosearch_env.search.web:WebSearch",
}
_LAZY = {cls: mod for mod, cls in (v.split(":") for v in BACKENDS.values())}
_LAZY["CachedSearch"] = "zerosearch_env.search.cache"
_LAZY["WriteBackCorpus"] = "zerosearch_env.search.writeback"

__all__ = ["Document", "SearchRequest", "SearchBackend", "FunctionSearch", "DelegatingSearch", "make_backend", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zerosearch_env.search' has no attribute {name!r}")


def make_backend(config, curriculum: Any = None) -> SearchBackend:
    """Build the backend named by `config.backend` (see `BACKENDS`). `curriculum` (simulator only):
    a `curricula.Curriculum` object the simulator draws its noise from, used as is instead of one
    built from `backend_options["curriculum"]`, so a trainer that updates or restores it moves
    the simulator too."""
    if config.backend not in BACKENDS:
        raise ValueError(f"unknown backend {config.backend!r}; choose one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[config.backend].split(":")
    backend_cls = getattr(importlib.import_module(module), cls)
    if curriculum is None:
        return backend_cls.from_config(config)
    if config.backend != "simulator":
        raise ValueError(f"a curriculum schedules the simulator's noise; backend {config.backend!r} takes none")
    return backend_cls.from_config(config, curriculum=curriculum)

"""`CachedSearch`: an on-disk sqlite cache in front of any search backend.

Entries are keyed by the inner backend's `identity()` and its `cache_key_fields(request)` (query
and top_k by default; the simulator adds its useful/noisy mode, question and gold answers). The
database runs in WAL mode with a busy timeout, each thread of each process opens its own
connection, and every write is one `INSERT OR IGNORE` transaction: several processes may share one
cache, and a writer killed mid-write leaves the database readable with no half-written entry
(sqlite rolls the unfinished transaction back on the next open).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    query TEXT NOT NULL,
    docs TEXT NOT NULL,
    info TEXT NOT NULL,
    created REAL NOT NULL
)
"""
DEFAULT_FILENAME = "search_cache.sqlite"
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_MAX_VARS = 500  # keys per SELECT (sqlite's bound-parameter limit is 999 on old builds)


def cache_key(identity: str, fields: tuple) -> str:
    """A stable hex key for (backend identity, request fields)."""
    blob = json.dumps([identity, list(fields)], ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=20).hexdigest()


def _docs_to_json(docs: Sequence[Document]) -> str:
    return json.dumps([d.to_dict() for d in docs], ensure_ascii=False, separators=(",", ":"))


def _docs_from_json(text: str) -> list[Document]:
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError("cached docs are not a list")
    return [Document(id=str(r["id"]), title=str(r["title"]), text=str(r["text"]), score=r.get("score")) for r in rows]


class CachedSearch(SearchBackend):
    """Wraps `backend` with a persistent cache at `path`.

    `path` is a sqlite file when it ends in .sqlite/.sqlite3/.db, else a folder (created) that
    holds `search_cache.sqlite`. The misses of one call go to the inner backend in ONE batched call
    (identical misses are sent once). `search_with_info` passes the inner info through (stored with
    the entry), overlaid with the inner backend's `call_info` for each request (so a hit reports
    this call's noise probability, not the stored call's), and adds `"cache": "hit" | "miss"`;
    `stats()` adds hit and miss counters to the inner backend's.
    """

    def __init__(self, backend: SearchBackend, path: str | os.PathLike, timeout_s: float = 60.0):
        if not isinstance(backend, SearchBackend):
            raise TypeError(f"backend must be a SearchBackend, got {type(backend).__name__}")
        p = Path(path).expanduser()
        if p.suffix.lower() not in _SQLITE_SUFFIXES:
            p = p / DEFAULT_FILENAME
        p.parent.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.path = p
        self.timeout_s = float(timeout_s)
        self.name = f"cached-{backend.name}"
        self._local = threading.local()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self._conn()  # create the schema now so errors show at construction

    # ------------------------------------------------------------------ sqlite
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _lookup(self, keys: list[str]) -> dict[str, tuple[list[Document], dict]]:
        conn = self._conn()
        found: dict[str, tuple[list[Document], dict]] = {}
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), _MAX_VARS):
            chunk = unique[i:i + _MAX_VARS]
            marks = ",".join("?" * len(chunk))
            for key, docs, info in conn.execute(f"SELECT key, docs, info FROM entries WHERE key IN ({marks})", chunk):
                try:
                    found[key] = (_docs_from_json(docs), json.loads(info))
                except (ValueError, KeyError, TypeError):
                    continue  # an unreadable entry is a miss; the write below replaces it
        return found

    def _store(self, rows: list[tuple[str, str, str, str, str]]) -> None:
        """Write all rows in one transaction (all or nothing)."""
        if not rows:
            return
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM entries WHERE key = ? AND json_valid(docs) = 0", [(r[0],) for r in rows])
            conn.executemany(
                "INSERT OR IGNORE INTO entries (key, backend, query, docs, info, created) VALUES (?, ?, ?, ?, ?, ?)",
                [(*r, now) for r in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    # ------------------------------------------------------------------ SearchBackend API
    def key_of(self, request: SearchRequest, identity: str | None = None) -> str:
        """The cache key of one request."""
        identity = self.backend.identity() if identity is None else identity
        return cache_key(identity, tuple(self.backend.cache_key_fields(request)))

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self.search_with_info(requests)[0]

    def search_with_info(self, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
        requests = list(requests)
        if not requests:
            return [], []
        identity = self.backend.identity()
        keys = [self.key_of(r, identity) for r in requests]
        found = self._lookup(keys)
        # unique misses, in first-seen order -> one inner call
        miss_keys = [k for k in dict.fromkeys(keys) if k not in found]
        if miss_keys:
            first_request = {}
            for k, r in zip(keys, requests):
                first_request.setdefault(k, r)
            inner_requests = [first_request[k] for k in miss_keys]
            docs, infos = self.backend.search_with_info(inner_requests)
            if len(docs) != len(inner_requests) or len(infos) != len(inner_requests):
                raise RuntimeError(f"{self.backend.name}: returned {len(docs)} results for {len(inner_requests)} requests")
            fresh = {k: (list(d), dict(i or {})) for k, d, i in zip(miss_keys, docs, infos)}
            self._store([(k, identity, first_request[k].query, _docs_to_json(d), json.dumps(i, default=str))
                         for k, (d, i) in fresh.items()])
        else:
            fresh = {}
        results, out_infos = [], []
        hits = 0
        for k, r in zip(keys, requests):
            hit = k in found
            d, i = found[k] if hit else fresh[k]
            hits += hit
            out_infos.append({**i, **self.backend.call_info(r), "cache": "hit" if hit else "miss"})
            results.append(list(d))
        with self._lock:
            self.hits += hits
            self.misses += len(keys) - hits
        return results, out_infos

    def identity(self) -> str:
        return self.backend.identity()

    def cache_key_fields(self, request: SearchRequest) -> tuple:
        return self.backend.cache_key_fields(request)

    def call_info(self, request: SearchRequest) -> dict:
        return self.backend.call_info(request)

    def stats(self) -> dict:
        with self._lock:
            hits, misses = self.hits, self.misses
        total = hits + misses
        return {**self.backend.stats(), "cache_hits": hits, "cache_misses": misses,
                "cache_hit_rate": hits / total if total else None}

    def set_training_step(self, step: int) -> None:
        self.backend.set_training_step(step)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None
        self.backend.close()

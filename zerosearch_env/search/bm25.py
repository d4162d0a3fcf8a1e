"""`BM25Search`: lexical retrieval over any corpus with `bm25s`, the index cached on disk.

The index is built once per corpus (keyed by a hash of every document's id, title and text and
of the tokenizer settings) and saved under `$ZEROSEARCH_CACHE/bm25/<hash>` (default
`~/.cache/zerosearch`); later constructions load it. All requests of one `search` call are scored
in one pass. Queries that hold no indexed word (empty, all stop words, unknown scripts) return no
documents; overly long queries are cut to their first `max_query_tokens` words.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

_TOKEN = re.compile(r"\w\w+")
_TOKENIZER_VERSION = "bm25-v1"
# English stop words dropped from documents and queries.
_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with which who what when where how did does do".split()
)


def cache_root() -> Path:
    """`$ZEROSEARCH_CACHE` or `~/.cache/zerosearch`."""
    return Path(os.environ.get("ZEROSEARCH_CACHE", Path.home() / ".cache" / "zerosearch"))


def tokenize(text: str) -> list[str]:
    """NFKC, lower case, words of 2+ word characters, stop words removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return [t for t in _TOKEN.findall(text) if t not in _STOPWORDS]


def corpus_hash(documents: Sequence[Document], k1: float = 1.5, b: float = 0.75) -> str:
    """A hash that changes when the documents or the index settings change."""
    h = hashlib.sha256(f"{_TOKENIZER_VERSION}|k1={k1}|b={b}|n={len(documents)}".encode())
    for d in documents:
        for part in (d.id, d.title, d.text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x1f")
        h.update(b"\x1e")
    return h.hexdigest()[:24]


class BM25Search(SearchBackend):
    """BM25 over `documents` (title and text indexed together).

    `index_dir` is where the index lives: a folder holding `meta.json` and the `bm25s` files.
    When None, `cache_root()/bm25/<corpus hash>` is used. An index found there whose hash
    matches is loaded instead of rebuilt; `rebuilt` says which happened.
    """

    name = "bm25"

    def __init__(self, documents: Sequence[Document], index_dir: str | Path | None = None,
                 k1: float = 1.5, b: float = 0.75, max_query_tokens: int = 256):
        import bm25s

        self.documents: list[Document] = list(documents)
        if not self.documents:
            raise ValueError("BM25Search needs at least one document")
        self.k1, self.b = float(k1), float(b)
        self.max_query_tokens = int(max_query_tokens)
        self.hash = corpus_hash(self.documents, self.k1, self.b)
        self.index_dir = Path(index_dir) if index_dir is not None else cache_root() / "bm25" / self.hash
        self.rebuilt = False
        self._calls = 0
        self._queries = 0
        self._empty_queries = 0
        found = self._index_matches()
        self._retriever = self._load(bm25s) if found else None
        if self._retriever is None:
            self._retriever = self._build(bm25s, replace_broken=found)
            self.rebuilt = True
        self._vocab: dict[str, int] = self._retriever.vocab_dict

    def _index_matches(self) -> bool:
        """Does `index_dir` hold a complete index of this corpus (same hash)?"""
        try:
            meta = json.loads((self.index_dir / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and meta.get("hash") == self.hash

    def _load(self, bm25s):
        """Load the saved index; None when its files are unreadable (then it is rebuilt)."""
        try:
            retriever = bm25s.BM25.load(str(self.index_dir), load_vocab=True, show_progress=False)
        except Exception:
            return None
        if retriever.scores.get("num_docs") != len(self.documents):
            return None
        return retriever

    def _build(self, bm25s, replace_broken: bool = False):
        corpus_tokens = [tokenize(f"{d.title}\n{d.text}") for d in self.documents]
        # bm25s rejects empty documents: give those a token no query can produce.
        corpus_tokens = [toks or ["\x00empty"] for toks in corpus_tokens]
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(corpus_tokens, show_progress=False)
        # Save into a temporary sibling folder, then move it into place, so that a crash or a
        # concurrent builder never leaves a half-written index behind.
        self.index_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".bm25-", dir=self.index_dir.parent))
        try:
            retriever.save(str(tmp), show_progress=False)
            (tmp / "meta.json").write_text(json.dumps({
                "hash": self.hash, "num_docs": len(self.documents), "k1": self.k1, "b": self.b,
                "tokenizer": _TOKENIZER_VERSION}), encoding="utf-8")
            if self.index_dir.exists() and (replace_broken or not self._index_matches()):
                shutil.rmtree(self.index_dir, ignore_errors=True)  # unreadable, or of another corpus
            if not self.index_dir.exists():
                try:
                    os.replace(tmp, self.index_dir)
                except OSError:  # another process moved its (identical) index in first
                    pass
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return retriever

    @classmethod
    def from_config(cls, config) -> "BM25Search":
        """Corpus from `backend_options["corpus_path"]` or the built-in world (`config.world_seed`).

        Other options: `index_dir`, `k1`, `b`.
        """
        from zerosearch_env.data import load_corpus

        opts = dict(config.backend_options or {})
        known = {"corpus_path", "index_dir", "k1", "b", "max_query_tokens"}
        unknown = set(opts) - known
        if unknown:
            raise ValueError(f"bm25: unknown backend_options {sorted(unknown)}; known: {sorted(known)}")
        path = opts.get("corpus_path")
        if path is None and config.dataset != "world":
            raise ValueError("bm25 over a non-world dataset needs backend_options['corpus_path']")
        docs = load_corpus("world", world_seed=config.world_seed, path=path)
        return cls(docs, index_dir=opts.get("index_dir"), k1=opts.get("k1", 1.5), b=opts.get("b", 0.75),
                   max_query_tokens=opts.get("max_query_tokens", 256))

    def _query_ids(self, query: str) -> list[int]:
        if not isinstance(query, str):
            return []
        vocab = self._vocab
        ids = [vocab[t] for t in tokenize(query[: 64 * self.max_query_tokens]) if t in vocab]
        return ids[: self.max_query_tokens]

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        """One list per request: up to `top_k` documents with a positive score, best first."""
        self._calls += 1
        self._queries += len(requests)
        out: list[list[Document]] = [[] for _ in requests]
        todo = [(i, ids) for i, r in enumerate(requests) if (ids := self._query_ids(r.query))]
        self._empty_queries += len(requests) - len(todo)
        if not todo:
            return out
        k = min(max(max(1, int(requests[i].top_k)) for i, _ in todo), len(self.documents))
        indices, scores = self._retriever.retrieve([ids for _, ids in todo], k=k, show_progress=False)
        indices, scores = np.asarray(indices), np.asarray(scores)
        for row, (i, _) in enumerate(todo):
            top_k = max(1, int(requests[i].top_k))
            docs = []
            for j, s in zip(indices[row][:top_k], scores[row][:top_k]):
                if s <= 0:
                    break
                d = self.documents[int(j)]
                docs.append(Document(d.id, d.title, d.text, float(s)))
            out[i] = docs
        return out

    def identity(self) -> str:
        return f"bm25:{self.hash}"

    def stats(self) -> dict:
        return {"bm25_calls": self._calls, "bm25_queries": self._queries,
                "bm25_empty_queries": self._empty_queries}

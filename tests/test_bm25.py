"""BM25Search over the world corpus: retrieval, on-disk index reuse, batching, odd queries."""

from __future__ import annotations

import pytest

from zerosearch_env import EnvConfig
from zerosearch_env.data.world import generate_world
from zerosearch_env.search import Document, SearchRequest, make_backend
from zerosearch_env.search.bm25 import BM25Search, tokenize


@pytest.fixture(scope="module")
def world():
    return generate_world(0)


@pytest.fixture(scope="module")
def bm25(world, tmp_path_factory):
    return BM25Search(world.documents, index_dir=tmp_path_factory.mktemp("bm25") / "idx")


def test_title_search_finds_article(world, bm25):
    tasks = world.split("test")[:300]
    queries = [title for t in tasks for title in t.supporting_titles]
    results = bm25.search([SearchRequest(q, top_k=3) for q in queries])
    assert len(results) == len(queries)
    hits = sum(bool(r) and r[0].title == q for q, r in zip(queries, results))
    assert hits / len(queries) >= 0.95
    for r in results:
        assert len(r) <= 3
        assert all(isinstance(d, Document) and d.score is not None and d.score > 0 for d in r)
        assert [d.score for d in r] == sorted((d.score for d in r), reverse=True)


def test_index_saved_and_reloaded_gives_identical_results(world, bm25):
    assert bm25.rebuilt
    assert (bm25.index_dir / "meta.json").exists()
    again = BM25Search(world.documents, index_dir=bm25.index_dir)
    assert not again.rebuilt
    reqs = [SearchRequest(t.question, top_k=5) for t in world.split("test")[:100]]
    assert again.search(reqs) == bm25.search(reqs)
    assert again.identity() == bm25.identity()


def test_changed_corpus_rebuilds(world, bm25, tmp_path):
    docs = list(world.documents[:50])
    a = BM25Search(docs, index_dir=tmp_path / "x")
    changed = docs[:-1] + [Document(docs[-1].id, docs[-1].title, docs[-1].text + " zzqx")]
    b = BM25Search(changed, index_dir=tmp_path / "x")
    assert a.rebuilt and b.rebuilt and a.identity() != b.identity()
    assert b.search([SearchRequest("zzqx")])[0][0].id == docs[-1].id


def test_corrupt_index_is_rebuilt(world, tmp_path):
    docs = list(world.documents[:30])
    a = BM25Search(docs, index_dir=tmp_path / "idx")
    for f in (tmp_path / "idx").glob("*.npy"):
        f.write_bytes(b"garbage")
    b = BM25Search(docs, index_dir=tmp_path / "idx")
    assert b.rebuilt
    reqs = [SearchRequest(d.title) for d in docs]
    assert b.search(reqs) == a.search(reqs)
    c = BM25Search(docs, index_dir=tmp_path / "idx")
    assert not c.rebuilt and c.search(reqs) == a.search(reqs)


def test_default_cache_dir_under_zerosearch_cache(monkeypatch, tmp_path, world):
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path))
    docs = list(world.documents[:20])
    s = BM25Search(docs)
    assert s.index_dir.parent == tmp_path / "bm25" and s.rebuilt
    assert not BM25Search(docs).rebuilt


def test_batched_equals_one_by_one(world, bm25):
    reqs = [SearchRequest(t.question, top_k=k) for t, k in zip(world.split("test")[:40], [1, 2, 3, 5] * 10)]
    batched = bm25.search(reqs)
    single = [bm25.search([r])[0] for r in reqs]
    assert batched == single
    assert all(1 <= len(r) <= q.top_k for r, q in zip(batched, reqs))
    assert sum(len(r) == q.top_k for r, q in zip(batched, reqs)) >= 0.9 * len(reqs)


def test_odd_queries_do_not_crash(bm25):
    reqs = [SearchRequest(q, top_k=3) for q in [
        "", "   ", "the of and", "日本語のテキスト", "<search>x</search>", "\x00\x01\x02",
        "x" * 1_000_000, ("word " * 200_000), "Ωμέγα кириллица عربى", "a"]]
    out = bm25.search(reqs)
    assert len(out) == len(reqs)
    assert out[0] == [] and out[1] == [] and out[2] == [] and out[3] == [] and out[9] == []
    assert all(len(r) <= 3 for r in out)
    assert bm25.search([]) == []


def test_top_k_larger_than_corpus(tmp_path, world):
    s = BM25Search(world.documents[:3], index_dir=tmp_path / "small")
    r = s.search([SearchRequest(world.documents[0].title, top_k=50)])[0]
    assert 1 <= len(r) <= 3


def test_from_config_world_and_corpus_path(tmp_path, world):
    cfg = EnvConfig(backend="bm25", backend_options={"index_dir": str(tmp_path / "w")})
    s = make_backend(cfg)
    assert isinstance(s, BM25Search) and len(s.documents) == len(world.documents)
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "d1", "contents": "\\"Kelvaro\\"\\nKelvaro is a lake."}\n'
                    '{"id": "d2", "title": "Brune", "text": "Brune is a hill."}\n', encoding="utf-8")
    cfg = EnvConfig(backend="bm25", backend_options={"corpus_path": str(path), "index_dir": str(tmp_path / "c")})
    s = make_backend(cfg)
    (doc,), = s.search([SearchRequest("kelvaro lake", top_k=1)])
    assert doc.id == "d1" and doc.title == "Kelvaro"
    with pytest.raises(ValueError, match="unknown backend_options"):
        make_backend(EnvConfig(backend="bm25", backend_options={"bogus": 1}))


def test_tokenize():
    assert tokenize("The Lantern of Quenlow, 1874!") == ["lantern", "quenlow", "1874"]
    with pytest.raises(ValueError):
        BM25Search([])

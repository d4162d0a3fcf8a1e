"""Loaders for Search-R1 parquet, FlashRAG JSONL and corpus files; clear errors on bad rows."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerosearch_env.data import load_tasks
from zerosearch_env.data.loaders import load_corpus_file, load_hf_dataset, load_qa_file, parse_contents, rows_to_tasks


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_search_r1_parquet(tmp_path):
    table = pa.table({
        "id": ["train_0", "train_1"],
        "question": ["who wrote the kelvaran sagas?", "where is brune hill"],
        "golden_answers": [["Ansel Dorr", "Dorr"], ["Kelvar"]],
        "data_source": ["nq", "hotpotqa"],
        "reward_model": [{"style": "rule", "ground_truth": {"target": ["Ansel Dorr", "Dorr"]}},
                         {"style": "rule", "ground_truth": {"target": ["Kelvar"]}}],
        "extra_info": [{"split": "train", "index": 0}, {"split": "test", "index": 1}],
    })
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    tasks = load_qa_file(path)
    assert [t.id for t in tasks] == ["train_0", "train_1"]
    assert tasks[0].answers == ("Ansel Dorr", "Dorr") and tasks[0].data_source == "nq"
    assert [t.split for t in tasks] == ["train", "test"]
    assert load_tasks(str(path), "test") == [tasks[1]]
    assert load_qa_file(path, split="dev")[0].split == "dev"


def test_missing_split_is_an_error_naming_the_files_splits(tmp_path):
    path = _write_jsonl(tmp_path / "train_only.jsonl", [
        {"question": f"q{i}?", "golden_answers": ["a"], "split": "train"} for i in range(3)] + [
        {"question": "d?", "golden_answers": ["a"], "extra_info": {"split": "dev"}}])
    with pytest.raises(ValueError, match=r"train_only\.jsonl has no 'test' split; its splits: 'dev', 'train'"):
        load_tasks(str(path), "test")
    assert [t.question for t in load_tasks(str(path), "dev")] == ["d?"]


def test_file_without_split_information_is_split_by_question_hash(tmp_path):
    rows = [{"question": f"Who founded the Orsk {i} Guild?", "golden_answers": [f"A{i}"]} for i in range(400)]
    path = _write_jsonl(tmp_path / "flat.jsonl", rows)
    train, test, every = (load_tasks(str(path), s) for s in ("train", "test", "all"))
    assert len(every) == 400 and [t.question for t in every] == [r["question"] for r in rows]
    assert not {t.question for t in train} & {t.question for t in test}
    assert len(train) + len(test) == 400 and 20 <= len(test) <= 60

    # the documented rule: the first 8 bytes of sha256("zerosearch-split-v1:" + casefolded question)
    def documented(q: str) -> str:
        h = int.from_bytes(hashlib.sha256(f"zerosearch-split-v1:{q.casefold()}".encode()).digest()[:8], "big")
        return "test" if h < 0.1 * 2**64 else "train"

    assert {t.question for t in test} == {r["question"] for r in rows if documented(r["question"]) == "test"}
    # independent of row order and of the other rows
    subset = rows[250:][::-1]
    shuffled = _write_jsonl(tmp_path / "shuffled.jsonl", subset)
    expected = {t.question for t in test} & {r["question"] for r in subset}
    assert expected and {t.question for t in load_tasks(str(shuffled), "test")} == expected


def test_rows_with_and_without_split_do_not_mix(tmp_path):
    path = _write_jsonl(tmp_path / "mixed.jsonl", [{"question": "a?", "golden_answers": ["x"], "split": "test"},
                                                   {"question": "b?", "golden_answers": ["y"]}])
    with pytest.raises(ValueError, match=r"mixed\.jsonl: row 1: no split"):
        load_qa_file(path)


def test_reward_model_target_only(tmp_path):
    table = pa.table({
        "question": ["q one", "q two"],
        "reward_model": [{"ground_truth": {"target": ["A"]}}, {"ground_truth": {"target": ["B", "b2"]}}],
        "data_source": ["x", "x"],
        "extra_info": [{"split": "train", "index": 7}, {"split": "train", "index": 8}],
    })
    path = tmp_path / "r1.parquet"
    pq.write_table(table, path)
    tasks = load_qa_file(path)
    assert [t.answers for t in tasks] == [("A",), ("B", "b2")]
    assert [t.id for t in tasks] == ["x-7", "x-8"]


def test_numpy_array_answers_and_pandas_like_rows():
    rows = [(0, {"question": "q?", "golden_answers": np.array(["x", "y"], dtype=object)}),
            (1, {"question": "r?", "golden_answers": "z"}), (2, {"question": "s?", "golden_answers": [1984]})]
    tasks = rows_to_tasks(rows, "mem")
    assert [t.answers for t in tasks] == [("x", "y"), ("z",), ("1984",)]
    assert [t.id for t in tasks] == ["row-0", "row-1", "row-2"]


def test_flashrag_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "dev.jsonl", [
        {"id": "test_0", "question": "Who founded Orsk?", "golden_answers": ["Mira Tol"], "metadata": {}},
        {"id": "test_1", "question": "When?", "golden_answers": ["1901", "in 1901"]},
    ])
    tasks = load_qa_file(path)
    assert len(tasks) == 2 and tasks[1].answers == ("1901", "in 1901") and tasks[0].kind == "qa"


@pytest.mark.parametrize("row, message", [
    ({"golden_answers": ["a"]}, "'question' is missing"),
    ({"question": "  ", "golden_answers": ["a"]}, "'question' is missing"),
    ({"question": "q"}, "no gold answers"),
    ({"question": "q", "golden_answers": []}, "empty"),
    ({"question": "q", "golden_answers": [{"x": 1}]}, "must be a string or a list"),
    (["not", "a", "dict"], "expected an object"),
])
def test_malformed_rows_name_the_row(tmp_path, row, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "ok", "golden_answers": ["a"]}, row])
    with pytest.raises(ValueError, match=message) as e:
        load_qa_file(path)
    assert "row 1" in str(e.value) and "bad.jsonl" in str(e.value)


def test_bad_files(tmp_path):
    p = tmp_path / "broken.jsonl"
    p.write_text('{"question": "a", "golden_answers": ["b"]}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        load_qa_file(p)
    with pytest.raises(FileNotFoundError):
        load_qa_file(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_qa_file(tmp_path / "x.csv")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        load_qa_file(tmp_path / "empty.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="parquet"):
        load_qa_file(tmp_path / "junk.parquet")
    _write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "question": "a", "golden_answers": "b"}] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        load_qa_file(tmp_path / "dup.jsonl")


def test_corpus_formats(tmp_path):
    path = _write_jsonl(tmp_path / "corpus.jsonl", [
        {"id": "0", "contents": '"Kelvar Hill"\nKelvar Hill is a hill.\nIt is green.'},
        {"id": "1", "title": "Brune", "text": "Brune is a town."},
        {"contents": "no title line"},
    ])
    docs = load_corpus_file(path)
    assert (docs[0].title, docs[0].text) == ("Kelvar Hill", "Kelvar Hill is a hill.\nIt is green.")
    assert (docs[1].id, docs[1].title) == ("1", "Brune")
    assert (docs[2].id, docs[2].title, docs[2].text) == ("2", "", "no title line")
    pq.write_table(pa.table({"id": ["a"], "contents": ['"T"\nbody']}), tmp_path / "c.parquet")
    assert load_corpus_file(tmp_path / "c.parquet")[0].title == "T"
    assert parse_contents('"Quoted "inner" title"\nx') == ('Quoted "inner" title', "x")
    bad = _write_jsonl(tmp_path / "bad_corpus.jsonl", [{"id": "0", "contents": "x"}, {"id": "1", "body": "?"}])
    with pytest.raises(ValueError, match="row 1"):
        load_corpus_file(bad)


def test_hf_dataset_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="network access"):
        load_hf_dataset("zerosearch-test/definitely-not-cached-dataset", "test")

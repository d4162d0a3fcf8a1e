"""Loaders for real QA sets and corpora: Search-R1 parquet, FlashRAG JSONL, Hugging Face datasets.

QA rows need a `question` and gold answers, read from `golden_answers` (a list, a numpy array or
one string) or from Search-R1's `reward_model.ground_truth.target`. `id`, `split` (or
`extra_info.split`) and `data_source` are optional; a file gives a split to every row or to none,
and a file without splits is split by question (`hashed_split`: about 10% "test", the same for a
question whatever the file's order or other rows). Corpus rows hold either `contents` in the
Search-R1/FlashRAG form `"Title"\\ntext`, or `title` and `text` fields. A malformed row raises a
`ValueError` naming the file, the row number and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from zerosearch_env.data.task import Task
from zerosearch_env.search.base import Document

__all__ = ["load_qa_file", "load_corpus_file", "load_hf_dataset", "rows_to_tasks", "parse_contents",
           "hashed_split"]

HASH_SPLIT_SALT = "zerosearch-split-v1"
HASH_SPLIT_TEST_FRACTION = 0.1


def hashed_split(question: str) -> str:
    """The split of a row that names none: "test" when the first 8 bytes of
    sha256(f"{HASH_SPLIT_SALT}:{question.casefold()}"), read big-endian, fall below 10% of 2**64.

    A pure function of the question, so duplicates of a question land on the same side."""
    digest = hashlib.sha256(f"{HASH_SPLIT_SALT}:{question.casefold()}".encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") < HASH_SPLIT_TEST_FRACTION * 2**64 else "train"


def _read_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(row number, row) pairs from a .parquet, .jsonl/.ndjson or .json (a list) file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise ValueError(f"{path}: not a readable parquet file ({e})") from e
        yield from enumerate(table.to_pylist())
        return
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: a .json file must hold a list of rows (or {{'data': [...]}})")
        yield from enumerate(data)
        return
    if suffix not in (".jsonl", ".ndjson"):
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use .parquet, .jsonl or .json")
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}: line {i + 1}: not valid JSON ({e})") from e


def _as_str_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if hasattr(value, "tolist"):  # numpy array (pandas-written parquet)
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str):
                return None
            out.append(v)
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    return None


def _answers_of(row: dict) -> Any:
    if "golden_answers" in row and row["golden_answers"] is not None:
        return row["golden_answers"]
    for key in ("answers", "answer"):
        if key in row and row[key] is not None:
            return row[key]
    rm = row.get("reward_model")
    if isinstance(rm, dict):
        gt = rm.get("ground_truth")
        if isinstance(gt, dict) and "target" in gt:
            return gt["target"]
        if gt is not None:
            return gt
    return None


def rows_to_tasks(rows, source: str, split: str | None = None, id_prefix: str = "") -> list[Task]:
    """Turn (row number, row dict) pairs into `Task`s; `source` names the origin in errors.

    `split` overrides the rows' own; rows that name no split are split by `hashed_split`, which
    needs every row to name none."""
    tasks: list[Task] = []
    unsplit_rows: list[int] = []
    seen: set[str] = set()
    for i, row in rows:
        where = f"{source}: row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with 'question' and 'golden_answers', got {type(row).__name__}")
        q = row.get("question")
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{where}: 'question' is missing or not a non-empty string")
        raw = _answers_of(row)
        if raw is None:
            raise ValueError(f"{where}: no gold answers (expected 'golden_answers' or reward_model.ground_truth.target)")
        answers = _as_str_list(raw)
        if answers is None:
            raise ValueError(f"{where}: gold answers must be a string or a list of strings, got {raw!r:.80}")
        answers = [a.strip() for a in answers if a.strip()]
        if not answers:
            raise ValueError(f"{where}: the gold answer list is empty")
        row_split = split or row.get("split")
        extra = row.get("extra_info")
        if not row_split and isinstance(extra, dict):
            row_split = extra.get("split")
        tid = row.get("id")
        if tid is None and isinstance(extra, dict) and extra.get("index") is not None:
            tid = f"{row.get('data_source') or 'row'}-{extra['index']}"
        tid = f"{id_prefix}{tid}" if tid is not None else f"{id_prefix}row-{i}"
        if tid in seen:
            raise ValueError(f"{where}: duplicate id {tid!r}")
        seen.add(tid)
        question = " ".join(q.split())
        if not row_split:
            unsplit_rows.append(i)
        tasks.append(Task(
            id=str(tid), question=question, answers=tuple(dict.fromkeys(answers)),
            split=str(row_split or hashed_split(question)), kind="qa",
            data_source=str(row.get("data_source") or ""),
        ))
    if unsplit_rows and len(unsplit_rows) < len(tasks):
        raise ValueError(f"{source}: row {unsplit_rows[0]}: no split, while other rows name one; give every row "
                         "a 'split' (or 'extra_info.split') or none (then rows are split by question)")
    return tasks


def load_qa_file(path: str | Path, split: str | None = None) -> list[Task]:
    """Tasks from a Search-R1 parquet file or a FlashRAG-style JSONL file.

    `split` overrides the rows' own split (default: the row's `split` / `extra_info.split`; a file
    whose rows name no split is split by `hashed_split`)."""
    tasks = rows_to_tasks(_read_rows(path), str(path), split=split)
    if not tasks:
        raise ValueError(f"{path}: no rows")
    return tasks


def parse_contents(contents: str) -> tuple[str, str]:
    """Split Search-R1/FlashRAG `contents` ('"Title"\\ntext') into (title, text)."""
    head, sep, rest = contents.partition("\n")
    if not sep:
        return "", contents.strip()
    title = head.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return title.strip(), rest.strip()


def load_corpus_file(path: str | Path) -> list[Document]:
    """Documents from a JSONL / parquet / JSON corpus (`contents`, or `title` + `text`)."""
    docs: list[Document] = []
    seen: set[str] = set()
    for i, row in _read_rows(path):
        where = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object, got {type(row).__name__}")
        if isinstance(row.get("contents"), str):
            title, text = parse_contents(row["contents"])
            if isinstance(row.get("title"), str) and row["title"].strip():
                title = row["title"].strip()
        elif isinstance(row.get("text"), str):
            title, text = str(row.get("title") or ""), row["text"]
        else:
            raise ValueError(f"{where}: needs a 'contents' string or 'title'/'text' strings")
        doc_id = row.get("id", row.get("docid", row.get("_id")))
        doc_id = str(i) if doc_id is None else str(doc_id)
        if doc_id in seen:
            raise ValueError(f"{where}: duplicate document id {doc_id!r}")
        seen.add(doc_id)
        if not (title.strip() or text.strip()):
            raise ValueError(f"{where}: the document is empty")
        docs.append(Document(doc_id, title, text))
    if not docs:
        raise ValueError(f"{path}: no documents")
    return docs


def load_hf_dataset(name: str, split: str = "test", config: str | None = None) -> list[Task]:
    """Tasks from a Hugging Face dataset with `question` and `golden_answers` columns.

    Needs network access (or a local `datasets` cache); raises a RuntimeError saying so when the
    dataset cannot be fetched.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise RuntimeError("load_hf_dataset needs the 'datasets' package") from e
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:
        raise RuntimeError(
            f"could not load Hugging Face dataset {name!r} (config={config!r}, split={split!r}): {e}. "
            "Loading by name needs network access (HF_HUB_OFFLINE must be unset) or a local cache; "
            "for offline use, pass a parquet/JSONL file path instead."
        ) from e
    return rows_to_tasks(enumerate(ds), f"{name}[{split}]", split=split, id_prefix="")

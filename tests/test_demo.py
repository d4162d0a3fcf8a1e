"""`zerosearch demo` run in-process on a few episodes."""

from __future__ import annotations

import json

from agents.cli import main


def test_demo_prints_table_and_writes_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZEROSEARCH_CACHE", str(tmp_path / "cache"))
    rc = main(["demo", "--episodes", "40", "--num-envs", "8", "--no-progress", "--out", str(tmp_path / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("agent"))
    assert "EM" in lines[header] and "F1" in lines[header] and "invalid rate" in lines[header]
    rows = {line.split()[0]: line.split() for line in lines[header + 2: header + 5]}
    assert set(rows) == {"oracle", "closed_book", "random"}
    assert float(rows["oracle"][1]) >= 0.8
    assert float(rows["closed_book"][1]) <= 0.1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["oracle"]["n"] == 40
    records = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert len(records) == 120 and json.loads(records[0])["agent"] == "oracle"
    assert "built" in out
    # second run loads the cached index
    assert main(["demo", "--episodes", "5", "--agents", "closed_book", "--no-progress"]) == 0
    assert "loaded" in capsys.readouterr().out


def test_demo_rejects_bad_agent(capsys):
    assert main(["demo", "--agents", "oracle,nobody", "--no-progress"]) == 2
    assert "nobody" in capsys.readouterr().err


def test_demo_help(capsys):
    try:
        main(["demo", "--help"])
    except SystemExit as e:
        assert e.code == 0
    assert "--episodes" in capsys.readouterr().out

"""`zerosearch bench`: runs benchmarks/NAME.py, which only a source checkout has."""

from __future__ import annotations

import pytest

from agents.cli import main
from agents.commands import bench


@pytest.mark.parametrize("argv", [["bench", "grpo_step"], ["bench", "--list"], ["bench"]])
def test_without_benchmarks_folder_says_a_source_checkout_is_needed(tmp_path, monkeypatch, capsys, argv):
    missing = tmp_path / "site-packages" / "benchmarks"
    monkeypatch.setattr(bench, "BENCH_DIR", missing)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and str(missing) in err and "git clone" in err


def test_lists_and_runs_scripts_of_the_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.py").write_text('import sys, json\nprint("working")\nprint(json.dumps({"ratio": 2.5, "args": sys.argv[1:]}))\n')
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path)
    assert main(["bench", "--list"]) == 0 and capsys.readouterr().out.split() == ["tiny"]
    assert main(["bench", "tiny", "--n", "3"]) == 0
    out = capsys.readouterr().out
    assert "working" in out and '"ratio": 2.5' in out and '"--n"' in out
    assert main(["bench", "nope"]) == 2 and "unknown benchmark 'nope'" in capsys.readouterr().err

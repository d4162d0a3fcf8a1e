"""benchmarks/transfer.py end to end on a tiny random model: one warm-up, three GRPO arms of one step
(grounded simulator, answer-hinted simulator, BM25) from it, BM25 evaluations, the paired table."""

from __future__ import annotations

import json

import pytest

from tests.train_helpers import load_benchmark, write_cli_config

pytestmark = pytest.mark.slow


def test_arm_configs_differ_only_in_the_backend_and_start_from_the_warmup():
    transfer = load_benchmark("transfer")
    from agents.train_config import TrainConfig, preset

    base = json.loads(preset("tiny").model_dump_json())
    cfgs = {arm: TrainConfig.model_validate(transfer.arm_config(base, arm, 12, "/w")) for arm in ("grounded", "oracle", "bm25")}
    assert cfgs["grounded"].env_config().backend_options["knowledge"] == "world"
    assert cfgs["oracle"].env_config().backend_options["knowledge"] == "oracle"
    assert cfgs["bm25"].env.backend == "bm25"
    for c in cfgs.values():
        assert c.model == "/w" and not c.warmup.enabled and c.grpo.steps == 12 and c.curriculum["total_steps"] == 12
        assert c.seed == base["seed"] and c.grpo.learning_rate == base["grpo"]["learning_rate"]
    with pytest.raises(ValueError, match="unknown arm"):
        transfer.arm_overrides("google")
    # the tuned arm (issue 14): the grounded arm with the sim-tune model as the simulator's engine
    tuned = TrainConfig.model_validate(transfer.arm_config(base, "tuned", 12, "/w", tuned_model="/sim"))
    assert tuned.simulator["model"] == "/sim" and tuned.simulator["knowledge"] == "world"
    assert tuned.model_dump(exclude={"simulator"}) == cfgs["grounded"].model_dump(exclude={"simulator"})
    with pytest.raises(ValueError, match="--tuned-model"):
        transfer.arm_overrides("tuned")


def test_transfer_runs_every_arm_from_one_warmup_and_pairs_them(tmp_path, capsys):
    transfer = load_benchmark("transfer")
    cfg_path = write_cli_config(tmp_path, env={"max_turns": 3},
                                warmup={"num_tasks": 4, "batch_size": 4, "epochs": 1})
    cfg = json.loads(cfg_path.read_text())
    cfg["simulator"] = {"engine": "transformers", "model": cfg["model"], "words_per_doc": 6, "max_new_tokens": 24,
                        "max_regenerations": 0}
    cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / "transfer"
    assert transfer.main([str(out), "--steps", "1", "--n", "4", "--num-envs", "4", "--config", str(cfg_path)]) == 0
    result = json.loads((out / "transfer.json").read_text())
    assert set(result["cells"]) == {"warmup", "grounded", "oracle", "bm25"}
    assert all(c["all"]["n"] == 4 for c in result["cells"].values())
    for arm in ("grounded", "oracle", "bm25"):
        state = json.loads((out / arm / "checkpoint" / "trainer_state.json").read_text())
        assert state["grpo_step"] == 1 and state["config"]["model"] == str(out / "warmup" / "checkpoint")
    assert {(p["from"], p["to"]) for p in result["paired"]} >= {("oracle", "grounded"), ("bm25", "grounded")}
    assert "| grounded |" in (out / "transfer.md").read_text()
    # a second run trains and evaluates nothing again: the table comes from what is there
    before = (out / "grounded" / "checkpoint" / "trainer_state.json").stat().st_mtime_ns
    capsys.readouterr()
    assert transfer.main([str(out), "--steps", "1", "--n", "4", "--config", str(cfg_path)]) == 0
    assert "zerosearch train" not in capsys.readouterr().out
    assert (out / "grounded" / "checkpoint" / "trainer_state.json").stat().st_mtime_ns == before
    assert json.loads((out / "transfer.json").read_text())["cells"] == result["cells"]
    assert transfer.main([str(out), "--arms", "grounded,google"]) == 2

"""`zerosearch sim-tune`: the tuning data from real traffic (BM25 on world 0, the oracle and random
agents), its labels against hand-worked cases, balancing, rendering (the simulator's own prompt +
the parser's format), a real SFTTrainer run on a tiny random model, resume, the tuned folder as a
simulator (from_config, a preset, fidelity's tuned column) and the CLI's errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from agents.cli import main
from agents.sim_tune import (NOISY, USEFUL, Pair, PromptOnlyEngine, RecordingSearch, SimTuneConfig, SimTuneError,
                             balance_pairs, build_data, collect_pairs, format_target, label_pair, prompt_simulator,
                             render_example, run_sim_tune)
from zerosearch_env.data import load_corpus, load_tasks
from zerosearch_env.data.task import Task
from zerosearch_env.search.base import Document
from zerosearch_env.search.bm25 import BM25Search
from zerosearch_env.search.simulator.parsing import parse_segments
from zerosearch_env.search.simulator.styles import PROMPT_STYLES, style_segments


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("world", 0)


@pytest.fixture(scope="module")
def articles(corpus):
    return {d.title: d for d in corpus}


@pytest.fixture(scope="module")
def tasks():
    return {t.id: t for t in load_tasks("world", "all", 0)}


def _task(tasks, question: str) -> Task:
    return next(t for t in tasks.values() if t.question == question)


# --------------------------------------------------------------------------- labels


def test_labels_match_hand_worked_cases(articles, tasks):
    """World 0: 'Fymvu Pezold was a merchant. Pezold was born in Lomquoul in 1843. ...';
    'Lomquoul is a city in Thankaovia. ...'; 'Thankaovia is a country ...' (no Lomquoul);
    'The Nyspoush Bank is a bank. ... founded in 1854 ...'."""
    a = articles
    bridge = tasks["w0-q00003"]  # In which country was Fymvu Pezold born? Thankaovia; hops Fymvu Pezold -> Lomquoul
    assert bridge.supporting_titles == ("Fymvu Pezold", "Lomquoul") and bridge.answers == ("Thankaovia",)
    assert label_pair(bridge, [a["Fymvu Pezold"]]) == (USEFUL, "next_hop")  # names the next hop, not the answer
    assert label_pair(bridge, [a["Lomquoul"]]) == (USEFUL, "answer")  # the last hop's article states the answer
    assert label_pair(bridge, [a["Thankaovia"]]) == (NOISY, "none")  # the answer's own article: no link to Lomquoul
    assert label_pair(bridge, [a["Nyspoush Bank"], a["Thankaovia"]]) == (NOISY, "none")
    assert label_pair(bridge, [a["Nyspoush Bank"], a["Lomquoul"]]) == (USEFUL, "answer")  # any rank counts
    assert label_pair(bridge, []) == (NOISY, "none")
    single = tasks["w0-q00000"]  # In which city was Fymvu Pezold born? Lomquoul
    assert label_pair(single, [a["Fymvu Pezold"]]) == (USEFUL, "answer")
    assert label_pair(single, [a["Lomquoul"]]) == (NOISY, "none")  # names the answer, not who was born there
    year = tasks["w0-q00004"]  # the organisation Fymvu Pezold worked for, founded? 1854; hops -> Nyspoush Bank
    assert label_pair(year, [a["Nyspoush Bank"]]) == (USEFUL, "answer")
    assert label_pair(year, [a["Fymvu Pezold"]]) == (USEFUL, "next_hop")
    compare = _task(tasks, "Which was founded earlier, the Sherant Academy or the Takrind Academy?")
    assert label_pair(compare, [a["Takrind Academy"]]) == (USEFUL, "compared_article")
    assert label_pair(compare, [a["Nyspoush Bank"], a["Lomquoul"]]) == (NOISY, "none")
    loaded = Task("x1", "Where was Fymvu Pezold born?", ("Lomquoul",), kind="qa")  # no hop information
    assert label_pair(loaded, [a["Lomquoul"]]) == (USEFUL, "answer")
    assert label_pair(loaded, [a["Nyspoush Bank"]]) == (NOISY, "none")
    # odd unicode in a document does not hide a name (mentions folds it)
    odd = Document("o", "X", "Fymvu\u00a0Pezold was born in Lom\u200bquoul.")
    assert label_pair(single, [odd]) == (USEFUL, "answer")


def test_oracle_traffic_on_bm25_is_recorded_and_labelled(corpus, tasks):
    """The oracle searches the supporting titles in hop order; each pair holds exactly BM25's
    documents for that query, labelled by `label_pair`; the two hops of the Fymvu Pezold bridge
    question label as worked out by hand (next hop, then answer)."""
    chosen = [tasks[i] for i in ("w0-q00003", "w0-q00000", "w0-q00025")]
    cfg = SimTuneConfig(agents=["oracle"], num_envs=2)
    bm25 = BM25Search(corpus)
    pairs = collect_pairs(cfg, chosen, list(tasks.values()), bm25, progress=False)
    assert [(p.task_id, p.query) for p in pairs if p.task_id == "w0-q00003"] == [
        ("w0-q00003", "Fymvu Pezold"), ("w0-q00003", "Lomquoul")]
    assert len(pairs) == 5 and {p.agent for p in pairs} == {"oracle"}
    for p in pairs:
        real = bm25.search([p.request()])[0]
        assert [d["id"] for d in p.documents] == [d.id for d in real] and len(real) == 3
        assert (p.label, p.reason) == label_pair(tasks[p.task_id], real)
        assert p.trajectory_em == 1.0  # the oracle answers right on BM25 here
    by_query = {(p.task_id, p.query): (p.label, p.reason) for p in pairs}
    assert by_query[("w0-q00003", "Fymvu Pezold")] == (USEFUL, "next_hop")
    assert by_query[("w0-q00003", "Lomquoul")] == (USEFUL, "answer")
    assert by_query[("w0-q00000", "Fymvu Pezold")] == (USEFUL, "answer")
    # the trajectory rule labels every pair of a correct episode useful
    traj = collect_pairs(cfg.model_copy(update={"label_rule": "trajectory"}), chosen, list(tasks.values()), bm25, False)
    assert {(p.label, p.reason) for p in traj} == {(USEFUL, "trajectory_correct")}


def test_build_data_balances_and_reports_the_label_balance(tmp_path):
    cfg = SimTuneConfig(n_questions=40, agents=["oracle", "random"])
    pairs, examples, card = build_data(cfg, tmp_path, progress=False)
    labels = [p.label for p in pairs]
    assert card["all_pairs"] == {"pairs": len(pairs), USEFUL: labels.count(USEFUL), NOISY: labels.count(NOISY),
                                 "useful_share": labels.count(USEFUL) / len(pairs)}
    assert card["by_agent"]["oracle"][NOISY] == 0 < card["by_agent"]["random"][NOISY]  # misses come from random
    kept = card["kept_pairs"]
    assert kept[USEFUL] == kept[NOISY] == min(card["balancing"]["distinct"].values()) > 0
    assert len(examples) == kept["pairs"] == sum(p.kept for p in pairs)
    assert card["sources"]["split"] == "train" and card["prompt"]["prompt_style"] == "default" and card["seed"] == 0
    assert all(tasks_split == "train" for tasks_split in {t.split for t in load_tasks("world", "all", 0)
                                                           if t.id in {p.task_id for p in pairs}})
    rows = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == len(pairs) and Pair.from_json(rows[0]) == pairs[0]
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == len(examples)
    assert "useful share" in (tmp_path / "data_card.md").read_text()
    # seeded: the same data again
    again = build_data(cfg, None, progress=False)[1]
    assert [e["query"] for e in again] == [e["query"] for e in examples]
    # only the oracle: every pair useful, nothing to balance against
    with pytest.raises(SimTuneError, match="balancing needs both labels"):
        build_data(SimTuneConfig(n_questions=10, agents=["oracle"]), None, progress=False)


def _pair(i: int, label: str, query: str | None = None, docs=("d",)) -> Pair:
    return Pair(f"t{i}", "q?", ("a",), (), "single", "oracle", query or f"query {i}", 3, f"t{i}#0", 0,
                [{"id": d, "title": d, "text": "x", "score": None} for d in docs], label=label, reason="r")


def test_balance_pairs_counts_duplicates_caps_and_seed():
    pairs = [_pair(i, USEFUL) for i in range(10)] + [_pair(100 + i, NOISY) for i in range(4)]
    pairs += [_pair(200, USEFUL, query="Query 3"), _pair(201, NOISY, docs=())]  # a duplicate, an empty result
    counts = balance_pairs(pairs, balance=True, seed=1)
    assert counts == {"duplicates_dropped": 1, "empty_dropped": 1, "distinct": {USEFUL: 10, NOISY: 4},
                      "kept": {USEFUL: 4, NOISY: 4}}
    kept = [p.task_id for p in pairs if p.kept]
    assert sum(p.label == USEFUL for p in pairs if p.kept) == 4 and len(kept) == 8
    balance_pairs(pairs, balance=True, seed=1)
    assert [p.task_id for p in pairs if p.kept] == kept
    balance_pairs(pairs, balance=True, seed=2)
    assert [p.task_id for p in pairs if p.kept] != kept
    assert balance_pairs(pairs, balance=False)["kept"] == {USEFUL: 10, NOISY: 4}
    assert balance_pairs(pairs, balance=False, max_per_class=3)["kept"] == {USEFUL: 3, NOISY: 3}


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("style", PROMPT_STYLES)
def test_rendered_example_is_the_simulators_prompt_plus_parsable_documents(style, corpus, tasks, tiny_model_dir):
    from curricula import ConstantCurriculum
    from zerosearch_env import EnvConfig
    from zerosearch_env.engines import TransformersEngine
    from zerosearch_env.search.simulator import SimulatedSearch, knowledge_option

    cfg = SimTuneConfig(prompt_style=style, words_per_doc=25)
    bm25 = BM25Search(corpus)
    pairs = collect_pairs(cfg.model_copy(update={"agents": ["oracle"]}), [tasks["w0-q00003"]], list(tasks.values()),
                          bm25, progress=False)
    assert len(pairs[0].documents) == cfg.resolved_top_k() == (3 if style == "default" else 5)
    engine = TransformersEngine(tiny_model_dir)
    for label, p_noisy in ((USEFUL, 0.0), (NOISY, 1.0)):
        pair = pairs[0]
        pair.label = label
        example = render_example(pair, {label: prompt_simulator(cfg, label)}, style)
        served = SimulatedSearch(engine, curriculum=ConstantCurriculum(p_noisy), seed=5, words_per_doc=25,
                                 knowledge=knowledge_option(EnvConfig(), None), prompt_style=style)
        assert example["prompt"] == served.prompt_messages(pair.request())
        target = example["completion"][0]["content"]
        docs = pair.documents
        if style == "default":
            assert parse_segments(target, 10) == [(d["title"], d["text"]) for d in docs]
        else:
            assert style_segments(target, 10) == [(None, d["text"]) for d in docs]
            assert target.startswith("Doc 1: ")
    assert format_target([{"title": "T", "text": "a b"}], "default") == "Doc 1 (Title: T) a b"
    with pytest.raises(RuntimeError, match="only builds prompts"):
        PromptOnlyEngine().generate([[{"role": "user", "content": "x"}]])


def test_recording_search_keeps_requests_and_leaves_the_backend_open(corpus):
    from zerosearch_env.search.base import SearchRequest

    bm25 = BM25Search(corpus)
    rec = RecordingSearch(bm25)
    docs = rec.search([SearchRequest("Lomquoul", top_k=2), SearchRequest("Nyspoush Bank", top_k=1)])
    assert [(r.query, [d.id for d in d_]) for r, d_ in rec.calls] == [
        ("Lomquoul", [d.id for d in docs[0]]), ("Nyspoush Bank", [d.id for d in docs[1]])]
    rec.close()
    assert bm25.search([SearchRequest("Lomquoul", top_k=1)])[0][0].title == "Lomquoul"


# --------------------------------------------------------------------------- training


def _tiny_config(model, **kw) -> SimTuneConfig:
    base = dict(n_questions=24, agents=["oracle", "random"], model=str(model), max_steps=4, save_steps=2,
                batch_size=2, learning_rate=1e-3, max_length=512, logging_steps=1, precision="fp32", device="cpu",
                words_per_doc=4)
    return SimTuneConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("sim-tune") / "run"
    cfg = _tiny_config(tiny_model_dir)
    summary = run_sim_tune(cfg, out, progress=False, log=lambda *_: None)
    return cfg, out, summary


def test_sft_run_writes_a_loadable_model_whose_weights_changed(tuned, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    cfg, out, summary = tuned
    t = summary["training"]
    assert t["steps"] == 4 and t["device"] == "cpu" and not t["bf16"] and t["peak_rss_gb"] < 8
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(out / "model")
    changed = [n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(a, b)]
    assert len(changed) >= len(list(before.parameters())) // 2
    for name in ("pairs.jsonl", "train.jsonl", "data_card.json", "data_card.md", "config.json", "metrics.jsonl",
                 "loss.png", "summary.json"):
        assert (out / name).is_file(), name
    settings = json.loads((out / "model" / "prompt_settings.json").read_text())
    assert settings["prompt_style"] == "default" and settings["words_per_doc"] == 4 and settings["steps"] == 4
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(losses) == 4 and all(v == v and v > 0 for v in losses)


def test_cpu_runs_checkpoint_activations_by_default(tuned):
    """Issue 14: without gradient checkpointing the 135M model's full run peaked at 9.01 GB on this CPU
    (over the 8 GB the issue allows); with it on by default there, see resolve_gradient_checkpointing."""
    import argparse

    from agents.commands.sim_tune import add_arguments, config_from_args
    from agents.sim_tune import resolve_gradient_checkpointing

    cfg, _, summary = tuned
    assert cfg.gradient_checkpointing is None  # the fixture's run keeps the default
    assert summary["training"]["gradient_checkpointing"] is True  # read from the trained model itself
    assert resolve_gradient_checkpointing(SimTuneConfig(), cuda=False) is True
    assert resolve_gradient_checkpointing(SimTuneConfig(), cuda=True) is False
    assert resolve_gradient_checkpointing(SimTuneConfig(gradient_checkpointing=False), cuda=False) is False
    assert resolve_gradient_checkpointing(SimTuneConfig(gradient_checkpointing=True), cuda=True) is True
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args([])).gradient_checkpointing is None  # the CLI keeps the auto default
    assert config_from_args(parser.parse_args(["--no-gradient-checkpointing"])).gradient_checkpointing is False
    assert config_from_args(parser.parse_args(["--gradient-checkpointing"])).gradient_checkpointing is True


def test_lora_run_merges_into_a_plain_model_folder(tuned, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from agents.sim_tune import train_simulator

    cfg, out, _ = tuned
    examples = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    lora = cfg.model_copy(update={"lora": True, "max_steps": 2, "learning_rate": 1e-2})
    summary = train_simulator(lora, examples, tmp_path, progress=False)
    assert summary["lora"] and summary["steps"] == 2 and summary["gradient_checkpointing"] is True  # CPU default
    assert not (tmp_path / "model" / "adapter_config.json").exists()  # merged: loads without peft
    before = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "model").named_parameters())
    assert before.keys() == after.keys()
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert any("q_proj" in n for n in changed) and any("mlp" in n for n in changed)  # all-linear adapters, merged


def test_resume_continues_from_the_last_checkpoint(tmp_path, tuned):
    cfg, out, _ = tuned
    run = tmp_path / "run"
    shutil.copytree(out, run)
    shutil.rmtree(run / "model")  # as if killed after the checkpoint at step 2
    shutil.rmtree(run / "trainer" / "checkpoint-4")
    logs: list[str] = []
    summary = run_sim_tune(cfg, run, resume=True, progress=False, log=logs.append)
    assert any("reusing the data" in line for line in logs)
    assert summary["training"]["resumed_from"].endswith("checkpoint-2") and summary["training"]["steps"] == 4
    assert (run / "model" / "model.safetensors").is_file()
    skipped = run_sim_tune(cfg, run, resume=True, progress=False, log=logs.append)
    assert skipped["skipped"] and "already complete" in logs[-1]
    with pytest.raises(SimTuneError, match="pass --resume"):
        run_sim_tune(cfg, run, resume=False, progress=False)
    with pytest.raises(SimTuneError, match="settings differ.*learning_rate"):
        run_sim_tune(cfg.model_copy(update={"learning_rate": 1.0}), run, resume=True, progress=False)


def test_tuned_folder_serves_as_simulator_everywhere(tuned):
    """backend_options.model (from_config), a training preset's simulator options, and the same
    prompt as in training."""
    from agents.evaluate import env_for
    from agents.train_config import preset
    from zerosearch_env import EnvConfig
    from zerosearch_env.search import make_backend

    cfg, out, _ = tuned
    model = str(out / "model")
    env = EnvConfig(backend="simulator", backend_options={"model": model, "words_per_doc": 4, "max_new_tokens": 24,
                                                         "curriculum": 0.0})
    sim = make_backend(env)
    example = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    pair = next(Pair.from_json(json.loads(x)) for x in (out / "pairs.jsonl").read_text().splitlines()
                if json.loads(x)["query"] == example["query"] and json.loads(x)["label"] == example["label"])
    if example["label"] == USEFUL:
        assert sim.prompt_messages(pair.request()) == example["prompt"]
    docs, infos = sim.search_with_info([pair.request()])
    assert str(out / "model") in sim.engine.name and infos[0]["gate"] in ("pass", "fallback") and docs[0]
    sim.close()
    train_cfg = preset("tiny")
    train_cfg.simulator = {**train_cfg.simulator, "model": model}
    backend = make_backend(env_for(train_cfg, "simulator"))
    assert str(out / "model") in backend.engine.name
    backend.close()


def test_fidelity_compares_untuned_tuned_and_real(tuned, tiny_model_dir, tmp_path, capsys):
    _, out, _ = tuned
    res = tmp_path / "fid"
    rc = main(["fidelity", "--model", str(tiny_model_dir), "--tuned-model", str(out / "model"), "--noise", "0",
               "--n", "2", "--kinds", "bridge", "--words-per-doc", "4", "--max-regenerations", "0",
               "--out", str(res), "--no-progress"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    report = json.loads((res / "fidelity.json").read_text())
    rows = {r["backend"]: r for r in report["rows"]}
    assert list(rows) == ["bm25", "sim p=0", "tuned p=0"]
    assert "tuned p=0" in printed.out.splitlines()[2]  # the table's header row has a column per simulator
    for label in ("sim p=0", "tuned p=0"):
        assert rows[label]["overlap_with_reference"] is not None and rows[label]["fallback_share"] is not None
        n = rows[label]["needed_in_useful_results_n"]  # the tiny model's results are mostly the fallback
        assert 0 <= n <= 4 and (rows[label]["needed_in_useful_results"] is None) == (n == 0)
    # BM25 on the 2 bridge questions' first and second hops: every result holds what the query needed
    assert rows["bm25"]["needed_in_useful_results"] == 1.0 and rows["bm25"]["needed_in_useful_results_n"] == 4
    assert "needed in useful (no fallback)" in printed.out and "AUROC, own text only" in printed.out
    assert "discriminator_auroc_own_text" in rows["tuned p=0"] and rows["bm25"]["discriminator_auroc_own_text"] is None
    assert all(rows[label]["probes"] == report["n_probes"] == 12 for label in rows)
    assert "warning" not in printed.err  # served with the prompt settings it was tuned with
    from agents.commands.fidelity import _settings_mismatch

    assert _settings_mismatch(out / "model", {"words_per_doc": 4}) == []
    assert "pass --words-per-doc 4" in _settings_mismatch(out / "model", {"words_per_doc": 30})[0]
    assert "pass --prompt-style default" in _settings_mismatch(out / "model", {"words_per_doc": 4,
                                                                                "prompt_style": "zerosearch-sft"})[0]
    bad = main(["fidelity", "--sim", f"sim={out / 'model'}", "--out", str(tmp_path / "o")])
    assert bad == 2 and "already used" in capsys.readouterr().err
    assert main(["fidelity", "--sim", "x=/no/such/dir", "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["fidelity", "--tuned-model", str(out / "model"), "--prompt-style", "bogus",
                 "--out", str(tmp_path / "o")]) == 2
    assert "prompt_style" in capsys.readouterr().err


# --------------------------------------------------------------------------- the command


@pytest.mark.parametrize("argv, message", [
    (["--backend", "google"], "unknown backend spec"),
    (["--backend", "sim:0"], "one real backend"),
    (["--backend", "bm25,dense"], "one real backend"),
    (["--agents", "closed_book"], "never searches"),
    (["--agents", "oracle"], "balancing needs both labels"),
    (["--agents", ""], "at least one agent"),
    (["--prompt-style", "fancy"], "unknown prompt_style"),
    (["--knowledge", "psychic"], "unknown knowledge"),
    (["--n", "-1"], "n_questions"),
    (["--model", "/no/such/model"], "no such folder"),
    (["--dataset", "{testonly}"], "no training questions"),
])
def test_cli_errors_exit_2_with_a_message(argv, message, tmp_path, capsys):
    if "{testonly}" in argv:
        path = tmp_path / "qa.jsonl"
        path.write_text("".join(json.dumps({"id": f"r{i}", "question": f"q {i}?", "golden_answers": ["a"],
                                            "split": "test"}) + "\n" for i in range(3)))
        argv = [str(path) if a == "{testonly}" else a for a in argv]
    rc = main(["sim-tune", *argv, "--n", "8", "--out", str(tmp_path / "o"), "--no-progress"]
              if "--n" not in argv else ["sim-tune", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("zerosearch sim-tune: ") and message in err, err


def test_cli_data_only_and_help(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["sim-tune", "--data-only", "--n", "20", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    card = json.loads((out / "data_card.json").read_text())
    assert f'"pairs": {card["all_pairs"]["pairs"]}' in printed and (out / "train.jsonl").is_file()
    assert main(["sim-tune", "--data-only", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["sim-tune", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for words in ("--label-rule", "reached", "trajectory", "--prompt-style", "--lora", "--resume", "data_card",
                  "backend_options.model", "balance"):
        assert words in text, words

"""Fitting the SPRM head offline: step states, question splits, held-out selection, the fit, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from agents.calibration import auroc
from agents.sprm import SPRMHead, _forward_hidden, trajectory_boundaries
from agents.sprm_fit import StepStates, extract_step_states, fit_head, plot_fit, selection_figures, split_questions
from tests.h6_helpers import make_traj, one_thread, tiny_llama, tiny_tokenizer

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def test_split_questions_keeps_a_question_together_and_leaves_both_sides_non_empty():
    qs = [f"q{i // 4}" for i in range(40)]  # 10 questions x 4 samples
    held = split_questions(qs, 0.2, seed=1)
    by_q = {}
    for q, h in zip(qs, held.tolist()):
        by_q.setdefault(q, set()).add(h)
    assert all(len(v) == 1 for v in by_q.values())  # never split across sides
    assert sum(v == {True} for v in by_q.values()) == 2
    assert held.tolist() == split_questions(qs, 0.2, seed=1).tolist()  # seeded
    assert split_questions(["a", "a", "b"], 0.01).sum() > 0 and not split_questions(["a", "b"], 0.9).all()
    assert not split_questions(qs, 0.0).any()
    with pytest.raises(ValueError):
        split_questions(qs, 1.0)


def test_selection_figures_by_hand():
    # question a: the top score is wrong; b: the top score is right; c: NaN scores -> the first sample
    scores = [0.9, 0.1, 0.2, 0.8, float("nan"), float("nan")]
    labels = [0, 1, 0, 1, 1, 0]
    qs = ["a", "a", "b", "b", "c", "c"]
    f = selection_figures(scores, labels, qs)
    assert f["questions"] == 3
    assert f["best_of_n_em"] == pytest.approx(2 / 3)
    assert f["best_of_1_em"] == pytest.approx(3 / 6)
    assert f["pass_at_n"] == pytest.approx(1.0)
    assert selection_figures([], [], [])["best_of_n_em"] is None


def _separable(n_questions=30, samples=4, hidden=16, seed=0):
    """Steps whose first feature says the trajectory's label, the rest noise; 2 steps per trajectory."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([float((i * 7 + 3) % 3 == 0) for i in range(n_questions * samples)])
    states, index = [], []
    for i, y in enumerate(labels.tolist()):
        for _ in range(2):
            x = torch.randn(hidden, generator=g)
            x[0] = (2.0 if y else -2.0) + 0.5 * torch.randn((), generator=g)
            states.append(x)
            index.append(i)
    questions = [f"q{i // samples}" for i in range(len(labels))]
    return StepStates(torch.stack(states), torch.tensor(index), labels, questions)


def test_fit_head_learns_a_separable_signal_and_keeps_the_best_epoch(tmp_path):
    data = _separable()
    head = SPRMHead(16, mlp_size=8)
    rep = fit_head(head, data, epochs=60, lr=1e-2, eval_every=5, val_fraction=0.25)
    assert rep["val_auroc"] > 0.95 and rep["train_auroc"] > 0.95
    assert rep["val_questions"] == 8 and rep["trajectories"] == 120 and rep["steps"] == 240
    assert [r["epoch"] for r in rep["history"]] == list(range(5, 61, 5))
    best = max((r for r in rep["history"]), key=lambda r: r["val_auroc"])
    assert rep["best_epoch"] == best["epoch"]
    # the head holds the kept epoch's weights: its held-out AUROC is the reported one
    held = split_questions(data.questions, 0.25, seed=0)
    with torch.no_grad():
        logits = head(data.states)
    from agents.sprm import trajectory_scores

    scores = trajectory_scores(logits, data.traj_index, data.num_trajectories).tolist()
    idx = [i for i in range(len(scores)) if held[i]]
    assert auroc([scores[i] for i in idx], [float(data.labels[i]) for i in idx]) == pytest.approx(rep["val_auroc"])
    assert rep["val_selection"]["best_of_n_em"] == pytest.approx(rep["val_selection"]["pass_at_n"])
    png = plot_fit(rep, tmp_path / "fit.png")
    assert png.stat().st_size > 1000


def test_fit_head_refuses_what_it_cannot_fit():
    data = _separable()
    with pytest.raises(ValueError, match="features"):
        fit_head(SPRMHead(8), data, epochs=1)
    one_class = StepStates(data.states, data.traj_index, torch.zeros_like(data.labels), data.questions)
    with pytest.raises(ValueError, match="correct and wrong"):
        fit_head(SPRMHead(16), one_class, epochs=1)
    with pytest.raises(ValueError, match="no step states"):
        fit_head(SPRMHead(16), StepStates(torch.zeros(0, 16), torch.zeros(0, dtype=torch.long), data.labels,
                                          data.questions), epochs=1)
    with pytest.raises(ValueError):
        StepStates(data.states, data.traj_index, data.labels, data.questions[:-1])


def test_extract_step_states_reads_the_boundaries_of_a_real_model(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), layers=3)
    from zerosearch_env.data.task import Task

    task = Task(id="t1", question="who?", answers=("Quorth",), split="train", kind="single")
    trajs = [
        make_traj(tok, ["<think>a\n\nb</think><search>x y</search>", "<answer>Quorth</answer>"],
                  ["<information>Doc 1 x</information>"], 1, task=task),
        make_traj(tok, ["<answer>nowhere</answer>"], [], 0, task=task),
        make_traj(tok, [], [], 0, task=task),  # no agent turn: no step, still labelled
    ]
    data = extract_step_states(model, trajs, tok, batch_size=2)
    bounds = [trajectory_boundaries(t, tok) for t in trajs]
    assert data.states.shape == (sum(map(len, bounds)), 64)
    assert data.traj_index.tolist() == [i for i, b in enumerate(bounds) for _ in b]
    assert data.labels.tolist() == [1.0, 0.0, 0.0] and data.questions == ["t1"] * 3
    # the first trajectory's last step equals a single-row pass at that position
    row = list(trajs[0].prompt_ids) + list(trajs[0].completion_ids)
    h = _forward_hidden(model, [row], tok.pad_token_id, -2)
    assert torch.allclose(data.states[len(bounds[0]) - 1], h[0, len(trajs[0].prompt_ids) + bounds[0][-1]], atol=1e-5)
    path = data.save(tmp_path / "states.pt")
    back = StepStates.load(path)
    assert torch.equal(back.states, data.states) and back.questions == data.questions


def test_cli_sprm_fit_then_eval_with_both_heads(tmp_path):
    from agents.cli import main
    from tests.train_helpers import write_cli_config

    path = write_cli_config(tmp_path, signals={"sprm": True, "sprm_mlp_size": 8})
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--output", str(out), "--no-progress"]) == 0
    states = tmp_path / "states.pt"
    args = ["sprm-fit", "--checkpoint", str(out), "--config", str(path), "--tasks", "4", "--samples", "2",
            "--num-envs", "4", "--epochs", "3", "--states", str(states), "--no-progress"]
    code = main(args)
    # a random policy rarely answers right: with one class only the fit refuses clearly (exit 2), but the
    # sampled step states are kept either way
    assert states.exists()
    data = StepStates.load(states)
    assert data.num_trajectories == 8 and len(set(data.questions)) == 4
    if code == 2:  # give every question one right and one wrong sample, as a trained policy would
        data.labels = torch.tensor([float(i % 2) for i in range(8)])
        data.save(states)
        assert main(args) == 0
    head_file = out / "checkpoint" / "sprm_head_fit.pt"
    rep = json.loads(head_file.with_suffix(".json").read_text())
    assert rep["mlp_size"] == 8 and rep["trajectories"] == 8 and head_file.with_suffix(".png").exists()
    assert SPRMHead.load(head_file).mlp_size == 8 and (out / "checkpoint" / "sprm_head.pt").exists()

    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--config", str(path), "--n", "3", "--max-new-tokens", "6",
                 "--best-of", "2", "--num-envs", "4", "--sprm-head", str(head_file),
                 str(out / "checkpoint" / "sprm_head.pt"), "--records", "--output", str(report), "--no-progress"]) == 0
    bo = json.loads(report.read_text())["best_of"]
    assert bo["sprm_head"] == str(head_file)
    own = str(out / "checkpoint" / "sprm_head.pt")
    other = bo["other_heads"][own]
    assert set(other) == {"best_of_n_em", "sprm_auroc", "gain_over_best_of_1", "gain_se", "greedy_em",
                          "gain_over_greedy", "gain_over_greedy_se"}
    assert 0.0 <= other["best_of_n_em"] <= bo["pass_at_n"]
    greedy = json.loads(report.read_text())["summary"]["em"]  # the greedy episodes of the same 3 questions
    assert other["greedy_em"] == pytest.approx(greedy) and bo["greedy_em"] == pytest.approx(greedy)
    assert bo["gain_over_greedy"] == pytest.approx(bo["best_of_n_em"] - greedy)
    # per-sample records: both heads' scores of the same 6 samples, and they reproduce the figures
    samples = bo["samples"]
    assert len(samples) == 6 and all(set(r["scores"]) == {"", own} for r in samples)
    from agents.sprm import selection_by_score

    em = [r["em"] for r in samples]
    again = selection_by_score([r["scores"][own] for r in samples], em, 2)
    assert again["best_of_n_em"] == pytest.approx(other["best_of_n_em"])
    assert bo["best_of_1_em"] == pytest.approx(sum(em) / 6)
    # bad input: clear errors, exit 2
    assert main(["sprm-fit", "--checkpoint", str(out), "--val-fraction", "1"]) == 2
    assert main(["sprm-fit", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert main(["eval", "--checkpoint", str(out), "--config", str(path), "--n", "2",
                 "--sprm-head", str(head_file)]) == 2

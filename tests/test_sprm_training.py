"""SPRM inside the GRPO update, trajectory scoring of rollouts, and learnability of the SPR loss."""

import math

import pytest
import torch

from agents.calibration import auroc
from agents.grpo import GRPOSettings, grpo_update
from agents.sprm import (SPRMHead, SPRMLoss, head_param_group, score_trajectories, spr_loss, trajectory_boundaries,
                         trajectory_scores)
from tests.h6_helpers import make_traj as _traj, one_thread, tiny_llama, tiny_tokenizer

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _batch(tok):
    return [
        _traj(tok, ["<think>a\n\nb</think><search>x y</search>", "<answer>Quorth</answer>"],
              ["<information>Doc 1 x</information>"], 1),
        _traj(tok, ["<think>c</think><answer>Lindra</answer>"], [], 0),
        _traj(tok, ["<search>z</search>", "<answer>Quorth</answer>"], ["<information>Doc 2</information>"], 1),
        _traj(tok, ["<answer>nowhere</answer>"], [], 0),
    ]


def test_sprm_loss_plugin_matches_own_forward_and_trains_head_in_its_group():
    tok = tiny_tokenizer()
    trajs = _batch(tok)
    assert [len(trajectory_boundaries(t, tok)) for t in trajs] == [3, 1, 2, 1]
    results = {}
    for shared in (True, False):
        model = tiny_llama(len(tok), seed=0, layers=3)
        torch.manual_seed(1)
        head = SPRMHead(64, mlp_size=16)
        before = [p.detach().clone() for p in head.parameters()]
        fn = SPRMLoss(head, tok, dynamic=False)
        opt = torch.optim.SGD([{"params": list(model.parameters()), "lr": 0.0}, head_param_group(head, lr=0.5)])
        out = grpo_update(model, opt, trajs, GRPOSettings(group_size=2, micro_batch_size=4), tok.pad_token_id,
                          extra_loss_fns=[fn], need_hidden=shared, hidden_layer=-2)
        results[shared] = (out["extra_loss"], fn.last["sprm_steps"])
        assert any(not torch.equal(a, b) for a, b in zip(before, head.parameters()))
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-4)
    assert results[True][1] == 7


def test_score_trajectories_geometric_mean_and_post_answer_segment_ignored():
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=0, layers=3)
    head = SPRMHead(64, mlp_size=0)
    with torch.no_grad():
        head.net[-1].weight.normal_(std=1.0)
    trajs = _batch(tok)
    scores = score_trajectories(model, head, trajs, tok, batch_size=3)
    assert all(0.0 < s < 1.0 for s in scores) and trajs[0].info["sprm_score"] == scores[0]
    # by hand for the first trajectory
    t = trajs[0]
    ids = torch.tensor([t.prompt_ids + t.completion_ids])
    with torch.no_grad():
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-2][0]
        pos = [len(t.prompt_ids) + b for b in trajectory_boundaries(t, tok)]
        probs = torch.sigmoid(head(h[pos]))
    assert scores[0] == pytest.approx(float(probs.prod() ** (1 / len(pos))), rel=1e-4)
    # a segment written after the answer (PCL / confidence) does not change the score
    t.info["post_answer_start"] = len(t.completion_ids)
    t.add(tok("<reward>")["input_ids"], "<reward>", agent=False)
    t.add(tok("0.9</reward>")["input_ids"], "0.9</reward>", agent=True, logprobs=[0.0] * len(tok("0.9</reward>")["input_ids"]))
    assert score_trajectories(model, head, [t], tok)[0] == pytest.approx(scores[0], rel=1e-5)


def test_spr_loss_learns_to_separate_correct_from_wrong_trajectories():
    """Synthetic hidden states: correct trajectories drift towards +u over their steps, wrong ones
    towards -u. Trained only from final labels with dynamic weighting, the head's trajectory score
    ranks held-out trajectories (AUROC) far above chance."""
    g = torch.Generator().manual_seed(0)
    dim, steps = 32, 4
    u = torch.randn(dim, generator=g)
    u = u / u.norm()

    def make(n):
        labels = (torch.rand(n, generator=g) < 0.5).float()
        sign = labels * 2 - 1
        drift = torch.linspace(0.2, 1.0, steps)
        h = torch.randn(n, steps, dim, generator=g) + 1.5 * sign[:, None, None] * drift[None, :, None] * u
        return h.reshape(n * steps, dim), torch.arange(n).repeat_interleave(steps), labels

    torch.manual_seed(0)
    head = SPRMHead(dim, mlp_size=16)
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(80):
        h, idx, y = make(64)
        loss = spr_loss(head(h), idx, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    h, idx, y = make(200)
    with torch.no_grad():
        scores = trajectory_scores(head(h), idx, 200)
    a = auroc(scores.tolist(), y.tolist())
    assert a is not None and a > 0.9 and not math.isnan(a)


def test_head_recovers_from_an_all_positive_start():
    """Start with every score near 1 on data where 3 of 4 trajectories are correct: the strict
    dynamic rule only ever trains positives and stays collapsed; with the fallback (a class with no
    agreeing step keeps all its steps) the head learns to separate the classes."""
    g = torch.Generator().manual_seed(1)
    dim, steps = 16, 3
    u = torch.randn(dim, generator=g)
    u = u / u.norm()

    def make(n):
        labels = (torch.rand(n, generator=g) < 0.75).float()
        h = torch.randn(n, steps, dim, generator=g) + 1.5 * (labels * 2 - 1)[:, None, None] * u
        return h.reshape(n * steps, dim), torch.arange(n).repeat_interleave(steps), labels

    out = {}
    for fallback in (True, False):
        torch.manual_seed(0)
        head = SPRMHead(dim, mlp_size=0)
        with torch.no_grad():
            head.net[-1].bias.fill_(4.0)  # collapsed start: sigmoid(4) = 0.98 everywhere
        opt = torch.optim.Adam(head.parameters(), lr=2e-2)
        for _ in range(60):
            h, idx, y = make(64)
            loss = spr_loss(head(h), idx, y, keep_all_when_none_agree=fallback)
            opt.zero_grad()
            loss.backward()
            opt.step()
        h, idx, y = make(200)
        with torch.no_grad():
            logits = head(h)
        neg_steps = (y[idx] == 0)
        out[fallback] = float((logits[neg_steps] < 0).float().mean())  # wrong steps scored below 0.5
    assert out[True] > 0.8 and out[False] < 0.2

"""SPRM: loss weighting and class balance, gradient scaling, step boundaries, scores, selection."""

import math

import pytest
import torch
import torch.nn.functional as F

from agents.sprm import (SPRMHead, gather_step_states, head_param_group, scale_grad, select_best, shape_rewards,
                         spr_loss, spr_weights, step_boundaries, step_logits_from_hidden, trajectory_score,
                         trajectory_scores)
from tests.h6_helpers import tiny_llama, tiny_tokenizer, one_thread

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _bce(x, y):
    return math.log1p(math.exp(-x)) if y else math.log1p(math.exp(x))


def test_dynamic_weighting_keeps_agreeing_steps_and_balances_classes():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0, 1.0, -0.5])
    traj = torch.tensor([0, 0, 0, 1, 1, 2])
    labels = torch.tensor([1.0, 0.0, 0.0])
    w = spr_weights(logits, traj, labels)
    # kept: 2.0 (pos), 0.5 (pos), -3.0 (neg), -0.5 (neg); dropped: -1.0 on a correct, 1.0 on a wrong one
    assert w.tolist() == pytest.approx([0.25, 0.0, 0.25, 0.25, 0.0, 0.25])
    expected = 0.25 * (_bce(2.0, 1) + _bce(0.5, 1) + _bce(-3.0, 0) + _bce(-0.5, 0))
    assert spr_loss(logits, traj, labels).item() == pytest.approx(expected, rel=1e-6)


def test_class_balance_with_unequal_counts():
    logits = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.0])
    traj = torch.tensor([0, 0, 0, 1, 1])
    labels = torch.tensor([1, 0])
    w = spr_weights(logits, traj, labels)
    # 3 kept positives share 1/2, 1 kept negative gets 1/2; a logit of exactly 0 agrees with nothing
    assert w.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 0.5, 0.0])
    assert float(w[:3].sum()) == pytest.approx(float(w[3:].sum()))
    # one class only: it carries all the weight
    w1 = spr_weights(torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0, 0, 0]), torch.tensor([1]))
    assert w1.tolist() == pytest.approx([0.5, 0.5, 0.0])


def test_a_class_without_agreeing_steps_keeps_all_its_steps():
    # every score above 0.5: no wrong trajectory's step agrees -> its steps are all kept (no collapse)
    logits = torch.tensor([1.0, 2.0, 0.5, 3.0])
    traj = torch.tensor([0, 0, 1, 1])
    w = spr_weights(logits, traj, torch.tensor([1, 0]))
    assert w.tolist() == pytest.approx([0.25, 0.25, 0.25, 0.25])
    strict = spr_weights(logits, traj, torch.tensor([1, 0]), keep_all_when_none_agree=False)
    assert strict.tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])


def test_no_kept_step_gives_zero_loss_with_graph_and_static_mode_keeps_all():
    logits = torch.tensor([-1.0, 1.0], requires_grad=True)
    loss = spr_loss(logits, torch.tensor([0, 1]), torch.tensor([1, 0]), keep_all_when_none_agree=False)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.abs().sum() == 0
    static = spr_loss(logits.detach(), torch.tensor([0, 1]), torch.tensor([1, 0]), dynamic=False)
    assert static.item() == pytest.approx(0.5 * (_bce(-1.0, 1) + _bce(1.0, 0)))
    with pytest.raises(ValueError):
        spr_loss(logits, torch.tensor([0, 1]), torch.tensor([0.5, 0]))


def test_loss_gradient_pushes_kept_scores_towards_label():
    logits = torch.tensor([0.3, -0.2], requires_grad=True)
    spr_loss(logits, torch.tensor([0, 1]), torch.tensor([1, 0])).backward()
    assert logits.grad[0] < 0 and logits.grad[1] > 0  # gradient descent raises the first, lowers the second


def test_scale_grad_scales_only_the_backbone():
    torch.manual_seed(0)
    x = torch.randn(5, 8)
    results = {}
    for alpha in (1.0, 1e-4):
        torch.manual_seed(1)
        backbone = torch.nn.Linear(8, 16)
        head = SPRMHead(16, mlp_size=8)
        logits = head(scale_grad(backbone(x), alpha))
        spr_loss(logits, torch.arange(5), torch.tensor([1, 0, 1, 0, 1]), dynamic=False).backward()
        results[alpha] = (backbone.weight.grad.clone(), [p.grad.clone() for p in head.parameters()])
    assert torch.allclose(results[1e-4][0], results[1.0][0] * 1e-4, rtol=1e-4, atol=1e-12)
    assert results[1.0][0].abs().sum() > 0
    for a, b in zip(results[1.0][1], results[1e-4][1]):
        assert torch.allclose(a, b)
    with pytest.raises(ValueError):
        scale_grad(x, -1.0)


def test_head_param_group_and_save_load(tmp_path):
    head = SPRMHead(32, mlp_size=0)
    group = head_param_group(head, lr=1e-3)
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-6}, group])
    assert opt.param_groups[1]["lr"] == 1e-3 and len(opt.param_groups[1]["params"]) == len(list(head.parameters()))
    with torch.no_grad():
        head.net[-1].weight.normal_()
    head.save(tmp_path)
    loaded = SPRMHead.load(tmp_path)
    h = torch.randn(3, 32)
    assert torch.allclose(head(h), loaded(h))
    with pytest.raises(FileNotFoundError):
        SPRMHead.load(tmp_path / "nothing")


def test_geometric_mean():
    assert trajectory_score([0.5, 0.8, 0.2]) == pytest.approx(0.08 ** (1 / 3))
    assert trajectory_score([0.9]) == pytest.approx(0.9)
    assert trajectory_score([0.0, 1.0]) == 0.0
    assert math.isnan(trajectory_score([]))
    with pytest.raises(ValueError):
        trajectory_score([1.5])
    logits = torch.tensor([0.0, 1.3862944, -1.3862944, 2.0])  # sigmoid: .5, .8, .2, .8808
    batched = trajectory_scores(logits, torch.tensor([0, 0, 0, 2]), 3)
    assert batched[0].item() == pytest.approx(0.08 ** (1 / 3), rel=1e-6)
    assert math.isnan(batched[1].item())
    assert batched[2].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), rel=1e-6)


def test_select_best_and_shaping():
    assert select_best([0.1, 0.9, 0.5, 0.7, 0.7, float("nan")], 3) == [1, 3]
    assert select_best([float("nan"), float("nan")], 2) == [0]
    with pytest.raises(ValueError):
        select_best([0.1, 0.2, 0.3], 2)
    assert shape_rewards([1.0, 0.0], [0.5, 0.25], weight=0.0) == [1.0, 0.0]
    assert shape_rewards([1.0, 0.0], [0.5, float("nan")], weight=0.2) == pytest.approx([1.1, 0.0])


def test_step_boundaries_turn_ends_and_think_paragraphs():
    tok = tiny_tokenizer()
    agent1 = "<think>First idea.\n\nSecond idea.\n\nThird.</think><search>guild founder</search>"
    env = "<information>Doc 1 (Title: X) a.\n\nb.</information>"
    agent2 = "no think here\n\n<think>Only one.\n\nDone</think><answer>Ansel Quorrin</answer>"
    parts = [tok(t, add_special_tokens=False)["input_ids"] for t in (agent1, env, agent2)]
    ids = parts[0] + parts[1] + parts[2]
    mask = [1] * len(parts[0]) + [0] * len(parts[1]) + [1] * len(parts[2])
    ends = [len(parts[0]) - 1, len(ids) - 1]
    only_turns = step_boundaries(ids, mask, ends, tok, think_paragraphs=False)
    assert only_turns == ends
    assert step_boundaries(ids, mask, None, think_paragraphs=False) == ends
    b = step_boundaries(ids, mask, ends, tok)
    paragraph = [i for i in b if i not in ends]
    assert len(paragraph) == 3  # two in the first think, one in the second; none in env text or outside think
    for i in paragraph:
        assert mask[i] == 1 and "\n" in tok.decode([ids[i]])
        assert tok.decode(ids[: i + 1]).endswith("\n\n")
    assert paragraph[-1] > len(parts[0]) + len(parts[1])
    with pytest.raises(ValueError):
        step_boundaries(ids, mask, [len(parts[0])], tok)  # an env token is not a turn end
    with pytest.raises(ValueError):
        step_boundaries(ids, mask[:-1], ends, tok)


def test_head_reads_second_to_last_layer_of_a_real_model():
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), layers=3)
    ids = torch.tensor([tok("<think>a\n\nb</think><answer>x</answer>")["input_ids"]])
    out = model(input_ids=ids, output_hidden_states=True)
    h = out.hidden_states[-2]
    assert len(out.hidden_states) == 4 and h.shape[-1] == 64
    head = SPRMHead(64)
    pos = [[2, ids.shape[1] - 1]]
    logits, traj = step_logits_from_hidden(head, h, pos, grad_scale=1e-4)
    assert logits.shape == (2,) and traj.tolist() == [0, 0]
    states, _ = gather_step_states(h, pos)
    assert torch.allclose(states[1], h[0, -1])
    loss = spr_loss(logits, traj, torch.tensor([1.0]), dynamic=False)
    loss.backward()
    last_layer = model.model.layers[-1].mlp.down_proj.weight.grad
    first_layer = model.model.layers[0].mlp.down_proj.weight.grad
    assert last_layer is None or last_layer.abs().sum() == 0  # the last layer is not on the path
    assert first_layer is not None and first_layer.abs().sum() > 0
    with pytest.raises(ValueError):
        gather_step_states(h, [[ids.shape[1]]])


def test_selection_by_score_paired_gain_by_hand():
    from agents.calibration import auroc
    from agents.sprm import selection_by_score

    # group 1: the top score is right (mean EM 0.5 -> gain +0.5); group 2: the top score is wrong (gain -0.25)
    scores = [0.9, 0.1, 0.2, 0.3, 0.8, 0.1, 0.2, 0.3]
    em = [1, 0, 1, 0, 0, 1, 0, 0]
    f = selection_by_score(scores, em, 4)
    assert f["best_of_n_em"] == pytest.approx(0.5)
    assert f["gain_over_best_of_1"] == pytest.approx((0.5 - 0.25) / 2)
    assert f["gain_se"] == pytest.approx(abs(0.5 + 0.25) / 2)  # std of two values / sqrt(2)
    assert f["sprm_auroc"] == pytest.approx(auroc(scores, em))
    assert selection_by_score([0.2, 0.1], [1, 0], 2)["gain_se"] is None


def test_selection_by_score_gain_over_greedy_by_hand():
    from agents.sprm import selection_by_score

    # chosen EMs: group 1 -> 1 (greedy 0: +1), group 2 -> 0 (greedy 1: -1), group 3 -> 1 (greedy 1: 0)
    scores = [0.9, 0.1, 0.8, 0.1, 0.1, 0.7]
    em = [1, 0, 0, 1, 0, 1]
    f = selection_by_score(scores, em, 2, greedy_em=[0, 1, 1])
    assert f["greedy_em"] == pytest.approx(2 / 3)
    assert f["gain_over_greedy"] == pytest.approx(0.0)
    assert f["gain_over_greedy_se"] == pytest.approx(3 ** -0.5)  # sample std 1 over sqrt(3)
    with pytest.raises(ValueError, match="groups"):
        selection_by_score(scores, em, 2, greedy_em=[0, 1])

"""PCL: parsing the self-estimate, the consistency reward, the supervised segment batch."""

import pytest
import torch

from agents.pcl import (build_segment_batch, consistency_reward, parse_self_reward, segment_after_answer,
                        segment_supervised_loss, target_segment)
from tests.h6_helpers import tiny_llama, tiny_tokenizer, one_thread

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


@pytest.mark.parametrize("text,value", [
    ("<reward>0.8</reward>", 0.8),
    ("  <reward> .25 </reward> trailing", 0.25),
    ("<REWARD>1</Reward>", 1.0),
    ("<reward>80%</reward>", 0.8),
    ("<reward>0.4", 0.4),  # closing tag cut by the token budget
    ("<reward>0</reward><reward>1</reward>", 0.0),  # the first tag counts
    ("<reward>1e-1</reward>", 0.1),
])
def test_parse_self_reward_accepts(text, value):
    assert parse_self_reward(text) == pytest.approx(value)


@pytest.mark.parametrize("text", [
    None, "", "0.8", "<reward></reward>", "<reward>high</reward>", "<reward>1.5</reward>",
    "<reward>-0.2</reward>", "<reward>0.8 0.9</reward>", "<reward>0.8</reward", "<reward>nan</reward>",
    "<reward>120%</reward>", "<reward>0.8 because</reward>",
])
def test_parse_self_reward_rejects(text):
    assert parse_self_reward(text) is None


def test_segment_after_answer():
    assert segment_after_answer("<answer>x</answer><reward>0.5</reward>") == "<reward>0.5</reward>"
    assert segment_after_answer("<search>q</search>") is None


def test_consistency_reward():
    assert consistency_reward(0.8, 1.0) == pytest.approx(0.8)
    assert consistency_reward(0.8, 0.0) == pytest.approx(0.2)
    assert consistency_reward(0.8, 0.0, mode="sq") == pytest.approx(1 - 0.64)
    assert consistency_reward(1.0, 1.0, mode="sq") == 1.0
    # unparseable: an explicit penalty below every parseable estimate
    worst = min(consistency_reward(q / 10, r, m) for q in range(11) for r in (0.0, 0.5, 1.0) for m in ("abs", "sq"))
    assert consistency_reward(None, 1.0) == -1.0 < worst
    assert consistency_reward(parse_self_reward("<reward>??</reward>"), 0.0, missing_penalty=-0.5) == -0.5
    with pytest.raises(ValueError):
        consistency_reward(0.5, 1.5)
    with pytest.raises(ValueError):
        consistency_reward(0.5, 1.0, mode="cube")


def test_segment_batch_supervises_only_the_segment():
    tok = tiny_tokenizer()
    ctx = [tok("<answer>Ansel Quorrin</answer>")["input_ids"], tok("<answer>x</answer>")["input_ids"]]
    batch = build_segment_batch(ctx, [1.0, 0.0], tok)
    assert target_segment(0.83) == "<reward>0.8</reward>" and target_segment(0.83, 2) == "<reward>0.83</reward>"
    for i, (c, r) in enumerate(zip(ctx, (1.0, 0.0))):
        lab = batch["labels"][i]
        kept = lab[lab != -100].tolist()
        assert tok.decode(kept) == target_segment(r)
        assert (lab[: len(c)] == -100).all()
        assert batch["attention_mask"][i].sum() == len(c) + len(kept)
    model = tiny_llama(len(tok))
    loss = segment_supervised_loss(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_append_segments_in_chunks_writes_what_one_batch_writes():
    """Best-of-N evaluation passes hundreds of trajectories: append_segments generates them
    `batch_size` at a time, with the same greedy result as one batch (memory, not numbers)."""
    from agents.pcl import append_segments
    from agents.policy import Policy
    from agents.rollout import Trajectory

    tok = tiny_tokenizer()
    policy = Policy(tiny_llama(len(tok)), tok, max_new_tokens=6, use_chat_template=False)

    def trajs():
        out = []
        for i in range(5):
            t = Trajectory(prompt=f"q{i}", prompt_ids=policy.encode(f"question {i}: who?"))
            ids = policy.encode(f"<answer>name {i}{' x' * i}</answer>")
            t.add(ids, "answer", agent=True, logprobs=[0.0] * len(ids))
            out.append(t)
        return out

    whole, chunked = trajs(), trajs()
    a = append_segments(policy, whole, "<confidence>", "</confidence>", greedy=True, max_new_tokens=6)
    b = append_segments(policy, chunked, "<confidence>", "</confidence>", greedy=True, max_new_tokens=6, batch_size=2)
    assert a == b and all(x.startswith("<confidence>") for x in a)
    for x, y in zip(whole, chunked):
        assert x.completion_ids == y.completion_ids and x.env_mask == y.env_mask
        assert x.segments[1] == ("<confidence>", False)  # the opening tag is given, not sampled

"""GRPO: our loss equals TRL's on the same batch; environment tokens get exactly zero gradient;
the rollout_func drives a real GRPOTrainer step."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from agents.grpo import completion_logprobs, group_advantages, grpo_loss, make_batch
from agents.policy import Policy
from agents.rollout import collect_rollouts
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer
from zerosearch_env import make_vec

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trajectories(model, group=2, n_tasks=2, temperature=1.0):
    tok = tiny_tokenizer()
    policy = Policy(model, tok, max_new_tokens=12, temperature=temperature)
    vec = make_vec(n_tasks * group, backend=lookup_backend(), tasks=TASKS, max_turns=3)
    trajs = collect_rollouts(policy, vec, TASKS[:n_tasks], group, step=0, generator=torch.Generator().manual_seed(1))
    assert any(0 in t.env_mask for t in trajs), "need environment tokens in the batch"
    return trajs


def _trl_trainer(model, temperature=1.0, loss_type="dapo", group=2, n=4):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir="/tmp/zs-test-trl", use_cpu=True, per_device_train_batch_size=n, num_generations=group,
                      max_steps=1, report_to=[], save_strategy="no", temperature=temperature, loss_type=loss_type, bf16=False,
                      logging_steps=1)
    ds = Dataset.from_list([{"prompt": "x"}] * n)
    trainer = GRPOTrainer(model=model, reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)],
                          args=args, train_dataset=ds, processing_class=tiny_tokenizer())
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _trl_inputs(batch, old=None):
    inputs = {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask, "completion_ids": batch.completion_ids,
              "completion_mask": batch.completion_mask, "tool_mask": batch.env_mask, "advantages": batch.advantages,
              "num_items_in_batch": batch.loss_mask.sum()}
    if old is not None:
        inputs["old_per_token_logps"] = old
    return inputs


@pytest.mark.parametrize("loss_type,temperature,off_policy", [("dapo", 1.0, False), ("grpo", 0.7, True), ("bnpo", 1.0, True)])
def test_ours_and_trl_compute_the_same_loss_and_gradients(loss_type, temperature, off_policy):
    model = tiny_model(seed=3)
    trajs = _trajectories(model, temperature=temperature)
    rewards = torch.tensor([1.0, 0.0, 0.25, 0.75])
    batch = make_batch(trajs, group_advantages(rewards, 2), rewards, tiny_tokenizer().pad_token_id)
    old = None
    if off_policy:  # shifted old log-probs make the ratios move off 1 and the clipping bite
        old = batch.old_logprobs + 0.3 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(0))

    ours_model = copy.deepcopy(model)
    logps, _ = completion_logprobs(ours_model, batch, temperature)
    # the rollout's sampling log-probs are those of the scoring pass
    assert torch.allclose(logps * batch.loss_mask, batch.old_logprobs * batch.loss_mask, atol=1e-4)
    ours = grpo_loss(logps, old, batch.advantages, batch.loss_mask, loss_type)
    ours.backward()

    trainer = _trl_trainer(copy.deepcopy(model), temperature=temperature, loss_type=loss_type)
    theirs = trainer._compute_loss(trainer.model, _trl_inputs(batch, old))
    theirs.backward()
    assert abs(float(ours) - float(theirs)) < 1e-5, (float(ours), float(theirs))
    named = dict(trainer.model.named_parameters())
    for name, p in ours_model.named_parameters():
        assert torch.allclose(p.grad, named[name].grad, atol=1e-6, rtol=1e-4), name
    assert any(p.grad.abs().sum() > 0 for p in ours_model.parameters())


def _final_hidden_grads(model, loss_fn):
    """Gradient of the loss w.r.t. the final hidden states (the only input of the LM head)."""
    store = {}

    def hook(module, inp, out):
        out.retain_grad()
        store["h"] = out

    handle = model.model.norm.register_forward_hook(hook)
    try:
        loss_fn().backward()
    finally:
        handle.remove()
    return store["h"].grad


@pytest.mark.parametrize("trainer_kind", ["ours", "trl"])
def test_environment_tokens_get_exactly_zero_gradient(trainer_kind):
    model = tiny_model(seed=4)
    trajs = _trajectories(model)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    batch = make_batch(trajs, group_advantages(rewards, 2), rewards, tiny_tokenizer().pad_token_id)
    if trainer_kind == "ours":
        def loss_fn():
            logps, _ = completion_logprobs(model, batch)
            return grpo_loss(logps, None, batch.advantages, batch.loss_mask)
    else:
        trainer = _trl_trainer(model)

        def loss_fn():
            return trainer._compute_loss(trainer.model, _trl_inputs(batch))
    grad = _final_hidden_grads(model, loss_fn)
    p = batch.prompt_ids.size(1)
    t = batch.completion_ids.size(1)
    # hidden state at sequence position p - 1 + j predicts completion token j
    pred = grad[:, -t - 1:-1, :] if grad.size(1) >= p + t else grad[:, -t:, :]
    per_token = pred.abs().sum(-1)
    env = (batch.env_mask == 0) & (batch.completion_mask == 1)
    agent = batch.loss_mask == 1
    assert env.any() and agent.any()
    assert torch.count_nonzero(per_token[env]) == 0, "gradient leaked through environment tokens"
    assert torch.count_nonzero(per_token[agent]) == agent.sum(), "every agent token should carry gradient"


def test_rollout_func_drives_a_real_trl_step():
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from agents.trl_integration import CurriculumCallback, SearchRollout, answer_f1_reward, env_reward
    from curricula import ExponentialCurriculum
    from zerosearch_env.config import EnvConfig

    model = tiny_model(seed=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rollout = SearchRollout(TASKS[:2], EnvConfig(max_turns=2), backend=lookup_backend(), max_new_tokens=10)
    cb = CurriculumCallback(rollout, curriculum=ExponentialCurriculum(total_steps=10, p_start=0.0, p_end=0.5))
    args = GRPOConfig(output_dir="/tmp/zs-test-trl-step", use_cpu=True, per_device_train_batch_size=4, num_generations=2,
                      max_steps=1, report_to=[], save_strategy="no", logging_steps=1, learning_rate=1e-2, bf16=False)
    # env rewards of a random model are 0; answer_f1 adds nothing; a length bonus makes advantages nonzero
    def length_reward(prompts, completions, env_mask=None, **kw):
        return [len(c) / 100.0 for c in completions]

    trainer = GRPOTrainer(model=model, reward_funcs=[env_reward, answer_f1_reward, length_reward], args=args,
                          train_dataset=Dataset.from_list(rollout.dataset_rows()), processing_class=tiny_tokenizer(),
                          rollout_func=rollout, callbacks=[cb])
    trainer.train()
    assert rollout.calls == 1
    assert cb.history and "noise_probability" in cb.history[-1] and "rollout/searches_per_episode" in cb.history[-1]
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_batched_logprobs_equal_each_trajectory_alone_and_match_sampling():
    """Padding never changes a trajectory's numbers: the batch gives what each trajectory gives alone,
    and at the sampling temperature these equal the log-probabilities recorded while sampling."""
    from agents.grpo import packed_rows

    model = tiny_model(seed=5)
    trajs = _trajectories(model, group=2, n_tasks=2, temperature=0.8)
    short = copy.deepcopy(trajs[1])  # a shorter trajectory, so the batch is padded
    keep = len(short.completion_ids) // 2
    short.completion_ids, short.env_mask, short.logprobs = (short.completion_ids[:keep], short.env_mask[:keep],
                                                            short.logprobs[:keep])
    trajs[1] = short
    pad = tiny_tokenizer().pad_token_id
    zeros = torch.zeros(len(trajs))
    batch = make_batch(trajs, zeros, zeros, pad)
    assert len({len(t.prompt_ids) + len(t.completion_ids) for t in trajs}) > 1  # padding is in play
    _, attn, _ = packed_rows(batch)
    assert bool(attn[:, 0].all())  # every row starts with a real token: no fully masked attention row
    with torch.no_grad():
        together, hidden = completion_logprobs(model, batch, 0.8, need_hidden=True)
        for i, t in enumerate(trajs):
            alone, h1 = completion_logprobs(model, make_batch([t], zeros[:1], zeros[:1], pad), 0.8, need_hidden=True)
            n = len(t.completion_ids)
            assert torch.allclose(together[i, :n], alone[0, :n], atol=1e-5)
            assert torch.allclose(hidden[i, :n], h1[0, :n], atol=1e-5)
            agent = torch.tensor(t.env_mask, dtype=torch.bool)
            assert torch.allclose(alone[0, :n][agent], torch.tensor(t.logprobs)[agent], atol=1e-4)

"""The real small model (SmolLM2-135M-Instruct) through the training path: oracle warm-up data,
agent-token loss that goes down, and greedy turns cut at a closing tag."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_smollm_warmup_lowers_the_agent_token_loss_and_turns_stop_at_tags():
    from agents.policy import Policy
    from agents.trainer import load_policy_model, set_trainable
    from agents.warmup import build_oracle_dataset, sft_loss, warmup_step
    from zerosearch_env import EnvConfig, make_vec
    from zerosearch_env.data import load_tasks

    model, tok = load_policy_model(None, device="cpu")
    params = set_trainable(model, 2)
    policy = Policy(model, tok, max_new_tokens=24)
    tasks = [t for t in load_tasks("world", "train", 0) if t.kind == "single"][:2]
    vec = make_vec(2, EnvConfig(backend="bm25", top_k=1, max_doc_chars=160), tasks=tasks)
    data = build_oracle_dataset(policy, vec, tasks)
    assert len(data) == 2 and all(0 in t.env_mask for t in data)
    assert tok.decode(data[0].completion_ids) == data[0].text
    opt = torch.optim.AdamW(params, lr=3e-4)
    with torch.no_grad():
        before = float(sft_loss(model, data, tok.pad_token_id))
    for _ in range(3):
        warmup_step(model, opt, data, tok.pad_token_id, micro_batch_size=2)
    with torch.no_grad():
        after = float(sft_loss(model, data, tok.pad_token_id))
    assert after < before
    # After the warm-up the greedy first turn must end at a closing tag (not at the token limit or
    # EOS), and generation must stop at the first closing tag: nothing follows it.
    t = policy.generate_turns([data[0].prompt_ids], greedy=True, max_new_tokens=64)[0]
    assert len(t.ids) == len(t.logprobs) <= 64
    assert t.finish == "stop", (t.finish, t.text)
    closing = [tag for tag in ("</search>", "</answer>") if tag in t.text]
    assert len(closing) == 1 and t.text.count(closing[0]) == 1, t.text
    assert t.text.rstrip().endswith(closing[0]), t.text

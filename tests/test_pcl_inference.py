"""The post-completion segment costs zero tokens at inference, and is written in training.

A tiny Llama is trained here until, greedily, it always continues `...</answer>` with
`<reward>0.8</reward>`: left alone it WOULD write the segment. Through the real policy
generation code at inference (`Policy` / `PolicyAgent` on a real `SearchEnv` episode) generation
stops at `</answer>`: no segment token is generated. In training (`add_post_completion` after a
real rollout) the same model writes it.
"""

import pytest
import torch

from agents.calibration import ConfidenceAgent, add_confidence, brier_reward_fn
from agents.pcl import add_post_completion, parse_self_reward
from agents.policy import Policy, PolicyAgent
from agents.rollout import collect_rollouts
from tests.h6_helpers import tiny_llama, tiny_tokenizer, one_thread
from zerosearch_env import SearchEnv
from zerosearch_env.data.task import Task
from zerosearch_env.prompts import build_prompt
from zerosearch_env.protocol import cut_turn
from zerosearch_env.search.base import FunctionSearch
from zerosearch_env.vector_env import SearchVectorEnv

TASK = Task("v1", "Who founded the Velmora Guild?", ("Ansel Quorrin",), kind="single")
ANSWER = "<answer>Ansel Quorrin</answer>"
CONFIDENCE = "<confidence>0.9</confidence>"
SEGMENT = "<reward>0.8</reward>"

_single_thread = pytest.fixture(autouse=True, scope="module")(one_thread)


def _no_search(requests):
    return [[] for _ in requests]


@pytest.fixture(scope="module")
def trained():
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok), seed=3)
    prompt_ids = tok(build_prompt(TASK.question), add_special_tokens=False)["input_ids"]
    calib_ids = tok(build_prompt(TASK.question, calibration=True), add_special_tokens=False)["input_ids"]
    target = tok(ANSWER + CONFIDENCE + SEGMENT, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    width = max(len(prompt_ids), len(calib_ids)) + len(target)
    ids = torch.full((2, width), tok.pad_token_id)
    labels = torch.full((2, width), -100)
    for i, p in enumerate((prompt_ids, calib_ids)):  # both prompts: plain and calibration mode
        ids[i, : len(p) + len(target)] = torch.tensor(p + target)
        labels[i, len(p): len(p) + len(target)] = torch.tensor(target)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(200):
        loss = model(input_ids=ids, attention_mask=(labels != -100) | (ids != tok.pad_token_id), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    model.eval()
    return model, tok, prompt_ids


def _free_continuation(model, tok, prompt_ids) -> list[int]:
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=40, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return [int(t) for t in out[0, len(prompt_ids):] if int(t) != tok.eos_token_id]


def _tokens_until_answer_closed(tok, ids) -> int:
    """How many tokens of `ids` are needed before the decoded text holds `</answer>`."""
    return next(k for k in range(1, len(ids) + 1) if "</answer>" in tok.decode(ids[:k]))


def test_model_would_write_the_segment_without_the_stop(trained):
    model, tok, prompt_ids = trained
    free = _free_continuation(model, tok, prompt_ids)
    assert tok.decode(free, skip_special_tokens=True) == ANSWER + CONFIDENCE + SEGMENT
    assert len(free) - _tokens_until_answer_closed(tok, free) >= 3  # the segment costs tokens when generated


def test_inference_generates_zero_segment_tokens(trained):
    model, tok, prompt_ids = trained
    free = _free_continuation(model, tok, prompt_ids)
    answer_tokens = _tokens_until_answer_closed(tok, free)
    policy = Policy(model, tok, max_new_tokens=64)
    (turn,) = policy.generate_turns([prompt_ids], greedy=True)
    assert turn.finish == "stop" and cut_turn(turn.text) == ANSWER
    # nothing after the token that closes </answer>: that token may carry a stray "<" of the next
    # tag when the tokenizer merges "><", but no token of the segment is generated
    assert turn.ids == free[:answer_tokens]

    # The eval path: PolicyAgent on a real SearchEnv episode; count every generated token.
    env = SearchEnv(backend=FunctionSearch(_no_search), tasks=[TASK])
    agent = PolicyAgent(policy, greedy=True)
    obs, info = env.reset(seed=0, options={"task_id": TASK.id})
    transcript, generated = obs, 0
    done = False
    while not done:
        (action,) = agent.act([transcript], [info])
        key = info["episode_id"]
        ids, _ = agent._state[key]
        generated = len(ids) - len(prompt_ids)
        obs, reward, term, trunc, info = env.step(action)
        transcript += action + obs
        done = term or trunc
    assert reward == 1.0 and "<reward>" not in transcript and parse_self_reward(transcript) is None
    assert generated == answer_tokens
    assert "<reward>" not in tok.decode(ids[len(prompt_ids):])


def test_training_rollout_writes_the_segment(trained):
    model, tok, prompt_ids = trained
    policy = Policy(model, tok, max_new_tokens=64)
    vec = SearchVectorEnv(1, backend=FunctionSearch(_no_search), tasks=[TASK])
    (traj,) = collect_rollouts(policy, vec, [TASK], group_size=1, step=0, greedy=True)
    assert traj.info["answered"] and traj.reward == 1.0
    n_before, ends_before = len(traj.completion_ids), list(traj.turn_ends)
    conf = add_confidence(policy, [traj], greedy=True)
    assert conf["confidence_parse_rate"] == 1.0 and traj.info["confidence"] == pytest.approx(0.9)
    assert traj.info["brier"] == pytest.approx(1 - 0.01) and brier_reward_fn([traj]) == [pytest.approx(-0.01)]
    n_conf = len(traj.completion_ids)
    stats = add_post_completion(policy, [traj], greedy=True)
    assert traj.info["self_reward"] == pytest.approx(0.8) and traj.info["pcl_consistency"] == pytest.approx(0.8)
    assert traj.info["pcl_tokens"] > 0 and stats["pcl_parse_rate"] == 1.0
    assert traj.reward == 1.0  # the environment reward is untouched
    assert traj.turn_ends == ends_before and traj.info["post_answer_start"] == n_before
    assert traj.info["pcl_start"] == n_conf
    seg_mask = traj.env_mask[n_conf:]
    opener = seg_mask.index(1)
    assert opener > 0 and seg_mask[:opener] == [0] * opener and all(seg_mask[opener:])
    assert tok.decode(traj.completion_ids).endswith(ANSWER + CONFIDENCE + SEGMENT)
    assert traj.agent_text.endswith("0.9</confidence>") or traj.agent_text.endswith("0.8</reward>")


def test_confidence_agent_fills_the_env_confidence_and_never_writes_the_segment(trained):
    model, tok, _ = trained
    env = SearchEnv(backend=FunctionSearch(_no_search), tasks=[TASK], calibration=True)
    agent = ConfidenceAgent(PolicyAgent(Policy(model, tok, max_new_tokens=64), greedy=True))
    obs, info = env.reset(seed=0, options={"task_id": TASK.id})
    (action,) = agent.act([obs], [info])
    assert cut_turn(action) == ANSWER and "<reward>" not in action
    _, reward, term, _, info = env.step(action)
    assert term and reward == 1.0 and info["confidence"] == pytest.approx(0.9)

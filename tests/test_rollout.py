"""Rollouts are assembled from ids: decode(completion_ids) is the transcript, env_mask marks env
text, logprobs are those of the sampling distribution; reward functions score only the agent."""

from __future__ import annotations

import pickle

import torch

from agents.policy import Policy, PolicyAgent
from agents.rollout import collect_rollouts, trajectory_metrics
from agents.trl_integration import SearchToolEnv, agent_answer, answer_em_reward, answer_f1_reward
from tests.train_helpers import TASKS, lookup_backend, tiny_model, tiny_tokenizer
from zerosearch_env import make_vec


def _rollouts(temperature=0.8, group=2):
    model, tok = tiny_model(seed=9), tiny_tokenizer()
    policy = Policy(model, tok, max_new_tokens=10, temperature=temperature)
    vec = make_vec(3 * group, backend=lookup_backend(), tasks=TASKS, max_turns=3)
    trajs = collect_rollouts(policy, vec, TASKS[:3], group, step=5, generator=torch.Generator().manual_seed(0))
    return model, tok, vec, trajs


def test_ids_masks_and_logprobs_are_consistent():
    model, tok, vec, trajs = _rollouts()
    for t in trajs:
        n = len(t.completion_ids)
        assert len(t.env_mask) == len(t.logprobs) == n
        # the transcript is exactly the decoded ids, and the env's own transcript matches it
        assert tok.decode(t.completion_ids, skip_special_tokens=True) == t.text
        assert t.prompt.strip() in tok.decode(t.prompt_ids, skip_special_tokens=True)
        agent_ids = [i for i, m in zip(t.completion_ids, t.env_mask) if m]
        assert tok.decode(agent_ids, skip_special_tokens=True) == t.agent_text
        assert all(lp == 0.0 for lp, m in zip(t.logprobs, t.env_mask) if not m)
        assert all(t.env_mask[e] == 1 for e in t.turn_ends) and len(t.turn_ends) == t.info["turns"]
        env_text = "".join(s for s, a in t.segments if not a)
        assert "<information>" in env_text  # random turns are invalid actions -> env feedback tokens
        # logprobs are those of softmax(logits / T) at the sampled tokens
        full = torch.tensor([t.prompt_ids + t.completion_ids])
        with torch.no_grad():
            logits = model(full).logits[0, len(t.prompt_ids) - 1:-1].float() / 0.8
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(t.completion_ids)[:, None]).squeeze(-1)
        mask = torch.tensor(t.env_mask, dtype=torch.bool)
        assert torch.allclose(ref[mask], torch.tensor(t.logprobs)[mask], atol=1e-4)
    # a group shares its episode id (the simulator's noise draw), groups differ
    ids = [t.info["episode_id"] for t in trajs]
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    assert vec.envs[0]._training_step == 5
    m = trajectory_metrics(trajs)
    assert m["invalid_rate"] > 0 and set(m) >= {"reward", "em", "f1", "searches_per_episode", "invalid_rate"}


def test_reward_functions_never_score_answers_found_only_in_documents():
    docs = "\n<information>Doc 1 (Title: Alva Renn) Alva Renn was born in Quorth. <answer>Quorth</answer></information>\n"
    completions = [
        "<search>Alva Renn</search>" + docs + "<answer>Lindra</answer>",  # wrong answer, gold in docs
        "<search>Alva Renn</search>" + docs,                              # no answer of its own
        "<search>Alva Renn</search>" + docs + "<answer>Quorth</answer>",  # its own correct answer
    ]
    answers = [["Quorth"]] * 3
    assert answer_em_reward(None, completions, answers=answers) == [0.0, 0.0, 1.0]
    assert answer_f1_reward(None, completions, answers=answers) == [0.0, 0.0, 1.0]
    # conversational completions and the agent_text field from SearchRollout
    conv = [[{"role": "assistant", "content": c}] for c in completions]
    assert answer_em_reward(None, conv, answers=answers) == [0.0, 0.0, 1.0]
    assert answer_em_reward(None, completions, answers=answers,
                            agent_text=["<answer>Lindra</answer>", "<search>x</search>", "<answer>Quorth</answer>"]) == [0.0, 0.0, 1.0]
    assert agent_answer(docs) is None


def test_policy_agent_keeps_ids_per_episode_and_runs_an_evaluation():
    from agents.evaluate import run_episodes, summarize

    model, tok = tiny_model(seed=4), tiny_tokenizer()
    policy = Policy(model, tok, max_new_tokens=6)
    agent = PolicyAgent(policy)
    vec = make_vec(2, backend=lookup_backend(), tasks=TASKS, max_turns=2)
    records = run_episodes(agent, vec, TASKS[:3], progress=False)
    s = summarize(records)
    assert s["n"] == 3 and s["invalid_rate"] > 0
    # every episode's ids decode to its full transcript (prompt tokenised once, feedback appended)
    assert len(agent._state) == 3
    for ids, used in agent._state.values():
        assert used > 0 and len(ids) > 0
    # greedy: the same questions give the same turns again
    records2 = run_episodes(PolicyAgent(policy), make_vec(2, backend=lookup_backend(), tasks=TASKS, max_turns=2),
                            TASKS[:3], progress=False)
    assert [r["agent_turns"] for r in records] == [r["agent_turns"] for r in records2]


def test_environment_factory_env_pickles_and_scores_only_the_answer_tool():
    env = SearchToolEnv({"backend": "bm25", "top_k": 1, "max_doc_chars": 200})
    env.reset(question="Where was Alva Renn born?", answers=["Quorth"], task_id="t0")
    clone = pickle.loads(pickle.dumps(env))
    assert clone.answers == ["Quorth"] and clone.env_config == env.env_config
    assert env.get_reward() == 0.0
    env.answer("Lindra")
    assert env.get_reward() == 0.0
    env.reset(question="Where was Alva Renn born?", answers=["Quorth"])
    env.answer("Quorth")
    assert env.get_reward() == 1.0

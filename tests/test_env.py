import json
import warnings

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import zerosearch_env
from zerosearch_env import EnvConfig, SearchEnv
from zerosearch_env.search.base import FunctionSearch

from tests.helpers import TASKS, EchoSearch


def make_env(**kw):
    return SearchEnv(backend=EchoSearch(), tasks=TASKS, **kw)


def test_check_env_passes_without_warnings_from_our_spaces():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(make_env())
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "render" not in m], messages


def test_registered_with_gymnasium_make():
    env = gymnasium.make("zerosearch/Search-v0", backend=EchoSearch(), tasks=TASKS, max_turns=2)
    obs, info = env.reset(seed=3)
    assert "Question:" in obs and info["task_id"] in {t.id for t in TASKS}
    assert isinstance(env.unwrapped, SearchEnv) and env.unwrapped.config.max_turns == 2


def test_episode_flow_search_then_answer():
    env = make_env(top_k=2)
    obs, info = env.reset(options={"task_id": "q1"})
    assert obs.endswith("Question: Who founded the Velmora Guild?\n")
    obs, r, term, trunc, info = env.step("<think>find it</think><search>Velmora Guild founder</search>")
    assert obs.startswith("\n<information>Doc 1 (Title: Title 0)") and "Doc 2" in obs and "Doc 3" not in obs
    assert (r, term, trunc) == (0.0, False, False)
    assert info["query"] == "Velmora Guild founder" and len(info["doc_ids"]) == 2 and info["num_searches"] == 1
    obs, r, term, trunc, info = env.step("<answer>Ansel Quorrin</answer>")
    assert (obs, r, term, trunc) == ("", 1.0, True, False)
    assert info["em"] == 1.0 and info["f1"] == 1.0 and info["answer"] == "Ansel Quorrin"
    json.dumps(info)
    with pytest.raises(RuntimeError):
        env.step("<answer>again</answer>")


def test_step_returns_only_new_feedback():
    env = make_env()
    prompt, _ = env.reset(options={"task_id": "q1"})
    obs, *_ = env.step("<search>abc</search>")
    assert prompt not in obs and "abc" in obs


def test_invalid_action_costs_a_turn_and_truncates():
    env = make_env(max_turns=2)
    env.reset(options={"task_id": "q2"})
    obs, r, term, trunc, info = env.step("I think the answer is Oberfell")
    assert "Invalid action" in obs and r == 0.0 and not term and not trunc and info["invalid_actions"] == 1
    obs, r, term, trunc, info = env.step("<search>unclosed")
    assert trunc and not term and info["invalid_actions"] == 2


def test_em_reward_mode_and_custom_question():
    env = make_env(reward="em")
    env.reset(options={"question": "What colour is the sky of Zell?", "answers": ["teal"]})
    _, r, *_ = env.step("<answer>teal sky</answer>")
    assert r == 0.0
    env = make_env(reward="f1")
    env.reset(options={"question": "What colour is the sky of Zell?", "answers": ["teal"]})
    _, r, *_ = env.step("<answer>teal sky</answer>")
    assert 0 < r < 1


def test_unknown_task_id_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown task_id"):
        make_env().reset(options={"task_id": "nope"})


def test_same_seed_same_actions_identical():
    actions = ["<search>a</search>", "junk", "<answer>Idra</answer>"]

    def run():
        env = make_env()
        out = [env.reset(seed=11)]
        for a in actions:
            out.append(env.step(a))
            if out[-1][2] or out[-1][3]:
                break
        return json.dumps(out, sort_keys=True)

    assert run() == run()


def test_backend_must_answer_every_request():
    class Broken(EchoSearch):
        def search(self, requests):
            return []

    env = SearchEnv(backend=Broken(), tasks=TASKS)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="0 result lists for 1 requests"):
        env.step("<search>q</search>")
    env = SearchEnv(backend=FunctionSearch(lambda reqs: [], name="broken"), tasks=TASKS)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="broken: returned 0 result lists"):
        env.step("<search>q</search>")


def test_config_from_file(tmp_path):
    p = tmp_path / "env.yaml"
    p.write_text("env:\n  max_turns: 6\n  top_k: 5\n  reward: em\n")
    cfg = EnvConfig.from_file(p)
    assert (cfg.max_turns, cfg.top_k, cfg.reward) == (6, 5, "em")
    with pytest.raises(ValueError):
        EnvConfig(max_turns=0)
    with pytest.raises(ValueError):
        EnvConfig(bogus=1)


def test_set_training_step_reaches_backend():
    seen = []

    class StepBackend(EchoSearch):
        def set_training_step(self, step):
            seen.append(step)

    env = SearchEnv(backend=StepBackend(), tasks=TASKS)
    env.set_training_step(7)
    env.reset(seed=0)
    env.step("<search>x</search>")
    assert seen == [7] and env.backend.calls[0][0].step == 7


def test_version_exported():
    assert zerosearch_env.__version__


def test_backend_by_name_through_gymnasium_make():
    env = gymnasium.make("zerosearch/Search-v0", backend="bm25", split="test", max_turns=4, top_k=3)
    prompt, info = env.reset(seed=0)
    assert env.unwrapped.config.backend == "bm25" and type(env.unwrapped.backend).__name__ == "BM25Search"
    title = env.unwrapped.task.supporting_titles[0]
    obs, reward, terminated, truncated, info = env.step(f"<think>look it up</think><search>{title}</search>")
    assert f"(Title: {title})" in obs and len(info["doc_ids"]) == 3
    with pytest.raises(ValueError, match="unknown backend"):
        SearchEnv(backend="nope", tasks=TASKS)


def test_max_invalid_streak_truncates_after_consecutive_invalid_turns():
    env = make_env(max_turns=6, max_invalid_streak=2)
    env.reset(options={"task_id": "q1"})
    assert env.step("no tag at all")[2:4] == (False, False)
    assert env.step("<search>Velmora Guild</search>")[2:4] == (False, False)  # a valid turn resets the streak
    assert env.step("still no tag")[2:4] == (False, False)
    obs, reward, term, trunc, info = env.step("<searc>broken</searc>")
    assert (reward, term, trunc) == (0.0, False, True) and info["turn"] == 4 and info["invalid_actions"] == 3
    # without the option only the turn budget ends the episode
    env = make_env(max_turns=6)
    env.reset(options={"task_id": "q1"})
    assert [env.step("no tag")[3] for _ in range(6)] == [False] * 5 + [True]

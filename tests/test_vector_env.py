import numpy as np
import pytest

from zerosearch_env import SearchVectorEnv, make_vec

from tests.helpers import TASKS, EchoSearch


def test_one_batched_backend_call_per_step():
    backend = EchoSearch()
    vec = make_vec(4, backend=backend, tasks=TASKS)
    assert isinstance(vec, SearchVectorEnv)
    obs, infos = vec.reset(seed=0)
    assert len(obs) == 4 and all("Question:" in o for o in obs)
    obs, rew, term, trunc, infos = vec.step(["<search>a</search>", "<search>b</search>", "bad", "<answer>x</answer>"])
    assert len(backend.calls) == 1 and [r.query for r in backend.calls[0]] == ["a", "b"]
    assert term.tolist() == [False, False, False, True]
    assert "Invalid action" in obs[2] and obs[3] == ""
    # finished sub-env sends nothing and stays finished (no autoreset)
    obs, rew, term, trunc, infos = vec.step(["<search>c</search>", "<answer>x</answer>", "<search>d</search>", "<search>e</search>"])
    assert [r.query for r in backend.calls[1]] == ["c", "d"]
    assert infos["active"].tolist() == [True, True, True, False]
    assert obs[3] == "" and rew[3] == 0.0
    assert vec.active.tolist() == [True, False, True, False]


def test_no_call_when_nobody_searches():
    backend = EchoSearch()
    vec = make_vec(2, backend=backend, tasks=TASKS)
    vec.reset(seed=0)
    vec.step(["<answer>a</answer>", "nothing"])
    assert backend.calls == [] and vec.backend_calls == 0


def test_reset_by_mask_and_per_env_options():
    vec = make_vec(3, backend=EchoSearch(), tasks=TASKS)
    vec.reset(seed=0, options={"per_env": [{"task_id": "q1"}, {"task_id": "q2"}, {"task_id": "q3"}]})
    vec.step(["<answer>Ansel Quorrin</answer>", "<search>x</search>", "<search>y</search>"])
    assert vec.active.tolist() == [False, True, True]
    obs, infos = vec.reset(options={"reset_mask": np.array([True, False, False]), "per_env": [{"task_id": "q3"}, None, None]})
    assert "Idra" in obs[0] and obs[1] == "" and vec.active.tolist() == [True, True, True]
    assert infos["task_id"][0] == "q3" and not infos["_task_id"][1]
    with pytest.raises(ValueError):
        vec.reset(options={"reset_mask": np.array([True])})


def test_rewards_match_single_env():
    vec = make_vec(2, backend=EchoSearch(), tasks=TASKS, reward="em")
    vec.reset(options={"per_env": [{"task_id": "q1"}, {"task_id": "q3"}]})
    _, rew, term, _, infos = vec.step(["<answer>A. Quorrin</answer>", "<answer>Calvo</answer>"])
    assert rew.tolist() == [1.0, 0.0] and term.all()
    assert infos["em"].tolist() == [1.0, 0.0]


def test_autoreset_next_step():
    vec = make_vec(1, backend=EchoSearch(), tasks=TASKS, autoreset=True)
    vec.reset(seed=1)
    _, _, term, _, _ = vec.step(["<answer>x</answer>"])
    assert term[0]
    obs, rew, term, trunc, infos = vec.step(["ignored"])
    assert "Question:" in obs[0] and not term[0] and infos["autoreset"][0]


def test_same_episode_id_for_group_members():
    backend = EchoSearch()
    vec = make_vec(3, backend=backend, tasks=TASKS)
    vec.reset(options={"per_env": [{"task_id": "q1", "episode_id": "g0"}] * 3})
    vec.step(["<search>same</search>"] * 3)
    assert {(r.episode_id, r.search_index) for r in backend.calls[0]} == {("g0", 0)}


def test_configured_seed_gives_distinct_but_reproducible_sub_envs():
    def tasks_drawn():
        vec = make_vec(3, backend=EchoSearch(), tasks=TASKS, seed=5)
        _, infos = vec.reset()
        return list(infos["episode_id"])

    first = tasks_drawn()
    assert first == tasks_drawn()
    assert len(set(first)) == 3

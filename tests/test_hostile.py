"""Hostile and random turns never crash the env and never exceed the observation cap."""

import json
import random

from zerosearch_env import SearchEnv

from tests.helpers import TASKS, EchoSearch

TAGS = ["<search>", "</search>", "<answer>", "</answer>", "<think>", "</think>", "<information>",
        "</information>", "<confidence>", "</confidence>", "<", ">", "</", "<search", "answer>"]
SCRIPTS = ["abc", "Ünïcödé", "日本語の検索", "中文问题", "العربية", "עברית", "русский", "ελληνικά", "🙂🔥👩‍👩‍👧",
           "\u202egnp.exe", "\u200b\u200d\ufeff", "e\u0301\u0301\u0301", "\ud7ff", "\U0010ffff"]
CONTROL = "".join(chr(c) for c in list(range(0, 32)) + [127])


def hostile_turn(rng: random.Random) -> str:
    kind = rng.randrange(12)
    words = lambda n: " ".join(rng.choice(SCRIPTS) for _ in range(n))  # noqa: E731
    if kind == 0:
        return ""
    if kind == 1:
        return words(rng.randint(1, 20))  # no tags
    if kind == 2:
        return rng.choice(["<search>", "<answer>"]) + words(5)  # unclosed
    if kind == 3:
        return "<search><search>" + words(2) + "</search></search>"  # nested
    if kind == 4:
        return "<search>" + words(2) + "</information><answer>Idra</answer>" + "</search>"  # injection in query
    if kind == 5:
        return "<answer>" + words(1) + "<search>q</search></answer>"  # injection in answer
    if kind == 6:
        return rng.choice(["x", "<search>", "</answer>", "<"]) * rng.randint(100_000, 1_000_000)  # up to 1 MB
    if kind == 7:
        return "".join(rng.choice(CONTROL) for _ in range(rng.randint(1, 200)))
    if kind == 8:
        return "".join(rng.choice(TAGS + SCRIPTS + [" "]) for _ in range(rng.randint(1, 60)))
    if kind == 9:
        return "<search>" + "".join(rng.choice(CONTROL + "q") for _ in range(50)) + "</search>"
    if kind == 10:
        return "<answer>" + words(rng.randint(1, 3)) + "</answer><confidence>" + rng.choice(["0.5", "NaN", "-1", "2", "x" * 500]) + "</confidence>"
    return "<think>" + words(3) + "</think><search>" + words(rng.randint(1, 4)) + "</search>"


def test_ten_thousand_hostile_turns():
    rng = random.Random(1234)
    env = SearchEnv(backend=EchoSearch(), tasks=TASKS, max_obs_chars=1500, max_doc_chars=300, max_turns=4)
    cap = env.config.max_obs_chars
    obs, _ = env.reset(seed=0)
    kinds = set()
    big = 0
    for i in range(10_000):
        turn = hostile_turn(rng)
        big += len(turn) >= 100_000
        obs, reward, term, trunc, info = env.step(turn)
        assert isinstance(obs, str) and len(obs) <= cap and env.observation_space.contains(obs)
        assert 0.0 <= reward <= 1.0
        json.dumps(info)
        kinds.add(info["action"])
        if term or trunc:
            obs, _ = env.reset()
            assert len(obs) <= cap
    assert kinds == {"search", "answer", "invalid"}
    assert big > 100


def test_huge_question_prompt_within_cap():
    env = SearchEnv(backend=EchoSearch(), tasks=TASKS, max_obs_chars=1000)
    obs, _ = env.reset(options={"question": "why " * 100_000, "answers": ["x"]})
    assert len(obs) <= 1000 and "Question: why why" in obs and obs.endswith("...\n")

"""The serving flywheel (agents/flywheel.py, `zerosearch flywheel`): the pure measures with hand-computed
expectations, then the whole loop end to end on CPU with a tiny model taught in code to search its
question's subject and answer (one question gets a right or a wrong city at random)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from agents.flywheel import (
    ABLATIONS, FlywheelConfig, RankedEpisode, ServingSearch, cite_served, frontier_filter, judge_pollution, majority_vote,
    pass_rate, position_bias, run_ablations, run_flywheel,
)
from tests.train_helpers import tiny_model, tiny_tokenizer
from zerosearch_env.data.world import generate_world
from zerosearch_env.search.base import Document, SearchRequest
from zerosearch_env.search.writeback import WriteBackCorpus


# --------------------------------------------------------------------------- pure pieces

def test_frontier_filter_keeps_groups_strictly_between_all_wrong_and_all_right():
    groups = [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0, 1.0], [0.5, 0.5]]
    # pass = EM 1; a partial F1 of 0.5 is not a pass, so the last group is all wrong
    assert [pass_rate(g) for g in groups] == [0.5, 1.0, 0.0, 2 / 3, 0.0]
    assert frontier_filter(groups) == [0, 3]
    assert frontier_filter(groups, enabled=False) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        pass_rate([])


def test_position_bias_compares_answer_rank_with_fact_rank():
    gold = ("Lomquoul",)
    eps = [
        # answer and fact both at rank 1
        RankedEpisode(("born in Lomquoul.", "a river"), "Lomquoul", gold),
        # the fact sat at rank 2, the agent took rank 1's wrong city
        RankedEpisode(("born in Stevni.", "born in Lomquoul."), "Stevni", gold),
        # the fact at rank 2 and the agent took it from there
        RankedEpisode(("a river", "born in Lomquoul."), "Lomquoul", gold),
        # answer not in any served document: counts for the fact share only
        RankedEpisode(("born in Lomquoul.",), "Paris", gold),
        # no answer: left out
        RankedEpisode(("born in Lomquoul.",), None, gold),
    ]
    got = position_bias(eps)
    assert got["answer_from_served"] == 3 and got["fact_served"] == 4
    assert got["answer_rank1"] == pytest.approx(2 / 3)  # episodes 1, 2 of 1, 2, 3
    assert got["fact_rank1"] == pytest.approx(2 / 4)    # episodes 1, 4 of 1-4
    assert got["bias"] == pytest.approx(2 / 3 - 1 / 2)
    empty = position_bias([])
    assert empty["bias"] is None and empty["answer_rank1"] is None


def test_cite_served_cites_documents_stating_the_answer_or_named_by_the_question():
    served = [Document("a", "Velmora Tashkin", "Velmora Tashkin was born in Oberfell."),
              Document("b", "Oberfell", "Oberfell is a city in Carvia."),
              Document("c", "Stevni", "Stevni is a city in Dorla."),
              Document("d", "Tarsk Mills", "Tarsk Mills was founded in 1820.")]
    q = "In which country was Velmora Tashkin born?"
    # b states the answer; a is named by the question (the first hop); c and d neither
    assert cite_served(q, "Carvia", served) == ("a", "b")
    assert cite_served("Who founded the Guild?", "Dorla", served) == ("c",)
    # nothing states it or is named: every served document, which the gate rejects
    assert cite_served("Who founded the Guild?", "Quorth", served) == ("a", "b", "c", "d")
    assert cite_served(q, "Carvia", served, limit=1) == ("a",)
    assert cite_served(q, "Carvia", []) == ()


def test_majority_vote_keeps_only_a_strict_majority_of_at_least_two():
    assert majority_vote(["Lomquoul", "lomquoul.", "Stevni", None]) == ("Lomquoul", 2, False)  # 2/4 is not > 1/2
    assert majority_vote(["Lomquoul", "the Lomquoul", "Stevni"]) == ("Lomquoul", 2, True)   # 2/3 > 1/2
    assert majority_vote(["Stevni", "Lomquoul"]) == ("Stevni", 1, False)                    # a tie of ones: first seen
    assert majority_vote(["X", "X", "X", "Y"], min_share=0.75) == ("X", 3, False)           # 3/4 is not > 3/4
    assert majority_vote([None, "", "  "]) == (None, 0, False)
    assert majority_vote(["x"]) == ("x", 1, False)                                          # one vote is not several
    with pytest.raises(ValueError):
        majority_vote(["a"], min_share=1.0)


def test_judge_pollution_counts_false_documents_against_gold():
    items = [("Lomquoul", ["Lomquoul"]), ("Stevni", ["Lomquoul"]), ("the lomquoul", ["Lomquoul", "L."]),
             ("1843", ["1843"])]
    assert judge_pollution(items) == {"accepted": 4, "false": 1, "true": 3, "pollution": 0.25}
    assert judge_pollution([]) == {"accepted": 0, "false": 0, "true": 0, "pollution": None}


def test_serving_search_shuffles_reproducibly_and_reports_served_order():
    docs = [Document(f"d{i}", f"T{i}", f"alpha beta {'gamma ' * i}") for i in range(6)]
    base = WriteBackCorpus(docs)
    req = SearchRequest("alpha gamma", top_k=5, episode_id="e1", search_index=0)
    plain_docs, plain_info = ServingSearch(base).search_with_info([req])
    assert plain_info[0]["base_ranks"] == [1, 2, 3, 4, 5]
    assert plain_info[0]["served_ids"] == [d.id for d in plain_docs[0]]
    a_docs, a_info = ServingSearch(base, shuffle_seed=3).search_with_info([req])
    b_docs, _ = ServingSearch(base, shuffle_seed=3).search_with_info([req])
    assert [d.id for d in a_docs[0]] == [d.id for d in b_docs[0]]          # same seed, same order
    assert sorted(d.id for d in a_docs[0]) == sorted(d.id for d in plain_docs[0])
    # base_ranks says where each served document stood before the shuffle
    assert [plain_docs[0][r - 1].id for r in a_info[0]["base_ranks"]] == a_info[0]["served_ids"]
    orders = {tuple(d.id for d in ServingSearch(base, shuffle_seed=s).search([req])[0]) for s in range(8)}
    assert len(orders) > 1


def test_serving_search_puts_trusted_write_backs_back_past_the_defences():
    from zerosearch_env.search.defences import DefendedSearch, craft_attack
    from zerosearch_env.search.writeback import Provenance, WriteBackCandidate

    corpus = WriteBackCorpus(WORLD.documents)
    titles = {d.title: d.id for d in WORLD.documents}
    task = Q_CITY
    cand = WriteBackCandidate(task.question, task.answers[0], tuple(titles[t] for t in task.supporting_titles),
                              f"{task.question} {task.answers[0]}.")
    ours = corpus.add(cand, Provenance("e1", "m", 0)).doc_id
    attack = craft_attack(task, WORLD, n_docs=1, seed=0)
    planted = corpus.add(WriteBackCandidate(task.question, attack.false_answer, (), attack.documents[0].text,
                                            title=attack.documents[0].title),
                         Provenance("adv", "adversary", 0), force=True).doc_id
    req = SearchRequest(task.question, top_k=3, episode_id="e", search_index=0)
    raw_ids = [d.id for d in corpus.search([req])[0]]
    assert ours in raw_ids and planted in raw_ids  # both rank in the undefended top 3
    defended = DefendedSearch(corpus)
    plain_ids = ServingSearch(defended).search_with_info([req])[1][0]["served_ids"]
    assert ours not in plain_ids and planted not in plain_ids  # the write-back looks like an attack to the defences
    docs, info = ServingSearch(defended, raw=corpus, trusted={ours}).search_with_info([req])
    ids = [d.id for d in docs[0]]
    assert ids[raw_ids.index(ours)] == ours and planted not in ids and len(ids) == 3
    assert info[0]["trusted_inserted"] == 1 and info[0]["served_ids"] == ids
    with pytest.raises(ValueError, match="raw"):
        ServingSearch(defended, trusted={ours})


def test_config_checks_and_ablations():
    cfg = FlywheelConfig()
    assert set(ABLATIONS) == {"gate", "defences", "frontier", "shuffle"}
    assert cfg.ablated("gate").gate is False and cfg.ablated("frontier").frontier_filter is False
    assert cfg.ablated("shuffle").shuffle_documents is False and cfg.ablated("defences").defences is False
    with pytest.raises(ValueError, match="unknown ablation"):
        cfg.ablated("everything")
    with pytest.raises(ValueError, match="calibration"):
        FlywheelConfig(signals={"brier": True, "confidence_max_tokens": 16})
    with pytest.raises(ValueError):
        FlywheelConfig(rounds=0)
    with pytest.raises(ValueError):
        FlywheelConfig(no_such_knob=1)


# --------------------------------------------------------------------------- the loop, end to end

WORLD = generate_world(0)
_SINGLE = [t for t in WORLD.split("train") if t.kind == "single"]
Q_CITY, Q_YEAR = _SINGLE[0], _SINGLE[1]  # the same person's birthplace and birth year
SUBJECT = WORLD.entity(Q_CITY.meta["subjects"][0]).name
WRONG_CITY = next(e.name for e in WORLD.entities if e.type == "city" and e.name not in Q_CITY.answers)


def small_config(**kw) -> FlywheelConfig:
    base = dict(rounds=2, questions_per_round=2, group_size=4, serve_batch_questions=2, max_new_tokens=24,
                max_turns=2, top_k=2, max_doc_chars=120, eval_questions=2, train_steps_per_round=1,
                prompts_per_step=2, precision="fp32", trainable_layers=None, threads=1, attacks_per_round=1,
                attack_docs=2, save_corpus=False, temperature=0.7, learning_rate=1e-4)
    return FlywheelConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def taught():
    """The tiny random Llama after 30 supervised steps on six trajectories: search the subject's name,
    then answer, then (in calibration mode) state a confidence of 0.8; the birthplace question half with
    the right city and half with a wrong one (in no served document), the birth-year question with the
    right year; each with and without the calibration prompt. (model state, tokenizer)"""
    from agents.policy import Policy
    from zerosearch_env import EnvConfig
    from zerosearch_env.env import SearchEnv

    tok = tiny_tokenizer()
    model = tiny_model(seed=1)
    policy = Policy(model, tok, max_new_tokens=24)
    seqs = []
    for calibration in (False, True):
        env = SearchEnv(EnvConfig(backend="bm25", top_k=2, max_doc_chars=120, max_turns=2, calibration=calibration),
                        tasks=[Q_CITY, Q_YEAR])
        for task, answers in ((Q_CITY, [Q_CITY.answers[0], WRONG_CITY]), (Q_YEAR, [Q_YEAR.answers[0]])):
            prompt, _ = env.reset(options={"task_id": task.id})
            search = f"<search>{SUBJECT}</search>"
            info, *_ = env.step(search)
            for answer in answers:
                parts = [(policy.prompt_ids(prompt), 0), (policy.encode(search), 1), (policy.encode(info), 0),
                         (policy.encode(f"<answer>{answer}</answer>"), 1)]
                if calibration:
                    parts += [(policy.encode("<confidence>"), 0), (policy.encode("0.8</confidence>"), 1)]
                seqs.append(([i for p, _ in parts for i in p], [m for p, m in parts for _ in p]))
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        for ids, mask in seqs:
            x = torch.tensor([ids])
            m = torch.tensor(mask[1:], dtype=torch.float)
            logits = model(x).logits[0, :-1]
            loss = (torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none") * m).sum() / m.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, tok


def fresh_model(taught):
    state, tok = taught
    model = tiny_model(seed=1)
    model.load_state_dict(state)
    return model, tok


ROW_KEYS = ("eval_em", "eval_f1", "accepted", "true_facts_added", "pollution", "pollution_round", "attack_success",
            "attack_success_undefended", "attack_success_defended", "position_bias", "position_answer_rank1",
            "position_fact_rank1", "eval_ece", "entropy_mean", "unique_answers", "frontier_kept", "groups",
            "train_steps", "train_minutes", "planted", "false_flag_rate", "proposed", "proposed_kept", "hijacked_answers",
            "em_gain_per_train_minute", "writebacks_served", "trusted_inserted", "quarantined_writebacks")


def _fraction_or_none(v):
    return v is None or (isinstance(v, float) and 0.0 <= v <= 1.0)


def test_flywheel_end_to_end_with_the_gate(taught, tmp_path):
    model, tok = fresh_model(taught)
    stream = [Q_CITY, Q_YEAR, Q_CITY, Q_YEAR]
    cfg = small_config(propose_questions=1, calibration=True, signals={"brier": True, "confidence_max_tokens": 16})
    run = run_flywheel(cfg, tmp_path, model, tok, progress=False, serve_tasks=stream, eval_tasks=[Q_CITY, Q_YEAR])
    assert run.initial is not None and _fraction_or_none(run.initial["eval_em"])
    assert [r["round"] for r in run.rounds] == [1, 2]
    for row in run.rounds:
        for key in ROW_KEYS:
            assert key in row, key
        for key in ("eval_em", "eval_f1", "pollution", "attack_success", "attack_success_undefended",
                    "position_answer_rank1", "position_fact_rank1", "entropy_mean", "false_flag_rate"):
            assert _fraction_or_none(row[key]), (key, row[key])
        assert _fraction_or_none(row["hijacked_answers"]) and isinstance(row["em_gain_per_train_minute"], float)
        assert row["position_bias"] is None or -1.0 <= row["position_bias"] <= 1.0
        assert 0 <= row["frontier_kept"] <= row["groups"]
        assert row["train_minutes"] >= 0 and row["planted"] == 2
    # the taught policy searches, then answers (in round 2 the trusted write-back of round 1 is served too,
    # a context it was never taught, so only round 1 is checked)
    assert run.rounds[0]["serve_answer_rate"] > 0.5
    for row in [run.initial, *run.rounds]:  # calibration: the stated confidences give an ECE
        assert isinstance(row["eval_ece"], float) and 0.0 <= row["eval_ece"] <= 1.0
    # serving: a confidence segment after every answer (the Brier term's input; the tiny model's are unparseable
    # after the planted documents change its context, so the serving ECE may be undefined)
    assert run.rounds[0]["confidence_segments"] > 0 and _fraction_or_none(run.rounds[0]["calib_ece"])
    for row in run.rounds:  # every group is on the frontier, all right or all wrong
        assert row["frontier_kept"] + row["frontier_all_right"] + row["frontier_all_wrong"] == row["groups"]
    # one question proposed per round about the served person (a train question not in the stream)
    assert all(row["proposed"] == 1 and row["proposed_kept"] in (0, 1) for row in run.rounds)
    assert all(row["proposed_kept_right"] is None or row["proposed_kept_right"] <= row["proposed_kept"]
               for row in run.rounds)
    # the gate let in the right answers only (a wrong city is in no served document)
    assert run.rounds[0]["accepted"] >= 1
    # round 1's accepted write-back is served in round 2 although the defences would hide it (trusted)
    assert run.rounds[0]["writebacks_served"] == 0.0 and run.rounds[1]["writebacks_served"] > 0.0
    assert run.rounds[1]["trusted_inserted"] > 0
    assert run.rounds[-1]["pollution"] == 0.0
    assert all(w["true"] and not w["forced"] for w in run.writebacks)
    # defences: the planted documents for this round's question are quarantined when served or asked
    assert run.rounds[0]["attack_success_defended"] <= run.rounds[0]["attack_success_undefended"]
    rounds_json = (tmp_path / "full" / "rounds.jsonl").read_text().splitlines()
    assert len(rounds_json) == 2 and json.loads(rounds_json[0])["round"] == 1
    # rollback of the last round (its planted and written documents) restored the index bytes
    assert run.rollback_check["restores_bytes"] is True and run.rollback_check["removed"] >= 2


def test_flywheel_without_the_gate_measures_pollution_and_keeps_provenance(taught, tmp_path):
    model, tok = fresh_model(taught)
    stream = [Q_CITY, Q_YEAR, Q_CITY, Q_YEAR]
    # trust_writebacks off: the write-backs stay out of the defended results, so the tiny model sees the
    # contexts it was taught in both rounds and answers every question
    cfg = small_config(gate=False, save_corpus=True, train_steps_per_round=0, eval_before=False,
                       trust_writebacks=False)
    run = run_flywheel(cfg, tmp_path, model, tok, progress=False, serve_tasks=stream, eval_tasks=[Q_YEAR])
    assert run.initial is None
    last = run.rounds[-1]
    assert last["trusted_inserted"] == 0 and last["writebacks_served"] == 0.0
    # every answered question is forced in: both questions of both rounds
    assert last["accepted_total"] == 4 and len(run.writebacks) == 4
    assert isinstance(last["pollution"], float) and last["pollution"] == judge_pollution(
        [(w["answer"], w["gold"]) for w in run.writebacks])["pollution"]
    assert any(w["forced"] for w in run.writebacks) or last["pollution"] == 0.0
    # the saved corpus has provenance on every added document
    from zerosearch_env.search.writeback import WriteBackCorpus

    saved = WriteBackCorpus.load(tmp_path / "full" / "corpus")
    assert saved.state_bytes() == run.corpus.state_bytes()  # the returned corpus is the final one
    records = saved.records
    assert len(records) == 4 + 2 * 2  # 4 write-backs, 2 planted documents per round
    adversarial = [r for r in records if r.provenance.model_version == "adversary"]
    assert len(adversarial) == 4 and all(r.forced for r in adversarial)
    ours = [r for r in records if r.provenance.model_version != "adversary"]
    assert {r.provenance.model_version for r in ours} == {"full:round0", "full:round1"}
    assert all(r.provenance.episode_id and math.isfinite(r.time) and r.gate["scores"] for r in records)
    # rollback of round 2 restores the bytes the corpus had before it; of everything, the base corpus
    before = saved.state_bytes()
    saved.rollback(round=1)
    assert saved.state_bytes() != before
    saved.rollback(round=0)
    assert saved.state_bytes() == WriteBackCorpus(WORLD.documents).state_bytes()


def test_repeated_questions_come_from_earlier_rounds(taught, tmp_path):
    model, tok = fresh_model(taught)
    third = _SINGLE[2]
    cfg = small_config(repeat_share=0.5, train_steps_per_round=0, eval_before=False, attacks_per_round=0)
    run = run_flywheel(cfg, tmp_path, model, tok, progress=False, serve_tasks=[Q_CITY, Q_YEAR, third],
                       eval_tasks=[Q_YEAR])
    first, second = run.rounds
    assert first["repeated"] == 0 and first["repeat_em"] is None
    assert second["repeated"] == 1 and second["questions"] == 2 and _fraction_or_none(second["repeat_em"])
    # round 2 asked the one fresh question left and one of round 1's again
    asked = [w["question"] for w in run.writebacks if w["round"] == 2]
    assert set(asked) <= {third.question, Q_CITY.question, Q_YEAR.question}
    with pytest.raises(ValueError, match="2 serving questions for 2 rounds x 2 \\(1 repeated a round\\)"):
        run_flywheel(cfg, tmp_path, model, tok, progress=False, serve_tasks=[Q_CITY, Q_YEAR], eval_tasks=[Q_YEAR])


def test_serving_questions_must_be_train_questions_and_enough(taught, tmp_path):
    model, tok = fresh_model(taught)
    test_q = WORLD.split("test")[0]
    with pytest.raises(ValueError, match="train split"):
        run_flywheel(small_config(), tmp_path, model, tok, progress=False, serve_tasks=[Q_CITY, test_q, Q_YEAR, Q_CITY])
    with pytest.raises(ValueError, match="3 serving questions for 2 rounds x 2"):
        run_flywheel(small_config(), tmp_path, model, tok, progress=False, serve_tasks=[Q_CITY, Q_YEAR, Q_CITY])


def test_ablations_start_from_the_same_model(taught, tmp_path):
    model, tok = fresh_model(taught)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    runs = run_ablations(small_config(rounds=1, eval_before=False, frontier_filter=True), tmp_path, ["frontier"],
                         model, tok, progress=False, serve_tasks=[Q_CITY, Q_YEAR], eval_tasks=[Q_YEAR])
    assert [r.label for r in runs] == ["full", "no-frontier"]
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())  # the caller's model untouched
    full, nof = runs[0].rounds[0], runs[1].rounds[0]
    assert nof["frontier_kept"] == nof["groups"] == 2
    assert full["frontier_kept"] == full["groups"] - full["frontier_all_right"] - full["frontier_all_wrong"]
    # same seed, same starting model: the same serving before training
    assert full["serve_em"] == nof["serve_em"] and full["accepted"] == nof["accepted"]
    report = json.loads((tmp_path / "flywheel.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["full", "no-frontier"]


def test_cli_writes_table_json_and_png(taught, tmp_path, capsys):
    from agents.cli import main

    model, tok = fresh_model(taught)
    model_dir = tmp_path / "taught"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    cfg = small_config(rounds=1, questions_per_round=2, eval_before=False).model_dump()
    cfg.pop("rounds")
    (tmp_path / "fw.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    rc = main(["flywheel", "--rounds", "2", "--config", str(tmp_path / "fw.json"), "--model", str(model_dir),
               "--output", str(out), "--ablations", "gate", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "no-gate" in printed and "pollut" in printed and "index bytes restored: True" in printed
    report = json.loads((out / "flywheel.json").read_text())
    assert [r["label"] for r in report["runs"]] == ["full", "no-gate"]
    assert all(len(r["rounds"]) == 2 for r in report["runs"])
    assert report["runs"][1]["config"]["gate"] is False
    assert (out / "flywheel_table.txt").read_text().count("no-gate") == 2
    png = (out / "flywheel.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    from agents.cli import main

    assert main(["flywheel", "--ablations", "gate,everything"]) == 2
    assert "unknown everything" in capsys.readouterr().err
    assert main(["flywheel", "--rounds", "0"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"no_such_knob": 1}))
    assert main(["flywheel", "--config", str(bad)]) == 2
    assert "no_such_knob" in capsys.readouterr().err
    assert main(["flywheel", "--checkpoint", str(tmp_path)]) == 2
    (tmp_path / "afile").write_text("x")
    assert main(["flywheel", "--output", str(tmp_path / "afile"), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["flywheel", "--rounds", "5", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["rounds"] == 5


def test_cli_help_explains_the_figures(capsys):
    from agents.cli import main

    with pytest.raises(SystemExit):
        main(["flywheel", "--help"])
    text = capsys.readouterr().out.lower()
    for word in ("--rounds", "--ablations", "--checkpoint", "pollut", "posbias", "original", "frontier"):
        assert word in text

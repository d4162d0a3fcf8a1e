"""The serving flywheel (issue 15 items 2, 4, 5): serve, gate, write back, harvest, train, evaluate.

One round of `run_flywheel`, CleanRL-style and linear:

1. **adversary**: `attacks_per_round` of the round's new questions are targeted; `attack_docs`
   documents each (`defences.craft_attack`) are force-added to the growing corpus with provenance
   `model_version="adversary"`;
2. **serve**: the next `questions_per_round` questions of the *train* split (seeded order; the
   test split is kept for evaluation; after round 1, `repeat_share` of them are questions of
   earlier rounds asked again, where write-backs help or mislead) are answered by the current
   policy, `group_size` samples each, searching the growing `WriteBackCorpus` behind
   `DefendedSearch` (rebuilt every round, because its word statistics are read once from the
   corpus at construction), the loop's own write-backs served past the defences
   (`trust_writebacks`, see `ServingSearch`) and, with `shuffle_documents`, each result list
   shuffled by a seeded permutation. Optionally a proposer adds `propose_questions` questions
   (train-split questions of the world about entities whose articles were served), each kept
   only when a strict majority (`proposer_min_share`) of the group's sampled answers agree; the
   majority answer is the pseudo-label it is trained on;
3. **write back**: for each served question, its first answered sample becomes a candidate (the
   question, the answer, citations by `cite_served`, and the text "question answer."); the gate
   (`WriteBackCorpus.propose`) decides, or with the gate ablated every candidate is forced in.
   Each document is judged against the world's gold answers (`judge_pollution`);
4. **harvest**: the serving groups are the GRPO data: with `frontier_filter`, only groups whose
   pass rate (EM) is strictly between 0 and 1 are kept (`frontier_filter`); the Brier term
   (`signals.brier`, with `calibration`) and the collapse monitors (`signals.monitors`) come
   from `agents.signals.SelfSignals`;
5. **train**: up to `train_steps_per_round` steps of `agents.grpo.grpo_update` over disjoint
   batches of `prompts_per_step` kept groups. The trajectories were sampled by the policy as it
   was at the start of the round, and `grpo_update` is on-policy (ratio 1), so step k of a round
   is k - 1 updates stale;
6. **evaluate**: greedy on `eval_questions` test questions with BM25 over the *original* world
   corpus (`agents.evaluate.run_episodes`/`summarize`).

Per round it records pollution (false write-backs accepted / accepted, this round and over the
live corpus), true facts added, held-out EM/F1, attack success (`defences.attack_success` of the
target questions asked as queries, with and without the defences, on the live corpus), the
defences' quarantines of genuine documents, position bias (`position_bias`), ECE, the collapse
monitors' entropies, frontier-kept counts and training minutes. `run_ablations` runs the full
system and each ablation (`ABLATIONS`: gate, defences, frontier, shuffle) from the same starting
model and seed. `zerosearch flywheel` (agents/commands/flywheel.py) is the command.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.signals_config import SignalsConfig
from agents.train_config import GRPOLossConfig
from zerosearch_env.rewards import exact_match, f1_score, normalize_answer
from zerosearch_env.search.base import Document, SearchBackend, SearchRequest

#: ablation name -> the config flag it switches off
ABLATIONS: dict[str, str] = {"gate": "gate", "defences": "defences", "frontier": "frontier_filter",
                             "shuffle": "shuffle_documents"}
RESULT_FILE = "flywheel.json"
PLOT_FILE = "flywheel.png"
TABLE_FILE = "flywheel_table.txt"


class FlywheelConfig(GRPOLossConfig):
    """Every hyperparameter of the flywheel (`zerosearch flywheel --config FILE` reads this model)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, description="seeds the question order, attacks, shuffles, sampling and torch")
    world_seed: int = Field(0, description="the built-in world the questions and corpus come from")
    model: str | None = Field(None, description="policy folder (a checkpoint or base model); None: the default small model")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: one per idle core)")
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    trainable_layers: int | None = Field(6, ge=1, description="train the top N blocks only; None: everything")
    rounds: int = Field(3, ge=1)
    repeat_share: float = Field(0.25, ge=0.0, lt=1.0, description=(
        "share of each round's questions (after the first) asked again from earlier rounds: where write-backs "
        "help or (polluted) mislead serving; repeat_em is their serving EM"))

    # serving
    questions_per_round: int = Field(32, ge=1, description="user questions (train split) served per round")
    group_size: int = Field(4, ge=2, description="samples per served question (the GRPO group)")
    serve_batch_questions: int = Field(8, ge=1, description="questions served side by side (vector env of this x group_size)")
    temperature: float = Field(0.7, gt=0)
    max_new_tokens: int = Field(40, ge=4, description="tokens per agent turn")
    max_completion_tokens: int = Field(1024, ge=16)
    max_turns: int = Field(4, ge=1)
    top_k: int = Field(3, ge=1)
    max_doc_chars: int = Field(200, ge=16)
    reward: Literal["f1", "em"] = "f1"
    calibration: bool = Field(False, description="ask for <confidence> after the answer (ECE; Brier with signals.brier)")

    # self-proposed questions
    propose_questions: int = Field(0, ge=0, description="questions proposed per round about entities of served documents (0: off)")
    proposer_min_share: float = Field(0.5, ge=0.0, lt=1.0, description=(
        "a proposed question is kept when more than this share of its samples (and at least 2) give one answer"))

    # adversary and defences
    attacks_per_round: int = Field(2, ge=0, description="served questions attacked per round")
    attack_docs: int = Field(2, ge=1, description="documents planted per attacked question")
    attack_style: Literal["query_prefix", "query_named", "stuffed", "article"] = "query_prefix"
    defences: bool = Field(True, description="serve through DefendedSearch (ablation: off)")
    partition: bool = True
    mask: bool = True
    pool_size: int = Field(20, ge=1, description="candidates DefendedSearch asks the corpus for")
    trust_writebacks: bool = Field(True, description=(
        "serve the loop's own write-backs at their undefended rank past the defences (they look like query-copy "
        "attacks to them; see ServingSearch); planted documents are never trusted"))

    # write-back and harvest
    gate: bool = Field(True, description="write back only what the gate accepts (ablation: force every answered episode)")
    frontier_filter: bool = Field(True, description="train only on groups whose pass rate is strictly in (0, 1)")
    shuffle_documents: bool = Field(True, description="shuffle each served result list with a seeded permutation")

    # training (agents/grpo.py)
    train_steps_per_round: int = Field(2, ge=0)
    prompts_per_step: int = Field(4, ge=1, description="kept groups per GRPO step")
    learning_rate: float = Field(5e-5, gt=0)
    signals: SignalsConfig = Field(default_factory=SignalsConfig, description=(
        "collapse monitors (on), Brier term (needs calibration), SPRM/PCL as in zerosearch train"))

    # evaluation
    eval_questions: int = Field(64, ge=1, description="test questions, greedy, BM25 over the original corpus")
    eval_before: bool = Field(True, description="also evaluate the starting policy (round 0 of the curves)")
    save_corpus: bool = Field(True, description="write each run's final corpus (documents, provenance) to <output>/<run>/corpus")

    @model_validator(mode="after")
    def _check(self) -> "FlywheelConfig":
        if self.signals.brier and not self.calibration:
            raise ValueError("signals.brier needs calibration: true (the prompt must ask for <confidence>)")
        return self

    @classmethod
    def load(cls, path: str | Path) -> "FlywheelConfig":
        from zerosearch_env.config import read_mapping

        return cls.model_validate(read_mapping(path))

    def ablated(self, name: str) -> "FlywheelConfig":
        """This config with one part switched off (`ABLATIONS`)."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
        return self.model_copy(update={ABLATIONS[name]: False})


# --------------------------------------------------------------------------- pure measures

def pass_rate(passes: Sequence[float]) -> float:
    if not passes:
        raise ValueError("a group needs at least one sample")
    return sum(1.0 for p in passes if p >= 1.0) / len(passes)


def frontier_filter(groups: Sequence[Sequence[float]], enabled: bool = True) -> list[int]:
    """Indices of the groups to train on: with `enabled`, those whose pass rate (share of samples
    with EM 1) is strictly between 0 and 1 (the others give GRPO no signal under group scaling and
    lie beyond or behind the learning frontier); without, all of them."""
    if not enabled:
        return list(range(len(groups)))
    return [i for i, g in enumerate(groups) if 0.0 < pass_rate(g) < 1.0]


def _rank_holding(texts: Sequence[str], answers: Sequence[str]) -> int | None:
    """1-based rank of the first text stating one of `answers` (whole words, normalised)."""
    from zerosearch_env.search.knowledge import mentions

    answers = [a for a in answers if a and normalize_answer(a)]
    if not answers:
        return None
    for rank, text in enumerate(texts, 1):
        if mentions(text, answers):
            return rank
    return None


@dataclass(frozen=True)
class RankedEpisode:
    """What the position-bias measure needs of one answered episode: the texts of the last result
    list it was served (in served order), its answer and the gold answers."""

    served: tuple[str, ...]
    answer: str | None
    answers: tuple[str, ...]


def position_bias(episodes: Sequence[RankedEpisode]) -> dict:
    """Where answers are taken from against where the needed fact sat, over answered episodes.

    `answer_rank1` is the share of episodes whose answer is stated in the served list at rank 1
    (the first document stating it), among episodes whose answer is stated somewhere in it;
    `fact_rank1` the share of episodes whose first document stating a gold answer is at rank 1,
    among episodes where one was served. `bias = answer_rank1 - fact_rank1`: 0 for a reader that
    takes its answer where the fact is, positive for one drawn to the top. None where undefined.
    """
    a_ranks = [r for e in episodes if e.answer for r in [_rank_holding(e.served, [e.answer])] if r is not None]
    f_ranks = [r for e in episodes if e.answer for r in [_rank_holding(e.served, e.answers)] if r is not None]
    a1 = sum(r == 1 for r in a_ranks) / len(a_ranks) if a_ranks else None
    f1 = sum(r == 1 for r in f_ranks) / len(f_ranks) if f_ranks else None
    return {"answer_from_served": len(a_ranks), "fact_served": len(f_ranks), "answer_rank1": a1, "fact_rank1": f1,
            "bias": (a1 - f1) if a1 is not None and f1 is not None else None}


def cite_served(question: str, answer: str, served: Sequence[Document], limit: int = 32) -> tuple[str, ...]:
    """The citations of a write-back: the served documents that state `answer`, plus those whose
    title the question names (a bridge question's first hop, a comparison's two subjects: the gate
    needs the path from the question to the answer). When neither exists, every served document
    (the gate then rejects the candidate as unsupported). In served order, at most `limit`.
    benchmarks/writeback_gate.py measured this rule on 2,471 test questions: gold answers accepted
    100% (citing the stating documents only: 69%, bridge 36%, comparison 0%), wrong answers drawn
    from the served documents 0%."""
    q = f" {normalize_answer(question)} "
    cited = [d.id for d in served if _rank_holding([d.text], [answer]) is not None
             or (normalize_answer(d.title) and f" {normalize_answer(d.title)} " in q)]
    return tuple(dict.fromkeys(cited or [d.id for d in served]))[:limit]


def majority_vote(answers: Sequence[str | None], min_share: float = 0.5) -> tuple[str | None, int, bool]:
    """(majority answer, its votes, kept) over sampled answers compared after SQuAD normalisation;
    missing and empty answers vote for nothing but count in the total. Kept when the top answer
    has at least 2 votes and more than `min_share` of all samples. Ties go to the answer seen first."""
    if not 0.0 <= min_share < 1.0:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    norm = [normalize_answer(a) if isinstance(a, str) else "" for a in answers]
    counts = Counter(n for n in norm if n)
    if not counts:
        return None, 0, False
    best_n, votes = max(counts.items(), key=lambda kv: (kv[1], -norm.index(kv[0])))
    first = next(a for a, n in zip(answers, norm) if n == best_n)
    return first, votes, votes >= 2 and votes / len(answers) > min_share


def judge_pollution(items: Sequence[tuple[str, Sequence[str]]]) -> dict:
    """Accepted write-backs judged against the world: `items` are (written answer, gold answers);
    false = not an exact match of any gold alias. pollution = false / accepted (None when empty)."""
    false = sum(1 for answer, golds in items if exact_match(answer, list(golds)) < 1.0)
    n = len(items)
    return {"accepted": n, "false": false, "true": n - false, "pollution": false / n if n else None}


# --------------------------------------------------------------------------- the serving backend

class ServingSearch(SearchBackend):
    """The agent's search during serving: `base` (the defended corpus), then two optional steps.

    *Trusted write-backs*: documents whose ids are in `trusted` (the loop's own write-backs, known
    by their provenance) that `raw` (the undefended corpus) ranks in its top k are served at that
    rank even when the defences quarantined or demoted them: a "question answer." write-back has
    the shape of a query-copy attack (`benchmarks/flywheel_writeback_visibility.py`: of 1,000 gold
    write-backs of world-0 train questions, 7.2% reached the defended top 3 for their own question
    (single and bridge 0%, comparison 100%), against 100% undefended and with this trust), so
    without it the defences would hide almost everything the loop writes. Planted documents are
    never trusted.
    *Shuffle*: each result list is permuted with a permutation drawn from (`shuffle_seed`,
    episode, search index, query) when `shuffle_seed` is not None.
    Each request's info gets `served_ids` (in served order), `base_ranks` (the 1-based rank each
    had before the shuffle) and `trusted_inserted` (how many trusted documents were put back)."""

    name = "serving"

    def __init__(self, base: SearchBackend, shuffle_seed: int | None = None, raw: SearchBackend | None = None,
                 trusted: set[str] | frozenset[str] = frozenset()):
        if trusted and raw is None:
            raise ValueError("trusted write-backs need the undefended corpus (raw) to find their rank")
        self.base = base
        self.shuffle_seed = shuffle_seed
        self.raw = raw
        self.trusted = frozenset(trusted)

    def _with_trusted(self, request: SearchRequest, docs: list[Document], raw: list[Document]) -> tuple[list, int]:
        top_k = max(1, int(request.top_k))
        hits = [(rank, d) for rank, d in enumerate(raw[:top_k]) if d.id in self.trusted]
        if not hits:
            return docs, 0
        hit_ids = {d.id for _, d in hits}
        already = {d.id for d in docs}
        merged = [d for d in docs if d.id not in hit_ids]
        for rank, d in hits:
            merged.insert(min(rank, len(merged)), d)
        return merged[:top_k], sum(1 for _, d in hits if d.id not in already)

    def search_with_info(self, requests: Sequence[SearchRequest]) -> tuple[list[list[Document]], list[dict]]:
        requests = list(requests)
        results, infos = self.base.search_with_info(requests)
        raws = self.raw.search(requests) if self.trusted else [[] for _ in requests]
        out, out_infos = [], []
        for r, docs, info, raw in zip(requests, results, infos, raws):
            docs, inserted = self._with_trusted(r, list(docs), list(raw))
            order = list(range(len(docs)))
            if self.shuffle_seed is not None:
                random.Random(f"{self.shuffle_seed}|{r.episode_id}|{r.search_index}|{r.query}").shuffle(order)
            out.append([docs[i] for i in order])
            out_infos.append({**(info or {}), "served_ids": [docs[i].id for i in order],
                              "base_ranks": [i + 1 for i in order], "trusted_inserted": inserted})
        return out, out_infos

    def search(self, requests: Sequence[SearchRequest]) -> list[list[Document]]:
        return self.search_with_info(requests)[0]

    def identity(self) -> str:
        return f"serving:shuffle{self.shuffle_seed}:{self.base.identity()}"

    def cache_key_fields(self, request: SearchRequest) -> tuple:
        return (request.query, request.top_k, request.episode_id, request.search_index)

    def stats(self) -> dict:
        return self.base.stats()


# --------------------------------------------------------------------------- one run

@dataclass
class FlywheelRun:
    """One run of the loop: `initial` (the starting policy's evaluation), one row per round,
    the write-back log, the corpus as the last round left it, and the rollback check (done on a
    copy of it)."""

    label: str
    config: FlywheelConfig
    initial: dict | None
    rounds: list[dict]
    writebacks: list[dict]
    corpus: Any
    rollback_check: dict | None = None
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"label": self.label, "config": json.loads(self.config.model_dump_json()), "initial": self.initial,
                "rounds": self.rounds, "writebacks": self.writebacks, "rollback_check": self.rollback_check,
                "wall_s": round(self.wall_s, 2), **self.extra}


def _served_lists(traj) -> list[list[str]]:
    return [list(s.get("served_ids") or []) for s in (traj.info or {}).get("search_infos", [])]


def _evaluate(policy_model, tokenizer, cfg: FlywheelConfig, env_cfg, backend, tasks, autocast, progress: bool) -> dict:
    from agents.calibration import ConfidenceAgent, calibration_report
    from agents.evaluate import run_episodes, summarize
    from agents.policy import Policy, PolicyAgent
    from zerosearch_env.vector_env import make_vec

    policy_model.eval()
    policy = Policy(policy_model, tokenizer, max_new_tokens=cfg.max_new_tokens, autocast_dtype=autocast)
    agent = PolicyAgent(policy, greedy=True, seed=cfg.seed)  # `evaluate.greedy_agent`, with the training's
    if cfg.calibration:                                       # confidence budget
        agent = ConfidenceAgent(agent, max_new_tokens=cfg.signals.confidence_max_tokens)
    vec = make_vec(min(32, len(tasks)), env_cfg, backend=backend, tasks=tasks)
    try:
        records = run_episodes(agent, vec, tasks, progress=progress,
                               desc="held-out eval (BM25, original corpus)")
    finally:
        vec.close()
    s = summarize(records)
    out = {"eval_em": s["em"], "eval_f1": s["f1"], "eval_format": s["format_compliance"],
           "eval_answered": s["answered"], "eval_searches": s["searches_per_episode"], "eval_n": s["n"], "eval_ece": None}
    if cfg.calibration:
        rep = calibration_report([r.get("confidence") for r in records], [r["em"] for r in records])
        out["eval_ece"] = rep["ece"]
    return out


def run_flywheel(cfg: FlywheelConfig, output: str | Path, model=None, tokenizer=None, label: str = "full",
                 progress: bool = True, serve_tasks: Sequence | None = None,
                 eval_tasks: Sequence | None = None) -> FlywheelRun:
    """Run `cfg.rounds` rounds into `output/<label>` and return the per-round figures.

    `model`/`tokenizer` are trained in place (pass a copy to keep the original); by default they
    are loaded from `cfg.model`. `serve_tasks` (train-split world tasks, in order) and
    `eval_tasks` replace the seeded choices (tests)."""
    import torch
    from tqdm.auto import tqdm

    from agents.grpo import GRPOSettings, grpo_update
    from agents.policy import Policy
    from agents.rollout import collect_groups
    from agents.signals import SelfSignals
    from agents.trainer import prepare_policy, seed_everything, set_torch_threads
    from zerosearch_env.config import EnvConfig
    from zerosearch_env.data.world import generate_world
    from zerosearch_env.search import make_backend
    from zerosearch_env.search.defences import DefendedSearch, attack_success, craft_attack
    from zerosearch_env.search.writeback import Provenance, WriteBackCandidate, WriteBackCorpus
    from zerosearch_env.vector_env import make_vec

    t_start = time.perf_counter()
    out = Path(output) / label
    out.mkdir(parents=True, exist_ok=True)
    set_torch_threads(cfg.threads)
    seed_everything(cfg.seed)
    model, tokenizer, trainable, device, autocast, pad_id = prepare_policy(
        model, tokenizer, cfg.model, cfg.trainable_layers, cfg.precision)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)

    # ---- the world, the question streams, the corpora
    world = generate_world(cfg.world_seed)
    train_tasks = world.split("train")
    if serve_tasks is None:
        stream = list(train_tasks)
        random.Random(cfg.seed).shuffle(stream)
    else:
        stream = list(serve_tasks)
        if any(t.split != "train" for t in stream):
            raise ValueError("serve_tasks must come from the train split (the test split is kept for evaluation)")
    n_repeat = round(cfg.repeat_share * cfg.questions_per_round)
    needed = cfg.questions_per_round + (cfg.rounds - 1) * (cfg.questions_per_round - n_repeat)
    if serve_tasks is None:
        stream = stream[:needed]
    if len(stream) < needed:
        raise ValueError(f"{len(stream)} serving questions for {cfg.rounds} rounds x {cfg.questions_per_round} "
                         f"({n_repeat} repeated a round): lower rounds or questions_per_round")
    if eval_tasks is None:
        held_out = list(world.split("test"))
        random.Random(cfg.seed).shuffle(held_out)
        held_out = held_out[: cfg.eval_questions]
    else:
        held_out = list(eval_tasks)
    env_kw = dict(dataset="world", world_seed=cfg.world_seed, max_turns=cfg.max_turns, top_k=cfg.top_k,
                  max_doc_chars=cfg.max_doc_chars, reward=cfg.reward, calibration=cfg.calibration)
    serve_env = EnvConfig(backend="bm25", split="train", **env_kw)
    eval_env = EnvConfig(backend="bm25", split="test", **env_kw)
    original_bm25 = make_backend(eval_env)  # the original corpus: evaluation never sees write-backs
    corpus = WriteBackCorpus(world.documents)
    entity_ids = {e.id for e in world.entities}
    planned = {t.id for t in stream[:needed]}  # the proposer asks none of these

    policy = Policy(model, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                    autocast_dtype=autocast)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    signals = SelfSignals(cfg.signals, model, tokenizer, calibration=cfg.calibration)
    for group in signals.param_groups():
        optimizer.add_param_group(group)
    reward_fns = signals.reward_fns()
    extra_loss_fns = signals.extra_loss_fns()
    sig_kwargs = signals.grpo_kwargs()
    settings = GRPOSettings(group_size=cfg.group_size, temperature=cfg.temperature, loss_type=cfg.loss_type,
                            epsilon_low=cfg.epsilon_low, epsilon_high=cfg.epsilon_high, scale_rewards=cfg.scale_rewards,
                            micro_batch_size=cfg.micro_batch_size, max_grad_norm=cfg.max_grad_norm)

    initial = None
    if cfg.eval_before:
        initial = _evaluate(model, tokenizer, cfg, eval_env, original_bm25, held_out, autocast, progress)
        initial["round"] = 0
    writebacks: list[dict] = []
    attacks: list[tuple[Any, list[str]]] = []  # (PlantedAttack, its live doc ids)
    rows: list[dict] = []
    train_minutes_total = 0.0
    pre_round_hash = None
    next_fresh, asked = 0, []  # position in the stream; questions served so far (for repeats)
    bar = tqdm(total=cfg.rounds, desc=f"flywheel {label}", unit="round", disable=not progress)
    for r in range(cfg.rounds):
        t_round = time.perf_counter()
        pre_round_hash = corpus.state_hash()
        # the round's questions: fresh ones from the stream, and (after round 1) `repeat_share` of
        # them asked again from earlier rounds (users repeat questions: write-backs answer them)
        k = n_repeat if r else 0
        fresh = stream[next_fresh:next_fresh + cfg.questions_per_round - k]
        next_fresh += len(fresh)
        repeated = random.Random(f"{cfg.seed}|repeat|{r}").sample(asked, k) if k else []
        questions = fresh + repeated
        repeated_ids = {t.id for t in repeated}
        asked += [t for t in fresh if t.id not in {a.id for a in asked}]
        row: dict[str, Any] = {"run": label, "round": r + 1, "questions": len(questions), "repeated": k}

        # 1. the adversary plants documents for some of this round's questions
        rng = random.Random(f"{cfg.seed}|adversary|{r}")
        targetable = [t for t in fresh if t.kind in ("single", "bridge") and (t.meta or {}).get("subjects")]
        planted = 0
        false_answers = {}  # task id -> the false answer this round's attack pushes
        for task in rng.sample(targetable, min(cfg.attacks_per_round, len(targetable))):
            attack = craft_attack(task, world, n_docs=cfg.attack_docs, seed=cfg.seed * 1000 + r,
                                  style=cfg.attack_style, id_prefix=f"planted-r{r}")
            ids = []
            for doc in attack.documents:
                cand = WriteBackCandidate(attack.question, attack.false_answer, (), doc.text, title=doc.title)
                rec = corpus.add(cand, Provenance(f"adversary:{doc.id}", "adversary", r), force=True)
                ids.append(rec.doc_id)
                planted += 1
            attacks.append((attack, ids))
            false_answers[task.id] = attack.false_answer
        row["planted"] = planted
        planted_ids = {i for _, ids in attacks for i in ids}

        # 2. serve: the current policy on the growing corpus (defended unless ablated; shuffled)
        retrieval: SearchBackend = corpus
        if cfg.defences:  # rebuilt each round: its word statistics are read from the corpus once
            retrieval = DefendedSearch(corpus, partition=cfg.partition, mask=cfg.mask, pool_size=cfg.pool_size)
        ours = {w["doc_id"] for w in writebacks if w["doc_id"] in corpus}
        serving = ServingSearch(retrieval, shuffle_seed=(cfg.seed * 7919 + r) if cfg.shuffle_documents else None,
                                raw=corpus, trusted=ours if cfg.defences and cfg.trust_writebacks else frozenset())
        n_env = cfg.group_size * min(cfg.serve_batch_questions, len(questions))
        vec = make_vec(n_env, serve_env, backend=serving, tasks=list(questions))
        model.eval()
        trajs = collect_groups(policy, vec, questions, cfg.group_size, step=r, generator=generator,
                               salt=f"{label}-serve-r{r}-", progress=progress, desc=f"round {r + 1}: serving",
                               max_completion_tokens=cfg.max_completion_tokens)
        vec.close()
        groups = [(task, trajs[i * cfg.group_size:(i + 1) * cfg.group_size], tuple(task.answers), "user")
                  for i, task in enumerate(questions)]
        row["serve_em"] = sum(t.info["em"] for t in trajs) / len(trajs)
        again = [t for t in trajs if t.task.id in repeated_ids]
        row["repeat_em"] = sum(t.info["em"] for t in again) / len(again) if again else None
        row["serve_answer_rate"] = sum(bool(t.info["answered"]) for t in trajs) / len(trajs)
        attacked = [t for t in trajs if t.task.id in false_answers]
        row["hijacked_answers"] = (sum(exact_match(t.info.get("answer"), [false_answers[t.task.id]]) for t in attacked)
                                   / len(attacked)) if attacked else None  # samples giving the planted answer
        searches = [s for t in trajs for s in t.info.get("search_infos", [])]
        row["writebacks_served"] = (sum(any(i in ours for i in s.get("served_ids") or []) for s in searches)
                                    / len(searches)) if searches else None  # searches serving one of ours
        row["trusted_inserted"] = sum(int(s.get("trusted_inserted") or 0) for s in searches)
        if cfg.defences:
            st = retrieval.stats()
            genuine = [q for q in retrieval.quarantine if q.doc_id not in planted_ids]
            row["quarantined_planted"] = sum(q.doc_id in planted_ids for q in retrieval.quarantine)
            row["quarantined_genuine"] = len(genuine)
            row["quarantined_writebacks"] = sum(q.doc_id in ours for q in genuine)
            row["false_flag_rate"] = len(genuine) / st["defended_checked"] if st["defended_checked"] else None
        else:
            row.update(quarantined_planted=None, quarantined_genuine=None, quarantined_writebacks=None,
                       false_flag_rate=None)

        # 2b. self-proposed questions about entities of the served documents, kept by majority vote
        row.update(proposed=0, proposed_kept=0, proposed_kept_right=None)
        if cfg.propose_questions > 0:
            found = {i for t in trajs for lst in _served_lists(t) for i in lst if i in entity_ids}
            pool = [t for t in train_tasks if t.id not in planned and set((t.meta or {}).get("subjects") or []) & found]
            proposals = random.Random(f"{cfg.seed}|propose|{r}").sample(pool, min(cfg.propose_questions, len(pool)))
            planned.update(t.id for t in proposals)
            if proposals:
                pvec = make_vec(cfg.group_size * min(cfg.serve_batch_questions, len(proposals)), serve_env,
                                backend=serving, tasks=proposals)
                ptrajs = collect_groups(policy, pvec, proposals, cfg.group_size, step=r, generator=generator,
                                        salt=f"{label}-propose-r{r}-", progress=progress,
                                        desc=f"round {r + 1}: proposed questions",
                                        max_completion_tokens=cfg.max_completion_tokens)
                pvec.close()
                right = 0
                for i, task in enumerate(proposals):
                    group = ptrajs[i * cfg.group_size:(i + 1) * cfg.group_size]
                    answer, _, kept = majority_vote([t.info.get("answer") for t in group], cfg.proposer_min_share)
                    if not kept:
                        continue
                    right += exact_match(answer, list(task.answers)) >= 1.0
                    pseudo = replace(task, id=f"proposed-r{r}-{task.id}", answers=(answer,), data_source="self-proposed")
                    for t in group:  # the pseudo-label replaces the world's gold in training
                        em = exact_match(t.info.get("answer"), [answer]) if t.info.get("answered") else 0.0
                        f1 = f1_score(t.info.get("answer"), [answer]) if t.info.get("answered") else 0.0
                        t.reward = em if cfg.reward == "em" else f1
                        t.info.update(em=em, f1=f1, world_answers=list(task.answers))
                    groups.append((pseudo, group, tuple(task.answers), "proposed"))
                    row["proposed_kept"] += 1
                row["proposed"] = len(proposals)
                row["proposed_kept_right"] = right if row["proposed_kept"] else None

        # 3. write back each question's first answered sample (gated, or forced without the gate)
        accepted_now, rejected = [], Counter()
        for task, group, golds, source in groups:
            first = next((t for t in group if t.info.get("answered") and t.info.get("answer")), None)
            if first is None:
                continue
            answer = str(first.info["answer"])
            served = [d for i in dict.fromkeys(i for lst in _served_lists(first) for i in lst)
                      for d in [corpus.get(i)] if d is not None]
            try:
                cand = WriteBackCandidate(task.question, answer, cite_served(task.question, answer, served),
                                          f"{task.question} {answer}.")
            except (TypeError, ValueError) as e:  # an over-long or malformed answer is not written
                rejected[f"invalid:{type(e).__name__}"] += 1
                continue
            prov = Provenance(f"{first.info['episode_id']}:{task.id}", f"{label}:round{r}", r)
            decision = corpus.propose(cand)
            if not decision.accepted and cfg.gate:
                rejected[decision.reason] += 1
                continue
            try:
                rec = corpus.add(cand, prov, force=not cfg.gate)
            except ValueError as e:
                rejected[f"add_failed:{e}"[:80]] += 1
                continue
            true = exact_match(answer, list(golds)) >= 1.0
            entry = {"doc_id": rec.doc_id, "round": r + 1, "source": source, "question": task.question,
                     "answer": answer, "gold": list(golds), "true": true, "forced": rec.forced,
                     "gate_reason": decision.reason, "episode_id": prov.episode_id,
                     "model_version": prov.model_version}
            writebacks.append(entry)
            accepted_now.append((answer, golds))
        now = judge_pollution(accepted_now)
        live = judge_pollution([(w["answer"], w["gold"]) for w in writebacks if w["doc_id"] in corpus])
        row.update(accepted=now["accepted"], false_accepted=now["false"], true_facts_added=now["true"],
                   pollution_round=now["pollution"], accepted_total=live["accepted"], true_facts_total=live["true"],
                   pollution=live["pollution"], rejected=dict(rejected), corpus_docs=len(corpus))

        # 4. harvest: frontier filter, confidence segments (Brier), monitors
        row.update(signals.after_rollout(policy, [t for _, g, _, _ in groups for t in g], generator))
        passes = [[float(t.info.get("em", 0.0)) for t in g] for _, g, _, _ in groups]
        kept = frontier_filter(passes, cfg.frontier_filter)
        row["groups"] = len(groups)
        row["frontier_kept"] = len(kept)
        row["frontier_all_right"] = sum(pass_rate(p) == 1.0 for p in passes)
        row["frontier_all_wrong"] = sum(pass_rate(p) == 0.0 for p in passes)
        all_trajs = [t for _, g, _, _ in groups for t in g]
        mon = signals.step_metrics(r, all_trajs)
        for key in ("entropy_mean", "entropy/search_count", "entropy/query_style", "entropy/answer_length",
                    "unique_answers", "collapse_warning", "calib_ece", "calib_brier"):
            v = mon.get(key)
            row[key] = None if isinstance(v, float) and not math.isfinite(v) else v  # NaN: undefined
        bias = position_bias([RankedEpisode(tuple(corpus.get(i).text if corpus.get(i) else "" for i in lst[-1]),
                                            t.info.get("answer"), golds)
                              for _, g, golds, _ in groups for t in g
                              if t.info.get("answered") for lst in [_served_lists(t)] if lst and lst[-1]])
        row.update({f"position_{k}": v for k, v in bias.items()})

        # 5. train a few GRPO steps on the kept groups
        order = list(kept)
        random.Random(f"{cfg.seed}|harvest|{r}").shuffle(order)
        t_train = time.perf_counter()
        steps = 0
        losses = []
        for s in range(cfg.train_steps_per_round):
            chunk = order[s * cfg.prompts_per_step:(s + 1) * cfg.prompts_per_step]
            if not chunk:
                break
            batch = [t for i in chunk for t in groups[i][1]]
            upd = grpo_update(model, optimizer, batch, settings, pad_id, reward_fns=reward_fns,
                              extra_loss_fns=extra_loss_fns, autocast_dtype=autocast, **sig_kwargs)
            losses.append(upd["loss"])
            steps += 1
        policy.forget()
        minutes = (time.perf_counter() - t_train) / 60.0
        train_minutes_total += minutes
        row.update(train_steps=steps, train_loss=(sum(losses) / len(losses)) if losses else None,
                   train_minutes=minutes, train_minutes_total=train_minutes_total)

        # 6. evaluate on held-out questions with BM25 over the original corpus
        row.update(_evaluate(model, tokenizer, cfg, eval_env, original_bm25, held_out, autocast, progress))

        # attack success on the live corpus: each target question asked as the query
        live_attacks = [(a, ids) for a, ids in attacks if any(i in corpus for i in ids)]
        reqs = [SearchRequest(a.question, cfg.top_k) for a, _ in live_attacks]
        raw = corpus.search(reqs) if reqs else []
        row["attacks_live"] = len(live_attacks)
        row["attack_success_undefended"] = (sum(attack_success(a, d) for (a, _), d in zip(live_attacks, raw))
                                            / len(reqs)) if reqs else None
        if cfg.defences and reqs:
            measured = DefendedSearch(corpus, partition=cfg.partition, mask=cfg.mask, pool_size=cfg.pool_size)
            got = measured.search(reqs)
            row["attack_success_defended"] = sum(attack_success(a, d) for (a, _), d in zip(live_attacks, got)) / len(reqs)
        else:
            row["attack_success_defended"] = None
        row["attack_success"] = row["attack_success_defended"] if cfg.defences else row["attack_success_undefended"]
        base_em = initial["eval_em"] if initial else None
        row["em_gain_per_train_minute"] = ((row["eval_em"] - base_em) / train_minutes_total
                                           if base_em is not None and train_minutes_total > 0 else None)
        row["round_minutes"] = (time.perf_counter() - t_round) / 60.0
        rows.append(row)
        with open(out / "rounds.jsonl", "a" if r else "w", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
        bar.update(1)
        bar.set_postfix(em=f"{row['eval_em']:.2f}", accepted=row["accepted"], kept=row["frontier_kept"])
    bar.close()

    # the rollback check runs on a copy read back from disk (the returned corpus stays as the
    # last round left it): the last round's documents (planted and written back) removed by
    # provenance must give the index bytes from before that round
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        saved = corpus.save(out / "corpus" if cfg.save_corpus else Path(tmp) / "corpus")
        copy_ = WriteBackCorpus.load(saved)
        removed = copy_.rollback(round=cfg.rounds - 1)
        rollback_check = {"round": cfg.rounds, "removed": len(removed),
                          "restores_bytes": copy_.state_hash() == pre_round_hash}
    return FlywheelRun(label, cfg, initial, rows, writebacks, corpus, rollback_check,
                       wall_s=time.perf_counter() - t_start)


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def run_ablations(cfg: FlywheelConfig, output: str | Path, ablations: Sequence[str] = (), model=None, tokenizer=None,
                  progress: bool = True, **kwargs) -> list[FlywheelRun]:
    """The full system, then each ablation in `ablations`, each from a fresh copy of the same
    starting model and the same seed. Writes `flywheel.json`, `flywheel_table.txt` and
    `flywheel.png` into `output`; returns the runs."""
    from agents.trainer import load_policy_model

    for name in ablations:
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
    if model is None:
        model, tokenizer = load_policy_model(cfg.model)
    start = copy.deepcopy(model.state_dict())
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for label in ["full", *[f"no-{a}" for a in dict.fromkeys(ablations)]]:
        run_cfg = cfg if label == "full" else cfg.ablated(label[3:])
        fresh = copy.deepcopy(model)
        fresh.load_state_dict(start)
        runs.append(run_flywheel(run_cfg, out, fresh, tokenizer, label=label, progress=progress, **kwargs))
        del fresh
        write_report(runs, out)
    return runs


# --------------------------------------------------------------------------- report

TABLE_COLUMNS = (("run", "run", "{}"), ("round", "round", "{}"), ("eval_em", "EM", "{:.3f}"),
                 ("accepted", "acc", "{}"), ("true_facts_added", "true+", "{}"), ("pollution", "pollut", "{:.3f}"),
                 ("attack_success", "attack", "{:.2f}"), ("false_flag_rate", "fflag", "{:.3f}"),
                 ("position_bias", "posbias", "{:+.2f}"), ("eval_ece", "ECE", "{:.3f}"),
                 ("entropy_mean", "H", "{:.2f}"), ("frontier_kept", "kept", "{}"),
                 ("train_minutes", "train_min", "{:.2f}"))


def format_table(runs: Sequence[FlywheelRun]) -> str:
    """One line per run and round (round 0: the starting policy)."""
    widths = [max([9] + [len(r.label) for r in runs]) if key == "run" else 9 for key, _, _ in TABLE_COLUMNS]
    lines = ["  ".join(f"{h:>{w}}" for (_, h, _), w in zip(TABLE_COLUMNS, widths))]
    for run in runs:
        rows = ([{"run": run.label, **run.initial}] if run.initial else []) + list(run.rounds)
        for row in rows:
            cells = []
            for (key, _, fmt), w in zip(TABLE_COLUMNS, widths):
                v = row.get(key)
                cells.append(f"{'-' if v is None else (fmt.format(v) if not isinstance(v, str) else v):>{w}}")
            lines.append("  ".join(cells))
    return "\n".join(lines)


PLOT_PANELS = (("eval_em", "held-out EM (BM25, original corpus)"), ("pollution", "pollution (false / accepted, live)"),
               ("true_facts_total", "true facts in the corpus"), ("attack_success", "attack success (top document)"),
               ("position_bias", "position bias (answer@1 - fact@1)"), ("eval_ece", "ECE (held-out)"),
               ("entropy_mean", "behaviour entropy (monitors)"), ("frontier_kept", "groups kept for training"))


def plot_runs(runs: Sequence[FlywheelRun], path: str | Path) -> None:
    """`flywheel.png`: one panel per figure of `PLOT_PANELS`, one line per run, x = round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    for ax, (key, title) in zip(axes.ravel(), PLOT_PANELS):
        drawn = False
        for run in runs:
            rows = ([run.initial] if run.initial and key in run.initial else []) + list(run.rounds)
            pts = [(row["round"], row[key]) for row in rows if isinstance(row.get(key), (int, float))
                   and not isinstance(row.get(key), bool) and math.isfinite(row[key])]
            if pts:
                xs, ys = zip(*pts)
                line, = ax.plot(xs, ys, marker="o", ms=3, label=run.label)
                drawn = True
                if key == "attack_success" and run.config.defences:  # what the same corpus does undefended
                    und = [(row["round"], row["attack_success_undefended"]) for row in run.rounds
                           if isinstance(row.get("attack_success_undefended"), (int, float))]
                    if und:
                        ax.plot(*zip(*und), ls="--", color=line.get_color(), alpha=0.6, label=f"{run.label}, undefended")
        if not drawn:
            ax.text(0.5, 0.5, "no data in these runs", ha="center", va="center", transform=ax.transAxes, color="0.4")
        elif len(runs) > 1 or key == "attack_success":
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(runs: Sequence[FlywheelRun], output: str | Path) -> dict[str, Path]:
    """Write `flywheel.json` (every run's config, rows, write-backs, rollback check), the table and the PNG."""
    out = Path(output)
    paths = {"json": out / RESULT_FILE, "table": out / TABLE_FILE, "png": out / PLOT_FILE}
    report = {"runs": [r.to_dict() for r in runs]}
    paths["json"].write_text(json.dumps(_clean(report), indent=1, default=_json_default, allow_nan=False),
                             encoding="utf-8")
    paths["table"].write_text(format_table(runs) + "\n", encoding="utf-8")
    plot_runs(runs, paths["png"])
    return paths


def _clean(obj):
    """NaN/inf -> None, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj

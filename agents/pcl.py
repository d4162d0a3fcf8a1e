"""PCL (post-completion learning): the policy scores itself after its answer, in training only.

During training rollouts, once the agent has answered (`...</answer>`), generation continues for
a short *post-completion segment* `<reward>0.8</reward>`: the policy's estimate of the reward the
environment will give. The environment's reward is computed from the answer alone (the segment
never changes it); the segment earns a *consistency reward* tying the estimate to that reward,
and optionally a supervised loss on the segment tokens (the target text carries the true reward).

At inference generation stops at `</answer>` (`zerosearch_env.protocol.STOP_STRINGS`), so the
segment is never generated there and costs zero tokens.
"""

from __future__ import annotations

import math
import re
from typing import Literal, Sequence

import torch

REWARD_OPEN = "<reward>"
REWARD_CLOSE = "</reward>"
#: the stop string that ends the post-completion segment during training
SEGMENT_STOP = (REWARD_CLOSE,)
DEFAULT_MISSING_PENALTY = -1.0

_NUMBER = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(%?)"
_TAGGED = re.compile(r"<\s*reward\s*>\s*" + _NUMBER + r"\s*(?:<\s*/\s*reward\s*>|$)", re.IGNORECASE)


def parse_self_reward(segment: str | None) -> float | None:
    """The estimate in a post-completion segment, or None when absent or unparseable.

    Accepts `<reward>0.8</reward>`, `<reward> .8 </reward>`, `<reward>80%</reward>`, tag case and
    inner spaces, and a closing tag cut off at the end of the text (generation may stop on the
    token budget). Only the FIRST `<reward>` tag counts. The estimate must lie in [0, 1]
    (percentages are divided by 100); anything else — words, several numbers, values out of range —
    is None, never clamped.
    """
    if not isinstance(segment, str):
        return None
    open_at = re.search(r"<\s*reward\s*>", segment, re.IGNORECASE)
    if open_at is None:
        return None
    m = _TAGGED.match(segment, open_at.start())
    if m is None:
        return None
    value = float(m.group(1))
    if m.group(2):
        value /= 100.0
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None
    return value


def segment_after_answer(agent_text: str) -> str | None:
    """The agent text after its first `</answer>` (the post-completion segment), or None when
    the agent never answered."""
    i = agent_text.find("</answer>")
    return None if i < 0 else agent_text[i + len("</answer>"):]


def consistency_reward(estimate: float | None, reward: float, mode: Literal["abs", "sq"] = "abs",
                       missing_penalty: float = DEFAULT_MISSING_PENALTY) -> float:
    """How well the self-estimate matches the environment's reward (both in [0, 1]).

    `abs`: 1 - |estimate - reward|; `sq`: 1 - (estimate - reward) ** 2; both in [0, 1]. A missing
    or unparseable estimate gets `missing_penalty` (default -1, below every parseable estimate, so
    omitting the segment never pays).
    """
    r = float(reward)
    if not math.isfinite(r) or not 0.0 <= r <= 1.0:
        raise ValueError(f"the environment reward must be in [0, 1] for PCL, got {reward!r}")
    if estimate is None or not math.isfinite(float(estimate)) or not 0.0 <= float(estimate) <= 1.0:
        return float(missing_penalty)
    d = float(estimate) - r
    if mode == "abs":
        return 1.0 - abs(d)
    if mode == "sq":
        return 1.0 - d * d
    raise ValueError(f"mode must be 'abs' or 'sq', got {mode!r}")


def target_segment(reward: float, decimals: int = 1) -> str:
    """The supervised target of the segment: the true reward, e.g. `<reward>0.8</reward>`."""
    r = min(1.0, max(0.0, float(reward)))
    return f"{REWARD_OPEN}{r:.{decimals}f}{REWARD_CLOSE}"


def build_segment_batch(contexts: Sequence[Sequence[int]], rewards: Sequence[float], tokenizer,
                        decimals: int = 1, pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """A right-padded batch `context + target_segment(reward)` whose labels are -100 everywhere
    except on the segment tokens: the supervised PCL loss trains only the self-estimate."""
    if len(contexts) != len(rewards):
        raise ValueError(f"{len(contexts)} contexts but {len(rewards)} rewards")
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, labels = [], []
    for ctx, r in zip(contexts, rewards):
        seg = tokenizer(target_segment(r, decimals), add_special_tokens=False)["input_ids"]
        ids = [int(t) for t in ctx] + list(seg)
        rows.append(ids)
        labels.append([-100] * len(ctx) + list(seg))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, lb) in enumerate(zip(rows, labels)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        lab[i, : len(lb)] = torch.tensor(lb)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": lab}


def segment_supervised_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy on the segment tokens of a `build_segment_batch` batch."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    target = batch["labels"][:, 1:].to(logits.device)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=-100)


# ----------------------------------------------------------------------------- training rollouts
def segment_policy(policy, stop: Sequence[str] = SEGMENT_STOP, max_new_tokens: int = 12):
    """A view of `policy` (same model and tokenizer) that stops at `stop` instead of at the
    protocol tags: used to write a short segment after the answer."""
    from agents.policy import Policy

    return Policy(policy.model, policy.tokenizer, max_new_tokens=max_new_tokens, temperature=policy.temperature,
                  stop_strings=tuple(stop), autocast_dtype=policy.autocast_dtype,
                  use_chat_template=policy.use_chat_template)


def opener_rest(agent_text: str, open_tag: str) -> str:
    """What is left to write of `open_tag` after the agent's text: the token that closed the last
    tag (`</answer>`, `</confidence>`) may already hold the start of the next one (tokenizers that
    merge "><"), e.g. a turn ending in "</answer><" needs only "reward>" more. Otherwise the whole
    tag."""
    tail = agent_text[agent_text.rfind(">") + 1:]
    if tail and open_tag.startswith(tail):
        return open_tag[len(tail):]
    return open_tag


def append_segments(policy, trajs: Sequence, open_tag: str, close_tag: str, generator: torch.Generator | None = None,
                    max_new_tokens: int = 12, force_open: bool = True, greedy: bool = False,
                    batch_size: int = 32) -> list[str]:
    """Continue each rollout `Trajectory` with a short tagged segment written by the policy.

    The opening tag is appended as a prompt (env_mask 0: it is not sampled) when `force_open`; the
    policy then samples up to `max_new_tokens` tokens until `close_tag` (env_mask 1, with their
    log-probabilities, so the GRPO loss trains them). `turn_ends` keeps only the real turns.
    Returns the segment text of each trajectory (opening tag included).
    A turn whose last token already began the tag ("</answer><") gets only the rest of it.
    Generation runs `batch_size` trajectories at a time: a batch's keys/values cover whole
    transcripts, and best-of-N evaluation passes hundreds of them (all at once ran out of memory).
    """
    if not trajs:
        return []
    seg_policy = segment_policy(policy, (close_tag,), max_new_tokens)
    for t in trajs:
        ends = list(t.turn_ends)
        rest = opener_rest(t.agent_text, open_tag) if force_open else ""
        if rest:
            t.add(policy.encode(rest), rest, agent=False)
        t.turn_ends = ends
    size = max(1, int(batch_size))
    turns = []
    for s in range(0, len(trajs), size):
        turns += seg_policy.generate_turns([t.prompt_ids + t.completion_ids for t in trajs[s:s + size]],
                                           greedy=greedy, generator=generator)
    texts = []
    for t, turn in zip(trajs, turns):
        ends = list(t.turn_ends)
        if turn.ids:
            t.add(turn.ids, turn.text, agent=True, logprobs=turn.logprobs)
        t.turn_ends = ends
        texts.append((open_tag if force_open else "") + turn.text)
    return texts


def add_post_completion(policy, trajs: Sequence, generator: torch.Generator | None = None,
                        max_new_tokens: int = 12, force_open: bool = True, mode: Literal["abs", "sq"] = "abs",
                        missing_penalty: float = DEFAULT_MISSING_PENALTY, greedy: bool = False) -> dict[str, float]:
    """Training only: let the policy write `<reward>q</reward>` after each answered trajectory.

    Trajectories whose episode ended with an answer (`info["answered"]`) get the segment (see
    `append_segments`). The environment's reward (`traj.reward`, EM/F1) is untouched; the estimate
    and its consistency reward go to `traj.info` (`self_reward`, `pcl_consistency`, `pcl_tokens`,
    `pcl_start`, `pcl_segment`), where `pcl_reward_fn` reads them. Returns batch figures.
    """
    answered = [t for t in trajs if (t.info or {}).get("answered")]
    for t in trajs:
        t.info.setdefault("pcl_tokens", 0)
    if not answered:
        return {"pcl_segments": 0.0, "pcl_parse_rate": 0.0, "pcl_consistency": 0.0, "pcl_tokens": 0.0}
    starts = [len(t.completion_ids) for t in answered]
    before = [sum(t.env_mask) for t in answered]
    segments = append_segments(policy, answered, REWARD_OPEN, REWARD_CLOSE, generator, max_new_tokens, force_open,
                               greedy=greedy)
    parsed, cons, toks = 0, [], []
    for t, start, agent_before, segment in zip(answered, starts, before, segments):
        est = parse_self_reward(segment)
        reward = min(1.0, max(0.0, float(t.reward)))
        c = consistency_reward(est, reward, mode=mode, missing_penalty=missing_penalty)
        n_tok = sum(t.env_mask) - agent_before
        t.info["pcl_start"] = start
        t.info.setdefault("post_answer_start", start)  # SPRM reads steps before it only
        t.info.update({"self_reward": est, "pcl_consistency": c, "pcl_tokens": n_tok, "pcl_segment": segment})
        parsed += est is not None
        cons.append(c)
        toks.append(n_tok)
    return {"pcl_segments": float(len(answered)), "pcl_parse_rate": parsed / len(answered),
            "pcl_consistency": sum(cons) / len(cons), "pcl_tokens": sum(toks) / len(toks)}


def pcl_reward_fn(trajs: Sequence) -> list[float]:
    """GRPO `reward_fns` plug-in: each trajectory's consistency reward (0 when it wrote no segment,
    i.e. did not answer: the outcome reward already scores that)."""
    return [float((t.info or {}).get("pcl_consistency", 0.0)) for t in trajs]


class PCLSupervisedLoss:
    """Optional supervised PCL loss as a GRPO plug-in (`extra_loss_fns`): cross-entropy of the
    target segment `<reward>r</reward>` (r = the environment's reward) after each trajectory that
    wrote a segment, given the trajectory up to where the segment starts. Its own forward pass."""

    def __init__(self, tokenizer, weight: float = 0.1, decimals: int = 1):
        self.tokenizer = tokenizer
        self.weight = float(weight)
        self.decimals = decimals
        self.__name__ = "pcl_supervised_loss"

    def __call__(self, model, batch) -> torch.Tensor:
        trajs = [t for t in batch.trajectories if "pcl_start" in (t.info or {})]
        if not trajs:
            return torch.zeros((), device=next(model.parameters()).device)
        contexts = [list(t.prompt_ids) + list(t.completion_ids[: t.info["pcl_start"]]) for t in trajs]
        rewards = [min(1.0, max(0.0, float(t.reward))) for t in trajs]
        seg = build_segment_batch(contexts, rewards, self.tokenizer, self.decimals)
        device = next(model.parameters()).device
        seg = {k: v.to(device) for k, v in seg.items()}
        return self.weight * segment_supervised_loss(model, seg)

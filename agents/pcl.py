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

"""A minimal GRPO update over our rollouts (the CPU trainer of the tiny preset).

It computes the same loss as TRL's `GRPOTrainer._compute_loss` for the configuration we use
(`beta=0`, `num_iterations=1`, token-level importance sampling, loss types "dapo" (TRL's default),
"grpo" and "bnpo"); `tests/test_grpo.py` checks both give the same number on the same batch. The
batch layout is TRL's: prompts left-padded, completions right-padded, loss mask =
`completion_mask * env_mask`, so environment tokens never carry gradient.

Plug-in points (for SPRM, PCL, calibration rewards...):
- `reward_fns`: callables `fn(trajectories) -> list[float]`, each added (times its weight) to the
  environment reward before group advantages are computed.
- `extra_loss_fns`: callables `fn(model, batch: LossBatch) -> torch.Tensor` (a scalar) added to the
  policy loss of every micro-batch. Set `need_hidden=True` in `grpo_update` when a hook reads
  `batch.hidden_states` (the last layer's states over the completion positions; `hidden_layer=-2`
  gives the second-to-last layer instead, as SPRM reads, recorded in `batch.hidden_layer`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from agents.rollout import Trajectory

RewardFn = Callable[[Sequence[Trajectory]], Sequence[float]]


@dataclass
class LossBatch:
    """Padded tensors of a (micro-)batch of trajectories, TRL's layout."""

    prompt_ids: torch.Tensor       # [B, P] left-padded
    prompt_mask: torch.Tensor      # [B, P]
    completion_ids: torch.Tensor   # [B, T] right-padded
    completion_mask: torch.Tensor  # [B, T] 1 on real tokens
    env_mask: torch.Tensor         # [B, T] 1 on agent tokens, 0 on environment tokens (and padding)
    old_logprobs: torch.Tensor     # [B, T] sampling log-probabilities (0 at env / padding)
    advantages: torch.Tensor       # [B]
    rewards: torch.Tensor          # [B]
    turn_ends: list[list[int]] = field(default_factory=list)
    trajectories: list[Trajectory] = field(default_factory=list)
    per_token_logps: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # [B, T, H] when requested
    hidden_layer: int = -1  # which entry of the model's hidden_states `hidden_states` holds

    @property
    def loss_mask(self) -> torch.Tensor:
        return self.completion_mask * self.env_mask


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """(r - group mean) / (std + 1e-4), TRL's `scale_rewards` "group" (unbiased std), "batch" or "none"."""
    r = rewards.float().view(-1, group_size)
    mean = r.mean(dim=1, keepdim=True)
    adv = (r - mean).view(-1)
    if scale == "none":
        return adv
    if scale == "group":
        std = r.std(dim=1, keepdim=True).expand_as(r).reshape(-1) if group_size > 1 else torch.zeros_like(adv)
    elif scale == "batch":
        std = rewards.float().std().expand_as(adv)
    else:
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return torch.nan_to_num(adv / (std + 1e-4))


def make_batch(trajs: Sequence[Trajectory], advantages: torch.Tensor, rewards: torch.Tensor, pad_id: int) -> LossBatch:
    """Pad trajectories into TRL's layout."""
    b = len(trajs)
    p = max(len(t.prompt_ids) for t in trajs)
    tmax = max(1, max(len(t.completion_ids) for t in trajs))
    prompt_ids = torch.full((b, p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((b, p), dtype=torch.long)
    comp = torch.full((b, tmax), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((b, tmax), dtype=torch.long)
    env_mask = torch.zeros((b, tmax), dtype=torch.long)
    old = torch.zeros((b, tmax), dtype=torch.float32)
    for i, t in enumerate(trajs):
        prompt_ids[i, p - len(t.prompt_ids):] = torch.tensor(t.prompt_ids)
        prompt_mask[i, p - len(t.prompt_ids):] = 1
        n = len(t.completion_ids)
        if n:
            comp[i, :n] = torch.tensor(t.completion_ids)
            comp_mask[i, :n] = 1
            env_mask[i, :n] = torch.tensor(t.env_mask)
            old[i, :n] = torch.tensor(t.logprobs, dtype=torch.float32)
    return LossBatch(prompt_ids, prompt_mask, comp, comp_mask, env_mask, old, advantages.float(), rewards.float(),
                     [list(t.turn_ends) for t in trajs], list(trajs))


@contextmanager
def decoder_blocks(decoder, start: int, stop: int | None, final_norm: bool = True):
    """Temporarily make `decoder` (a Hugging Face decoder with `layers` and `norm`, Llama/Qwen
    style) run only `layers[start:stop]`, and skip its final norm when `final_norm` is False: its
    forward then maps the hidden states entering block `start` (given as `inputs_embeds`) to those
    leaving block `stop - 1`, with the same masks and rotary positions as a full pass."""
    layers, norm = decoder.layers, decoder.norm
    decoder.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not final_norm:
        decoder.norm = torch.nn.Identity()
    try:
        yield decoder
    finally:
        decoder.layers, decoder.norm = layers, norm


def packed_rows(batch: LossBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward-pass layout of a batch: each row is its prompt then its completion, right-padded
    (`ids`, `attn` [B, L]); `starts` [B] is where each completion begins. Unlike the left-padded
    prompts of TRL's layout, no real query position ever sits after only padding, so no attention
    row is fully masked (such rows give NaN gradients under bf16 on CUDA)."""
    p_len = batch.prompt_mask.sum(1)
    c_len = batch.completion_mask.sum(1)
    width = max(1, int((p_len + c_len).max()))
    b = batch.prompt_ids.size(0)
    ids = torch.zeros((b, width), dtype=torch.long)  # padding: any id, masked out
    attn = torch.zeros((b, width), dtype=torch.long)
    for i in range(b):
        lp, lc = int(p_len[i]), int(c_len[i])
        ids[i, :lp] = batch.prompt_ids[i, batch.prompt_ids.size(1) - lp:]
        ids[i, lp:lp + lc] = batch.completion_ids[i, :lc]
        attn[i, :lp + lc] = 1
    return ids, attn, p_len


def completion_logprobs(model, batch: LossBatch, temperature: float = 1.0, autocast_dtype: torch.dtype | None = None,
                        need_hidden: bool = False, hidden_layer: int = -1,
                        frozen_states: torch.Tensor | None = None,
                        start_layer: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities of the completion tokens under `softmax(logits / temperature)`,
    as TRL computes them, [B, T] aligned with `batch.completion_ids`. The forward pass runs on
    `packed_rows` (RoPE is relative, so where a row starts does not change its numbers).

    Only positions in `batch.loss_mask` (agent tokens) are scored; the others are 0. The LM head
    runs on those positions alone, so the [tokens x vocabulary] logits of the environment tokens
    (most of a search trajectory) are never built: memory and time scale with the agent's tokens.
    With `need_hidden`, the second value is that layer's states at the completion tokens [B, T, H].

    `frozen_states` ([B, L, H] in `packed_rows` layout) are the hidden states entering block
    `start_layer`, precomputed while the blocks below it are frozen (`agents.warmup.FrozenPrefix`):
    only blocks `start_layer:` then run, and `hidden_layer` must count from the top (negative).
    """
    device = next(model.parameters()).device
    ids, attn, starts = packed_rows(batch)
    ids, attn, starts = ids.to(device), attn.to(device), starts.to(device)
    t = batch.completion_ids.size(1)
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else torch.autocast(device.type, enabled=False)
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    # completion token j of row i sits at starts[i] + j and is predicted from the state before it
    at = (starts[:, None] + torch.arange(t, device=device)[None, :]).clamp(max=ids.size(1) - 1)
    with ctx:
        if frozen_states is None:
            out = decoder(input_ids=ids, attention_mask=attn, output_hidden_states=need_hidden)
        else:
            if need_hidden and hidden_layer >= 0:
                raise ValueError("with frozen_states, hidden_layer must count from the top (negative)")
            with decoder_blocks(decoder, start_layer, None):
                out = decoder(inputs_embeds=frozen_states.to(device), attention_mask=attn,
                              output_hidden_states=need_hidden, use_cache=False)
        last = out.last_hidden_state
        states = last.gather(1, (at - 1).clamp(min=0)[:, :, None].expand(-1, -1, last.size(-1)))
        sel = batch.loss_mask.to(device).bool()
        logits = head(states[sel])
    logits = logits.float() / temperature
    targets = batch.completion_ids.to(device)[sel]
    picked = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    logps = torch.zeros(sel.shape, dtype=picked.dtype, device=device).masked_scatter(sel, picked)
    hidden = None
    if need_hidden:
        h = out.hidden_states[hidden_layer]
        hidden = h.gather(1, at[:, :, None].expand(-1, -1, h.size(-1)))
    return logps, hidden


def grpo_loss(per_token_logps: torch.Tensor, old_logps: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, loss_type: str = "dapo", epsilon_low: float = 0.2, epsilon_high: float = 0.2,
              num_items_in_batch: float | None = None, num_sequences: int | None = None) -> torch.Tensor:
    """The clipped GRPO surrogate, masked to agent tokens.

    `old_logps=None` means on-policy (`num_iterations=1`): the ratio is `exp(logp - logp.detach())`,
    equal to 1 with gradient `grad logp`, exactly as TRL does. Normalisation: "dapo" divides the
    token sum by `num_items_in_batch` (all agent tokens of the whole batch, so micro-batches add up
    to the full-batch loss), "bnpo" by this batch's agent tokens, "grpo" averages each sequence over
    its tokens then over `num_sequences` sequences (default: this batch's).
    """
    mask = mask.to(per_token_logps.dtype)
    old = per_token_logps.detach() if old_logps is None else old_logps
    coef_1 = torch.exp(per_token_logps - old)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    if loss_type == "dapo":
        denom = mask.sum() if num_items_in_batch is None else torch.as_tensor(float(num_items_in_batch))
        return (per_token * mask).sum() / denom.clamp(min=1.0)
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return seq.sum() / (num_sequences or seq.size(0))
    raise ValueError(f"loss_type must be 'dapo', 'grpo' or 'bnpo', got {loss_type!r}")


@dataclass
class GRPOSettings:
    """The knobs `grpo_update` reads (a subset of `TrainConfig`)."""

    group_size: int = 4
    temperature: float = 1.0
    loss_type: str = "dapo"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    scale_rewards: str = "group"
    micro_batch_size: int = 4
    max_grad_norm: float = 1.0


def compute_rewards(trajs: Sequence[Trajectory], reward_fns: Sequence[tuple[RewardFn, float]] = ()) -> torch.Tensor:
    """Environment reward plus every weighted extra reward function."""
    r = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
    for fn, w in reward_fns:
        extra = torch.tensor([float(x) for x in fn(trajs)], dtype=torch.float32)
        if extra.shape != r.shape:
            raise ValueError(f"reward function {getattr(fn, '__name__', fn)} returned {extra.numel()} values for {r.numel()} trajectories")
        r = r + w * extra
    return r


def grpo_update(model, optimizer, trajs: Sequence[Trajectory], settings: GRPOSettings, pad_id: int,
                reward_fns: Sequence[tuple[RewardFn, float]] = (),
                extra_loss_fns: Sequence[Callable[[object, LossBatch], torch.Tensor]] = (),
                autocast_dtype: torch.dtype | None = None, need_hidden: bool = False,
                hidden_layer: int = -1) -> dict[str, float]:
    """One optimiser step of GRPO on a batch of trajectories (groups of `settings.group_size`
    consecutive trajectories). Gradients are accumulated over micro-batches; the summed loss equals
    the full-batch loss. Returns the step's loss figures."""
    rewards = compute_rewards(trajs, reward_fns)
    adv = group_advantages(rewards, settings.group_size, settings.scale_rewards)
    total_items = float(sum(sum(t.env_mask) for t in trajs))
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, extra_sum = 0.0, 0.0
    n = len(trajs)
    mb = max(1, settings.micro_batch_size)
    for s in range(0, n, mb):
        part = list(trajs[s:s + mb])
        batch = make_batch(part, adv[s:s + mb], rewards[s:s + mb], pad_id)
        logps, hidden = completion_logprobs(model, batch, settings.temperature, autocast_dtype, need_hidden,
                                            hidden_layer)
        batch.per_token_logps, batch.hidden_states, batch.hidden_layer = logps, hidden, hidden_layer
        loss = grpo_loss(logps, None, batch.advantages.to(logps.device), batch.loss_mask.to(logps.device), settings.loss_type,
                         settings.epsilon_low, settings.epsilon_high, num_items_in_batch=total_items,
                         num_sequences=n)
        if settings.loss_type == "bnpo":
            loss = loss * len(part) / n  # bnpo per micro-batch, averaged over micro-batches by size
        extra = sum((fn(model, batch) * len(part) / n for fn in extra_loss_fns), torch.zeros(()))
        (loss + extra).backward()
        loss_sum += float(loss.detach())
        extra_sum += float(extra.detach()) if torch.is_tensor(extra) else float(extra)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    zero_std = (rewards.view(-1, settings.group_size).std(dim=1) == 0).float().mean() if settings.group_size > 1 else torch.tensor(1.0)
    return {"loss": loss_sum, "extra_loss": extra_sum, "grad_norm": float(grad_norm) if math.isfinite(float(grad_norm)) else float("nan"),
            "reward_total": float(rewards.mean()), "frac_zero_std_groups": float(zero_std),
            "adv_abs_mean": float(adv.abs().mean())}

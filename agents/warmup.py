"""Supervised warm-up on oracle trajectories (environment tokens masked from the loss).

The base small model never writes the protocol's tags on its own, so GRPO would see reward 0
everywhere. The warm-up first records `OracleAgent` episodes (it searches the supporting articles
of each training question in hop order with the real backend, BM25 by default, and answers from
what came back), keeps the successful ones, single-hop and multi-hop alike, and fine-tunes the
policy on them with cross-entropy on the agent's tokens only: the `<information>` feedback is
context, never a target.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import numpy as np
import torch

from agents.policy import Policy
from agents.rollout import Trajectory, unbatch_info
from zerosearch_env.data.task import Task


def record_agent_episodes(agent, vec_env, tasks: Sequence[Task]) -> list[Trajectory]:
    """Run `agent` (an `agents.base.Agent`) on `tasks` in chunks of `vec_env.num_envs`; return the
    episodes as text segments (agent turns and environment feedback), ids not yet filled in."""
    out: list[Trajectory] = []
    n = vec_env.num_envs
    for s in range(0, len(tasks), n):
        chunk = list(tasks[s:s + n])
        per_env = [{"task_id": t.id, "episode_id": f"{t.id}#warmup"} for t in chunk] + [None] * (n - len(chunk))
        mask = np.array([i < len(chunk) for i in range(n)])
        obs, infos = vec_env.reset(options={"reset_mask": mask, "per_env": per_env})
        trajs = [Trajectory(prompt=obs[i], prompt_ids=[], task=t) for i, t in enumerate(chunk)]
        transcripts = [obs[i] for i in range(len(chunk))]
        cur = [unbatch_info(infos, i) for i in range(len(chunk))]
        done = [False] * len(chunk)
        while not all(done):
            live = [i for i in range(len(chunk)) if not done[i]]
            turns = agent.act([transcripts[i] for i in live], [cur[i] for i in live])
            actions: list[str | None] = [None] * n
            for i, turn in zip(live, turns):
                actions[i] = turn
            obs, rewards, terms, truncs, infos = vec_env.step(actions)
            for i, turn in zip(live, turns):
                info = unbatch_info(infos, i)
                cur[i] = {**cur[i], **info}
                trajs[i].segments.append((turn, True))
                transcripts[i] += turn + obs[i]
                if terms[i] or truncs[i]:
                    done[i] = True
                    trajs[i].reward = float(rewards[i])
                    trajs[i].info = {"em": float(info.get("em") or 0.0), "f1": float(info.get("f1") or 0.0),
                                     "num_searches": int(info.get("num_searches") or 0), "kind": chunk[i].kind}
                elif obs[i]:
                    trajs[i].segments.append((obs[i], False))
        out.extend(trajs)
    return out


def tokenize_trajectory(policy: Policy, traj: Trajectory) -> Trajectory:
    """Fill `prompt_ids`, `completion_ids` and `env_mask` of a recorded text trajectory (agent text
    here is the oracle's, not sampled, so tokenising it is correct). Generation stops at the
    closing tag, so no end-of-turn token is appended."""
    out = Trajectory(prompt=traj.prompt, prompt_ids=policy.prompt_ids(traj.prompt), task=traj.task,
                     reward=traj.reward, info=dict(traj.info))
    for text, agent in traj.segments:
        out.add(policy.encode(text), text, agent=agent)
    return out


class FrozenPrefix:
    """The hidden states entering the first trained block, computed once per trajectory.

    With only the top blocks trained (`trainable_layers`) and the embeddings frozen, what the lower
    blocks compute for a trajectory never changes during the warm-up, so each epoch after the first
    needs only the top blocks: on SmolLM2-135M with 6 of 30 blocks trained that is about a third of
    the work of a full pass. States are kept unpadded per trajectory (float32, about 1 MB each for
    400 tokens) and placed back into the right-padded rows of `agents.grpo.packed_rows`, where
    every trajectory starts at position 0, as when its states were computed.

    `FrozenPrefix.for_model` returns None when nothing below the trained blocks is frozen or the
    model is not a decoder with `layers` and `norm`; `check` compares one trajectory against a full
    pass, so a model whose forward treats `inputs_embeds` differently falls back to full passes.
    """

    def __init__(self, model, start_layer: int, pad_id: int, autocast_dtype: torch.dtype | None = None):
        self.model, self.start, self.pad_id, self.autocast = model, int(start_layer), pad_id, autocast_dtype
        self.states: dict[int, torch.Tensor] = {}

    @classmethod
    def for_model(cls, model, pad_id: int, autocast_dtype: torch.dtype | None = None) -> "FrozenPrefix | None":
        decoder = model.get_decoder()
        layers = getattr(decoder, "layers", None)
        if layers is None or getattr(decoder, "norm", None) is None:
            return None
        if any(p.requires_grad for p in decoder.get_input_embeddings().parameters()):
            return None
        start = 0
        while start < len(layers) and not any(p.requires_grad for p in layers[start].parameters()):
            start += 1
        if start == 0 or start == len(layers):
            return None
        return cls(model, start, pad_id, autocast_dtype)

    def batch_states(self, keys: Sequence[int], trajs: Sequence[Trajectory]) -> torch.Tensor:
        """[B, L, H] states for `trajs` (cached under `keys`) in `agents.grpo.packed_rows` layout."""
        from agents.grpo import decoder_blocks, make_batch, packed_rows

        missing = [(k, t) for k, t in zip(keys, trajs) if k not in self.states]
        if missing:
            zeros = torch.zeros(len(missing))
            ids, attn, _ = packed_rows(make_batch([t for _, t in missing], zeros, zeros, self.pad_id))
            device = next(self.model.parameters()).device
            ctx = (torch.autocast(device.type, dtype=self.autocast) if self.autocast is not None
                   else torch.autocast(device.type, enabled=False))
            decoder = self.model.get_decoder()
            with torch.no_grad(), ctx, decoder_blocks(decoder, 0, self.start, final_norm=False):
                h = decoder(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).last_hidden_state
            for i, (k, _) in enumerate(missing):
                self.states[k] = h[i][attn[i].to(device).bool()].float().clone()
        width = max(1, max(len(t.prompt_ids) + len(t.completion_ids) for t in trajs))
        first = self.states[keys[0]]
        out = torch.zeros((len(trajs), width, first.size(-1)), dtype=first.dtype, device=first.device)
        for i, k in enumerate(keys):
            out[i, :len(self.states[k])] = self.states[k]
        return out

    def check(self, traj: Trajectory, atol: float = 1e-3) -> bool:
        """True when the cached path gives one trajectory's agent-token log-probabilities as a full pass does."""
        from agents.grpo import completion_logprobs, make_batch

        zeros = torch.zeros(1)
        batch = make_batch([traj], zeros, zeros, self.pad_id)
        with torch.no_grad():
            full, _ = completion_logprobs(self.model, batch, 1.0, self.autocast)
            fast, _ = completion_logprobs(self.model, batch, 1.0, self.autocast,
                                          frozen_states=FrozenPrefix(self.model, self.start, self.pad_id,
                                                                     self.autocast).batch_states([0], [traj]),
                                          start_layer=self.start)
        return bool(torch.allclose(full, fast, atol=atol, rtol=0.0))


def sft_loss(model, trajs: Sequence[Trajectory], pad_id: int, autocast_dtype: torch.dtype | None = None,
             num_items: float | None = None, prefix: FrozenPrefix | None = None,
             keys: Sequence[int] | None = None) -> torch.Tensor:
    """Cross-entropy on agent tokens only (`env_mask` 1), summed and divided by `num_items`
    (default: this batch's agent tokens). With `prefix` (and the trajectories' dataset indices as
    `keys`), the frozen lower blocks' states come from its cache."""
    from agents.grpo import completion_logprobs, make_batch

    zeros = torch.zeros(len(trajs))
    batch = make_batch(trajs, zeros, zeros, pad_id)
    if prefix is not None:
        if keys is None or len(keys) != len(trajs):
            raise ValueError("sft_loss with a FrozenPrefix needs one key per trajectory")
        logps, _ = completion_logprobs(model, batch, 1.0, autocast_dtype,
                                       frozen_states=prefix.batch_states(keys, trajs), start_layer=prefix.start)
    else:
        logps, _ = completion_logprobs(model, batch, 1.0, autocast_dtype)
    mask = batch.loss_mask.to(device=logps.device, dtype=logps.dtype)
    denom = mask.sum() if num_items is None else torch.as_tensor(float(num_items))
    return -(logps * mask).sum() / denom.clamp(min=1.0)


def build_oracle_dataset(policy: Policy, vec_env, tasks: Sequence[Task], only_correct: bool = True) -> list[Trajectory]:
    """Record oracle episodes on `tasks` and tokenise the (correct) ones."""
    from agents.baselines import OracleAgent

    recorded = record_agent_episodes(OracleAgent(tasks), vec_env, tasks)
    kept = [t for t in recorded if (t.info.get("em", 0.0) >= 1.0 or not only_correct)]
    return [tokenize_trajectory(policy, t) for t in kept]


def warmup_epoch_order(n: int, epochs: int, seed: int) -> list[int]:
    """The data order of the warm-up: each epoch a fresh seeded permutation."""
    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(epochs):
        perm = list(range(n))
        rng.shuffle(perm)
        order += perm
    return order


def warmup_step(model, optimizer, trajs: Sequence[Trajectory], pad_id: int, micro_batch_size: int = 4,
                max_grad_norm: float = 1.0, autocast_dtype: torch.dtype | None = None,
                prefix: FrozenPrefix | None = None, keys: Sequence[int] | None = None) -> float:
    """One optimiser step of supervised warm-up over `trajs` (micro-batched); returns the loss.
    `prefix`/`keys`: see `sft_loss`."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = float(sum(sum(t.env_mask) for t in trajs))
    loss_sum = 0.0
    for s in range(0, len(trajs), micro_batch_size):
        part_keys = None if keys is None else list(keys[s:s + micro_batch_size])
        loss = sft_loss(model, trajs[s:s + micro_batch_size], pad_id, autocast_dtype, num_items=total,
                        prefix=prefix, keys=part_keys)
        loss.backward()
        loss_sum += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum if math.isfinite(loss_sum) else float("nan")

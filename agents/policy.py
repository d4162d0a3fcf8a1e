"""A Hugging Face causal-LM policy that writes one agent turn at a time, batched, from token ids.

`Policy.generate_turns(contexts)` takes one token-id list per active episode (prompt, earlier agent
turns and environment tokens, already assembled from ids), left-pads them, and samples with a KV
cache until each sequence has written `</search>` or `</answer>` (or an end-of-sequence token, or
`max_new_tokens`). It returns, per sequence, the sampled token ids, their log-probabilities and
the decoded text. Sampled ids are never re-tokenised: callers append them to the trajectory as
they are, and tokenise environment feedback once (`Policy.encode`).

Temperature: a token is sampled from `softmax(logits / temperature)` (no top-k/top-p filtering,
so the distribution is exactly that one) and its returned log-probability is
`log_softmax(logits / temperature)[token]`, the log-probability under the distribution actually
used. TRL's GRPOTrainer scores completions the same way (`logits / temperature`), so the two agree.
Greedy decoding (`temperature == 0`) returns the log-probabilities at temperature 1.

`PolicyAgent` wraps a `Policy` as an `agents.base.Agent` for evaluation (greedy by default). It
keeps each episode's token ids keyed by `episode_id`, so the transcript is never re-tokenised
between turns.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from zerosearch_env.protocol import STOP_STRINGS


@dataclass(slots=True)
class Turn:
    """One generated agent turn: sampled ids, their log-probabilities, the decoded text, and why it
    stopped ("stop" for a closing tag, "eos", or "length")."""

    ids: list[int]
    logprobs: list[float]
    text: str
    finish: str


class Policy:
    """Batched turn-by-turn generation from a causal LM.

    `model` is any `transformers` causal LM; `tokenizer` its tokenizer (it needs a chat template
    for `prompt_ids`, or falls back to the plain prompt text). `dtype` autocast (e.g. bfloat16) is
    used for the forward passes when given.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 96, temperature: float = 1.0,
                 stop_strings: Sequence[str] = STOP_STRINGS, autocast_dtype: torch.dtype | None = None,
                 use_chat_template: bool = True, cache_token_budget: int = 49152):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.stop_strings = tuple(stop_strings)
        self.autocast_dtype = autocast_dtype
        self.use_chat_template = use_chat_template and getattr(tokenizer, "chat_template", None) is not None
        eos = set()
        for tid in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)
                    if getattr(model, "generation_config", None) is not None else None):
            if isinstance(tid, int):
                eos.add(tid)
            elif isinstance(tid, (list, tuple)):
                eos.update(int(t) for t in tid)
        self.eos_ids = eos
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (min(eos) if eos else 0))
        # episode key -> (token ids whose keys/values are held, [(K, V) per layer, each [heads, len, dim]])
        self._kv: OrderedDict[str, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = OrderedDict()
        self.cache_token_budget = int(cache_token_budget)
        self.cache_stats = {"hits": 0, "reused_tokens": 0, "computed_tokens": 0}
        self._shared: tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    # ----------------------------------------------------------------- tokenisation (once per text)
    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the episode prompt: the chat template's user turn plus the assistant header."""
        if self.use_chat_template:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True,
            )
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return [int(i) for i in ids]
        return self.encode(prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of environment text (no special tokens added)."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ----------------------------------------------------------------- generation
    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast("cpu", enabled=False)
        device_type = next(self.model.parameters()).device.type
        return torch.autocast(device_type, dtype=self.autocast_dtype)

    # ----------------------------------------------------------------- keys/values kept across turns
    def forget(self, keys: Sequence[str] | None = None) -> None:
        """Drop the keys/values kept for these episode keys (None: all). Call it when episodes end
        and whenever the weights change: a kept cache belongs to the weights that computed it."""
        if keys is None:
            self._kv.clear()
            self._shared = None
            return
        for k in keys:
            self._kv.pop(k, None)

    def _cached_prefix(self, key: str | None, context: Sequence[int]):
        """The kept (ids, layers) of `key` when its ids are a proper prefix of `context`, else None."""
        entry = self._kv.get(key) if key is not None else None
        if entry is None:
            return None
        ids, layers = entry
        if len(ids) >= len(context) or list(context[:len(ids)]) != ids:
            self._kv.pop(key, None)
            return None
        return entry

    def _shared_prefix(self, contexts: Sequence[Sequence[int]], min_tokens: int = 16):
        """Keys/values of the prefix that fresh contexts share (the prompt's instructions): the kept
        one when it still fits one of them, else the longest common prefix of two or more contexts,
        computed once (>= `min_tokens`); None when there is none."""
        def fits(ids: list[int]) -> bool:
            return any(len(ids) < len(c) and list(c[:len(ids)]) == ids for c in contexts)

        if self._shared is not None and fits(self._shared[0]):
            return self._shared
        if len(contexts) < 2:
            return None
        first, n = contexts[0], min(len(c) for c in contexts) - 1
        common = 0
        while common < n and all(c[common] == first[common] for c in contexts):
            common += 1
        if common < min_tokens:
            return None
        ids = [int(t) for t in first[:common]]
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()  # in training mode a model with gradient checkpointing returns no cache
        try:
            with self._autocast():
                out = self.model(input_ids=torch.tensor([ids], dtype=torch.long, device=device), use_cache=True,
                                 logits_to_keep=1)
        finally:
            if was_training:
                self.model.train()
        if out.past_key_values is None:
            return None
        self._shared = (ids, [(layer.keys[0].clone(), layer.values[0].clone()) for layer in out.past_key_values.layers])
        self.cache_stats["computed_tokens"] += common
        return self._shared

    def _keep(self, key: str, ids: list[int], past, row: int, mask_row: torch.Tensor) -> None:
        """Keep row `row` of the batch cache (its real positions only) under `key`."""
        real = mask_row.bool()
        layers = [(layer.keys[row][:, real, :].clone(), layer.values[row][:, real, :].clone()) for layer in past.layers]
        self._kv.pop(key, None)
        self._kv[key] = (ids, layers)
        total = sum(len(v[0]) for v in self._kv.values())
        while total > self.cache_token_budget and len(self._kv) > 1:  # oldest first
            _, (old_ids, _) = self._kv.popitem(last=False)
            total -= len(old_ids)

    @torch.no_grad()
    def generate_turns(self, contexts: Sequence[Sequence[int]], greedy: bool = False,
                       generator: torch.Generator | None = None, max_new_tokens: int | None = None,
                       cache_keys: Sequence[str] | None = None) -> list[Turn]:
        """Write one turn for each context (a list of token ids). Sequences that finish leave the
        batch (their KV-cache rows are dropped), so long and short turns cost what they need.

        `cache_keys` (one per context, e.g. episode ids): keep each sequence's keys/values after
        the turn, and on the next call with the same key start from them when the kept ids are a
        prefix of the new context, so a turn costs only its new tokens (the environment's feedback)
        instead of the whole transcript again; fresh episodes start from the kept keys/values of
        the prompt prefix they share. The results are those of a fresh pass."""
        if not contexts:
            return []
        if any(len(c) == 0 for c in contexts):
            raise ValueError("every context needs at least one token")
        if cache_keys is not None and len(cache_keys) != len(contexts):
            raise ValueError("need one cache key per context")
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        device = next(self.model.parameters()).device
        temperature = self.temperature
        if not greedy and temperature <= 0:
            greedy = True
        n = len(contexts)
        cached = [self._cached_prefix(cache_keys[i], c) if cache_keys is not None else None
                  for i, c in enumerate(contexts)]
        cold = [i for i, e in enumerate(cached) if e is None]
        if cache_keys is not None and cold:  # fresh episodes start from the prompt prefix they share
            shared = self._shared_prefix([contexts[i] for i in cold])
            if shared is not None:
                for i in cold:
                    c = contexts[i]
                    if len(shared[0]) < len(c) and list(c[:len(shared[0])]) == shared[0]:
                        cached[i] = shared
        c_len = [len(e[0]) if e is not None else 0 for e in cached]
        self.cache_stats["hits"] += sum(e is not None for e in cached)
        self.cache_stats["reused_tokens"] += sum(c_len)
        self.cache_stats["computed_tokens"] += sum(len(c) for c in contexts) - sum(c_len)
        width_c = max(c_len)
        width = max(len(c) - k for c, k in zip(contexts, c_len))  # the new tokens, left-padded
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width_c + width), dtype=torch.long)
        for i, (c, k) in enumerate(zip(contexts, c_len)):
            new = list(c[k:])
            input_ids[i, width - len(new):] = torch.tensor(new, dtype=torch.long)
            attn[i, width_c - k:width_c] = 1
            attn[i, width_c + width - len(new):] = 1
        input_ids, attn = input_ids.to(device), attn.to(device)
        positions = ((attn.cumsum(-1) - 1).clamp(min=0))[:, width_c:]
        past = None
        if width_c:  # rows without a kept prefix get masked zeros there
            from transformers import DynamicCache

            n_layers = len(next(e for e in cached if e is not None)[1])
            data = []
            for layer in range(n_layers):
                ref_k, ref_v = next(e for e in cached if e is not None)[1][layer]
                ks = torch.zeros((n, ref_k.size(0), width_c, ref_k.size(2)), dtype=ref_k.dtype, device=device)
                vs = torch.zeros((n, ref_v.size(0), width_c, ref_v.size(2)), dtype=ref_v.dtype, device=device)
                for i, e in enumerate(cached):
                    if e is not None:
                        ks[i, :, width_c - c_len[i]:] = e[1][layer][0]
                        vs[i, :, width_c - c_len[i]:] = e[1][layer][1]
                data.append((ks, vs))
            past = DynamicCache(ddp_cache_data=data)
        fed = [list(c) for c in contexts]  # the ids whose keys/values the batch cache holds, per sequence

        ids_out: list[list[int]] = [[] for _ in range(n)]
        lps_out: list[list[float]] = [[] for _ in range(n)]
        finish = ["length"] * n
        alive = list(range(n))  # original index of each row still in the batch
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=positions, use_cache=True,
                                 past_key_values=past, logits_to_keep=1)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_pos = positions[:, -1:] + 1
            for step in range(max_new):
                if greedy:
                    logp = torch.log_softmax(logits, dim=-1)
                    tok = logp.argmax(dim=-1)
                else:
                    logp = torch.log_softmax(logits / temperature, dim=-1)
                    probs = logp.exp()
                    if generator is not None and generator.device.type != probs.device.type:
                        # a generator on another device (a CPU one with a CUDA model): sample where it lives
                        tok = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
                    else:
                        tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                tok_lp = logp.gather(-1, tok[:, None]).squeeze(-1)
                keep: list[int] = []
                for row, orig in enumerate(alive):
                    t = int(tok[row])
                    ids_out[orig].append(t)
                    lps_out[orig].append(float(tok_lp[row]))
                    if t in self.eos_ids:
                        finish[orig] = "eos"
                    elif self._stopped(ids_out[orig]):
                        finish[orig] = "stop"
                    else:
                        keep.append(row)
                if cache_keys is not None:
                    leaving = range(len(alive)) if (not keep or step == max_new - 1) else \
                        sorted(set(range(len(alive))) - set(keep))
                    for row in leaving:
                        orig = alive[row]
                        self._keep(cache_keys[orig], fed[orig], past, row, attn[row])
                if not keep or step == max_new - 1:
                    break
                if len(keep) < len(alive):
                    idx = torch.tensor(keep, dtype=torch.long, device=device)
                    past.batch_select_indices(idx)
                    tok, attn, next_pos = tok[idx], attn[idx], next_pos[idx]
                    alive = [alive[r] for r in keep]
                attn = torch.cat([attn, torch.ones((len(alive), 1), dtype=attn.dtype, device=device)], dim=1)
                for row, orig in enumerate(alive):
                    fed[orig].append(ids_out[orig][-1])
                with self._autocast():
                    out = self.model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos,
                                     past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_pos = next_pos + 1
        finally:
            if was_training:
                self.model.train()
        return [Turn(ids_out[i], lps_out[i], self.decode(ids_out[i]), finish[i]) for i in range(n)]

    def _stopped(self, ids: list[int]) -> bool:
        # A stop string is at most a few tokens long: decode only the tail.
        tail = self.tokenizer.decode(ids[-12:], skip_special_tokens=True)
        return any(s in tail for s in self.stop_strings)


class PolicyAgent:
    """An `agents.base.Agent` backed by a `Policy` (greedy by default), for evaluation.

    `act(transcripts, infos)` writes one turn per episode. On an episode's first turn the prompt is
    tokenised once; afterwards only the new environment feedback (the transcript's tail after what
    the agent already holds) is tokenised and appended to the ids the agent keeps for that
    `episode_id`. Sampled ids are kept as they are.
    """

    name = "policy"

    def __init__(self, policy: Policy, greedy: bool = True, seed: int = 0):
        self.policy = policy
        self.greedy = greedy
        self.generator = torch.Generator().manual_seed(int(seed))
        self._state: dict[str, tuple[list[int], int]] = {}  # episode_id -> (ids, transcript chars consumed)

    def reset(self) -> None:
        self.policy.forget(list(self._state))
        self._state.clear()

    def act(self, transcripts: Sequence[str], infos: Sequence[dict[str, Any]]) -> list[str]:
        contexts: list[list[int]] = []
        keys: list[str] = []
        for i, (text, info) in enumerate(zip(transcripts, infos)):
            key = str((info or {}).get("episode_id") or f"#{i}:{hash(text[:200])}")
            ids, used = self._state.get(key, (None, 0))
            if ids is None:
                ids, used = self.policy.prompt_ids(text), len(text)
            elif len(text) > used:
                ids = ids + self.policy.encode(text[used:])
                used = len(text)
            contexts.append(ids)
            keys.append(key)
            self._state[key] = (ids, used)
        turns = self.policy.generate_turns(contexts, greedy=self.greedy, generator=self.generator, cache_keys=keys)
        for key, ctx, turn in zip(keys, contexts, turns):
            _, used = self._state[key]
            self._state[key] = (ctx + turn.ids, used + len(turn.text))
        return [t.text for t in turns]

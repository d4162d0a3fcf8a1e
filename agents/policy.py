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
                 use_chat_template: bool = True):
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

    @torch.no_grad()
    def generate_turns(self, contexts: Sequence[Sequence[int]], greedy: bool = False,
                       generator: torch.Generator | None = None, max_new_tokens: int | None = None) -> list[Turn]:
        """Write one turn for each context (a list of token ids). Sequences that finish leave the
        batch (their KV-cache rows are dropped), so long and short turns cost what they need."""
        if not contexts:
            return []
        if any(len(c) == 0 for c in contexts):
            raise ValueError("every context needs at least one token")
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        device = next(self.model.parameters()).device
        temperature = self.temperature
        if not greedy and temperature <= 0:
            greedy = True
        n = len(contexts)
        width = max(len(c) for c in contexts)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((n, width), dtype=torch.long)
        for i, c in enumerate(contexts):
            input_ids[i, width - len(c):] = torch.tensor(list(c), dtype=torch.long)
            attn[i, width - len(c):] = 1
        input_ids, attn = input_ids.to(device), attn.to(device)
        positions = (attn.cumsum(-1) - 1).clamp(min=0)

        ids_out: list[list[int]] = [[] for _ in range(n)]
        lps_out: list[list[float]] = [[] for _ in range(n)]
        finish = ["length"] * n
        alive = list(range(n))  # original index of each row still in the batch
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                out = self.model(input_ids=input_ids, attention_mask=attn, position_ids=positions, use_cache=True,
                                 logits_to_keep=1)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            next_pos = positions[:, -1:] + 1
            for step in range(max_new):
                if greedy:
                    logp = torch.log_softmax(logits, dim=-1)
                    tok = logp.argmax(dim=-1)
                else:
                    logp = torch.log_softmax(logits / temperature, dim=-1)
                    tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
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
                if not keep or step == max_new - 1:
                    break
                if len(keep) < len(alive):
                    idx = torch.tensor(keep, dtype=torch.long, device=device)
                    past.batch_select_indices(idx)
                    tok, attn, next_pos = tok[idx], attn[idx], next_pos[idx]
                    alive = [alive[r] for r in keep]
                attn = torch.cat([attn, torch.ones((len(alive), 1), dtype=attn.dtype, device=device)], dim=1)
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
        turns = self.policy.generate_turns(contexts, greedy=self.greedy, generator=self.generator)
        for key, ctx, turn in zip(keys, contexts, turns):
            _, used = self._state[key]
            self._state[key] = (ctx + turn.ids, used + len(turn.text))
        return [t.text for t in turns]

"""SPRM: a self-supervised process reward model on the policy's own hidden states.

A small head reads the policy's second-to-last layer hidden state at every *step boundary* of a
trajectory (the last token of each agent turn, and, inside `<think>`, the token that ends a
paragraph "\\n\\n") and scores the step: `s = sigmoid(head(h))`. It is trained only from the
trajectory's final correctness:

* every step score is pushed towards the final label with binary cross-entropy;
* dynamic weighting keeps only the steps whose score already agrees with the label (logit > 0 on
  a correct trajectory, logit < 0 on a wrong one) so that the head is not forced to blame good
  early steps of a trajectory that later went wrong (and vice versa);
* the kept steps are class-balanced: the positive kept steps share the same total weight as the
  negative kept steps.

The head shares the policy backbone: `scale_grad(h, alpha)` passes the head's gradient back into
the backbone multiplied by `alpha` (default 1e-4), so the process loss shapes the policy's
representation only lightly; the head itself gets the full gradient in its own optimizer group
(`head_param_group`).

The trajectory score is the geometric mean of its step scores. It drives best-of-N selection
(`select_best`) and, optionally, reward shaping (`shape_rewards`, weight 0 = off).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_GRAD_SCALE = 1e-4
HEAD_FILE = "sprm_head.pt"


# ----------------------------------------------------------------------------- gradient scaling
class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the incoming gradient by `alpha`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.alpha = float(alpha)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad * ctx.alpha, None


def scale_grad(x: torch.Tensor, alpha: float = DEFAULT_GRAD_SCALE) -> torch.Tensor:
    """`x` unchanged in the forward pass; its gradient is scaled by `alpha` on the way back
    (alpha = 0 detaches the backbone, alpha = 1 is a plain identity)."""
    if alpha < 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    return _ScaleGrad.apply(x, alpha)


# ----------------------------------------------------------------------------- the head
class SPRMHead(nn.Module):
    """Scores a hidden state: `logit = head(h)` with h of size `hidden_size`.

    `mlp_size > 0` gives a two-layer MLP (LayerNorm -> Linear -> GELU -> Linear); `mlp_size = 0` a
    single LayerNorm + Linear probe. The head runs in float32 whatever the backbone's dtype.
    """

    def __init__(self, hidden_size: int, mlp_size: int = 128, dropout: float = 0.0):
        super().__init__()
        if hidden_size < 1:
            raise ValueError("hidden_size must be >= 1")
        self.hidden_size = int(hidden_size)
        self.mlp_size = int(mlp_size)
        self.dropout = float(dropout)
        self.norm = nn.LayerNorm(hidden_size)
        if mlp_size > 0:
            self.net = nn.Sequential(nn.Linear(hidden_size, mlp_size), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(mlp_size, 1))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, 1))
        last = self.net[-1]
        nn.init.zeros_(last.bias)
        nn.init.normal_(last.weight, std=0.01)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of shape h.shape[:-1]."""
        return self.net(self.norm(h.float())).squeeze(-1)

    def config(self) -> dict:
        return {"hidden_size": self.hidden_size, "mlp_size": self.mlp_size, "dropout": self.dropout}

    def save(self, directory: str | Path) -> Path:
        """Write `sprm_head.pt` (config + state dict) into `directory`, or to `directory` itself when
        it names a `.pt` file."""
        path = Path(directory)
        if path.suffix != ".pt":
            path = path / HEAD_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": self.config(), "state_dict": self.state_dict()}, path)
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "SPRMHead":
        path = Path(directory)
        if path.is_dir():
            path = path / HEAD_FILE
        if not path.exists():
            raise FileNotFoundError(f"no SPRM head at {path} (train with sprm enabled first)")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        head = cls(**blob["config"])
        head.load_state_dict(blob["state_dict"])
        return head


def head_param_group(head: SPRMHead, lr: float, weight_decay: float = 0.0) -> dict:
    """The head's own optimizer parameter group (its learning rate is independent of the policy's)."""
    return {"params": list(head.parameters()), "lr": lr, "weight_decay": weight_decay, "name": "sprm_head"}


# ----------------------------------------------------------------------------- step boundaries
def _agent_runs(env_mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive agent tokens (env_mask == 1)."""
    runs, start = [], None
    for i, m in enumerate(env_mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(env_mask)))
    return runs


def step_boundaries(completion_ids: Sequence[int], env_mask: Sequence[int], turn_ends: Sequence[int] | None,
                    tokenizer=None, think_paragraphs: bool = True, paragraph_sep: str = "\n\n",
                    think_open: str = "<think>", think_close: str = "</think>") -> list[int]:
    """Sorted token indices (into `completion_ids`) where a step ends.

    * The end of every agent turn: `turn_ends` holds the index of each turn's LAST agent token
      (None: the last token of every run of agent tokens in `env_mask`).
    * With `think_paragraphs` (needs `tokenizer`): inside `<think>...</think>` of an agent turn,
      the token that completes each `paragraph_sep`. Tokens are decoded one by one, so a
      separator split across two tokens is still found (at the token holding its last character).
    """
    n = len(completion_ids)
    if len(env_mask) != n:
        raise ValueError(f"env_mask has {len(env_mask)} entries for {n} completion tokens")
    runs = _agent_runs(env_mask)
    if turn_ends is None:
        ends = {e - 1 for _, e in runs}
    else:
        ends = set()
        for t in turn_ends:
            t = int(t)
            if not 0 <= t < n:
                raise ValueError(f"turn end {t} is outside the completion (length {n})")
            if not env_mask[t]:
                raise ValueError(f"turn end {t} is an environment token, not an agent token")
            ends.add(t)
    if think_paragraphs:
        if tokenizer is None:
            raise ValueError("think_paragraphs=True needs the tokenizer")
        for start, end in runs:
            ends.update(_paragraph_ends(completion_ids[start:end], start, tokenizer, paragraph_sep,
                                        think_open, think_close))
    return sorted(ends)


def _paragraph_ends(ids: Sequence[int], offset: int, tokenizer, sep: str, think_open: str,
                    think_close: str) -> list[int]:
    pieces = [tokenizer.decode([int(t)]) for t in ids]
    text = "".join(pieces)
    # char position (exclusive end) -> token index holding that char
    owner: list[int] = []
    for k, p in enumerate(pieces):
        owner.extend([k] * len(p))
    found: list[int] = []
    pos = 0
    while True:
        a = text.find(think_open, pos)
        if a < 0:
            break
        body_start = a + len(think_open)
        b = text.find(think_close, body_start)
        body_end = b if b >= 0 else len(text)
        j = text.find(sep, body_start)
        while 0 <= j and j + len(sep) <= body_end:
            last_char = j + len(sep) - 1
            # a separator right before </think> ends the same step as </think>'s turn: keep it anyway,
            # the turn end is a different token.
            found.append(offset + owner[last_char])
            j = text.find(sep, j + len(sep))
        if b < 0:
            break
        pos = b + len(think_close)
    return found


def gather_step_states(hidden: torch.Tensor, positions: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick hidden states at step positions.

    `hidden` is [B, T, H] (e.g. `outputs.hidden_states[-2]`), `positions[b]` the sequence
    positions (in that tensor's coordinates) of row b's steps. Returns (states [S, H],
    step_traj_index [S]) with rows in order.
    """
    rows, cols = [], []
    for b, pos in enumerate(positions):
        for p in pos:
            p = int(p)
            if not 0 <= p < hidden.shape[1]:
                raise ValueError(f"step position {p} outside sequence length {hidden.shape[1]}")
            rows.append(b)
            cols.append(p)
    idx_b = torch.tensor(rows, dtype=torch.long, device=hidden.device)
    idx_t = torch.tensor(cols, dtype=torch.long, device=hidden.device)
    return hidden[idx_b, idx_t], idx_b


def step_logits_from_hidden(head: SPRMHead, hidden: torch.Tensor, positions: Sequence[Sequence[int]],
                            grad_scale: float = DEFAULT_GRAD_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Head logits at the step positions, with the backbone gradient scaled by `grad_scale`."""
    states, traj_index = gather_step_states(hidden, positions)
    return head(scale_grad(states, grad_scale)), traj_index


# ----------------------------------------------------------------------------- the loss
def spr_weights(step_logits: torch.Tensor, step_traj_index: torch.Tensor, labels: torch.Tensor,
                keep_all_when_none_agree: bool = True) -> torch.Tensor:
    """Per-step loss weights (no gradient).

    Dynamic weighting: a step is kept when its logit agrees with its trajectory's label (logit > 0
    on a correct trajectory, logit < 0 on a wrong one); the others get weight 0 (a logit of exactly
    0 agrees with nothing). Class balance: the kept positive steps share the same total weight as
    the kept negative steps (1 / number of classes present), so the weights sum to 1.

    `keep_all_when_none_agree` (default): a class present in the batch with NO agreeing step keeps
    all its steps instead. Without it the head can collapse onto one label: once every score is
    above 0.5, no wrong trajectory's step ever agrees, only positives are trained, and the scores
    run to 1 (seen in a 16-step GRPO run: the mean score went 0.50 -> 0.99).
    """
    with torch.no_grad():
        y = labels.to(step_logits.device).float()[step_traj_index]
        is_pos = y > 0.5
        pos = (step_logits > 0) & is_pos
        neg = (step_logits < 0) & ~is_pos
        if keep_all_when_none_agree:
            if not pos.any():
                pos = is_pos
            if not neg.any():
                neg = ~is_pos
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        classes = (n_pos > 0) + (n_neg > 0)
        w = torch.zeros_like(step_logits, dtype=torch.float32)
        if n_pos:
            w[pos] = 1.0 / (classes * n_pos)
        if n_neg:
            w[neg] = 1.0 / (classes * n_neg)
    return w


def spr_loss(step_logits: torch.Tensor, step_traj_index: torch.Tensor, labels: torch.Tensor,
             dynamic: bool = True, keep_all_when_none_agree: bool = True) -> torch.Tensor:
    """Self-supervised process reward loss.

    `step_logits` [S] are head logits, `step_traj_index` [S] the trajectory of each step and
    `labels` [N] each trajectory's final correctness (1 correct, 0 wrong). Binary cross-entropy of
    every step against its trajectory's label, weighted by `spr_weights` (dynamic=True) or by plain
    class balance over all steps (dynamic=False). No step kept (possible only with
    `keep_all_when_none_agree=False`) -> a zero loss still attached to the graph.
    """
    if step_logits.ndim != 1 or step_traj_index.shape != step_logits.shape:
        raise ValueError("step_logits and step_traj_index must be 1-D tensors of the same length")
    if step_logits.numel() == 0:
        return step_logits.sum() * 0.0
    labels = torch.as_tensor(labels, dtype=torch.float32, device=step_logits.device)
    if ((labels != 0) & (labels != 1)).any():
        raise ValueError("SPRM labels must be 0 or 1")
    y = labels[step_traj_index]
    if dynamic:
        w = spr_weights(step_logits, step_traj_index, labels, keep_all_when_none_agree)
    else:
        w = spr_weights(torch.where(y > 0.5, 1.0, -1.0), step_traj_index, labels)
    bce = F.binary_cross_entropy_with_logits(step_logits.float(), y, reduction="none")
    return (w * bce).sum()


# ----------------------------------------------------------------------------- scores and uses
def trajectory_score(step_scores: torch.Tensor | Sequence[float]) -> float:
    """Geometric mean of one trajectory's step scores (probabilities); NaN when it has no steps."""
    s = torch.as_tensor(step_scores, dtype=torch.float64).flatten()
    if s.numel() == 0:
        return float("nan")
    if ((s < 0) | (s > 1)).any():
        raise ValueError("step scores must be probabilities in [0, 1]")
    if (s == 0).any():
        return 0.0
    return float(torch.exp(torch.log(s).mean()))


def trajectory_scores(step_logits: torch.Tensor, step_traj_index: torch.Tensor, num_trajectories: int) -> torch.Tensor:
    """Geometric mean of sigmoid(step_logits) per trajectory, computed in log space: [N] float64,
    NaN for a trajectory without steps."""
    logs = F.logsigmoid(step_logits.detach().double())
    idx = step_traj_index.to(logs.device)
    total = torch.zeros(num_trajectories, dtype=torch.float64, device=logs.device).index_add_(0, idx, logs)
    count = torch.zeros(num_trajectories, dtype=torch.float64, device=logs.device).index_add_(
        0, idx, torch.ones_like(logs))
    out = torch.exp(total / count.clamp(min=1))
    out[count == 0] = float("nan")
    return out


def shape_rewards(rewards: Sequence[float], scores: Sequence[float], weight: float = 0.0) -> list[float]:
    """Process-reward shaping: `reward + weight * trajectory_score` before group normalisation of
    the advantages (weight 0 = off, the rewards come back unchanged). NaN scores add nothing."""
    if len(rewards) != len(scores):
        raise ValueError(f"{len(rewards)} rewards but {len(scores)} scores")
    if weight == 0.0:
        return [float(r) for r in rewards]
    return [float(r) + (weight * float(s) if math.isfinite(float(s)) else 0.0) for r, s in zip(rewards, scores)]


def select_best(scores: Sequence[float], group_size: int) -> list[int]:
    """Best-of-N: for consecutive groups of `group_size` candidates, the index (into `scores`) of
    the highest score; ties and NaN go to the earliest candidate."""
    if group_size < 1 or len(scores) % group_size:
        raise ValueError(f"{len(scores)} scores do not split into groups of {group_size}")
    best = []
    for g in range(0, len(scores), group_size):
        chosen, top = g, -math.inf
        for i in range(g, g + group_size):
            s = float(scores[i])
            if math.isfinite(s) and s > top:
                chosen, top = i, s
        best.append(chosen)
    return best


# ----------------------------------------------------------------------------- rollouts and training
def trajectory_label(traj, label: str = "em") -> float:
    """Final correctness of a rollout `Trajectory` for the SPR loss: `em` (exact match, default)
    or `f1>=T` (token F1 at least T, e.g. "f1>=0.5")."""
    info = getattr(traj, "info", {}) or {}
    if label == "em":
        return 1.0 if float(info.get("em") or 0.0) >= 1.0 else 0.0
    if label.startswith("f1>="):
        return 1.0 if float(info.get("f1") or 0.0) >= float(label[4:]) else 0.0
    raise ValueError(f"label must be 'em' or 'f1>=T', got {label!r}")


def trajectory_boundaries(traj, tokenizer, think_paragraphs: bool = True, exclude_after: int | None = None) -> list[int]:
    """Step boundaries (completion indices) of a rollout `Trajectory`. Indices at or after
    `exclude_after` (default: `info["post_answer_start"]`, where a confidence or PCL segment written
    after the answer begins) are dropped: SPRM scores the episode's own turns only."""
    ids, mask, ends = traj.completion_ids, traj.env_mask, traj.turn_ends
    if exclude_after is None:
        exclude_after = (getattr(traj, "info", None) or {}).get("post_answer_start")
    if exclude_after is not None:
        ids, mask = ids[:exclude_after], mask[:exclude_after]
        ends = [e for e in ends if e < exclude_after]
    if not any(mask):
        return []
    return step_boundaries(ids, mask, ends or None, tokenizer, think_paragraphs=think_paragraphs)


def _forward_hidden(model, rows: list[list[int]], pad_id: int, hidden_layer: int,
                    autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, : len(r)] = 1
    ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else torch.autocast(device.type, enabled=False))
    with ctx:
        out = model(input_ids=ids.to(device), attention_mask=attn.to(device), output_hidden_states=True,
                    logits_to_keep=1)
    return out.hidden_states[hidden_layer]


@torch.no_grad()
def read_step_states(model, trajs: Sequence, tokenizer, think_paragraphs: bool = True, batch_size: int = 8,
                     hidden_layer: int = -2, autocast_dtype: torch.dtype | None = None,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One no-gradient forward pass of the policy over each rollout `Trajectory` (prompt +
    completion); returns the `hidden_layer` states at its step boundaries (`trajectory_boundaries`)
    as (states [S, H] float32 on the CPU, trajectory index [S]). A trajectory without agent tokens
    has no row."""
    from tqdm.auto import tqdm

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    states, index = [], []
    bar = tqdm(total=len(trajs), desc="step states", unit="traj", disable=not progress)
    try:
        for s in range(0, len(trajs), batch_size):
            part = list(trajs[s:s + batch_size])
            positions = [[len(t.prompt_ids) + b for b in trajectory_boundaries(t, tokenizer, think_paragraphs)]
                         for t in part]
            if any(positions):
                rows = [list(t.prompt_ids) + list(t.completion_ids) for t in part]
                hidden = _forward_hidden(model, rows, pad_id, hidden_layer, autocast_dtype)
                st, ix = gather_step_states(hidden, positions)
                states.append(st.float().cpu())
                index.append(ix.cpu() + s)
            bar.update(len(part))
    finally:
        bar.close()
        model.train(was_training)
    if not states:
        return torch.zeros(0, int(model.config.hidden_size)), torch.zeros(0, dtype=torch.long)
    return torch.cat(states), torch.cat(index)


@torch.no_grad()
def score_states(head: SPRMHead, states: torch.Tensor, traj_index: torch.Tensor, num_trajectories: int) -> list[float]:
    """Trajectory scores (geometric mean of the head's step scores; NaN without steps) from
    states read by `read_step_states`."""
    was_training = head.training
    head.eval()
    try:
        device = next(head.parameters()).device
        logits = head(states.to(device)) if states.shape[0] else torch.zeros(0, device=device)
        return [float(x) for x in trajectory_scores(logits, traj_index.to(device), num_trajectories)]
    finally:
        head.train(was_training)


def score_trajectories(model, head: SPRMHead, trajs: Sequence, tokenizer, think_paragraphs: bool = True,
                       batch_size: int = 8, hidden_layer: int = -2, autocast_dtype: torch.dtype | None = None,
                       store: bool = True) -> list[float]:
    """SPRM trajectory score (geometric mean of step scores) of each rollout `Trajectory`, from a
    forward pass of the policy over prompt + completion (NaN for a trajectory without agent tokens).
    With `store` (default) the score is also kept in `traj.info["sprm_score"]`."""
    states, index = read_step_states(model, trajs, tokenizer, think_paragraphs, batch_size, hidden_layer,
                                     autocast_dtype)
    scores = score_states(head, states, index, len(trajs))
    for t, sc in zip(trajs, scores if store else []):
        if getattr(t, "info", None) is not None:
            t.info["sprm_score"] = sc
    return scores


class SPRMLoss:
    """The SPR loss as a GRPO plug-in (`extra_loss_fns` of `agents.grpo.grpo_update`).

    Called as `fn(model, batch)` on every micro-batch. It reads `batch.hidden_states` when the
    trainer provides the policy's second-to-last layer over the completion positions (`grpo_update(...,
    need_hidden=True, hidden_layer=-2)`); otherwise it runs its own forward pass. The backbone's
    gradient is scaled by `grad_scale`; the loss is multiplied by `weight`. The figures of the last
    call are kept in `self.last` (kept steps, positives, mean score).
    """

    def __init__(self, head: SPRMHead, tokenizer, weight: float = 1.0, grad_scale: float = DEFAULT_GRAD_SCALE,
                 think_paragraphs: bool = True, label: str = "em", pad_id: int | None = None,
                 dynamic: bool = True):
        self.head = head
        self.tokenizer = tokenizer
        self.weight = float(weight)
        self.grad_scale = float(grad_scale)
        self.think_paragraphs = think_paragraphs
        self.label = label
        self.pad_id = pad_id
        self.dynamic = dynamic
        self.last: dict[str, float] = {}
        # Trajectory scores computed inside the loss, BEFORE the optimiser step that uses this batch:
        # predictions on rollouts the head has not trained on (held-out), with their labels.
        self.pre_update_scores: list[float] = []
        self.pre_update_labels: list[float] = []
        self.__name__ = "sprm_loss"

    def pop_pre_update(self) -> tuple[list[float], list[float]]:
        """The (scores, labels) recorded since the last call, then forget them."""
        out = (self.pre_update_scores, self.pre_update_labels)
        self.pre_update_scores, self.pre_update_labels = [], []
        return out

    def __call__(self, model, batch) -> torch.Tensor:
        trajs = batch.trajectories
        bounds = [trajectory_boundaries(t, self.tokenizer, self.think_paragraphs) for t in trajs]
        labels = torch.tensor([trajectory_label(t, self.label) for t in trajs], dtype=torch.float32)
        hidden = getattr(batch, "hidden_states", None)
        if hidden is not None and getattr(batch, "hidden_layer", None) == -2:
            positions = bounds  # hidden covers the completion positions only
        else:
            pad = self.pad_id if self.pad_id is not None else (self.tokenizer.pad_token_id or 0)
            rows = [list(t.prompt_ids) + list(t.completion_ids) for t in trajs]
            hidden = _forward_hidden(model, rows, pad, -2)
            positions = [[len(t.prompt_ids) + b for b in bs] for t, bs in zip(trajs, bounds)]
        if not any(positions):
            self.last = {"sprm_steps": 0.0, "sprm_kept": 0.0}
            return torch.zeros((), device=hidden.device)
        logits, traj_index = step_logits_from_hidden(self.head, hidden, positions, self.grad_scale)
        loss = spr_loss(logits, traj_index, labels.to(logits.device), dynamic=self.dynamic)
        with torch.no_grad():
            kept = spr_weights(logits, traj_index, labels.to(logits.device)) > 0
            y = labels.to(logits.device)[traj_index]
            traj_scores = trajectory_scores(logits, traj_index, len(trajs))
            for sc, lab in zip(traj_scores.tolist(), labels.tolist()):
                if math.isfinite(sc):
                    self.pre_update_scores.append(sc)
                    self.pre_update_labels.append(lab)
            self.last = {"sprm_loss": float(loss), "sprm_steps": float(logits.numel()), "sprm_kept": float(kept.sum()),
                         "sprm_pos_rate": float(y.mean()),
                         "sprm_acc": float(((logits > 0).float() == y).float().mean())}
        return self.weight * loss


def _mean_se(xs: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean (None with fewer than 2 values)."""
    mean = sum(xs) / len(xs) if xs else 0.0
    se = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else None
    return mean, se


def selection_by_score(scores: Sequence[float], em: Sequence[float], n: int,
                       greedy_em: Sequence[float] | None = None) -> dict:
    """Best-of-N by `scores` over consecutive groups of `n` samples: `best_of_n_em`, `sprm_auroc`
    (scores vs EM over all samples with a finite score; None with one class), and the paired
    gain over one sample: per group, the chosen sample's EM minus the group's mean EM, as
    `gain_over_best_of_1` with its standard error `gain_se` (None with fewer than 2 groups).
    With `greedy_em` (one EM per group: greedy decoding of the same policy on the same question,
    the stronger baseline) also `gain_over_greedy` (chosen EM minus greedy EM, paired per question)
    and `gain_over_greedy_se`."""
    from agents.calibration import auroc

    idx = select_best(scores, n)
    finite = [i for i, sc in enumerate(scores) if math.isfinite(sc)]
    mean, se = _mean_se([em[i] - sum(em[g * n:(g + 1) * n]) / n for g, i in enumerate(idx)])
    out = {"best_of_n_em": sum(em[i] for i in idx) / len(idx) if idx else 0.0,
           "sprm_auroc": auroc([scores[i] for i in finite], [em[i] for i in finite]) if finite else None,
           "gain_over_best_of_1": mean, "gain_se": se}
    if greedy_em is not None:
        if len(greedy_em) != len(idx):
            raise ValueError(f"greedy_em has {len(greedy_em)} values for {len(idx)} groups")
        g_mean, g_se = _mean_se([em[i] - float(greedy_em[g]) for g, i in enumerate(idx)])
        out.update({"greedy_em": sum(map(float, greedy_em)) / len(greedy_em) if greedy_em else 0.0,
                    "gain_over_greedy": g_mean, "gain_over_greedy_se": g_se})
    return out


def best_of_n(policy, head: SPRMHead, vec_env, tasks: Sequence, n: int, step: int = 0,
              generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None,
              think_paragraphs: bool = True, confidence: bool = False,
              other_heads: dict[str, SPRMHead] | None = None, keep_samples: bool = False,
              progress: bool = False, greedy_em: Sequence[float] | None = None) -> tuple[list, dict]:
    """Best-of-N with SPRM: sample `n` trajectories per task (`vec_env` holds a multiple of `n`
    sub-envs), score each with the head, keep the highest-scoring one per task.

    Returns (chosen trajectories, figures): `best_of_1_em` (mean EM over all samples: the
    expected EM of one sample), `best_of_n_em` (EM of the chosen ones), `pass_at_n` (some sample
    correct), `first_sample_em`, and `sprm_auroc` (trajectory score vs EM over all samples; None
    with one class only). With `confidence=True` the policy writes `<confidence>` greedily after
    each answer first (`agents.calibration.add_confidence`) and `calibration` (ECE/Brier/AUROC of
    the chosen trajectories' confidences) and `calibration_all_samples` are added. `other_heads`
    (name -> head) score the same samples too: `other_heads[name]` holds each one's
    `selection_by_score` figures, a paired comparison of heads. `keep_samples` adds one record per
    sample (task id, EM, every head's score under its name, "" for `head`; stated confidence).
    `greedy_em` (one EM per task, greedy decoding of the same policy) adds the paired gain over
    greedy decoding (`selection_by_score`).
    """
    from agents.calibration import add_confidence, calibration_report
    from agents.rollout import collect_groups

    if n < 1 or vec_env.num_envs % n:
        raise ValueError(f"the vector env's {vec_env.num_envs} sub-envs are not a multiple of n={n}")
    tasks = list(tasks)
    trajs = collect_groups(policy, vec_env, tasks, n, step, generator=generator, salt="best-of", progress=progress,
                           desc=f"best-of-{n} samples")
    if confidence:
        add_confidence(policy, trajs, greedy=True)
    states, index = read_step_states(policy.model, trajs, policy.tokenizer, think_paragraphs,  # read once,
                                     autocast_dtype=autocast_dtype, progress=progress)  # scored by every head
    scores = score_states(head, states, index, len(trajs))
    for t, sc in zip(trajs, scores):
        t.info["sprm_score"] = sc
    em = [1.0 if float(t.info.get("em") or 0.0) >= 1.0 else 0.0 for t in trajs]
    chosen_idx = select_best(scores, n)
    chosen = [trajs[i] for i in chosen_idx]
    groups = [em[g * n:(g + 1) * n] for g in range(len(tasks))]
    figures = {
        "tasks": len(tasks), "n": n, "trajectories": len(trajs), "correct_samples": int(sum(em)),
        "best_of_1_em": sum(em) / len(em) if em else 0.0,
        "pass_at_n": sum(max(g) for g in groups) / len(groups) if groups else 0.0,
        "first_sample_em": sum(g[0] for g in groups) / len(groups) if groups else 0.0,
        **selection_by_score(scores, em, n, greedy_em),
    }
    named = {"": scores}
    if other_heads:
        figures["other_heads"] = {}
        for name, other in other_heads.items():
            named[name] = score_states(other, states, index, len(trajs))
            figures["other_heads"][name] = selection_by_score(named[name], em, n, greedy_em)
    if keep_samples:
        figures["samples"] = [{"task_id": t.info.get("task_id"), "em": e, "scores": {k: v[i] for k, v in named.items()},
                               "confidence": t.info.get("confidence")} for i, (t, e) in enumerate(zip(trajs, em))]
    if confidence:
        for key, pool in (("calibration", chosen), ("calibration_all_samples", trajs)):
            answered = [t for t in pool if t.info.get("answered")]
            rep = calibration_report([t.info.get("confidence") for t in answered],
                                     [float(t.info.get("em") or 0.0) for t in answered])
            rep.pop("bins", None)
            figures[key] = rep
    figures["answer_rate"] = sum(bool(t.info.get("answered")) for t in trajs) / len(trajs) if trajs else 0.0
    return chosen, figures

"""Fitting the SPRM head offline on the policy's own rollouts (a head warm-up or refit).

Online, the SPR loss trains the head from each GRPO step's few rollouts: a tiny CPU run of 12 steps
shows it 96 trajectories, and its held-out AUROC stayed near 0.6. Here the policy is frozen and
the head gets far more data:

1. sample `samples` trajectories for each of many *training* questions (`agents.rollout.collect_groups`);
2. label each by its final correctness and read the policy's step states once, without gradient
   (`extract_step_states`: the same boundaries and hidden layer as `agents.sprm`);
3. train the head for many epochs on those states (`fit_head`), holding out whole questions, and
   keep the epoch with the best held-out AUROC.

`dynamic=False` (the default here) weights the steps by plain class balance. Dynamic weighting
(`agents.sprm.spr_weights`) keeps only the steps whose score already agrees with the label; from a
freshly initialised head that is a random half of the steps, and training then reinforces the
head's random first opinion. On 640 rollouts of a tiny-preset checkpoint (5-fold cross-validation
over questions), dynamic weighting from scratch gave an AUROC of 0.45-0.54 and plain class balance
0.76-0.82. Dynamic weighting is meant for a head that already ranks: once fitted here, the
online SPR loss can keep it.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from agents.calibration import auroc
from agents.sprm import SPRMHead, read_step_states, score_states, select_best, spr_loss, trajectory_label


@dataclass
class StepStates:
    """Step hidden states of a set of trajectories, with their labels.

    `states` [S, H] float32 (CPU), `traj_index` [S] the trajectory of each step, `labels` [N] the
    final correctness of each trajectory (0/1), `questions` [N] the task id of each trajectory
    (held-out splits keep a question's samples together). A trajectory without steps has no row.
    """

    states: torch.Tensor
    traj_index: torch.Tensor
    labels: torch.Tensor
    questions: list[str]

    def __post_init__(self):
        if self.states.ndim != 2 or self.traj_index.shape != (self.states.shape[0],):
            raise ValueError("states must be [S, H] and traj_index [S]")
        if len(self.questions) != self.labels.numel():
            raise ValueError(f"{len(self.questions)} questions for {self.labels.numel()} labels")
        if self.traj_index.numel() and int(self.traj_index.max()) >= self.labels.numel():
            raise ValueError("a step points past the last trajectory")

    @property
    def num_trajectories(self) -> int:
        return int(self.labels.numel())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"states": self.states, "traj_index": self.traj_index, "labels": self.labels,
                    "questions": list(self.questions)}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "StepStates":
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls(blob["states"], blob["traj_index"], blob["labels"], list(blob["questions"]))


def extract_step_states(model, trajs: Sequence, tokenizer, label: str = "em", think_paragraphs: bool = True,
                        batch_size: int = 8, hidden_layer: int = -2, autocast_dtype: torch.dtype | None = None,
                        progress: bool = False) -> StepStates:
    """The (frozen) policy's step states of each rollout `Trajectory` (`agents.sprm.read_step_states`)
    with its label and question."""
    if not trajs:
        raise ValueError("no trajectories to read step states from")
    states, index = read_step_states(model, trajs, tokenizer, think_paragraphs, batch_size, hidden_layer,
                                     autocast_dtype, progress)
    return StepStates(states, index, torch.tensor([trajectory_label(t, label) for t in trajs], dtype=torch.float32),
                      [t.task.id if getattr(t, "task", None) is not None else str(t.info.get("task_id")) for t in trajs])


def split_questions(questions: Sequence[str], val_fraction: float, seed: int = 0) -> torch.Tensor:
    """A [N] bool mask of the trajectories whose question is held out: a seeded `val_fraction` of
    the distinct questions (at least one, and at least one left to train on, when there are two or
    more and val_fraction > 0)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    distinct = sorted(set(questions))
    random.Random(seed).shuffle(distinct)
    k = round(val_fraction * len(distinct))
    if val_fraction > 0 and len(distinct) >= 2:
        k = min(max(k, 1), len(distinct) - 1)
    held = set(distinct[:k])
    return torch.tensor([q in held for q in questions], dtype=torch.bool)


def selection_figures(scores: Sequence[float], labels: Sequence[float], questions: Sequence[str]) -> dict:
    """Best-of-N by score within each question's samples: `best_of_n_em` (the top-scored sample's
    label; ties and NaN to the first), `best_of_1_em` (mean label), `pass_at_n`, `questions`."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for s, y, q in zip(scores, labels, questions):
        groups.setdefault(q, []).append((float(s), float(y)))
    if not groups:
        return {"questions": 0, "best_of_n_em": None, "best_of_1_em": None, "pass_at_n": None}
    best = sum(items[select_best([s for s, _ in items], len(items))[0]][1] for items in groups.values())
    n_all = sum(len(v) for v in groups.values())
    return {"questions": len(groups), "best_of_n_em": best / len(groups),
            "best_of_1_em": sum(y for v in groups.values() for _, y in v) / n_all,
            "pass_at_n": sum(max(y for _, y in v) for v in groups.values()) / len(groups)}


def _auroc_on(scores: Sequence[float], labels: torch.Tensor, mask: torch.Tensor) -> float | None:
    idx = [i for i in range(len(scores)) if mask[i] and math.isfinite(scores[i])]
    return auroc([scores[i] for i in idx], [float(labels[i]) for i in idx]) if idx else None


def fit_head(head: SPRMHead, data: StepStates, epochs: int = 300, lr: float = 1e-3, weight_decay: float = 0.01,
             dynamic: bool = False, val_fraction: float = 0.2, eval_every: int = 10, seed: int = 0,
             progress: bool = False) -> dict:
    """Train `head` in place on `data` with the SPR loss (full batch, AdamW) and keep the weights
    of the evaluation with the best held-out AUROC (the last one when no held-out set has both
    classes). Returns a report: `history` (epoch, loss, train/val AUROC), `best_epoch`,
    `train_auroc`, `val_auroc`, `val_selection` (best-of-N on the held-out questions) and the
    sizes. The held-out AUROC chose the epoch, so it is optimistic: measure on test rollouts."""
    from tqdm.auto import tqdm

    if epochs < 1 or eval_every < 1:
        raise ValueError("epochs and eval_every must be >= 1")
    if data.states.shape[0] == 0:
        raise ValueError("no step states to fit the head on (no trajectory has an agent turn)")
    if data.states.shape[1] != head.hidden_size:
        raise ValueError(f"states have {data.states.shape[1]} features; the head expects {head.hidden_size}")
    classes = set(data.labels.tolist())
    if classes != {0.0, 1.0}:
        raise ValueError(f"the rollouts need correct and wrong trajectories to fit on; all are labelled {classes}")
    torch.manual_seed(seed)
    device = next(head.parameters()).device
    head.cpu()
    val = split_questions(data.questions, val_fraction, seed)
    train_steps = ~val[data.traj_index]
    x, ix = data.states[train_steps], data.traj_index[train_steps]
    if set(data.labels[~val].tolist()) != {0.0, 1.0}:
        raise ValueError("the training questions' rollouts hold one class only; sample more questions")
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    best_state, best_key, best_epoch = None, -math.inf, 0
    bar = tqdm(range(1, epochs + 1), desc="fit SPRM head", unit="epoch", disable=not progress)
    for epoch in bar:
        head.train()
        loss = spr_loss(head(x), ix, data.labels, dynamic=dynamic)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if epoch % eval_every and epoch != epochs:
            continue
        head.eval()
        scores = score_states(head, data.states, data.traj_index, data.num_trajectories)
        row = {"epoch": epoch, "loss": float(loss.detach()), "train_auroc": _auroc_on(scores, data.labels, ~val),
               "val_auroc": _auroc_on(scores, data.labels, val)}
        history.append(row)
        key = row["val_auroc"] if row["val_auroc"] is not None else -math.inf
        if best_state is None or key > best_key or (key == best_key == -math.inf):
            best_state, best_key, best_epoch = copy.deepcopy(head.state_dict()), key, epoch
        bar.set_postfix(loss=f"{row['loss']:.3f}", val_auroc=f"{row['val_auroc'] or float('nan'):.3f}")
    head.load_state_dict(best_state)
    head.eval()
    best = next(r for r in history if r["epoch"] == best_epoch)
    scores = score_states(head, data.states, data.traj_index, data.num_trajectories)
    head.to(device)
    held = [i for i in range(data.num_trajectories) if val[i]]
    return {
        "trajectories": data.num_trajectories, "steps": int(data.states.shape[0]),
        "questions": len(set(data.questions)), "val_questions": len({data.questions[i] for i in held}),
        "positive_rate": float(data.labels.mean()), "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
        "dynamic": dynamic, "best_epoch": best_epoch, "train_auroc": best["train_auroc"], "val_auroc": best["val_auroc"],
        "val_selection": selection_figures([scores[i] for i in held], [float(data.labels[i]) for i in held],
                                           [data.questions[i] for i in held]),
        "history": history,
    }


def plot_fit(report: dict, path: str | Path) -> Path:
    """Loss and train/held-out AUROC against epoch, with the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = report["history"]
    epochs = [r["epoch"] for r in h]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epochs, [r["loss"] for r in h])
    a.set_xlabel("epoch")
    a.set_ylabel("SPR loss (training questions)")
    for key, name in (("train_auroc", "training questions"), ("val_auroc", "held-out questions")):
        b.plot(epochs, [float("nan") if r[key] is None else r[key] for r in h], label=name)
    b.axvline(report["best_epoch"], color="grey", linestyle=":", label=f"kept (epoch {report['best_epoch']})")
    b.axhline(0.5, color="black", linewidth=0.5)
    b.set_xlabel("epoch")
    b.set_ylabel("AUROC of trajectory score vs EM")
    b.legend(fontsize=8)
    fig.suptitle(f"SPRM head fit: {report['trajectories']} rollouts of {report['questions']} questions")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""`MetricsLogger`: one metrics row per training step, to `metrics.jsonl` and to the trackers in
`report_to` ("tensorboard", "wandb").

Both trainers (our GRPO loop and TRL's) write their rows through `log(row)`, so every tracker gets
the same figures as `metrics.jsonl`: each number in the row (booleans and `step` aside) becomes a
scalar named `<phase>/<key>` (e.g. `grpo/em`, `warmup/loss`) at x = the row's `step`.
TensorBoard events go to `<run>/tensorboard/`; a resumed run purges the events from its first
step on, so the steps it recomputes are not drawn twice. W&B runs in the mode its own `WANDB_MODE`
environment variable sets (`offline` writes under `<run>/wandb/` without a network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

TRACKERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numbers as tracker scalars `<phase>/<key>` (booleans and `step` are left out)."""
    phase = row.get("phase", "train")
    return {f"{phase}/{k}": float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MetricsLogger:
    """Appends rows to `run_dir/metrics.jsonl` and forwards their scalars to the `report_to` trackers.

    `kept_rows` (a resumed run's rows before its checkpoint) are written first, replacing the
    file. `config` is recorded with the W&B run. Raises ImportError naming the package to install
    when a requested tracker is missing, ValueError for an unknown one."""

    def __init__(self, run_dir: str | Path, report_to: Sequence[str] = (), kept_rows: Sequence[dict] = (),
                 config: dict | None = None):
        unknown = sorted(set(report_to) - set(TRACKERS))
        if unknown:
            raise ValueError(f"report_to: unknown tracker(s) {unknown}; choose from {list(TRACKERS)}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        with open(self.path, "w", encoding="utf-8") as f:
            for r in kept_rows:
                f.write(json.dumps(r) + "\n")
        first_step = max((int(r["step"]) + 1 for r in kept_rows if "step" in r), default=0)
        self._tb = None
        if "tensorboard" in report_to:
            self._tb = _tensorboard_writer(self.run_dir / TENSORBOARD_DIR, first_step)
        self._wandb = _wandb_run(self.run_dir, config) if "wandb" in report_to else None

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        values = scalars(row)
        step = int(row.get("step", 0))
        if self._tb is not None:
            for tag, v in values.items():
                self._tb.add_scalar(tag, v, global_step=step)
            self._tb.flush()  # a crashed run keeps every row it logged, as metrics.jsonl does
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _tensorboard_writer(log_dir: Path, first_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("report_to 'tensorboard' needs the tensorboard package: pip install tensorboard "
                          "(or the zerosearch-env[trackers] extra)") from e
    # purge_step drops events at or after the resumed run's first step, written before an interruption
    return SummaryWriter(log_dir=str(log_dir), purge_step=first_step if first_step > 0 else None)


def _wandb_run(run_dir: Path, config: dict | None):
    try:
        import wandb
    except ImportError as e:
        raise ImportError("report_to 'wandb' needs the wandb package: pip install wandb "
                          "(or the zerosearch-env[trackers] extra)") from e
    return wandb.init(project="zerosearch", name=run_dir.name, dir=str(run_dir), config=config or {})

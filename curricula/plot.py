"""Draw a curriculum's noise probability over training steps as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from curricula.base import Curriculum


def plot_curriculum(curriculum: Curriculum | Mapping[str, Curriculum], steps: int | Sequence[int],
                    path: str | Path, title: str | None = None) -> Path:
    """Plot p(step) for step in range(steps + 1) (or the given steps) and save a PNG at `path`.
    Pass a mapping name -> curriculum to draw several on one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(int(steps) + 1)) if isinstance(steps, int) else [int(s) for s in steps]
    if not xs:
        raise ValueError("steps must not be empty")
    curves = dict(curriculum) if isinstance(curriculum, Mapping) else {repr(curriculum): curriculum}
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for label, c in curves.items():
        ax.plot(xs, [c.probability(s) for s in xs], label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("P(noisy search)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "noise curriculum")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out

"""PNG plots of runs: accuracy against epoch (BTKD Fig. 4 style); :func:`save_figure` for every PNG.

The plug-in's statistics are plotted by :mod:`beyondkd.bench.plots` (``beyondkd report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

History = Sequence[Mapping[str, Any]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(
    runs: Mapping[str, History],
    path: str | Path,
    title: str = "Validation accuracy",
    teacher_acc: float | None = None,
    key: str = "val_acc",
) -> Path:
    """One line per run of ``key`` (percent) against epoch; the teacher as a dashed line.

    Args:
        runs: label -> list of epoch records (``metrics.jsonl`` lines).
        path: the PNG to write.
        teacher_acc: the teacher's accuracy, drawn as a horizontal reference.
        key: which record field to plot.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, history in runs.items():
        pts = [(r["epoch"] + 1, r[key]) for r in history if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, label=label)
    if teacher_acc is not None:
        ax.axhline(teacher_acc, color="black", linestyle="--", linewidth=1, label=f"teacher ({teacher_acc:.2f})")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (creating folders) and release it."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

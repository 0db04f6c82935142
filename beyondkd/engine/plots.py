"""PNG plots of runs: accuracy against epoch (BTKD Fig. 4 style), and the shared pieces of
every run plot (whole-epoch axis, legend under the panels, :func:`save_figure`).

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


def epoch_axis(ax: Any) -> None:
    """Whole epochs on the x axis: a run of one epoch gets the single tick 1, not 0.96 ... 1.04."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    lo, hi = ax.get_xlim()
    if hi - lo < 1.0:
        mid = (lo + hi) / 2.0
        ax.set_xlim(mid - 0.5, mid + 0.5)


def legend_below(fig: Any, axes: Sequence[Any], fontsize: float = 8, ncols: int | None = None) -> None:
    """One legend for ``axes`` (entries of equal label once), under the panels so it covers no data.

    Needs a figure made with ``layout="constrained"``, which keeps room for it. Entries fill
    ``ncols`` columns (default up to 3) top to bottom.
    """
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=fontsize,
                   ncols=ncols or min(len(entries), 3), frameon=False)


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
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120, layout="constrained")
    for label, history in runs.items():
        pts = [(r["epoch"] + 1, r[key]) for r in history if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, label=label)
    if teacher_acc is not None:
        ax.axhline(teacher_acc, color="black", linestyle="--", linewidth=1, label=f"teacher ({teacher_acc:.2f})")
    epoch_axis(ax)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    legend_below(fig, [ax])
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out ``fig`` (unless it has a layout engine), write it to ``path`` (creating folders) and release it."""
    plt = _pyplot()
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

"""Plots of the bias plug-in's statistics over training, read from ``metrics.jsonl``.

What the trainer logs per epoch (``engine/trainer.py`` from the plug-in's stats in
``bias/loss.py``): ``rows`` (training rows seen), ``rows_right`` (the teacher's top class is the
label), ``rows_rectified`` and ``rows_rectified_top_is_label`` (counts over the epoch, with
``frac_*`` = count / rows), ``gamma`` (the *mean* of the per-step γ over the epoch's steps) and
``gamma_last`` (γ at the epoch's last step). γ is 0 when the plug-in has no dynamic schedule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from beyondkd.engine.plots import _pyplot, epoch_axis, legend_below, save_figure

History = Sequence[Mapping[str, Any]]

BIAS_KEYS = ("rows_right", "rows_rectified", "gamma")


def has_bias_stats(history: History) -> bool:
    """True when a run logged the plug-in's statistics."""
    return any(k in r for r in history for k in BIAS_KEYS)


def rectified_top_is_label_share(record: Mapping[str, Any]) -> float | None:
    """Of the rows rectified in an epoch, the fraction whose top class became the label."""
    n = record.get("rows_rectified")
    k = record.get("rows_rectified_top_is_label")
    if n is None or k is None or n <= 0:
        return None
    return float(k) / float(n)


def _series(history: History, get) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in history:
        v = get(r)
        if v is not None:
            xs.append(int(r["epoch"]) + 1)
            ys.append(float(v))
    return xs, ys


def plot_bias_statistics(runs: Mapping[str, History], path: str | Path, title: str = "Bias plug-in statistics over training") -> Path:
    """Four panels per epoch, one line per run: teacher right, rectified, rectified → label, γ."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(15, 4.2), dpi=120, layout="constrained")
    panels = (
        ("training rows the teacher gets right", "fraction of rows", lambda r: r.get("frac_right")),
        ("training rows rectified", "fraction of rows", lambda r: r.get("frac_rectified")),
        ("rectified rows whose top class is now the label", "fraction of rectified rows", rectified_top_is_label_share),
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, ylabel, get) in zip(axes, panels):
        for i, (label, history) in enumerate(runs.items()):
            xs, ys = _series(history, get)
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, color=colors[i % len(colors)], label=label)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(ylabel)
    ax = axes[3]
    for i, (label, history) in enumerate(runs.items()):
        c = colors[i % len(colors)]
        xs, ys = _series(history, lambda r: r.get("gamma"))
        if xs:
            ax.plot(xs, ys, marker="o", markersize=3, color=c, label=f"{label}: mean over the epoch")
        xs, ys = _series(history, lambda r: r.get("gamma_last"))
        if xs:
            ax.plot(xs, ys, linestyle="--", color=c, label=f"{label}: at the epoch's last step")
    ax.set_title("γ (0 without a dynamic schedule)", fontsize=9)
    ax.set_ylim(-0.05, 1.05)
    for ax in axes:
        epoch_axis(ax)
        ax.grid(alpha=0.3)
    legend_below(fig, [axes[3]], ncols=min(len(runs), 4))  # under the panels (a column per run): it covers none
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_gain_vs_wrong_rows(comparisons: Sequence[Any], path: str | Path,
                            title: str = "The plug-in's gain over KD against the teacher's wrong rows") -> Path:
    """One panel per CE/KD weighting: Δ best accuracy over KD (± 2σ) against the fraction of the
    student's training rows the teacher gets wrong, one series per plug-in setting.

    Args:
        comparisons: :class:`beyondkd.bench.evidence.Comparison` items (``teacher_wrong`` set).
        path: the PNG to write.
    """
    plt = _pyplot()
    weights = sorted({c.weights for c in comparisons})
    settings = list(dict.fromkeys(c.setting for c in comparisons))
    fig, axes = plt.subplots(1, max(len(weights), 1), figsize=(6.2 * max(len(weights), 1), 4.8), dpi=120, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*Xh<>"
    for ax, w in zip(axes[0], weights):
        for i, setting in enumerate(settings):
            pts = sorted((100 * c.teacher_wrong, c.delta, 2 * (c.noise or 0.0)) for c in comparisons
                         if c.weights == w and c.setting == setting and c.teacher_wrong is not None)
            if not pts:
                continue
            xs, ys, err = zip(*pts)
            # a small horizontal offset per setting keeps the error bars apart
            shift = (i - (len(settings) - 1) / 2) * 0.12
            ax.errorbar([x + shift for x in xs], ys, yerr=err, marker=markers[i % len(markers)], markersize=4,
                        linewidth=1, capsize=2, color=colors[i % len(colors)], label=setting)
        ax.axhline(0.0, color="black", linewidth=1)
        ax.set_xlabel("teacher wrong on the student's training rows (%)")
        ax.set_ylabel("best accuracy − KD's (points, ± 2σ)")
        ax.set_title(f"CE/KD weights {w}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    fig.suptitle(title)
    return save_figure(fig, path)

"""Plots: whole-epoch ticks (also for a 1-epoch run) and legends that never cover the data."""

from __future__ import annotations

import pytest

import beyondkd.bench.plots as bench_plots
import beyondkd.engine.plots as engine_plots


def _capture(monkeypatch, module):
    """Keep the figures a plotting module saves (laid out and written as usual), for inspection."""
    figures = []
    real = engine_plots.save_figure

    def save(fig, path):
        figures.append(fig)
        out = real(fig, path)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig).draw()  # the closed figure drawn again: extents as in the PNG
        return out

    monkeypatch.setattr(module, "save_figure", save)
    return figures


def _history(epochs: int, plugin: bool = False) -> list[dict]:
    rows = []
    for e in range(epochs):
        r = {"epoch": e, "val_acc": 50.0 + e}
        if plugin:
            r.update(rows=100, rows_right=80, frac_right=0.8, rows_rectified=20, frac_rectified=0.2,
                     rows_rectified_top_is_label=10, gamma=0.5, gamma_last=0.6)
        rows.append(r)
    return rows


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends(fig):
    return [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_accuracy_plot_has_whole_epoch_ticks_and_its_legend_off_the_axes(epochs, tmp_path, monkeypatch):
    figures = _capture(monkeypatch, engine_plots)
    engine_plots.plot_accuracy({"KD": _history(epochs), "CE": _history(epochs)}, tmp_path / "a.png", teacher_acc=80.0)
    fig = figures[0]
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert 1 in ticks and epochs in ticks
    renderer = fig.canvas.get_renderer()
    legends = _legends(fig)
    assert legends
    for legend in legends:
        assert not _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("epochs", [1, 3])
def test_bias_statistics_legend_covers_no_panel(epochs, tmp_path, monkeypatch):
    figures = _capture(monkeypatch, bench_plots)
    bench_plots.plot_bias_statistics({"KD + BTKD (paper)": _history(epochs, True), "KD + BTKD (strict)": _history(epochs, True)},
                                     tmp_path / "b.png")
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    legends = _legends(fig)
    assert legends
    for legend in legends:
        for ax in fig.axes:
            assert not _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer)), ax.get_title()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert all(float(t).is_integer() for t in ax.get_xticks() if lo <= t <= hi)

"""The gain of each plug-in setting over KD across regimes, and the default it implies."""

from __future__ import annotations

import pytest
from PIL import Image

from beyondkd.bench.evidence import Comparison, choose_default, comparisons, promotable, summarize
from beyondkd.bench.plots import plot_gain_vs_wrong_rows


def _row(label, plugin, mean, std, n=3, baseline=("KD",), weights="0.1/0.9", delta=None, noise=None):
    return {"label": label, "plugin": plugin, "weights": weights, "baseline": list(baseline),
            "best": {"mean": mean, "std": std, "n": n}, "delta_best": delta, "delta_best_noise": noise, "delta_last": delta}


def _group(name, right, rows):
    return {"name": name, "teacher_right_on_train_rows": {"mean": right, "std": 0.0, "n": 3}, "rows": rows}


def test_comparisons_pair_each_plug_in_row_with_its_kd_baseline():
    table = {"groups": [_group("(a)", 0.93, [
        _row("KD", None, 90.0, 0.1, n=5, baseline=("student (CE)",), delta=1.0, noise=0.1),
        _row("KD + paper", "paper", 89.0, 0.2, delta=-1.0, noise=0.15),
        _row("student (CE)", None, 89.0, 0.1, n=5, baseline=()),
    ])]}
    comps = comparisons([table])
    assert len(comps) == 1  # KD vs CE is not a plug-in comparison
    c = comps[0]
    assert (c.regime, c.setting, c.delta, c.noise) == ("(a)", "paper", -1.0, 0.15)
    assert c.teacher_wrong == pytest.approx(0.07) and c.seeds == (3, 5)
    assert c.loses and not c.wins


def _c(setting, delta, noise, regime="r", weights="0.1/0.9", wrong=0.1):
    return Comparison(regime, setting, weights, setting, delta, noise, delta, wrong, (3, 5))


def test_the_default_is_the_best_mean_preset_that_never_loses_by_more_than_the_noise():
    comps = [
        _c("paper", 0.9, 0.2, "a"), _c("paper", -0.8, 0.2, "b"),                      # best mean? no: loses in b
        _c("eliminate-only", 0.3, 0.2, "a"), _c("eliminate-only", 0.1, 0.2, "b"),
        _c("constant", 0.2, 0.2, "a"), _c("constant", 0.0, 0.2, "b"),
        _c("custom (constant + variant=toward_label)", 0.9, 0.2, "a"), _c("custom (constant + variant=toward_label)", 0.1, 0.2, "b"),
        _c("custom (eliminate-only + row_weight=wsl)", 0.3, 0.2, "a"), _c("custom (eliminate-only + row_weight=wsl)", -0.2, 0.2, "b"),
    ]
    summaries = summarize(comps)
    assert [s.setting for s in summaries][0] == "custom (constant + variant=toward_label)"
    best = choose_default(summaries)
    assert best is not None and best.setting == "eliminate-only"  # paper's mean 0.05 < 0.2, and it loses in b
    assert [s.setting for s in promotable(summaries)] == ["custom (constant + variant=toward_label)"]  # 0.9 > 2·0.2


def test_no_default_when_every_preset_loses_somewhere():
    assert choose_default(summarize([_c("paper", -1.0, 0.1), _c("constant", -0.5, 0.1)])) is None


def test_the_gain_plot_is_a_png_with_one_panel_per_weighting(tmp_path):
    comps = [_c(s, d, 0.2, r, w, wrong) for s, d in (("paper", -0.3), ("eliminate-only", 0.2))
             for r, wrong in (("a", 0.07), ("b", 0.15)) for w in ("0.1/0.9", "0.5/0.5")]
    png = plot_gain_vs_wrong_rows(comps, tmp_path / "gain.png")
    with Image.open(png) as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 1000  # two panels side by side

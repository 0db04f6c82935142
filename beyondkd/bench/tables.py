"""Tables of a suite, computed from its run folders (never from remembered numbers).

For each row: the best-epoch and last-epoch validation top-1 accuracy of every finished seed,
their mean and sample standard deviation, Δ against the row's baseline (the best of its
baselines' means), and the paper's number and Δ beside ours. The teacher row is the teacher
the suite trained, or else the teacher accuracy the student runs measured.

Shapes: ``table1`` (BTKD Table 1: teacher, student, methods, ours), ``ablation`` (BTKD Table 5:
adds the elimination / rectification columns, read from each run's plug-in settings),
``plugin`` (BTKD Table 6: X and X + ours, Δ = X + ours − X), ``slkd`` (SLKD Tables 2–6),
``imagenet`` (BTKD Tables 2–3: ``table1`` plus top-5) and ``detection`` (BTKD Table 4: box AP,
AP50 and AP75 of detection runs, in percent).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from beyondkd.bench.runner import Plan, PlannedRun
from beyondkd.engine.logging import read_metrics

SHAPE_TITLES = {
    "table1": "methods on one teacher/student pair (BTKD Table 1 shape)",
    "ablation": "bias elimination / rectification ablation (BTKD Table 5 shape)",
    "plugin": "the plug-in over other methods, X vs X + ours (BTKD Table 6 shape)",
    "slkd": "SLKD tables shape (Δ over KD)",
    "regime": "when the plug-in helps: KD and the plug-in's settings against one teacher regime",
    "imagenet": "methods on ImageNet, top-1 and top-5 (BTKD Tables 2-3 shape)",
    "detection": "detectors on COCO, box AP (BTKD Table 4 shape)",
}
#: columns a shape adds after best/last: (header, RunResult.at_best key, PaperNumber field)
EXTRA_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "imagenet": [("top-5", "val_top5", "top5")],
    "detection": [("AP50", "AP50", "ap50"), ("AP75", "AP75", "ap75")],
}
#: the row whose final accuracy sets the epochs-to-target bar (BTKD Fig. 4: "25 % less training time")
TARGET_REFERENCE = "KD"
STAT_KEYS = ("frac_right", "frac_rectified", "frac_rectified_top_is_label", "gamma", "gamma_last")


@dataclass
class RunResult:
    """What one run folder says: best and last validation accuracy (%)."""

    dir: str
    seed: int | None
    finished: bool
    epochs: int
    best_acc: float
    best_epoch: int  # 1-based
    last_acc: float
    teacher_acc: float | None
    final_stats: dict[str, float]
    at_best: dict[str, float] = field(default_factory=dict)  # other metrics of the best epoch (%)
    accuracy_by_epoch: dict[int, float] = field(default_factory=dict)  # 1-based epoch -> val_acc
    teacher_right_on_train_rows: float | None = None  # the readout measured before training


def read_run(run_dir: str | Path, seed: int | None = None) -> RunResult | None:
    """Read ``metrics.jsonl`` (and ``summary.json``) of a run folder; None if it has no evaluated epoch yet."""
    history = read_metrics(run_dir)
    if any("AP" in r and "val_acc" not in r for r in history):
        return read_detection_run(run_dir, history, seed)
    evaluated = [r for r in history if "val_acc" in r]
    if not evaluated:
        return None
    best = max(evaluated, key=lambda r: r["val_acc"])  # first epoch reaching the maximum
    last = history[-1]
    teacher = next((r["teacher_acc"] for r in reversed(history) if r.get("teacher_acc") is not None), None)
    summary_path = Path(run_dir) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    readout = summary.get("teacher_on_train_rows") or {}
    return RunResult(
        dir=str(run_dir), seed=seed, finished=summary_path.is_file(), epochs=len(history),
        best_acc=float(best["val_acc"]), best_epoch=int(best["epoch"]) + 1, last_acc=float(evaluated[-1]["val_acc"]),
        teacher_acc=None if teacher is None else float(teacher),
        final_stats={k: float(last[k]) for k in STAT_KEYS if k in last},
        at_best={k: float(best[k]) for k in ("val_top5",) if k in best},
        accuracy_by_epoch={int(r["epoch"]) + 1: float(r["val_acc"]) for r in evaluated},
        teacher_right_on_train_rows=readout.get("frac_right"),
    )


def read_detection_run(run_dir: str | Path, history: list[dict[str, Any]], seed: int | None = None) -> RunResult | None:
    """A detection run (``beyondkd detect``): box AP as the main number, AP50/AP75 of its best epoch, in %.

    Its records count epochs from 0 like every run's; the teacher's AP is the one ``summary.json`` records.
    """
    evaluated = [r for r in history if "AP" in r]
    if not evaluated:
        return None
    best = max(evaluated, key=lambda r: r["AP"])
    summary = Path(run_dir) / "summary.json"
    teacher = json.loads(summary.read_text()).get("teacher_AP") if summary.is_file() else None
    return RunResult(
        dir=str(run_dir), seed=seed, finished=summary.is_file(), epochs=len(history),
        best_acc=100.0 * best["AP"], best_epoch=int(best["epoch"]) + 1, last_acc=100.0 * evaluated[-1]["AP"],
        teacher_acc=None if teacher is None else 100.0 * teacher, final_stats={},
        at_best={k: 100.0 * best[k] for k in ("AP50", "AP75") if k in best},
        accuracy_by_epoch={int(r["epoch"]) + 1: 100.0 * float(r["AP"]) for r in evaluated},
    )


def epochs_to_target(accuracy_by_epoch: dict[int, float], target: float) -> int | None:
    """The first (1-based) epoch whose validation accuracy reaches ``target``; None if none does."""
    return next((e for e in sorted(accuracy_by_epoch) if accuracy_by_epoch[e] >= target), None)


@dataclass
class Aggregate:
    """Mean and sample standard deviation (``None`` for fewer than two values) of ``n`` values."""

    mean: float | None
    std: float | None
    n: int

    def format(self) -> str:
        if self.mean is None:
            return "—"
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


def aggregate(values: Sequence[float]) -> Aggregate:
    """Mean ± sample std (n − 1 in the denominator) of ``values``."""
    vals = [float(v) for v in values]
    if not vals:
        return Aggregate(None, None, 0)
    return Aggregate(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def _delta(value: float | None, baseline: float | None) -> float | None:
    return None if value is None or baseline is None else value - baseline


def delta_noise(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """The standard error of a difference of two means, ``sqrt(s_a²/n_a + s_b²/n_b)`` (aggregates as dicts)."""
    if a.get("std") is None or b.get("std") is None:
        return None
    return math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def _weights(params: dict[str, Any]) -> str:
    """``0.1/0.9``: a method's CE and distillation weights, when it has them."""
    if "ce_weight" in params and "kd_weight" in params:
        return f"{params['ce_weight']:g}/{params['kd_weight']:g}"
    return "—"


def _results(runs: list[PlannedRun]) -> list[RunResult]:
    out = []
    for run in runs:
        res = read_run(run.output_dir, run.seed)
        if res is not None and res.finished:
            out.append(res)
    return out


def _at_best(results: list[RunResult], shape: str) -> dict[str, dict[str, Any]]:
    """Mean ± std over runs of each extra metric of ``shape`` at the runs' best epochs."""
    return {k: asdict(aggregate([r.at_best[k] for r in results if k in r.at_best])) for _, k, _ in EXTRA_COLUMNS.get(shape, [])}


def build_table(plan: Plan) -> dict[str, Any]:
    """The suite's table as a JSON-able mapping (see :func:`render_markdown`)."""
    suite = plan.suite
    groups = []
    for g in plan.groups:
        rows: list[dict[str, Any]] = []
        # teacher row
        teacher: dict[str, Any] | None = None
        if g.teacher_run is not None:
            res = _results([g.teacher_run])
            teacher = {"label": "teacher", "how": f"trained by the suite ({g.teacher_run.config_path})",
                       "runs": [asdict(r) for r in res],
                       "best": asdict(aggregate([r.best_acc for r in res])), "last": asdict(aggregate([r.last_acc for r in res])),
                       "at_best": _at_best(res, suite.table)}
        measured = [res.teacher_acc for row in g.rows for res in _results(row.runs) if res.teacher_acc is not None]
        if teacher is None and (measured or g.spec.teacher is not None):
            # The teacher was given (a checkpoint): its accuracy as every student run measured it.
            acc = aggregate(measured)
            teacher = {"label": "teacher", "how": f"checkpoint {g.teacher_checkpoint or 'of the row configs'}, as measured by the student runs",
                       "runs": [], "best": asdict(acc), "last": asdict(acc)}
        if teacher is not None:
            teacher["paper"] = g.spec.teacher.paper.model_dump() if g.spec.teacher and g.spec.teacher.paper else None
            teacher["teacher_acc_measured_by_students"] = asdict(aggregate(measured))
        by_label: dict[str, dict[str, Any]] = {}
        for row in g.rows:
            res = _results(row.runs)
            readouts = [r.teacher_right_on_train_rows for r in res if r.teacher_right_on_train_rows is not None]
            entry = {
                "label": row.spec.label, "config": row.spec.config, "overrides": row.spec.overrides,
                "mode": row.runs[0].mode if row.runs else None, "eliminate": row.eliminate, "rectify": row.rectify,
                "dynamic_gamma": row.dynamic_gamma, "plugin": row.bias_label, "plugin_preset": row.bias_preset,
                "plugin_settings": None if row.bias is None else row.bias.model_dump(mode="json"),
                "method": row.method, "params": row.params, "weights": _weights(row.params),
                "teacher_right_on_train_rows": asdict(aggregate(readouts)),
                "seeds_planned": [r.seed for r in row.runs], "runs": [asdict(r) for r in res],
                "best": asdict(aggregate([r.best_acc for r in res])), "last": asdict(aggregate([r.last_acc for r in res])),
                "best_epoch": asdict(aggregate([r.best_epoch for r in res])),
                "at_best": _at_best(res, suite.table),
                "paper": row.spec.paper.model_dump() if row.spec.paper else None,
                "baseline": row.spec.baselines,
            }
            rows.append(entry)
            by_label[row.spec.label] = entry
        reference = by_label.get(TARGET_REFERENCE)
        target = None
        if reference is not None and reference["last"]["mean"] is not None:
            target = plan.suite.target_fraction * reference["last"]["mean"]
        for entry, row in zip(rows, g.rows):
            reached = [epochs_to_target(r.accuracy_by_epoch, target) for r in _results(row.runs)] if target is not None else []
            entry["epochs_to_target"] = asdict(aggregate([e for e in reached if e is not None]))
            entry["epochs_to_target"]["reached"] = sum(e is not None for e in reached)
        for entry in rows:
            base = [by_label[b] for b in entry["baseline"] if b in by_label]
            ours = [b["best"]["mean"] for b in base if b["best"]["mean"] is not None]
            entry["delta_best"] = _delta(entry["best"]["mean"], max(ours) if ours else None)
            best_base = max((b for b in base if b["best"]["mean"] is not None), key=lambda b: b["best"]["mean"], default=None)
            entry["delta_best_noise"] = delta_noise(entry["best"], best_base["best"]) if best_base else None
            lasts = [b["last"]["mean"] for b in base if b["last"]["mean"] is not None]
            entry["delta_last"] = _delta(entry["last"]["mean"], max(lasts) if lasts else None)
            papers = [b["paper"]["acc"] for b in base if b["paper"]]
            entry["paper_delta"] = _delta(entry["paper"]["acc"] if entry["paper"] else None, max(papers) if papers else None)
        all_readouts = [r.teacher_right_on_train_rows for row in g.rows for r in _results(row.runs)
                        if r.teacher_right_on_train_rows is not None]
        groups.append({"name": g.spec.name, "description": g.spec.description, "teacher": teacher, "rows": rows,
                       "teacher_right_on_train_rows": asdict(aggregate(all_readouts)),
                       "target": None if target is None else {"fraction": plan.suite.target_fraction, "reference": TARGET_REFERENCE,
                                                              "accuracy": target},
                       "skipped": [{"label": l, "why": w} for l, w in g.skipped]})
    return {
        "suite": suite.name, "description": suite.description, "table": suite.table, "source": suite.source,
        "seeds": plan.seeds, "out": str(plan.out), "groups": groups,
    }


def _num(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _agg(d: dict[str, Any]) -> str:
    return Aggregate(**d).format()


def _check(flag: bool | None) -> str:
    """✓ / ✗; a row without the plug-in uses neither module (✗)."""
    return "✓" if flag else "✗"


def _to_target(entry: dict[str, Any]) -> str:
    e = entry.get("epochs_to_target") or {}
    planned = entry["best"]["n"]
    if not planned:
        return "—"
    reached = e.get("reached", 0)
    text = _agg({k: e[k] for k in ("mean", "std", "n")}) if reached else "never"
    return text if reached == planned else f"{text} ({reached}/{planned})"


def _pct(agg: dict[str, Any]) -> str:
    return "—" if agg.get("mean") is None else f"{100 * agg['mean']:.1f} %"


def extra_cells(shape: str, row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Our cells and the paper's cells of the columns ``shape`` adds (:data:`EXTRA_COLUMNS`) for one row.

    Ours: each metric at each seed's best epoch, mean ± std; the teacher row without runs has none.
    """
    ours, paper = [], []
    for _, key, paper_key in EXTRA_COLUMNS.get(shape, []):
        agg = (row.get("at_best") or {}).get(key)
        ours.append(_agg(agg) if agg else "—")
        paper.append(_num((row.get("paper") or {}).get(paper_key)))
    return ours, paper


def render_markdown(table: dict[str, Any]) -> str:
    """Markdown tables, one per group, with a header saying what every column is."""
    shape = table["table"]
    ablation, regime = shape == "ablation", shape == "regime"
    lines = [f"## {table['suite']}: {SHAPE_TITLES.get(shape, shape)}", ""]
    if table.get("description"):
        lines += [table["description"], ""]
    target = next((g["target"] for g in table["groups"] if g.get("target")), None)
    metric = "COCO box AP (%, IoU 0.5:0.95)" if shape == "detection" else "Validation top-1 accuracy (%)"
    extra = EXTRA_COLUMNS.get(shape, [])
    lines += [
        f"{metric} over seeds {', '.join(map(str, table['seeds']))}: mean ± sample std of each seed's "
        "best epoch and of its last epoch; *seeds* counts finished runs. *plug-in*: the bias plug-in's resolved settings "
        "(a preset name, or `custom` with the fields that differ from the preset it started from). "
        "Δ: best-epoch mean minus the baseline's (the best of several baselines)"
        + ("; ±σ: the standard error of that difference, √(s²/n + s_b²/n_b)" if regime else "")
        + "." + ("" if regime else " *paper*: the number the paper prints; *paper Δ*: the same difference in the paper.")
        + (f" {', '.join(h for h, _, _ in extra)}: at each seed's best epoch." if extra else "")
        + (f" Paper numbers: {table['source']}." if table.get("source") and not regime else "")
        + (f" *to {100 * target['fraction']:g} %*: epochs until a run first reaches {100 * target['fraction']:g} % of "
           f"{target['reference']}'s final (last-epoch) mean accuracy, mean over the seeds that reach it (BTKD Fig. 4's "
           "training-time claim)." if target else ""),
        "",
    ]
    for g in table["groups"]:
        has_target = g.get("target") is not None
        head = ["method", "plug-in"] + (["elimination", "rectification"] if ablation else []) + (["CE/KD"] if regime else [])
        head += ["best", "last"] + [h for h, _, _ in extra] + ["seeds", "Δ"]
        head += ["±σ", "Δ last"] if regime else ["vs", "paper"] + [f"paper {h}" for h, _, _ in extra] + ["paper Δ"]
        head += [f"to {100 * g['target']['fraction']:g} %"] if has_target else []
        lines += [f"### {g['name']}", ""]
        if g.get("description"):
            lines += [g["description"], ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        t = g["teacher"]
        if t is not None:
            ours, paper = extra_cells(shape, t)
            cells = ["teacher", "—"] + (["—", "—"] if ablation else []) + (["—"] if regime else []) + [
                _agg(t["best"]), _agg(t["last"])] + ours + [str(t["best"]["n"]) if t["runs"] else "ckpt", "—"]
            cells += ["—", "—"] if regime else ["—", _num(t["paper"]["acc"]) if t["paper"] else "—"] + paper + ["—"]
            cells += ["—"] if has_target else []
            lines.append("| " + " | ".join(cells) + " |")
        for r in g["rows"]:
            ours, paper = extra_cells(shape, r)
            cells = [r["label"], r.get("plugin") or "—"] + ([_check(r["eliminate"]), _check(r["rectify"])] if ablation else [])
            cells += [r.get("weights", "—")] if regime else []
            cells += [_agg(r["best"]), _agg(r["last"])] + ours + [f"{r['best']['n']}/{len(r['seeds_planned'])}",
                                                                   _num(r["delta_best"], signed=True)]
            if regime:
                cells += [_num(r.get("delta_best_noise")), _num(r["delta_last"], signed=True)]
            else:
                cells += [" / ".join(r["baseline"]) or "—", _num(r["paper"]["acc"]) if r["paper"] else "—"] + paper + [
                    _num(r["paper_delta"], signed=True)]
            cells += [_to_target(r)] if has_target else []
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if t is not None:
            m = t.get("teacher_acc_measured_by_students") or {}
            seen = f" Its accuracy measured by the student runs: {_agg(m)}." if m.get("n") and t["runs"] else ""
            readout = g.get("teacher_right_on_train_rows") or {}
            rows_line = (f" Right on {_pct(readout)} of the student's training rows (measured before training, "
                         f"{readout['n']} runs)." if readout.get("n") else "")
            lines.append(f"Teacher: {t['how']}.{seen}{rows_line}")
        if regime:
            bases = sorted({b for r in g["rows"] for b in r["baseline"]})
            if bases:
                lines.append(f"Δ of each row is against the row named in its config as baseline ({', '.join(bases)}).")
        if has_target:
            lines.append(f"Target: {100 * g['target']['fraction']:g} % of {g['target']['reference']}'s final mean accuracy = "
                         f"{g['target']['accuracy']:.2f} %.")
        for s in g["skipped"]:
            lines.append(f"Not run: {s['label']} ({s['why']}).")
        sources = sorted({r["paper"]["source"] for r in g["rows"] if r["paper"]} | ({t["paper"]["source"]} if t and t["paper"] else set()))
        if sources:
            lines.append(f"Paper numbers from: {'; '.join(sources)}.")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_table(plan: Plan, out: Path | None = None) -> tuple[dict[str, Any], Path, Path]:
    """Build the table and write ``table.md`` and ``table.json`` into the suite's folder."""
    table = build_table(plan)
    out = Path(out or plan.out)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "table.md", out / "table.json"
    md.write_text(render_markdown(table))
    js.write_text(json.dumps(table, indent=2) + "\n")
    return table, md, js

"""``beyondkd report``: curves of finished or running runs, from their ``metrics.jsonl``.

* ``accuracy.png``: validation top-1 per epoch, one line per run (BTKD Fig. 4 style), with the
  teacher as a dashed line when every run measured the same teacher.
* ``bias_statistics.png``: the plug-in's statistics per epoch (only if some run logged them).
* ``report.md`` / ``report.json``: best and last accuracy of every run and its final statistics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from beyondkd.bench.plots import has_bias_stats, plot_bias_statistics, rectified_top_is_label_share
from beyondkd.bench.tables import epochs_to_target, read_run
from beyondkd.engine.logging import read_metrics
from beyondkd.engine.plots import plot_accuracy
from beyondkd.errors import BeyondKDError


def run_labels(dirs: list[Path]) -> list[str]:
    """Shortest distinct trailing paths of ``dirs`` (``kd/seed0`` vs ``kd_btkd/seed0``)."""
    parts = [d.resolve().parts for d in dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in dirs]


def load_histories(dirs: list[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """label -> epoch records; a folder without ``metrics.jsonl`` is a one-line error."""
    paths = [Path(d) for d in dirs]
    if not paths:
        raise BeyondKDError("give at least one run folder (a folder holding metrics.jsonl)")
    for p in paths:
        if not (p / "metrics.jsonl").is_file():
            raise BeyondKDError(f"{p} has no metrics.jsonl: give run folders written by beyondkd train-teacher, distill or bench")
    return {label: read_metrics(p) for label, p in zip(run_labels(paths), paths)}


def _plain_kd(run_dir: Path) -> bool:
    """True for a finished run of plain KD (method ``kd`` without the plug-in)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return False
    summary = json.loads(path.read_text())
    return summary.get("method") == "kd" and summary.get("bias") is None


def pick_reference(dirs: list[Path], labels: list[str], reference: str | None) -> int | None:
    """Index of the reference run for epochs-to-target: ``reference`` (a label or a folder), else the first plain KD run."""
    if reference is not None:
        for i, (d, label) in enumerate(zip(dirs, labels)):
            if reference in (label, str(d)) or Path(reference).resolve() == d.resolve():
                return i
        raise BeyondKDError(f"--reference '{reference}' is not one of the runs given: pass one of {', '.join(labels)}")
    return next((i for i, d in enumerate(dirs) if _plain_kd(d)), None)


def make_report(dirs: list[str | Path], out: str | Path, target_fraction: float = 0.99,
                reference: str | None = None) -> dict[str, Any]:
    """Write the plots and the summary of ``dirs`` into ``out``; return the summary.

    Epochs-to-target (BTKD Fig. 4's "less training time"): for each run, the first epoch at which
    it reaches ``target_fraction`` of the reference run's final accuracy. The reference is
    ``reference`` (a run label or folder) or else the first plain KD run among ``dirs``.
    """
    if not 0.0 < target_fraction <= 1.0:
        raise BeyondKDError(f"--target-fraction must be in (0, 1], got {target_fraction}")
    out = Path(out)
    runs = load_histories(dirs)
    ref_index = pick_reference([Path(d) for d in dirs], list(runs), reference)
    teachers = {r["teacher_acc"] for h in runs.values() for r in h if r.get("teacher_acc") is not None}
    teacher_acc = next(iter(teachers)) if len(teachers) == 1 else None
    files = [str(plot_accuracy(runs, out / "accuracy.png", title="Validation accuracy per epoch", teacher_acc=teacher_acc))]
    biased = {k: h for k, h in runs.items() if has_bias_stats(h)}
    if biased:
        files.append(str(plot_bias_statistics(biased, out / "bias_statistics.png")))
    results = [read_run(d) for d in dirs]
    target = None
    if ref_index is not None and results[ref_index] is not None:
        target = {"reference": list(runs)[ref_index], "fraction": target_fraction,
                  "accuracy": target_fraction * results[ref_index].last_acc}
    entries = []
    for (label, history), d, res in zip(runs.items(), dirs, results):
        last = history[-1] if history else {}
        entry = {"label": label, "dir": str(d), "epochs": len(history), "result": asdict(res) if res else None,
                 "epochs_to_target": epochs_to_target(res.accuracy_by_epoch, target["accuracy"]) if res and target else None}
        if label in biased:
            entry["final_epoch_bias"] = {
                "frac_right": last.get("frac_right"), "frac_rectified": last.get("frac_rectified"),
                "rectified_top_is_label_share": rectified_top_is_label_share(last),
                "gamma_mean_over_epoch": last.get("gamma"), "gamma_at_last_step": last.get("gamma_last"),
            }
        entries.append(entry)
    summary = {"runs": entries, "files": files, "teacher_acc": teacher_acc, "target": target}
    to = f" epochs to {100 * target_fraction:g} % |" if target else ""
    lines = ["| run | epochs | best (epoch) | last | teacher right (last epoch) | rectified (last epoch) |" + to,
             "|---|---|---|---|---|---|" + ("---|" if target else "")]
    for e in entries:
        r = e["result"]
        b = e.get("final_epoch_bias") or {}
        pct = lambda v: "—" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        reached = "" if not target else f" {e['epochs_to_target'] if e['epochs_to_target'] is not None else 'never'} |"
        lines.append(f"| {e['label']} | {e['epochs']} | " + (f"{r['best_acc']:.2f} ({r['best_epoch']}) | {r['last_acc']:.2f}" if r else "— | —")
                     + f" | {pct(b.get('frac_right'))} | {pct(b.get('frac_rectified'))} |" + reached)
    if target:
        lines += ["", f"Epochs to {100 * target_fraction:g} %: the first epoch at which a run reaches {100 * target_fraction:g} % of "
                  f"{target['reference']}'s final accuracy ({target['accuracy']:.2f} %)."]
    else:
        lines += ["", "No epochs-to-target column: no plain KD run among these (give one with --reference)."]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n\n" + "\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in files) + "\n")
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["markdown"] = "\n".join(lines)
    return summary


def suite_curves(plan: Any) -> list[Path]:
    """Per group of a suite: ``<out>/<group>/accuracy.png``, each row's validation accuracy per
    epoch averaged over its finished seeds (BTKD Fig. 4 style), the teacher dashed."""
    from beyondkd.bench.suite import slug

    written = []
    for g in plan.groups:
        curves: dict[str, list[dict[str, Any]]] = {}
        for row in g.rows:
            per_epoch: dict[int, list[float]] = {}
            for run in row.runs:
                if not (run.output_dir / "summary.json").is_file():
                    continue
                for r in read_metrics(run.output_dir):
                    if "val_acc" in r:
                        per_epoch.setdefault(int(r["epoch"]), []).append(float(r["val_acc"]))
            if per_epoch:
                n = max(len(v) for v in per_epoch.values())
                curves[f"{row.spec.label} (mean of {n})"] = [
                    {"epoch": e, "val_acc": sum(v) / len(v)} for e, v in sorted(per_epoch.items())]
        if not curves:
            continue
        teacher_acc = None
        if g.teacher_run is not None and (res := read_run(g.teacher_run.output_dir)) is not None:
            teacher_acc = res.best_acc
        written.append(plot_accuracy(curves, plan.out / slug(g.spec.name) / "accuracy.png",
                                     title=f"{plan.suite.name}: {g.spec.name}", teacher_acc=teacher_acc))
    return written

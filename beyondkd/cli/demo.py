"""``beyondkd demo``: the main job on the embedded default (real Fashion-MNIST, CPU-sized).

Trains a teacher, then three students of the same small architecture (labels only, KD, and
KD with the BTKD plug-in) from the packaged configs in ``configs/demo/``, and prints their
accuracies side by side with the plug-in's statistics. It uses the whole dataset, few epochs
and no augmentation (so the teacher's logits are cached), and says so.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from beyondkd.config import load_config

STUDENTS = (
    ("CE (labels only)", "ce.yaml", "train-teacher"),
    ("KD", "kd.yaml", "distill"),
    ("KD + BTKD plug-in", "kd_btkd.yaml", "distill"),
)


def _fresh_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... so an earlier demo is never overwritten."""
    if not base.exists():
        return base
    i = 2
    while Path(f"{base}-{i}").exists():
        i += 1
    return Path(f"{base}-{i}")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from beyondkd.bias import DEFAULT_BIAS_PRESET
    from beyondkd.engine.build import run_training
    from beyondkd.engine.plots import plot_accuracy

    console = Console()
    out = _fresh_dir(Path(args.output_dir))
    common = [f"seed={args.seed}", f"train.progress_bar={str(not args.no_progress).lower()}"]
    if args.data_root:
        common.append(f"data.root={args.data_root}")
    if args.subset:
        common.append(f"data.subset={args.subset}")
    if args.epochs:
        common.append(f"train.epochs={args.epochs}")
    teacher_cfg = load_config("configs/demo/teacher.yaml", common + [f"output_dir={out / 'teacher'}"] + ([f"train.epochs={args.teacher_epochs}"] if args.teacher_epochs else []))
    student_cfgs = [
        (label, load_config(f"configs/demo/{file}", common + [f"output_dir={out / file[:-5]}"]
                        + ([f"teacher.checkpoint={out / 'teacher' / 'best.pt'}"] if mode == "distill" else [])), mode)
        for label, file, mode in STUDENTS
    ]
    d = teacher_cfg.data
    console.print(
        f"[bold]beyondkd demo[/bold] on real Fashion-MNIST ({d.root or '/usr/share/datasets/fashion-mnist'}): "
        f"teacher {teacher_cfg.trained.name} for {_epochs(teacher_cfg.train.epochs)}, students "
        f"{student_cfgs[0][1].trained.name} for {_epochs(student_cfgs[0][1].train.epochs)} each, "
        f"{'all' if d.subset is None else d.subset} training images, no augmentation (teacher logits cached), "
        f"seed {args.seed}. A CPU-sized run: fewer epochs than a paper's 240, so numbers are lower than converged ones.\n"
        f"Runs go to {out}"
    )
    start = time.perf_counter()
    console.print("[bold]1/4[/bold] teacher")
    teacher = run_training(teacher_cfg, "train-teacher")
    results = []
    for i, (label, cfg, mode) in enumerate(student_cfgs, start=2):
        console.print(f"[bold]{i}/4[/bold] student: {label}")
        t0 = time.perf_counter()
        results.append((label, cfg, run_training(cfg, mode), time.perf_counter() - t0))  # type: ignore[arg-type]

    table = Table(title=f"Fashion-MNIST test accuracy (%), seed {args.seed}",
                  caption="train s: the training epochs; setup s: data, teacher evaluation and the teacher-logit "
                          "cache, which the first distilled student computes once and the next one reuses")
    for col in ("run", "model", "best", "last", "teacher right on train rows", "teacher-wrong rows", "train s", "setup s"):
        table.add_column(col, justify="left" if col in ("run", "model") else "right")
    table.add_row("teacher", teacher_cfg.trained.name, f"{teacher.best_acc:.2f}", f"{teacher.last_acc:.2f}", "-", "-",
                  f"{teacher.summary['train_seconds']:.0f}", "-")
    rows_json = []
    for label, cfg, res, seconds in results:
        last = res.history[-1]
        right = f"{100 * last['frac_right']:.1f}%" if "frac_right" in last else "-"
        # rows the plug-in acted on: eliminated (default preset) or rectified, per epoch
        rect = f"{int(last['rows']) - int(last['rows_right']):,}/epoch" if "rows_right" in last else "-"
        name = label + (f" ({cfg.method.bias.get('preset', DEFAULT_BIAS_PRESET)})" if cfg.method.bias is not None else "")
        train_s = res.summary["train_seconds"]
        table.add_row(name, cfg.trained.name, f"{res.best_acc:.2f}", f"{res.last_acc:.2f}", right, rect,
                      f"{train_s:.0f}", f"{max(seconds - train_s, 0.0):.0f}")
        rows_json.append({"run": name, "best_acc": res.best_acc, "last_acc": res.last_acc, "dir": str(res.output_dir)})
    console.print(table)
    png = plot_accuracy(
        {"teacher " + teacher_cfg.trained.name: teacher.history, **{label: res.history for label, _, res, _ in results}},
        out / "accuracy.png", title="beyondkd demo: Fashion-MNIST test accuracy", teacher_acc=teacher.best_acc,
    )
    (out / "demo.json").write_text(json.dumps({"teacher_acc": teacher.best_acc, "students": rows_json}, indent=2) + "\n")
    console.print(f"total {time.perf_counter() - start:.0f} s; curves: {png}; per-run metrics.jsonl, TensorBoard events and checkpoints under {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="teacher, CE, KD and KD+BTKD students on real Fashion-MNIST, in minutes on a CPU")
    p.add_argument("--output-dir", "-o", default="runs/demo", help="folder for the runs (a new -N suffix if it exists)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", help="folder of the Fashion-MNIST idx files")
    p.add_argument("--subset", type=int, help="use only this many training images")
    p.add_argument("--epochs", type=int, help="student epochs (default from configs/demo)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default from configs/demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

"""Which variant of the BTKD plug-in helps? KD versus every preset, on real Fashion-MNIST.

Trains one teacher, then the same student with plain KD and with KD + each bias preset
(``paper``, ``official-code``, ``constant``, ``strict``, ``eliminate-only``, ``rectify-only``)
over several seeds, and writes a table (mean ± std of best and last epoch accuracy, the
difference to KD, the fraction of rows the teacher got right, rectified rows whose top class
became the label) into BENCHMARKS.md. ``DEFAULT_BIAS_PRESET`` in ``beyondkd/bias/loss.py`` is
chosen from this table.

Runs go through the bench harness's runner (:func:`beyondkd.bench.runner.execute_run`): a
finished run (its ``summary.json``) is reused, a started one resumed, and a folder holding
another config is an error; the tables use the harness's formatter.

    python -m benchmarks.bias_variants --out runs/bench_bias --seeds 0 1 2 --write
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks._report import provenance, run_main, write_section
from beyondkd.bench.runner import PlannedRun, execute_run
from beyondkd.bench.tables import aggregate, read_run
from beyondkd.bias.loss import BIAS_PRESETS, DEFAULT_BIAS_PRESET
from beyondkd.config import load_config


KD_PARAMS = {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}


def _base(args: argparse.Namespace, name: str, out: Path, seed: int) -> dict:
    data = {"name": "fashion_mnist", "augment": False, "batch_size": 128, "val_batch_size": 1000}
    if args.data_root:
        data["root"] = args.data_root
    if args.subset:
        data["subset"] = args.subset
    return {
        "name": name, "seed": seed, "output_dir": str(out), "data": data,
        "train": {"epochs": args.epochs, "progress_bar": False, "channels_last": True, "log_every": 10**6,
                  "cache_dir": str(Path(args.out) / ".cache"),
                  "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
                  "scheduler": {"name": "cosine"}},
    }


def train_teacher(args: argparse.Namespace, out: Path) -> Path:
    """Train (or reuse) the teacher of a comparison in ``out/teacher``; its best checkpoint."""
    raw = _base(args, "teacher", out / "teacher", 0)
    raw["model"] = {"name": args.teacher}
    raw["train"]["epochs"] = args.teacher_epochs
    run_once(raw, "train-teacher")
    return out / "teacher" / "best.pt"


def student_run(args: argparse.Namespace, name: str, out: Path, seed: int, teacher_ckpt: Path, method: dict) -> dict:
    """The raw config of one distillation run ``out/name`` of ``args.student`` from the teacher."""
    raw = _base(args, name, out / name, seed)
    raw["teacher"] = {"name": args.teacher, "checkpoint": str(teacher_ckpt)}
    raw["student"] = {"name": args.student}
    raw["method"] = method
    return raw


def run_once(raw: dict, mode: str) -> dict:
    """Train (or reuse, or resume) one run through the bench runner; its best, last and final statistics."""
    config = load_config(raw=raw)
    run = PlannedRun("benchmark", raw["name"], config.seed, "(benchmark)", [], mode, config, Path(raw["output_dir"]))  # type: ignore[arg-type]
    summary = execute_run(run, Path(raw["train"]["cache_dir"]))
    result = read_run(run.output_dir, run.seed)
    return {"best": summary["best_acc"], "last": summary["last_acc"], "teacher_acc": summary.get("teacher_acc"),
            **(result.final_stats if result is not None else {})}


def ms(xs: list[float]) -> str:
    """mean ± sample std, as the bench tables print it."""
    return aggregate(xs).format()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_bias")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4, help="student epochs")
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--teacher", default="cnn_small")
    ap.add_argument("--student", default="cnn_tiny")
    ap.add_argument("--subset", type=int, default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--presets", nargs="+", default=list(BIAS_PRESETS))
    ap.add_argument("--grad-clip", type=float, default=None, help="train.grad_clip of every run (default: none)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)

    teacher_ckpt = train_teacher(args, out)

    variants = ["kd"] + list(args.presets)
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in args.seeds:
        for v in variants:
            method: dict = {"name": "kd", "params": dict(KD_PARAMS)}
            if v != "kd":
                method["bias"] = {"preset": v}
            raw = student_run(args, f"{v}_s{seed}", out, seed, teacher_ckpt, method)
            if args.grad_clip is not None:
                raw["train"]["grad_clip"] = args.grad_clip
            r = run_once(raw, "distill")
            results[v].append(r)
            print(f"seed {seed} {v:15s} best {r['best']:.2f} last {r['last']:.2f}", flush=True)

    kd_best = statistics.mean(r["best"] for r in results["kd"])
    teacher_acc = results["kd"][0].get("teacher_acc")
    lines = [
        f"teacher {args.teacher} ({args.teacher_epochs} epochs, val {teacher_acc:.2f}%) -> student {args.student}, "
        f"{args.epochs} student epochs, KD T=4 CE 0.1 KD 0.9, SGD lr 0.05 cosine, "
        f"{'no gradient clipping' if args.grad_clip is None else f'train.grad_clip {args.grad_clip}'}, batch 128, no augmentation, "
        f"{'all 60 000' if not args.subset else args.subset} training images, seeds {args.seeds}; "
        f"the default preset when this ran: `{DEFAULT_BIAS_PRESET}`.",
        "",
        "| variant | best acc | last acc | best − KD | teacher right on (train rows, last epoch) | rectified rows now labelled |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        rs = results[v]
        best = [r["best"] for r in rs]
        fr = rs[-1].get("frac_right")
        rect, now = rs[-1].get("frac_rectified"), rs[-1].get("frac_rectified_top_is_label")
        fl = now / rect if rect and now is not None else None
        lines.append(
            f"| {'KD' if v == 'kd' else 'KD + ' + v} | {ms(best)} | {ms([r['last'] for r in rs])} | "
            f"{statistics.mean(best) - kd_best:+.2f} | {'' if fr is None else f'{100 * fr:.1f}%'} | "
            f"{'' if fl is None else f'{100 * fl:.1f}%'} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.write:
        section, title = "bias-variants-fmnist", "## Bias plug-in variants on Fashion-MNIST (CPU)"
        if args.grad_clip is not None:
            section, title = f"{section}-clip{args.grad_clip:g}", f"{title}, gradient clipping {args.grad_clip:g}"
        write_section(section, title + "\n\n" + provenance() + "\n" + text)
    return 0


if __name__ == "__main__":
    run_main(main)

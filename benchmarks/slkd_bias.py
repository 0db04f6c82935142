"""SLKD with and without the BTKD plug-in, against KD, on real Fashion-MNIST.

No published system combines SLKD with bias elimination/rectification; this measures the
combination: KD, SLKD (k=2), SLKD + plug-in on the teacher→student term, and SLKD + plug-in on
both terms (``bias_on_sl_term``), over several seeds, and writes a table into BENCHMARKS.md.
Reuses the teacher and the finished runs of the same output folder.

    python benchmarks/slkd_bias.py --out runs/bench_slkd_bias --seeds 0 1 --subset 20000 --write
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import mean_std as ms, provenance, write_section  # noqa: E402
from benchmarks.bias_variants import _base, run_once  # noqa: E402
from beyondkd.bias.loss import DEFAULT_BIAS_PRESET  # noqa: E402

VARIANTS = {
    "KD": {"name": "kd", "params": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}},
    "SLKD": {"name": "slkd", "params": {}},
    "SLKD + plug-in (T→S term)": {"name": "slkd", "params": {}, "bias": {}},
    "SLKD + plug-in (both terms)": {"name": "slkd", "params": {"bias_on_sl_term": True}, "bias": {}},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_slkd_bias")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--teacher", default="cnn_small")
    ap.add_argument("--student", default="cnn_tiny")
    ap.add_argument("--subset", type=int, default=20000)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t_raw = _base(args, "teacher", out / "teacher", 0)
    t_raw["model"] = {"name": args.teacher}
    t_raw["train"]["epochs"] = args.teacher_epochs
    run_once(t_raw, "train-teacher")
    results: dict[str, list[dict]] = {k: [] for k in VARIANTS}
    for seed in args.seeds:
        for i, (label, method) in enumerate(VARIANTS.items()):
            raw = _base(args, f"v{i}_s{seed}", out / f"v{i}_s{seed}", seed)
            raw["teacher"] = {"name": args.teacher, "checkpoint": str(out / "teacher" / "best.pt")}
            raw["student"] = {"name": args.student}
            raw["method"] = method
            r = run_once(raw, "distill")
            results[label].append(r)
            print(f"seed {seed} {label:30s} best {r['best']:.2f} last {r['last']:.2f}", flush=True)

    kd = statistics.mean(r["best"] for r in results["KD"])
    lines = [
        f"teacher {args.teacher} ({args.teacher_epochs} epochs, val {results['KD'][0]['teacher_acc']:.2f}%) -> "
        f"student {args.student}, {args.epochs} epochs, {args.subset or 'all'} training images, no augmentation, "
        f"seeds {args.seeds}; SLKD k=2, ρ 0.5, λ 1, η 3, τ 4, SL-teachers {args.teacher}; plug-in preset "
        f"`{DEFAULT_BIAS_PRESET}` (the default).",
        "",
        "| method | best acc | last acc | best − KD |",
        "|---|---|---|---|",
    ]
    for label, rs in results.items():
        best = [r["best"] for r in rs]
        lines.append(f"| {label} | {ms(best)} | {ms([r['last'] for r in rs])} | {statistics.mean(best) - kd:+.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("slkd-bias-fmnist", "## SLKD with the bias plug-in on Fashion-MNIST (CPU)\n\n" + provenance() + "\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

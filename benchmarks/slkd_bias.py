"""SLKD with and without the BTKD plug-in, against KD, on real Fashion-MNIST.

No published system combines SLKD with bias elimination/rectification; this measures the
combination: KD, SLKD (k=2), SLKD + plug-in on the teacher→student term, and SLKD + plug-in on
both terms (``bias_on_sl_term``), over several seeds, and writes a table into BENCHMARKS.md.
Reuses the teacher and the finished runs of the same output folder.

    python -m benchmarks.slkd_bias --out runs/bench_slkd_bias --seeds 0 1 2 --write
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks._report import provenance, run_main, write_section
from benchmarks.bias_variants import KD_PARAMS, _base, ms, run_once, student_run, train_teacher
from beyondkd.bias.loss import DEFAULT_BIAS_PRESET

# label -> (method, train overrides). ``clip`` = train.grad_clip of the run (args.grad_clip);
# ``lr_scale`` multiplies the optimizer's lr.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "KD, no clipping": ({"name": "kd", "params": KD_PARAMS}, {"clip": False}),
    "KD, lr × 4, no clipping": ({"name": "kd", "params": KD_PARAMS}, {"clip": False, "lr_scale": 4.0}),
    "KD": ({"name": "kd", "params": KD_PARAMS}, {}),
    "SLKD, no clipping": ({"name": "slkd", "params": {}}, {"clip": False}),
    "SLKD": ({"name": "slkd", "params": {}}, {}),
    "SLKD + plug-in (T→S term)": ({"name": "slkd", "params": {}, "bias": {}}, {}),
    "SLKD + plug-in (both terms)": ({"name": "slkd", "params": {"bias_on_sl_term": True}, "bias": {}}, {}),
}
REFERENCE = "KD"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_slkd_bias")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--teacher", default="cnn_small")
    ap.add_argument("--student", default="cnn_tiny")
    ap.add_argument("--subset", type=int, default=None, help="training images (default: all 60000)")
    ap.add_argument("--grad-clip", type=float, default=2.0, help="train.grad_clip of every run not marked 'no clipping'")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    teacher_ckpt = train_teacher(args, out)
    results: dict[str, list[dict]] = {k: [] for k in VARIANTS}
    for seed in args.seeds:
        for i, (label, (method, train)) in enumerate(VARIANTS.items()):
            raw = student_run(args, f"v{i}_s{seed}", out, seed, teacher_ckpt, method)
            raw["train"]["optimizer"]["lr"] *= train.get("lr_scale", 1.0)
            if train.get("clip", True):
                raw["train"]["grad_clip"] = args.grad_clip
            r = run_once(raw, "distill")
            results[label].append(r)
            print(f"seed {seed} {label:30s} best {r['best']:.2f} last {r['last']:.2f}", flush=True)

    ref = statistics.mean(r["best"] for r in results[REFERENCE])
    lr = _base(args, "", out, 0)["train"]["optimizer"]["lr"]
    lines = [
        f"teacher {args.teacher} ({args.teacher_epochs} epochs, val {results[REFERENCE][0]['teacher_acc']:.2f}%) -> "
        f"student {args.student}, {args.epochs} epochs, {args.subset or 'all'} training images, no augmentation, "
        f"SGD lr {lr} cosine, seeds {args.seeds}; `train.grad_clip` {args.grad_clip} (per optimizer) unless "
        f"marked; SLKD k=2, ρ 0.5, λ 1, η 3, τ 4, α 0.1, SL-teachers {args.teacher}; plug-in preset "
        f"`{DEFAULT_BIAS_PRESET}` (the default).",
        "",
        f"| method | best acc | last acc | best − {REFERENCE} |",
        "|---|---|---|---|",
    ]
    for label, rs in results.items():
        best = [r["best"] for r in rs]
        lines.append(f"| {label} | {ms(best)} | {ms([r['last'] for r in rs])} | {statistics.mean(best) - ref:+.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("slkd-bias-fmnist", "## SLKD with the bias plug-in on Fashion-MNIST (CPU)\n\n" + provenance() + "\n" + text)
    return 0


if __name__ == "__main__":
    run_main(main)

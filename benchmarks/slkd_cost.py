"""Training cost of SLKD against KD for the same teacher/student pair on real Fashion-MNIST.

For each method the script runs, in a fresh subprocess, the trainer's step (``training_step``,
one backward, one optimizer step per parameter group) on real Fashion-MNIST batches and
reports the median time per step and the peak memory of the steps:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``;
* CPU: the process's peak resident set (``VmHWM``) after resetting it through
  ``/proc/self/clear_refs`` once data and models are built, minus the resident set at that point
  (so the figure is what the training steps add); if the reset is refused, ``ru_maxrss`` minus
  the same baseline.

The teacher's weights do not change the cost, so the teacher is a randomly initialised network
of the named architecture (no checkpoint needed). Results go to the ``slkd-cost`` section of
BENCHMARKS.md::

    python -m benchmarks.slkd_cost --teacher cnn_small --student cnn_tiny --steps 20
    python -m benchmarks.slkd_cost --teacher resnet20 --student resnet8 --batch-size 128 --steps 10
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

METHODS = {
    "kd": {"name": "kd", "params": {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}},
    "slkd (k=2)": {"name": "slkd", "params": {"sl_teachers": 2}},
    "slkd (k=1)": {"name": "slkd", "params": {"sl_teachers": 1}},
}


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(method: str, args: argparse.Namespace) -> dict:
    """Run ``args.steps`` (+ warm-up) training steps of ``method``; return timings and memory."""
    import torch

    from beyondkd.config import OptimizerConfig
    from beyondkd.core import Progress
    from beyondkd.data.loaders import TensorLoader
    from beyondkd.data.registry import build_splits
    from beyondkd.distillers.base import DistillerContext
    from beyondkd.distillers.registry import build_distiller
    from beyondkd.engine.optim import build_optimizer
    from beyondkd.models.registry import build_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    splits = build_splits("fashion_mnist", args.root)
    info = splits.info
    train = splits.train.subset(args.batch_size * (args.steps + args.warmup), 0)
    loader = TensorLoader(train, args.batch_size, train=True, device=device, seed=0)
    spec = METHODS[method]
    teacher = build_model(args.teacher, info.num_classes, info.in_channels)
    student = build_model(args.student, info.num_classes, info.in_channels)
    total = args.steps + args.warmup
    ctx = DistillerContext(info.num_classes, info.in_channels, info.image_size, len(train), total, 1, 0,
                           teacher_model=args.teacher)
    d = build_distiller(spec["name"], student, teacher, spec["params"], None, ctx).to(device)
    groups = d.param_groups()
    opts = [build_optimizer(p, OptimizerConfig(lr=0.01), device) for p in groups.values() if p]
    trained = sum(p.numel() for ps in groups.values() for p in ps)
    d.train()
    batches = list(loader)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    else:
        base_rss = _rss_kib("VmRSS") or 0
        reset = _reset_peak_rss()
    times = []
    for i, batch in enumerate(batches[:total]):
        t0 = time.perf_counter()
        out = d.training_step(batch, Progress(i, total, 0, 1))
        for o in opts:
            o.zero_grad(set_to_none=True)
        out.loss.backward()
        for o in opts:
            o.step()
        if cuda:
            torch.cuda.synchronize()
        else:
            float(out.loss)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base_mem) / 2**20
        how = "max_memory_allocated"
    else:
        hwm = _rss_kib("VmHWM") if reset else None
        if hwm is None:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            how = "ru_maxrss - RSS"
        else:
            how = "VmHWM - RSS"
        peak = (hwm - base_rss) / 1024
    step = statistics.median(times)
    return {
        "method": method, "trained_params": trained, "ms_per_step": 1000 * step,
        "images_per_second": args.batch_size / step, "peak_mib": peak, "memory": how, "steps": len(times),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="cnn_small")
    ap.add_argument("--student", default="cnn_tiny")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="measured steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--root", default=None, help="Fashion-MNIST folder (default: the Debian package's)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of: " + ", ".join(METHODS))
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the fastest is reported")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch BENCHMARKS.md")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    methods = args.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(args.rounds):  # interleaved, so a change of machine load hits every method
        for method in methods:
            cmd = [sys.executable, "-m", "benchmarks.slkd_cost", "--one", method] + _forward(args)
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                sys.exit(f"{method} failed:\n{res.stderr[-2000:]}")
            runs[method].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(runs[method][-1], flush=True)
    rows = []
    for method in methods:  # fastest round (least disturbed by other load); memory of that round
        rows.append(min(runs[method], key=lambda r: r["ms_per_step"]))
    kd = next((r for r in rows if r["method"] == "kd"), rows[0])
    lines = [
        f"Pair {args.teacher} → {args.student}, batch {args.batch_size}, {args.steps} measured steps after "
        f"{args.warmup} warm-up, device {args.device}; real Fashion-MNIST; each method in its own process, "
        f"{args.rounds} interleaved round(s), the fastest reported.",
        "Peak memory is what the training steps add over the state after building data and models "
        f"({rows[0]['memory']}).",
        "",
        "| method | trained parameters | ms / step (median) | images / s | peak memory (MiB) | time × KD | memory × KD |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['trained_params']:,} | {r['ms_per_step']:.1f} | {r['images_per_second']:.0f} | "
            f"{r['peak_mib']:.1f} | {r['ms_per_step'] / kd['ms_per_step']:.2f} | "
            f"{r['peak_mib'] / kd['peak_mib'] if kd['peak_mib'] > 0 else float('nan'):.2f} |"
        )
    print("\n".join(lines))
    if not args.no_write:
        from benchmarks._report import provenance, write_section

        write_section(f"slkd-cost-{args.teacher}-{args.student}-{args.device}",
                      f"## SLKD training cost vs KD ({args.teacher} → {args.student}, {args.device})\n\n"
                      + provenance() + "\n" + "\n".join(lines))


def _forward(args: argparse.Namespace) -> list[str]:
    out = ["--teacher", args.teacher, "--student", args.student, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    if args.threads:
        out += ["--threads", str(args.threads)]
    if args.root:
        out += ["--root", args.root]
    return out


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()

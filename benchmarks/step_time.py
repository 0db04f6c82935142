"""Time per training step of the engine: this checkout against another checkout of beyondkd.

The step is the engine's own training epoch (``Trainer._train_epoch``, default ``train``
settings of each checkout): KD with the BTKD plug-in, a ``cnn_small`` teacher and a
``cnn_tiny`` student on 28×28 synthetic images held on the device, batch 64. Each measurement
runs in a fresh process with ``PYTHONPATH`` set to one checkout; the two checkouts alternate
(A B A B ...) so that drift in the machine's load hits both alike. A process runs a warm-up
epoch, then ``--epochs`` timed epochs, and reports its median time per step; the table gives
the median over the repeats of each checkout and the median of the per-pair ratios.

    git archive <commit> | tar -x -C /tmp/before       # the checkout to compare against
    python -m benchmarks.step_time --against /tmp/before --repeats 7 --write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(steps: int, epochs: int, batch: int, threads: int) -> dict:
    """Median seconds per step of the engine's epoch, in this process (whichever beyondkd it imports)."""
    import torch

    import beyondkd
    from beyondkd.bias.loss import BiasConfig
    from beyondkd.config import TrainConfig
    from beyondkd.data import DatasetInfo, TensorImages, TensorLoader
    from beyondkd.distillers import DistillerContext, build_distiller
    from beyondkd.engine.trainer import Trainer
    from beyondkd.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("synthetic", 10, 1, 28, (0.2860,), (0.3530,))
    data = TensorImages(torch.randint(0, 256, (batch * steps, 1, 28, 28), generator=g, dtype=torch.uint8),
                        torch.randint(0, 10, (batch * steps,), generator=g), info)
    loader = TensorLoader(data, batch, train=True, device="cpu")
    context = DistillerContext(10, 1, 28, len(data), total_steps=steps * (epochs + 1), total_epochs=epochs + 1)
    distiller = build_distiller("kd", build_model("cnn_tiny", 10, 1), build_model("cnn_small", 10, 1), {}, BiasConfig(), context)
    cfg = TrainConfig(epochs=epochs + 1, progress_bar=False, device="cpu")
    per_step = []
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(distiller, loader, loader, cfg, out, torch.device("cpu"))
        for epoch in range(epochs + 1):
            trainer.epoch, trainer.step_in_epoch = epoch, 0
            record = trainer._train_epoch()
            if epoch:  # the first epoch warms up
                per_step.append(record["epoch_seconds"] / steps)
    return {"beyondkd": str(Path(beyondkd.__file__).parent.parent), "nan_check_every": cfg.nan_check_every,
            "ms_per_step": 1000 * statistics.median(per_step)}


def _child(checkout: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--steps", str(args.steps), "--epochs", str(args.epochs),
           "--batch", str(args.batch), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        raise SystemExit(f"measurement with {checkout} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, help="the other checkout (its folder holds beyondkd/)")
    ap.add_argument("--label", default=None, help="how the table names the other checkout (default: its folder)")
    ap.add_argument("--repeats", type=int, default=5, help="measurements of each checkout, alternating")
    ap.add_argument("--steps", type=int, default=40, help="steps per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement (after one warm-up epoch)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads of each measuring process")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help="write the result into BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.steps, args.epochs, args.batch, args.threads)))
        return 0
    if args.against is None or not (args.against / "beyondkd").is_dir():
        raise SystemExit("give --against a folder holding another checkout's beyondkd/ package")
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    load_before = os.getloadavg()[0]
    for i in range(args.repeats):
        for key, checkout in (("other", args.against), ("this", ROOT)):
            runs[key].append(_child(checkout, args))
            print(f"repeat {i + 1}: {key} {runs[key][-1]['ms_per_step']:.2f} ms/step", flush=True)
    ratios = [t["ms_per_step"] / o["ms_per_step"] for t, o in zip(runs["this"], runs["other"])]
    label = args.label or str(args.against)
    med = {k: statistics.median(r["ms_per_step"] for r in v) for k, v in runs.items()}
    each = {k: ", ".join(f"{r['ms_per_step']:.2f}" for r in v) for k, v in runs.items()}
    lines = [
        f"KD + plug-in (default preset), cnn_small → cnn_tiny, 28×28 synthetic images on the CPU, batch {args.batch}, "
        f"{args.steps} steps per epoch, {args.epochs} timed epochs after a warm-up per process, {args.threads} torch "
        f"thread(s) per process; {args.repeats} processes per checkout, alternating. Each checkout runs its own default "
        f"`train` settings (`nan_check_every`: {runs['other'][0]['nan_check_every']} there, {runs['this'][0]['nan_check_every']} here).",
        "",
        "| checkout | ms / step (median) | per process |",
        "|---|---:|---|",
        f"| {label} | {med['other']:.2f} | {each['other']} |",
        f"| this checkout | {med['this']:.2f} | {each['this']} |",
        "",
        f"- time per step, this / {label}, median of the {args.repeats} pairs: {statistics.median(ratios):.3f} "
        f"(pairs: {', '.join(f'{x:.3f}' for x in ratios)})",
        f"- the machine's 1-minute load average: {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"({os.cpu_count()} cores; other jobs ran meanwhile, so the spread of the pairs is the machine's noise)",
        "- what reading the non-finite flag every step costs is a wait for the device; on the CPU the step's "
        "operations run synchronously, so no difference is expected there, and none is seen",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        from benchmarks._report import provenance, write_section

        write_section("step-time-cpu", "## Engine step time against an earlier checkout (CPU)\n\n" + provenance() + "\n" + text)
    return 0


if __name__ == "__main__":
    if "--one" in sys.argv:  # a measuring process: imports nothing but the checkout's beyondkd
        raise SystemExit(main())
    from benchmarks._report import run_main

    run_main(main)

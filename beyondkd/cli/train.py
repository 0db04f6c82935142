"""``beyondkd train-teacher`` and ``beyondkd distill``: train from a YAML config."""

from __future__ import annotations

import argparse
import json

from beyondkd.config import load_config


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, help="YAML run config (a path, or a packaged one: configs/kd.yaml)")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last.pt")
    p.add_argument("--output-dir", "-o", help="run folder (default: output_dir of the config, else runs/<name>)")
    p.add_argument("--cache-dir", help="where cached teacher logits are kept (default: <runs>/.cache)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3 data.subset=5000")


def _run(args: argparse.Namespace, mode: str) -> int:
    from beyondkd.engine.build import prepare_run

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    # every process checks the run folder before it joins the process group
    prepared = prepare_run(config, mode, cache_dir=args.cache_dir, resume=args.resume)  # type: ignore[arg-type]
    if prepared.teacher_readout is not None:
        print(f"{config.name}: {prepared.teacher_readout.reading()}", flush=True)
    result = prepared.trainer.fit(resume=args.resume)
    s = result.summary
    teacher = f", teacher {s['teacher_acc']:.2f}" if s.get("teacher_acc") is not None else ""
    print(
        f"{config.name}: best {s['best_acc']:.2f} (epoch {s['best_epoch']}), last {s['last_acc']:.2f}{teacher}"
        f" -> {result.output_dir}"
    )
    print(json.dumps(s))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-teacher", help="train a network on labels (a teacher, or the CE baseline)")
    _add_common(p)
    p.set_defaults(func=lambda a: _run(a, "train-teacher"))
    p = sub.add_parser("distill", help="train a student from a teacher with a KD method (+ bias plug-in)")
    _add_common(p)
    p.set_defaults(func=lambda a: _run(a, "distill"))

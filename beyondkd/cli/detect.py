"""``beyondkd detect``: Faster R-CNN FPN on COCO — train a teacher, distil a student, evaluate.

    beyondkd detect train-teacher -c configs/detection/teacher_r101.yaml
    beyondkd detect distill -c configs/detection/r101-r18_kd_btkd.yaml
    beyondkd detect eval -k runs/coco_r101-r18_kd_btkd/best.pt [-c config.yaml] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json


def _train(args: argparse.Namespace, mode: str) -> int:
    from beyondkd.detection.coco import require_pycocotools

    require_pycocotools()
    from beyondkd.detection.config import load_detection_config
    from beyondkd.detection.evaluate import METRIC_NAMES, format_metrics
    from beyondkd.detection.task import prepare_detection_run

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    config = load_detection_config(args.config, overrides)
    prepared = prepare_detection_run(config, mode, resume=args.resume)  # type: ignore[arg-type]
    if prepared.teacher_metrics and prepared.trainer.dist.is_main:
        print(f"{config.name}: teacher {config.teacher.backbone}: {format_metrics(prepared.teacher_metrics)}", flush=True)  # type: ignore[union-attr]
    result = prepared.trainer.fit(resume=args.resume)
    s = result.summary
    best = {k: s[f"best_{k}"] for k in METRIC_NAMES if f"best_{k}" in s}
    last = result.history[-1] if result.history else {}
    print(f"{config.name}: best epoch {s['best_epoch']}: {format_metrics(best)}; last: {format_metrics(last)} -> {result.output_dir}")
    print(json.dumps(s))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from beyondkd.detection.coco import require_pycocotools

    require_pycocotools()
    from beyondkd.detection.config import load_detection_config
    from beyondkd.detection.evaluate import format_metrics
    from beyondkd.detection.task import evaluate_checkpoint

    config = load_detection_config(args.config, list(args.overrides))
    explicit_input = any(o.startswith(("data.min_size=", "data.max_size=")) for o in args.overrides)
    metrics = evaluate_checkpoint(args.checkpoint, config.data, args.device, use_checkpoint_input=not explicit_input)
    print(f"{args.checkpoint} on {config.data.val_annotations}: {format_metrics(metrics)}")
    print(json.dumps({"checkpoint": str(args.checkpoint), **metrics}))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="object detection (Faster R-CNN FPN, COCO): train-teacher | distill | eval")
    dsub = p.add_subparsers(dest="detect_command", metavar="ACTION", required=True)
    for name, helptext in (
        ("train-teacher", "train a detector on COCO labels (a teacher or the baseline)"),
        ("distill", "distil a student detector on the RoI head (KD, optionally + BTKD)"),
    ):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("--config", "-c", required=True, help="detection YAML (a path or configs/detection/<name>.yaml)")
        q.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last.pt")
        q.add_argument("--output-dir", "-o", help="run folder (default: output_dir of the config, else runs/<name>)")
        q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=1 data.subset=500")
        q.set_defaults(func=lambda a, mode=name: _train(a, mode))
    q = dsub.add_parser("eval", help="COCO bbox AP of a detection checkpoint")
    q.add_argument("--checkpoint", "-k", required=True, help="best.pt / last.pt of a detection run")
    q.add_argument("--config", "-c", help="config giving data.val_images / data.val_annotations (default: COCO val2017 paths)")
    q.add_argument("--device", default="auto")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.val_annotations=path.json data.val_subset=500")
    q.set_defaults(func=_eval)

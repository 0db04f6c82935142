"""``beyondkd report``: accuracy curves and bias statistics of run folders, as PNGs."""

from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from beyondkd.bench.report import make_report

    summary = make_report(args.runs, args.out, args.target_fraction, args.reference)
    print(summary["markdown"])
    print("wrote " + ", ".join(summary["files"]) + f", {args.out}/report.md and report.json")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plot accuracy curves and bias statistics of run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders holding metrics.jsonl")
    p.add_argument("--out", "-o", default="runs/report", help="folder for the PNGs and the summary (default runs/report)")
    p.add_argument("--reference", help="the run whose final accuracy sets the epochs-to-target bar (default: the first plain KD run)")
    p.add_argument("--target-fraction", type=float, default=0.99, help="epochs-to-target: fraction of the reference's final accuracy (default 0.99)")
    p.set_defaults(func=_report)

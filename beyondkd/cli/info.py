"""Listing commands: ``beyondkd models``, ``methods``, ``datasets``, ``configs``, ``presets``."""

from __future__ import annotations

import argparse
import sys


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c in ("params (M)", "MACs (M)") else "left")
    for r in rows:
        table.add_row(*r)
    Console(width=max(100, len(max((" ".join(r) for r in rows), key=len, default="")) + 20)).print(table)


def _models(args: argparse.Namespace) -> int:
    from beyondkd.models import get_spec, model_names
    from beyondkd.models.registry import model_cost

    default_classes = {"mnist": 10, "imagenet": 1000, "timm": 1000}
    rows = []
    for name in model_names():
        spec = get_spec(name)
        if args.family and spec.family != args.family:
            continue
        size = args.input_size or spec.input_size
        in_ch = 1 if spec.family == "mnist" else 3
        classes = args.num_classes or default_classes.get(spec.family, 100)
        params, macs = model_cost(name, classes, in_ch, size, flops=not args.no_flops)
        rows.append([name, spec.family, f"{classes}", f"{params / 1e6:.3f}", f"{macs / 1e6:.1f}" if macs else "-", f"{size}", spec.description])
    _table("models (parameters and MACs of one image at the model's input size)",
           ["name", "family", "classes", "params (M)", "MACs (M)", "input", "description"], rows)
    return 0


def _methods(args: argparse.Namespace) -> int:
    from beyondkd.distillers import get_distiller_class, method_names

    rows = []
    for name in method_names():
        cls = get_distiller_class(name)
        rows.append([name, "yes" if cls.supports_bias else "no", ", ".join(sorted(cls.Params.model_fields)) or "-", cls.description])
    _table("methods", ["name", "bias plug-in", "params", "description"], rows)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from beyondkd.data import dataset_names, get_dataset_spec

    rows = [[n, get_dataset_spec(n).default_root or "-", get_dataset_spec(n).description] for n in dataset_names()]
    _table("datasets", ["name", "default root", "description"], rows)
    return 0


def _configs(args: argparse.Namespace) -> int:
    from beyondkd.config import PACKAGE_CONFIGS

    shown = 0
    for path in sorted(PACKAGE_CONFIGS.rglob("*.yaml")):
        rel = path.relative_to(PACKAGE_CONFIGS)
        if rel.parts[0] == "bench":  # suites, not run configs: `beyondkd bench --list`
            continue
        name = f"configs/{rel}"
        if args.pattern and args.pattern not in name:
            continue
        print(name)
        shown += 1
    if shown == 0:
        print(f"no packaged config matches '{args.pattern}'", file=sys.stderr)
        return 1
    return 0


def _presets(args: argparse.Namespace) -> int:
    from beyondkd.bias import BIAS_PRESETS, DEFAULT_BIAS_PRESET

    rows = [[name + (" (default)" if name == DEFAULT_BIAS_PRESET else ""), ", ".join(f"{k}={v}" for k, v in fields.items())]
            for name, fields in BIAS_PRESETS.items()]
    _table("bias plug-in presets", ["preset", "settings (on top of the BiasConfig defaults)"], rows)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models with parameters and MACs")
    p.add_argument("--family", help="only this family (mnist, cifar, imagenet)")
    p.add_argument("--input-size", type=int, help="count MACs at this image side (default: each model's own)")
    p.add_argument("--num-classes", type=int, help="classifier size (default: 10 mnist, 100 cifar, 1000 imagenet)")
    p.add_argument("--no-flops", action="store_true", help="skip the MAC count (faster)")
    p.set_defaults(func=_models)
    sub.add_parser("methods", help="list distillation methods").set_defaults(func=_methods)
    sub.add_parser("datasets", help="list datasets").set_defaults(func=_datasets)
    p = sub.add_parser("configs", help="list the packaged configs (benchmark suites: beyondkd bench --list)")
    p.add_argument("pattern", nargs="?", default="", help="only configs whose path contains this, e.g. cifar100/vgg13")
    p.set_defaults(func=_configs)
    sub.add_parser("presets", help="list the bias plug-in presets").set_defaults(func=_presets)

"""Listing commands: ``beyondkd models``, ``methods``, ``datasets``, ``configs``, ``presets``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, NamedTuple


class Column(NamedTuple):
    """A table column: header, record key, how the value is shown, whether long cells wrap
    (else they are cut with an ellipsis; ``--json`` has the whole value), right-justified."""

    header: str
    key: str
    fmt: Callable[[Any], str] = str
    wrap: bool = True
    right: bool = False


def _show(args: argparse.Namespace, title: str, columns: list[Column], records: list[dict[str, Any]]) -> None:
    """``records`` as JSON (``--json``) or as a table that fits the terminal's width."""
    if args.json:
        print(json.dumps(records, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    last_cut = not columns[-1].wrap
    table = Table(title=title, box=None, pad_edge=False, expand=last_cut)
    for k, c in enumerate(columns):
        # the first column (the name to type) is never broken; a last column that does not
        # wrap takes the width the others leave and is cut there
        table.add_column(c.header, no_wrap=k == 0 or not c.wrap, overflow="fold" if c.wrap else "ellipsis",
                         ratio=1 if last_cut and k == len(columns) - 1 else None,
                         justify="right" if c.right else "left")
    for r in records:
        table.add_row(*[c.fmt(r[c.key]) for c in columns])
    Console().print(table)  # the terminal's width (COLUMNS, else 80 when not a terminal)


def _models(args: argparse.Namespace) -> int:
    from beyondkd.models import get_spec, model_names
    from beyondkd.models.registry import model_cost

    default_classes = {"mnist": 10, "imagenet": 1000, "timm": 1000}
    records = []
    for name in model_names():
        spec = get_spec(name)
        if args.family and spec.family != args.family:
            continue
        size = args.input_size or spec.input_size
        in_ch = 1 if spec.family == "mnist" else 3
        classes = args.num_classes or default_classes.get(spec.family, 100)
        params, macs = model_cost(name, classes, in_ch, size, flops=not args.no_flops)
        records.append({"name": name, "family": spec.family, "classes": classes, "params": params,
                        "macs": macs or None, "input_size": size, "description": spec.description})
    classes = (f"{args.num_classes} classes" if args.num_classes
               else "10 classes for mnist, 100 cifar, 1000 imagenet")
    _show(args, f"models: parameters and MACs (millions) of one image at the input size, {classes}",
          [Column("name", "name"), Column("family", "family"),
           Column("params", "params", lambda v: f"{v / 1e6:.3f}", right=True),
           Column("MACs", "macs", lambda v: f"{v / 1e6:.1f}" if v else "-", right=True),
           Column("input", "input_size"), Column("description", "description", wrap=False)], records)
    return 0


def _methods(args: argparse.Namespace) -> int:
    from beyondkd.distillers import get_distiller_class, method_names

    records = []
    for name in method_names():
        cls = get_distiller_class(name)
        records.append({"name": name, "bias_plugin": bool(cls.supports_bias), "params": sorted(cls.Params.model_fields),
                        "description": cls.description})
    _show(args, "methods", [Column("name", "name"), Column("bias", "bias_plugin", lambda v: "yes" if v else "no"),
                            Column("params", "params", lambda v: ", ".join(v) or "-"),
                            Column("description", "description")], records)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from beyondkd.data import dataset_names, get_dataset_spec

    records = [{"name": n, "default_root": get_dataset_spec(n).default_root, "description": get_dataset_spec(n).description}
               for n in dataset_names()]
    _show(args, "datasets", [Column("name", "name"), Column("default root", "default_root", lambda v: v or "-"),
                             Column("description", "description")], records)
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

    records = [{"name": name, "default": name == DEFAULT_BIAS_PRESET, "settings": dict(fields)}
               for name, fields in BIAS_PRESETS.items()]
    _show(args, "bias plug-in presets",
          [Column("preset", "name"), Column("default", "default", lambda v: "yes" if v else ""),
           Column("settings (on top of the BiasConfig defaults)", "settings",
                  lambda v: ", ".join(f"{k}={x}" for k, x in v.items()))],
          records)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    def listing(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--json", action="store_true", help="print the list as JSON records (for scripts)")
        p.set_defaults(func=func)
        return p

    p = listing("models", "list models with parameters and MACs", _models)
    p.add_argument("--family", help="only this family (mnist, cifar, imagenet)")
    p.add_argument("--input-size", type=int, help="count MACs at this image side (default: each model's own)")
    p.add_argument("--num-classes", type=int, help="classifier size (default: 10 mnist, 100 cifar, 1000 imagenet)")
    p.add_argument("--no-flops", action="store_true", help="skip the MAC count (faster)")
    listing("methods", "list distillation methods", _methods)
    listing("datasets", "list datasets", _datasets)
    p = sub.add_parser("configs", help="list the packaged configs (benchmark suites: beyondkd bench --list)")
    p.add_argument("pattern", nargs="?", default="", help="only configs whose path contains this, e.g. cifar100/vgg13")
    p.set_defaults(func=_configs)
    listing("presets", "list the bias plug-in presets", _presets)

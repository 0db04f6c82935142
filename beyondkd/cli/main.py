"""The ``beyondkd`` command line.

Each subcommand lives in its own module of :mod:`beyondkd.cli` exposing
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``. A user error
(:class:`~beyondkd.errors.BeyondKDError`) is printed as one line ``error: ...`` with exit
status 2, never as a stack trace.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from beyondkd import __version__
from beyondkd.errors import BeyondKDError

# Order of subcommands in --help; modules not listed follow alphabetically.
_ORDER = ("demo", "train", "eval", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beyondkd",
        description="Knowledge distillation from a corrected teacher (BTKD bias plug-in, SLKD, KD zoo).",
    )
    parser.add_argument("--version", action="version", version=f"beyondkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import beyondkd.cli as cli_pkg

    names = [m.name for m in pkgutil.iter_modules(cli_pkg.__path__) if not m.name.startswith("_") and m.name != "main"]
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))
    for name in names:
        module = importlib.import_module(f"beyondkd.cli.{name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except BeyondKDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; continue with --resume", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # a torchrun process that joined the group leaves it
            from beyondkd.engine.distributed import leave_process_group

            leave_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``beyondkd`` command line.

Each subcommand lives in its own module of :mod:`beyondkd.cli` exposing
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``. A user error
(:class:`~beyondkd.errors.BeyondKDError`) is printed as one line ``error: ...`` with exit
status 2, never as a stack trace; so is a file operation the system refused for a reason the
user can fix (no permission, a read-only or full file system), with the fix.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pkgutil
import sys
from typing import Sequence

from beyondkd import __version__
from beyondkd.errors import BeyondKDError

# Order of subcommands in --help; modules not listed follow alphabetically.
_ORDER = ("demo", "train", "eval", "info")

_ELSEWHERE = "(--output-dir DIR; teacher-logit cache: --cache-dir DIR)"
_PERMISSION = f"fix its permissions or choose another folder {_ELSEWHERE}"
_FULL = f"free disk space or choose another folder {_ELSEWHERE}; files already saved are intact"
#: OS errors the user can fix (a folder without permission, read-only or full): (what, the fix)
_OS_FIXES = {
    errno.EACCES: ("no permission for", _PERMISSION),
    errno.EPERM: ("no permission for", _PERMISSION),
    errno.EROFS: ("cannot write", f"choose a folder on a writable file system {_ELSEWHERE}"),
    errno.ENOSPC: ("cannot write", _FULL),
    errno.EDQUOT: ("cannot write", _FULL),
}


def os_error_line(exc: OSError) -> str | None:
    """The one-line message of an OS error the user can fix (permission, read-only, disk full), else None."""
    if exc.errno not in _OS_FIXES:
        return None
    what, fix = _OS_FIXES[exc.errno]
    where = f" {exc.filename}" if exc.filename else ""
    return f"{what}{where} ({exc.strerror}): {fix}"


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
    from beyondkd.cli._messages import show_library_messages

    show_library_messages()
    parser = build_parser()
    # `distill -c x.yaml train.epochs=1 -o out data.subset=10`: argparse gives the overrides
    # after `-o out` back as unknown; commands that take KEY=VALUE overrides get them too
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(a.startswith("-") for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader stopped early (`beyondkd configs | head -1`): end quietly with status 1
        # (as Python's documentation and rich do); stdout goes to /dev/null so the
        # interpreter's exit flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except BeyondKDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        line = os_error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
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

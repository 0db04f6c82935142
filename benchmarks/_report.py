"""Write a benchmark's results into its own section of BENCHMARKS.md.

Benchmarks run from the repository root as modules (``python -m benchmarks.throughput ...``),
with beyondkd installed or on ``PYTHONPATH``. Each benchmark owns one section, delimited by ``<!-- section:NAME -->`` and
``<!-- /section:NAME -->``; re-running it replaces only that section. Every section states the
machine, the command and the date of the run that produced it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery figure below comes from a run of the script named in its section, on the machine and date stated there.\n"


def machine_description() -> str:
    """CPU model, core count, memory and, when present, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    desc = f"{cpu}, {os.cpu_count()} cores{mem}"
    try:
        import torch

        desc += f", torch {torch.__version__}"
        if torch.cuda.is_available():
            desc += f", GPU {torch.cuda.get_device_name(0)}"
        else:
            desc += f", CPU only ({torch.get_num_threads()} threads)"
    except ImportError:
        pass
    return desc


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(command: str | None = None) -> str:
    """The 'machine / command / date' lines that head every section (scripts run as ``python -m benchmarks.<name>``)."""
    module = os.path.relpath(sys.argv[0], ROOT).removesuffix(".py").replace(os.sep, ".")
    cmd = command or shlex.join(["python", "-m", module] + sys.argv[1:])
    date = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"- machine: {machine_description()}\n- command: `{cmd}`\n- date: {date} (commit {git_revision()})\n"


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) section ``name`` of BENCHMARKS.md with ``markdown``."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}\n"
    text = path.read_text() if path.is_file() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


def run_main(main: Callable[[], int | None]) -> None:
    """Run a benchmark's ``main`` as a script: a project error is one line on stderr and exit 2."""
    from beyondkd.errors import BeyondKDError

    try:
        code = main()
    except BeyondKDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(code or 0)

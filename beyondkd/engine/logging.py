"""Run logs: the history of a run's epochs, handed to its metric sinks (:mod:`beyondkd.engine.sinks`),
and the progress of an epoch (a tqdm bar on a terminal, one plain line per epoch otherwise).

``metrics.jsonl`` (one JSON line per epoch) is always written; TensorBoard, MLflow and Weights &
Biases are chosen with ``train.loggers``. Library messages (not metrics) go through the Python
logger ``logging.getLogger("beyondkd")``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from beyondkd.engine.sinks import RunInfo, build_sinks

#: the sinks of a run that does not choose (``train.loggers``' default)
DEFAULT_LOGGERS = ("jsonl", "tensorboard")


class MetricsLogger:
    """Keeps a run's epoch records and hands them (and step scalars) to its sinks.

    Args:
        output_dir: the run folder.
        enabled: False on non-main ranks (nothing is written).
        tensorboard: with ``loggers`` unset, also write TensorBoard events (``jsonl`` alone if False).
        loggers: sink names (:data:`beyondkd.engine.sinks.SINKS`); ``jsonl`` is always included.
        run: the run's name and config, recorded by the trackers.
    """

    def __init__(self, output_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 loggers: list[str] | tuple[str, ...] | None = None, run: RunInfo | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        if loggers is None:
            loggers = DEFAULT_LOGGERS if tensorboard else ("jsonl",)
        # checked (names, installed packages) on every rank; opened on the first write, on the main rank only
        sinks = build_sinks(loggers, self.output_dir, run or RunInfo())
        self.sinks = sinks if enabled else []

    @property
    def path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Start from a resumed run's history (lines of later epochs are dropped)."""
        self.history = list(history)
        for sink in self.sinks:
            sink.restore(self.history)

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch's record and hand it to every sink."""
        self.history.append(record)
        for sink in self.sinks:
            sink.log_epoch(record, self.history)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """Per-iteration scalars (trackers only; ``metrics.jsonl`` holds epochs)."""
        for sink in self.sinks:
            sink.log_step(step, scalars)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class EpochLine:
    """The progress of an epoch as one line when it ends (``name epoch 2/20: 469/469 steps,
    loss 0.4321, 8.2 s``), for output that is a file or a CI log rather than a terminal.

    Offers the part of tqdm's interface the trainer uses: ``update``, ``set_postfix``, ``close``.
    """

    def __init__(self, total: int, initial: int, desc: str) -> None:
        self.total, self.n, self.desc = total, initial, desc
        self.postfix: dict[str, Any] = {}
        self._start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)

    def close(self) -> None:
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}/{self.total} steps{extra}, {time.perf_counter() - self._start:.1f} s",
              file=sys.stderr, flush=True)


def _is_terminal(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def epoch_progress(total: int, initial: int, desc: str):
    """A tqdm bar when stdout and stderr are terminals, else an :class:`EpochLine` (no bar's
    carriage returns in a file or a CI log)."""
    if not (_is_terminal(sys.stdout) and _is_terminal(sys.stderr)):
        return EpochLine(total, initial, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run folder."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

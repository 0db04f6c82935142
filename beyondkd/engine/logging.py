"""Run logs: the history of a run's epochs, handed to its metric sinks (:mod:`beyondkd.engine.sinks`).

``metrics.jsonl`` (one JSON line per epoch) is always written; TensorBoard, MLflow and Weights &
Biases are chosen with ``train.loggers``. Library messages (not metrics) go through the Python
logger ``logging.getLogger("beyondkd")``.
"""

from __future__ import annotations

import json
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


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run folder."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

"""Run logs: one JSON line per epoch in ``metrics.jsonl`` and TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from beyondkd.engine.checkpoint import atomic_write_text


class MetricsLogger:
    """Writes ``metrics.jsonl`` (rewritten atomically from the history) and TensorBoard scalars.

    Args:
        output_dir: the run folder.
        enabled: False on non-main ranks (nothing is written).
        tensorboard: also write TensorBoard events under ``output_dir/tensorboard``.
    """

    def __init__(self, output_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.history: list[dict[str, Any]] = []
        self._tensorboard = enabled and tensorboard
        self._tb = None  # created on the first scalar, so a run that fails to start writes nothing

    def _writer(self):
        """The TensorBoard writer (created on first use), or None when TensorBoard is off."""
        if self._tb is None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                self._tensorboard = False
                return None
            self._tb = SummaryWriter(str(self.output_dir / "tensorboard"))
        return self._tb

    @property
    def path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Start from a resumed run's history (lines of later epochs are dropped)."""
        self.history = list(history)
        self._flush()

    def log_epoch(self, record: dict[str, Any]) -> None:
        """Append one epoch's record and mirror its numbers to TensorBoard."""
        self.history.append(record)
        if not self.enabled:
            return
        self._flush()
        tb = self._writer()
        if tb is not None:
            epoch = int(record["epoch"])
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    tb.add_scalar(key.replace(".", "/"), value, epoch)
            tb.flush()

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """Per-iteration scalars (TensorBoard only)."""
        tb = self._writer() if self.enabled else None
        if tb is not None:
            for key, value in scalars.items():
                tb.add_scalar(f"step/{key}", value, step)

    def _flush(self) -> None:
        if self.enabled:
            atomic_write_text("".join(json.dumps(r) + "\n" for r in self.history), self.path)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a run folder."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

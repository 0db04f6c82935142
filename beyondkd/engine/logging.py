"""Run logs: one JSON line per epoch in ``metrics.jsonl``, TensorBoard event files, and the
progress of an epoch (a tqdm bar on a terminal, one plain line per epoch otherwise)."""

from __future__ import annotations

import json
import sys
import time
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

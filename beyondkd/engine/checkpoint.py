"""Atomic checkpoints and the random-number-generator state they carry.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one (``os.replace`` is atomic on POSIX), so a kill at any moment leaves either the
old or the new file, never a torn one; it gets the usual mode (``0o666`` less the umask).
Everything stored is a tensor, a number, a string, or a list/dict of those, so files load with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from beyondkd.errors import BeyondKDError
from beyondkd.torch_files import unreadable_reason

CHECKPOINT_VERSION = 1


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in its folder, renamed over it when complete.

    The file gets the mode an ordinary ``open`` would give (``0o666`` less the umask), not the
    ``0o600`` of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write a text file (UTF-8) atomically."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """Load a beyondkd checkpoint on the CPU, with a one-line error if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise BeyondKDError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - unpickling errors are the file's fault
        reason = unreadable_reason(path, exc, weights_only, "weights_only=False (eval: --unsafe-load)")
        raise BeyondKDError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise BeyondKDError(f"{path} is not a beyondkd checkpoint (no 'model' entry)")
    return ckpt


def capture_rng_state() -> dict[str, Any]:
    """The state of every RNG a run draws from (CPU, the current CUDA device, numpy, python).

    Only the current CUDA device's generator is kept: under torchrun each process draws from its
    own device, and every process's generator is in the same state as rank 0's (same seed, same
    draws), so rank 0's checkpoint restores each process's own device exactly.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(np_state[0]), torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _python_state_to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        if isinstance(state["cuda"], (list, tuple)):  # older checkpoints kept every device's state
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            torch.cuda.set_rng_state(state["cuda"])


def _python_state_to_lists(state: tuple) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]

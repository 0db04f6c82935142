"""The run folder check: start only in an empty folder, resume only the very same run.

Every process calls :func:`check_run_folder` before it joins the process group or loads any data,
so a refused start is the same one-line error on every process:

* without ``--resume`` a folder holding ``last.pt`` is refused (nothing saved is overwritten);
* with ``--resume`` there must be a ``last.pt``, written by the same number of processes, and
  the run's *resolved* config must be the recorded one except for :data:`RESUMABLE_KEYS`
  (where and how the run executes, never what it computes). Any other difference (optimizer,
  schedule, method, plug-in, data, seed, models, precision) is an error naming the keys;
* ``train.epochs`` may change only when nothing depends on the run's length: the LR schedule
  (a cosine decays over the epochs; constant and multistep do not), the method (SLKD's
  sequential phases) and the plug-in (its γ follows the fraction of training done). Otherwise
  the error gives the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from beyondkd.errors import BeyondKDError
from beyondkd.torch_files import unreadable_reason

#: config keys a resumed run may change: where and how it executes, not what it computes
RESUMABLE_KEYS = frozenset({
    "name", "output_dir", "data.root", "data.download", "data.num_workers",
    "train.device", "train.threads", "train.progress_bar", "train.log_every", "train.nan_check_every",
    "train.checkpoint_every_steps", "train.eval_every", "train.cache_dir", "train.teacher_readout_rows",
    "train.compile", "train.channels_last", "train.eval_teacher", "train.tensorboard",
})


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (empty mappings stay as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_checkpoint_header(path: Path) -> dict[str, Any]:
    """A checkpoint's entries without reading its tensors into memory (memory-mapped)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is the user's to fix
        reason = unreadable_reason(path, exc, weights_only=True)
        raise BeyondKDError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise BeyondKDError(f"{path} is not a beyondkd checkpoint (no 'model' entry)")
    return ckpt


def training_differences(recorded: dict[str, Any], planned: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys (dotted) whose values differ between two resolved configs, outside :data:`RESUMABLE_KEYS`."""
    a, b = flatten(recorded), flatten(planned)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_KEYS}


def check_run_folder(output_dir: str | Path, resume: bool, planned: dict[str, Any] | None = None,
                     length_dependence: str | None = None, world_size: int = 1) -> dict[str, Any] | None:
    """Refuse a start that would overwrite a run, or a resume that would not continue it.

    Args:
        output_dir: the run folder.
        resume: ``--resume`` was given.
        planned: the run's resolved config (``model_dump(mode="json")``); ``None`` skips the
            comparison (a trainer built by hand).
        length_dependence: why the run depends on ``train.epochs`` (task schedule, method or
            plug-in), or ``None`` when ``train.epochs`` may change on resume.
        world_size: processes of this run.

    Returns:
        The checkpoint's entries (memory-mapped) when resuming, else ``None``.
    """
    last = Path(output_dir) / "last.pt"
    if not resume:
        if last.exists():
            raise BeyondKDError(f"{output_dir} already holds a run: pass --resume to continue it, or choose another output_dir")
        return None
    if not last.is_file():
        raise BeyondKDError(f"nothing to resume: {last} does not exist (run without --resume to start)")
    ckpt = read_checkpoint_header(last)
    recorded_world = ckpt.get("world_size")
    if recorded_world is not None and int(recorded_world) != world_size:
        raise BeyondKDError(
            f"{last} was written by a run of {recorded_world} process(es) but this one has {world_size}: "
            f"resume with the same number of processes (each one's share of the data and the schedule depend on it)"
        )
    recorded = ckpt.get("config")
    if planned is None or not recorded:
        return ckpt
    diffs = training_differences(recorded, planned)
    epochs = diffs.pop("train.epochs", None)
    if diffs:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in diffs.items())
        raise BeyondKDError(
            f"--resume with settings that change training: {listed}; resume with the recorded settings "
            f"({Path(output_dir) / 'config.yaml'}) or start a new run in another output_dir"
        )
    if epochs is not None:
        old, new = epochs
        done = int(ckpt.get("epoch", 0))
        if length_dependence is not None:
            raise BeyondKDError(
                f"--resume cannot change train.epochs ({old} -> {new}): {length_dependence}, so the epochs already "
                "trained would not be those of the longer run; start a new run in another output_dir"
            )
        if new < done:
            raise BeyondKDError(f"--resume with train.epochs={new}, but {done} epochs are already trained: give train.epochs >= {done}")
    return ckpt

"""Cache of the frozen teacher's logits over the training set (skips the teacher forward).

Valid only when the training images do not change between epochs (augmentation off): the
teacher then sees the same input for a sample every epoch, so its logits are computed once,
keyed by sample index. The cache file's name is a hash of the teacher's weights and of the
data (dataset, root, subset, size, labels, input size, precision), so changing any of them
computes a new cache instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from beyondkd.data.base import Batch
from beyondkd.engine.checkpoint import atomic_save


def module_fingerprint(module: nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes and values)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(teacher: nn.Module, data_facts: dict[str, Any], targets: Tensor) -> str:
    """Key of a teacher-logit cache: teacher weights + data facts + the labels' bytes."""
    h = hashlib.sha256()
    h.update(module_fingerprint(teacher).encode())
    h.update(json.dumps(data_facts, sort_keys=True, default=str).encode())
    h.update(targets.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


@torch.no_grad()
def compute_logits(teacher: nn.Module, ordered_loader: Any, num_samples: int, autocast: Any) -> Tensor:
    """Teacher logits ``(num_samples, C)`` (float32, CPU) placed by each batch's ``indices``."""
    teacher.eval()
    ordered_loader.set_epoch(0)
    out: Tensor | None = None
    for batch in ordered_loader:
        with autocast():
            logits = teacher(batch.images).float()
        if out is None:
            out = torch.empty(num_samples, logits.shape[1], dtype=torch.float32)
        out[batch.indices.cpu()] = logits.cpu()
    if out is None:
        raise ValueError("cannot cache teacher logits of an empty training set")
    return out


def load_or_compute(
    teacher: nn.Module,
    ordered_loader: Any,
    num_samples: int,
    targets: Tensor,
    data_facts: dict[str, Any],
    cache_dir: Path | None,
    autocast: Any,
) -> tuple[Tensor, bool]:
    """The cached logits (from ``cache_dir`` if present) and whether they were read from disk."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"teacher_logits_{cache_key(teacher, data_facts, targets)}.pt"
        if path.is_file():
            try:
                logits = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(logits, Tensor) and logits.shape[0] == num_samples:
                    return logits, True
            except Exception:  # noqa: BLE001 - a damaged cache is recomputed
                pass
    logits = compute_logits(teacher, ordered_loader, num_samples, autocast)
    if path is not None:
        atomic_save(logits, path)
    return logits, False


class CachedTeacherLoader:
    """Wraps a training loader; each batch carries ``teacher_logits`` looked up by index."""

    def __init__(self, loader: Any, logits: Tensor) -> None:
        self.loader = loader
        self.logits = logits

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.loader.set_epoch(epoch, skip_batches)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            idx = batch.indices.to(self.logits.device)
            batch.teacher_logits = self.logits[idx].to(batch.images.device, non_blocking=True)
            yield batch

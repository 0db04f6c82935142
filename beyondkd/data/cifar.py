"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) read from the standard "python version" pickles.

Where the files go (``data.root``, default ``data``; the folder holding the extracted archive
or the extracted folder itself):

* CIFAR-10: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
  (``cifar-10-python.tar.gz`` extracted);
* CIFAR-100: ``<root>/cifar-100-python/{train, test, meta}`` (``cifar-100-python.tar.gz``).

Each batch file is a pickled dict with ``data`` (``N×3072`` uint8, channel-major 32×32 RGB) and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). ``data.download: true`` fetches the archive
with torchvision's downloader into ``root``; nothing is downloaded otherwise. The pickles are
read with an unpickler that only accepts the numpy types these files contain.

Both are 50 000 training and 10 000 test images, held in memory as uint8 and augmented on the
training device (:class:`~beyondkd.data.loaders.TensorLoader`): random 32×32 crop of the image
zero-padded by 4 pixels, and horizontal flip (the field's recipe). Normalisation statistics
(training split, pixels in [0, 1]):

* CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616);
* CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beyondkd.data.base import DatasetInfo, Splits, TensorImages
from beyondkd.data.registry import register_dataset
from beyondkd.errors import DataError

DEFAULT_ROOT = "data"

CIFAR10_INFO = DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4, flip=True)
CIFAR100_INFO = DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4, flip=True)


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its files and labels."""

    info: DatasetInfo
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    archive: str
    torchvision_class: str


CIFAR10 = CifarLayout(
    CIFAR10_INFO, "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
    "batches.meta", "labels", "label_names", "cifar-10-python.tar.gz", "CIFAR10",
)
CIFAR100 = CifarLayout(
    CIFAR100_INFO, "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names",
    "cifar-100-python.tar.gz", "CIFAR100",
)

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only (what CIFAR batch files hold)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def read_batch(path: str | Path) -> dict[str, Any]:
    """Read one CIFAR pickle (written by Python 2 or 3) into a dict with ``str`` keys."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR python-pickle batch file ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not a CIFAR python-pickle batch file (no dict inside)")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}


def find_folder(layout: CifarLayout, root: str | Path) -> Path:
    """The folder holding the batch files: ``root/<folder>`` or ``root`` itself."""
    root = Path(root)
    for candidate in (root / layout.folder, root):
        if (candidate / layout.train_files[0]).is_file():
            return candidate
    raise DataError(
        f"{layout.info.name} files not found under {root}: extract {layout.archive} so that "
        f"{root / layout.folder / layout.train_files[0]} exists, set data.root to that folder's parent, "
        "or set data.download: true"
    )


def load_split(layout: CifarLayout, folder: Path, train: bool) -> TensorImages:
    """Concatenate the batch files of one split into ``(N, 3, 32, 32)`` uint8 images and labels."""
    images, labels = [], []
    for name in layout.train_files if train else layout.test_files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{layout.info.name} file {path} is missing: extract {layout.archive} again or set data.download: true")
        batch = read_batch(path)
        if "data" not in batch or layout.label_key not in batch:
            raise DataError(f"{path} has no 'data'/'{layout.label_key}' entries: is it a {layout.info.name} file?")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(batch[layout.label_key]):
            raise DataError(f"{path} holds data of shape {data.shape} for {len(batch[layout.label_key])} labels; expected N×3072")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[layout.label_key], dtype=np.int64))
    targets = np.concatenate(labels)
    if targets.size and (targets.min() < 0 or targets.max() >= layout.info.num_classes):
        raise DataError(f"{layout.info.name} labels in {folder} fall outside 0..{layout.info.num_classes - 1}")
    info = layout.info
    meta_path = folder / layout.meta_file
    if meta_path.is_file():
        names = read_batch(meta_path).get(layout.names_key)
        if names is not None and len(names) == info.num_classes:
            classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
            info = DatasetInfo(info.name, info.num_classes, info.in_channels, info.image_size, info.mean, info.std,
                               classes, info.crop_padding, info.flip)
    return TensorImages(torch.from_numpy(np.concatenate(images)), torch.from_numpy(targets), info)


def download_archive(layout: CifarLayout, root: str | Path) -> None:
    """Fetch and extract the archive into ``root`` with torchvision's downloader."""
    import torchvision.datasets as tvd

    try:
        getattr(tvd, layout.torchvision_class)(str(root), train=True, download=True)
    except Exception as exc:  # noqa: BLE001 - network/disk failures become one line
        raise DataError(
            f"downloading {layout.info.name} into {root} failed ({type(exc).__name__}: {exc}); without internet, "
            f"put {layout.archive} extracted under {root}"
        ) from None


def load_cifar(layout: CifarLayout, root: str | None, download_missing: bool) -> Splits:
    """Both splits of a CIFAR variant from ``root`` (downloading first if asked and missing)."""
    root_path = Path(root or DEFAULT_ROOT)
    try:
        folder = find_folder(layout, root_path)
    except DataError:
        if not download_missing:
            raise
        download_archive(layout, root_path)
        folder = find_folder(layout, root_path)
    train = load_split(layout, folder, train=True)
    val = load_split(layout, folder, train=False)
    return Splits(train, val, train.info)


@register_dataset("cifar10", default_root=DEFAULT_ROOT, description="CIFAR-10, 32x32 RGB, 10 classes (python pickles)")
def cifar10(root: str | None = None, download: bool = False, **_: object) -> Splits:
    """CIFAR-10 train (50 000) and test (10 000) splits."""
    return load_cifar(CIFAR10, root, download)


@register_dataset("cifar100", default_root=DEFAULT_ROOT, description="CIFAR-100, 32x32 RGB, 100 classes (python pickles)")
def cifar100(root: str | None = None, download: bool = False, **_: object) -> Splits:
    """CIFAR-100 train (50 000) and test (10 000) splits, fine labels."""
    return load_cifar(CIFAR100, root, download)

"""Fashion-MNIST (Xiao et al. 2017) read from its idx files, our embedded default dataset.

Debian's ``dataset-fashion-mnist`` package installs the four files under
``/usr/share/datasets/fashion-mnist/`` (gzip-compressed; uncompressed files work too).
60 000 training and 10 000 test images, 28×28 grey, 10 classes.
Normalisation: mean 0.2860, std 0.3530 (training split, pixel values in [0, 1]).
Augmentation recipe: random crop 28 with 2-pixel zero padding and horizontal flip.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from beyondkd.data.base import DatasetInfo, Splits, TensorImages
from beyondkd.data.registry import register_dataset
from beyondkd.errors import DataError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
INFO = DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), CLASSES, crop_padding=2, flip=True)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (``.gz`` or raw) into a numpy array of its stored shape and type."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(dims)) if dims else 0
    body = np.frombuffer(data, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return body.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"Fashion-MNIST file '{stem}[.gz]' not found in {root}: install it with "
        "'sudo apt-get install dataset-fashion-mnist' or set data.root to the folder holding the idx files"
    )


def load_split(root: str | Path, split: str) -> TensorImages:
    """Load ``train`` or ``val`` (the official test set) as uint8 tensors."""
    root = Path(root)
    img_path, lbl_path = (_find(root, stem) for stem in FILES[split])
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"Fashion-MNIST files in {root} have inconsistent shapes {images.shape} / {labels.shape}")
    return TensorImages(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), INFO)


@register_dataset("fashion_mnist", default_root=DEFAULT_ROOT, description="Fashion-MNIST, 28x28 grey, 10 classes (Debian package)")
def fashion_mnist(root: str | None = None, download: bool = False, **_: object) -> Splits:
    """Both splits of Fashion-MNIST from ``root``; ``download`` is not needed (Debian package)."""
    root_path = Path(root or DEFAULT_ROOT)
    if not root_path.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {root_path} does not exist: install it with "
            "'sudo apt-get install dataset-fashion-mnist' or set data.root"
        )
    return Splits(load_split(root_path, "train"), load_split(root_path, "val"), INFO)

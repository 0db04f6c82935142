"""Shared fixtures: real Fashion-MNIST (Debian package) and a small real slice of it.

The slice is written in the exact idx(.gz) format of the package so the real reader loads it;
tests that train use it to stay fast on 2 CPU cores.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

FMNIST_ROOT = Path(os.environ.get("BEYONDKD_FMNIST_ROOT", "/usr/share/datasets/fashion-mnist"))

torch.set_num_threads(int(os.environ.get("BEYONDKD_TEST_THREADS", max(1, min(2, os.cpu_count() or 1)))))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzip idx file."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="session")
def fmnist_root() -> Path:
    """The real Fashion-MNIST folder; fails with the install command if it is missing."""
    if not (FMNIST_ROOT / "train-images-idx3-ubyte.gz").is_file() and not (FMNIST_ROOT / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"real Fashion-MNIST is missing in {FMNIST_ROOT}: sudo apt-get install dataset-fashion-mnist")
    return FMNIST_ROOT


@pytest.fixture(scope="session")
def fmnist_splits(fmnist_root):
    from beyondkd.data import build_splits

    return build_splits("fashion_mnist", str(fmnist_root))


@pytest.fixture(scope="session")
def fmnist_slice(fmnist_splits, tmp_path_factory) -> Path:
    """A folder with the first 2 000 training and 1 000 test images of real Fashion-MNIST."""
    root = tmp_path_factory.mktemp("fmnist_slice")
    for split, count, (img_name, lbl_name) in (
        ("train", 2000, ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")),
        ("val", 1000, ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
    ):
        data = getattr(fmnist_splits, split)
        write_idx(root / img_name, data.images[:count, 0].numpy())
        write_idx(root / lbl_name, data.targets[:count].numpy().astype(np.uint8))
    return root


@pytest.fixture(scope="session")
def slice_teacher(fmnist_slice, tmp_path_factory) -> Path:
    """A cnn_small teacher trained for 2 epochs on the real slice; returns its best.pt."""
    from beyondkd.config import load_config
    from beyondkd.engine.build import run_training

    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = load_config(
        raw={
            "name": "slice_teacher",
            "output_dir": str(out),
            "data": {"root": str(fmnist_slice), "augment": False, "batch_size": 64},
            "model": {"name": "cnn_small"},
            "train": {"epochs": 2, "progress_bar": False, "optimizer": {"lr": 0.05}},
        }
    )
    run_training(cfg, "train-teacher")
    return out / "best.pt"


def slice_config(root: Path, out: Path, teacher: Path | None, **sections):
    """A small distillation config on the real slice (helper for tests)."""
    from beyondkd.config import deep_merge

    raw = {
        "name": "slice",
        "output_dir": str(out),
        "data": {"root": str(root), "augment": False, "batch_size": 64},
        "train": {"epochs": 1, "progress_bar": False},
    }
    if teacher is not None:
        raw["teacher"] = {"name": "cnn_small", "checkpoint": str(teacher)}
        raw["student"] = {"name": "cnn_tiny"}
    return deep_merge(raw, sections)


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu``-marked tests when no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


REPO = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 600):
    """``torchrun --standalone --nproc_per_node=nproc ARGS`` on the CPU (gloo), from the repository root."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)

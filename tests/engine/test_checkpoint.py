"""Atomic writes and RNG state round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from beyondkd.engine.checkpoint import atomic_save, capture_rng_state, load_checkpoint, restore_rng_state
from beyondkd.errors import BeyondKDError


def test_atomic_save_replaces_and_leaves_no_temp_files(tmp_path):
    p = tmp_path / "c.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, p)
    atomic_save({"model": {"w": torch.zeros(2)}}, p)
    assert torch.equal(load_checkpoint(p)["model"]["w"], torch.zeros(2))
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]


def test_failed_save_keeps_the_old_file(tmp_path):
    p = tmp_path / "c.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, p)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_save({"model": Unpicklable()}, p)
    assert torch.equal(load_checkpoint(p)["model"]["w"], torch.ones(2))
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]


def test_rng_roundtrip_through_weights_only_file(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    atomic_save({"model": {}, "rng": capture_rng_state()}, tmp_path / "r.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BeyondKDError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(BeyondKDError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")

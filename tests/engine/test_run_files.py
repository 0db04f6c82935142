"""The files of a run: modes that follow the umask, no debris on a failed start, plain progress lines."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest
import torch

from beyondkd.cli.main import main
from beyondkd.engine.checkpoint import atomic_save, atomic_write_text

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "config.yaml", "accuracy.png")


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _distill(root, teacher, out, *extra) -> list[str]:
    return ["distill", "-c", "configs/kd.yaml", "-o", str(out), f"data.root={root}", f"teacher.checkpoint={teacher}",
            "teacher.name=cnn_small", "student.name=cnn_tiny", "data.augment=false", "data.subset=256",
            "data.val_subset=200", "train.epochs=1", "train.progress_bar=false", *extra]


# --- 11: file modes -----------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_umask_mode(tmp_path, mask):
    with umask(mask):
        atomic_save({"model": {"w": torch.ones(1)}}, tmp_path / "c.pt")
        atomic_write_text("x\n", tmp_path / "t.txt")
        (tmp_path / "plain.txt").write_text("x\n")  # what open() gives: the reference
    expected = 0o666 & ~mask
    assert _mode(tmp_path / "plain.txt") == expected
    assert _mode(tmp_path / "c.pt") == expected and _mode(tmp_path / "t.txt") == expected


def test_run_files_have_the_usual_modes(capsys, fmnist_slice, slice_teacher, tmp_path):
    out = tmp_path / "run"
    with umask(0o022):
        assert main(_distill(fmnist_slice, slice_teacher, out, "--cache-dir", str(tmp_path / "cache"))) == 0, capsys.readouterr().err
    modes = {name: oct(_mode(out / name)) for name in RUN_FILES}
    assert set(modes.values()) == {oct(0o644)}, modes
    assert {oct(_mode(p)) for p in (tmp_path / "cache").iterdir()} == {oct(0o644)}


# --- 12: no debris from a failed start ------------------------------------------------------------
def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_failed_start_leaves_no_files(capsys, fmnist_slice, slice_teacher, tmp_path):
    out = tmp_path / "run"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(_distill(fmnist_slice, slice_teacher, out, *cache)) == 0
    before = _listing(out)
    assert any(name.startswith("tensorboard/events.") for name in before)
    # starting again in a folder that holds a run is refused, and adds nothing (no empty event file)
    assert main(_distill(fmnist_slice, slice_teacher, out, *cache)) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _listing(out) == before
    # resuming a run that does not exist creates nothing
    missing = tmp_path / "missing"
    assert main(_distill(fmnist_slice, slice_teacher, missing, *cache, "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not missing.exists()

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


# --- 14: progress when the output is not a terminal ---------------------------------------------
def test_progress_off_a_terminal_is_one_plain_line_per_epoch(capsys, fmnist_slice, slice_teacher, tmp_path):
    # capsys' streams are not terminals, as a file or a CI log
    argv = _distill(fmnist_slice, slice_teacher, tmp_path / "run", "--cache-dir", str(tmp_path / "cache"),
                    "train.progress_bar=true", "train.epochs=2", "data.batch_size=32")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err
    lines = [line for line in err.splitlines() if " epoch " in line]
    assert len(lines) == 2 and "epoch 1/2" in lines[0] and "epoch 2/2" in lines[1], err
    assert "8/8 steps" in lines[0] and "loss" in lines[0]


def test_progress_on_a_terminal_is_a_tqdm_bar(monkeypatch):
    import io

    from tqdm import tqdm

    from beyondkd.engine.logging import epoch_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdout", Terminal())
    monkeypatch.setattr("sys.stderr", Terminal())
    bar = epoch_progress(total=3, initial=0, desc="x epoch 1/1")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr("sys.stdout", io.StringIO())  # stdout piped: plain lines even if stderr is a terminal
    assert not isinstance(epoch_progress(total=3, initial=0, desc="x epoch 1/1"), tqdm)

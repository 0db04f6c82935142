"""Bad input and faults a new user meets on the command line: one line naming the fix, exit 2."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from beyondkd.cli.main import main
from tests.helpers import one_line_error


def _distill(root, teacher, out, *extra) -> list[str]:
    return ["distill", "-c", "configs/kd.yaml", "-o", str(out), f"data.root={root}", f"teacher.checkpoint={teacher}",
            "teacher.name=cnn_small", "student.name=cnn_tiny", "data.augment=false", "data.subset=256",
            "train.epochs=1", "train.progress_bar=false", *extra]


@contextmanager
def read_only_folder(path: Path):
    """A folder nobody can write into: mode 0555, or for root (who ignores modes) the immutable attribute."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        undo = ["chmod", "755", str(path)]
    else:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            path.rmdir()
            pytest.skip("running as root without chattr +i: cannot make a read-only folder")
        undo = ["chattr", "-i", str(path)]
    try:
        yield path
    finally:
        subprocess.run(undo, check=True)


# --- 5: a read-only output folder ---------------------------------------------------------------
def test_read_only_output_folder_is_a_one_line_error(capsys, fmnist_slice, slice_teacher, tmp_path):
    with read_only_folder(tmp_path / "ro") as ro:
        # a new run inside it: the teacher-logit cache (ro/.cache) is the first write
        msg = one_line_error(capsys, _distill(fmnist_slice, slice_teacher, ro / "run"))
        assert "no permission for" in msg and str(ro) in msg and "--output-dir" in msg
        # the folder itself as the run folder: the cache (next to it) works, the run files cannot
        msg = one_line_error(capsys, _distill(fmnist_slice, slice_teacher, ro, f"train.cache_dir={tmp_path / 'cache'}"))
        assert "no permission for" in msg and str(ro) in msg
        assert sorted(p.name for p in ro.iterdir()) == []


# --- 6: damaged or foreign checkpoint files -----------------------------------------------------
def _damaged_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must call it)."""
    data = good.read_bytes()
    files = {
        "truncated": (data[: len(data) // 2], "cut short or damaged"),
        "zero_bytes": (b"", "empty (0 bytes)"),
        "garbage": (bytes(range(7, 256)) * 20, "not a PyTorch checkpoint"),
        "text": (b"epochs: 3\nname: my run\n", "text file"),
    }
    out = {}
    for name, (content, what) in files.items():
        p = tmp_path / f"{name}.pt"
        p.write_bytes(content)
        out[name] = (p, what)
    return out


def test_eval_of_a_damaged_or_text_file_says_what_the_file_is(capsys, fmnist_slice, slice_teacher, tmp_path):
    for name, (path, what) in _damaged_files(tmp_path, slice_teacher).items():
        msg = one_line_error(capsys, ["eval", "-k", str(path)])
        assert str(path) in msg and what in msg, (name, msg)
        assert "weights_only" not in msg and "unsafe" not in msg, (name, msg)  # it cannot help here
    # a teacher checkpoint given to distill is read the same way
    path, what = _damaged_files(tmp_path, slice_teacher)["text"]
    msg = one_line_error(capsys, _distill(fmnist_slice, path, tmp_path / "run"))
    assert what in msg
    # an intact file holding other Python objects is the one case where unsafe loading helps
    import argparse

    import torch

    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {}, "args": argparse.Namespace(lr=0.1)}, pickled)
    msg = one_line_error(capsys, ["eval", "-k", str(pickled)])
    assert "Python objects beyond tensors" in msg and "--unsafe-load" in msg


def test_resume_from_a_truncated_last_pt_says_it_is_cut_short(capsys, fmnist_slice, slice_teacher, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = slice_teacher.read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])
    msg = one_line_error(capsys, _distill(fmnist_slice, slice_teacher, run, "--resume"))
    assert "last.pt" in msg and "cut short or damaged" in msg and "weights_only" not in msg


# --- 7: output piped into a reader that stops early (`beyondkd configs | head -1`) ---------------
@pytest.mark.parametrize("command", [["configs"], ["methods"]])
def test_closed_stdout_pipe_ends_quietly(command):
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "beyondkd", *command], stdout=write_end, stderr=subprocess.PIPE, env=env)
    os.close(write_end)
    os.close(read_end)  # the reader is gone before the first line is written, as `head` after its line
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert err.strip() == b""
    assert proc.returncode == 1  # as Python's documentation recommends (and rich does)


# --- 9: overrides placed after an option ----------------------------------------------------------
def test_overrides_after_an_option_are_applied(capsys, fmnist_slice, slice_teacher, tmp_path):
    import yaml

    out = tmp_path / "run"
    argv = ["distill", "-c", "configs/kd.yaml", "train.epochs=1", "-o", str(out), "data.subset=128", "data.val_subset=200",
            f"data.root={fmnist_slice}", "--cache-dir", str(tmp_path / "cache"), f"teacher.checkpoint={slice_teacher}",
            "teacher.name=cnn_small", "student.name=cnn_tiny", "data.augment=false", "train.progress_bar=false"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["data"]["subset"] == 128 and saved["student"]["name"] == "cnn_tiny"
    # a late override is validated like an early one; an unknown option is still refused
    assert "unknown key 'train.epoch'" in one_line_error(capsys, ["distill", "-c", "configs/kd.yaml", "-o", str(out), "train.epoch=3"])
    with pytest.raises(SystemExit) as e:
        main(["distill", "-c", "configs/kd.yaml", "-o", str(out), "--epochs", "3"])
    assert e.value.code == 2 and "unrecognized arguments: --epochs" in capsys.readouterr().err


# --- 10: a batch larger than the training set -----------------------------------------------------
def test_batch_size_larger_than_the_subset_is_an_error_naming_the_numbers(capsys, fmnist_slice, slice_teacher, tmp_path):
    msg = one_line_error(capsys, _distill(fmnist_slice, slice_teacher, tmp_path / "run", "data.subset=100", "data.batch_size=128"))
    assert "data.batch_size (128)" in msg and "100 training images" in msg and "data.subset" in msg
    assert not (tmp_path / "run").exists()
    # the same for train-teacher, and a batch equal to the set is fine
    teacher = ["train-teacher", "-c", "configs/fmnist/teacher.yaml", "-o", str(tmp_path / "t"), f"data.root={fmnist_slice}",
               "model.name=cnn_tiny", "train.epochs=1", "train.progress_bar=false", "data.subset=64"]
    assert "data.batch_size (128)" in one_line_error(capsys, teacher)
    assert main([*teacher, "data.batch_size=64"]) == 0

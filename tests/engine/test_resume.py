"""Resume that never lies: settings that change training are refused, naming the keys; the epochs
may grow only where nothing depends on the run's length, and then the run is the longer run."""

from __future__ import annotations

import pytest
import torch
import yaml

from beyondkd.cli.main import main
from beyondkd.config import load_config
from beyondkd.engine.build import run_training
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.resume import check_run_folder
from beyondkd.errors import BeyondKDError
from tests.conftest import slice_config

CONSTANT = {"scheduler": {"name": "constant"}}


def _raw(fmnist_slice, slice_teacher, out, method=None, **train):
    return slice_config(fmnist_slice, out, slice_teacher, method=method or {"name": "kd"}, data={"subset": 512},
                        train={"epochs": 1, **CONSTANT, **train})


@pytest.fixture(scope="module")
def one_epoch(fmnist_slice, slice_teacher, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    raw = _raw(fmnist_slice, slice_teacher, root / "run")
    run_training(load_config(raw=raw), "distill")
    cfg = root / "run.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    return root, cfg


def test_resume_with_settings_that_change_training_is_one_line_naming_them(one_epoch, capsys):
    root, cfg = one_epoch
    before = (root / "run" / "config.yaml").read_text()
    assert main(["distill", "-c", str(cfg), "--resume", "train.epochs=3", "train.optimizer.lr=1e6", "method.params.temperature=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: --resume with settings that change training:")
    assert "method.params.temperature (4.0 -> 2.0)" in err and "train.optimizer.lr (0.05 -> 1000000.0)" in err
    assert (root / "run" / "config.yaml").read_text() == before  # nothing recorded that did not run
    # where and how the run executes may change (here: the log interval and the data folder)
    assert main(["distill", "-c", str(cfg), "--resume", "train.log_every=7", "data.num_workers=0"]) == 0


def test_the_epochs_grow_only_where_nothing_depends_on_the_run_length(fmnist_slice, slice_teacher, tmp_path):
    # cosine LR: the schedule of the epochs already trained would change
    cosine = _raw(fmnist_slice, slice_teacher, tmp_path / "cos", scheduler={"name": "cosine"})
    run_training(load_config(raw=cosine), "distill")
    with pytest.raises(BeyondKDError, match=r"cannot change train.epochs \(1 -> 2\): the cosine LR schedule decays over train.epochs"):
        run_training(load_config(raw={**cosine, "train": {**cosine["train"], "epochs": 2}}), "distill", resume=True)
    # the plug-in's gamma follows the fraction of training done
    bias = _raw(fmnist_slice, slice_teacher, tmp_path / "bias", method={"name": "kd", "bias": {"preset": "paper"}})
    run_training(load_config(raw=bias), "distill")
    with pytest.raises(BeyondKDError, match="γ schedule .* follows the fraction of training done"):
        run_training(load_config(raw={**bias, "train": {**bias["train"], "epochs": 2}}), "distill", resume=True)
    # constant LR, no plug-in: one epoch extended to two is the two-epoch run
    short = _raw(fmnist_slice, slice_teacher, tmp_path / "ext")
    run_training(load_config(raw=short), "distill")
    extended = run_training(load_config(raw={**short, "train": {**short["train"], "epochs": 2}}), "distill", resume=True)
    planned = run_training(load_config(raw=_raw(fmnist_slice, slice_teacher, tmp_path / "two", epochs=2)), "distill")
    a, b = load_checkpoint(tmp_path / "ext" / "last.pt")["model"], load_checkpoint(tmp_path / "two" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_acc"] for r in extended.history] == [r["val_acc"] for r in planned.history]
    assert yaml.safe_load((tmp_path / "ext" / "config.yaml").read_text())["train"]["epochs"] == 2


def test_a_checkpoint_of_another_process_count_is_not_resumed(one_epoch):
    root, _ = one_epoch
    with pytest.raises(BeyondKDError, match="written by a run of 1 process.*has 2: resume with the same number"):
        check_run_folder(root / "run", True, None, None, world_size=2)

"""The trainer on real Fashion-MNIST: metrics, checkpoints, exact resume, NaN guard."""

from __future__ import annotations

import json

import pytest
import torch

from beyondkd.config import load_config
from beyondkd.data.base import Batch
from beyondkd.distillers.base import Distiller, DistillerContext, StepOutput
from beyondkd.engine.build import prepare_run, run_training
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.trainer import Trainer
from beyondkd.errors import BeyondKDError, NonFiniteLossError
from tests.conftest import slice_config
from tests.helpers import StopAfter


def _weights(path):
    return load_checkpoint(path)["model"]


def test_distill_run_writes_everything(fmnist_slice, slice_teacher, tmp_path):
    raw = slice_config(fmnist_slice, tmp_path / "kd", slice_teacher, method={"name": "kd", "bias": {"preset": "paper"}},
                       train={"epochs": 2})
    result = run_training(load_config(raw=raw), "distill")
    out = tmp_path / "kd"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "summary.json", "accuracy.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    r = lines[-1]
    assert r["rows"] == 1984 and 0 < r["rows_right"] < r["rows"]  # 31 batches of 64
    assert r["rows_rectified"] == r["rows"] - r["rows_right"]
    assert 0 < r["gamma"] < 1 and r["teacher_acc"] > 50
    assert result.best_acc == max(l["val_acc"] for l in lines)
    assert r["lr"] == r["lr_student"]  # the LR of every parameter group, and the first group's as `lr`
    summary = json.loads((out / "summary.json").read_text())
    # the plug-in's run totals come from the method side, summed over the epochs
    assert summary["rows_rectified"] == sum(l["rows_rectified"] for l in lines)
    assert summary["rows_teacher_wrong"] == sum(l["rows"] - l["rows_right"] for l in lines)
    assert {"params", "bias", "teacher_on_train_rows", "teacher_acc", "best_acc", "last_acc", "epochs", "train_seconds"} <= set(summary)
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(out / "last.pt")  # weights_only=True works
    assert ckpt["epoch"] == 2 and ckpt["model_meta"]["name"] == "cnn_tiny"


def test_teacher_logits_cache_is_reused_and_keyed(fmnist_slice, slice_teacher, tmp_path):
    cache = tmp_path / "cache"
    raw = slice_config(fmnist_slice, tmp_path / "a", slice_teacher, train={"cache_dir": str(cache)})
    run_training(load_config(raw=raw), "distill")
    files = list(cache.glob("teacher_logits_*.pt"))
    assert len(files) == 1
    logits = torch.load(files[0], weights_only=True)
    assert logits.shape == (2000, 10)
    raw["output_dir"] = str(tmp_path / "b")
    run_training(load_config(raw=raw), "distill")
    assert list(cache.glob("teacher_logits_*.pt")) == files  # same teacher + data: reused
    raw["output_dir"], raw["data"]["subset"] = str(tmp_path / "c"), 1000
    run_training(load_config(raw=raw), "distill")
    assert len(list(cache.glob("teacher_logits_*.pt"))) == 2  # data changed: new cache



def test_interrupted_and_resumed_run_ends_with_identical_weights(fmnist_slice, slice_teacher, tmp_path):
    def config(out):
        raw = slice_config(fmnist_slice, out, slice_teacher, method={"name": "kd", "bias": {"preset": "paper"}},
                           data={"augment": True, "subset": 640}, train={"epochs": 2, "checkpoint_every_steps": 4})
        return load_config(raw=raw)

    full = prepare_run(config(tmp_path / "full"), "distill")
    full.trainer.fit()
    part = prepare_run(config(tmp_path / "part"), "distill")
    part.trainer.train_loader = StopAfter(part.trainer.train_loader, 14)  # epoch 2, step 4 of 10
    with pytest.raises(KeyboardInterrupt):
        part.trainer.fit()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step_in_epoch"] == 2
    resumed = prepare_run(config(tmp_path / "part"), "distill")
    resumed.trainer.fit(resume=True)
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "part" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist_a = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    hist_b = [json.loads(l) for l in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    timing = ("epoch_seconds", "images_per_second")
    # the resumed epoch's record counts every batch of it, before and after the interruption
    assert [{k: v for k, v in r.items() if k not in timing} for r in hist_a] == \
           [{k: v for k, v in r.items() if k not in timing} for r in hist_b]
    assert hist_b[1]["rows"] == 640


def test_existing_run_is_not_overwritten(fmnist_slice, slice_teacher, tmp_path):
    raw = slice_config(fmnist_slice, tmp_path / "r", slice_teacher)
    run_training(load_config(raw=raw), "distill")
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(BeyondKDError, match="already holds a run.*--resume"):
        run_training(load_config(raw=raw), "distill")
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    with pytest.raises(BeyondKDError, match="nothing to resume"):
        run_training(load_config(raw=slice_config(fmnist_slice, tmp_path / "new", slice_teacher)), "distill", resume=True)


class _NaNAfter(Distiller):
    name = "nan_test"
    needs_teacher = False

    def __init__(self, student, bad_step):
        super().__init__(student, None, Distiller.Params(), None, DistillerContext(10, 1, 28, 100))
        self.bad_step, self.calls = bad_step, 0

    def training_step(self, batch: Batch, progress):
        logits = self.student(batch.images)
        ce = torch.nn.functional.cross_entropy(logits, batch.targets)
        self.calls += 1
        feat = ce * (float("nan") if self.calls > self.bad_step else 1.0)
        return StepOutput(ce + feat, logits, {"ce": ce.detach(), "feature": feat.detach()})


def test_nan_guard_names_the_term_and_keeps_the_checkpoint(fmnist_slice, tmp_path):
    # the flag is read every 50 steps by default: here at the end of each 2-step epoch, before its checkpoint
    cfg = load_config(raw={"output_dir": str(tmp_path), "data": {"root": str(fmnist_slice), "augment": False, "subset": 256},
                           "model": {"name": "cnn_tiny"}, "train": {"epochs": 3, "progress_bar": False}})
    prepared = prepare_run(cfg, "train-teacher")
    d = _NaNAfter(prepared.distiller.student, bad_step=5)  # 256/128 = 2 steps per epoch: dies in epoch 3
    trainer = Trainer(d, prepared.trainer.train_loader, prepared.trainer.val_loader, cfg.train, tmp_path, torch.device("cpu"))
    with pytest.raises(NonFiniteLossError, match=r"feature = nan.*epoch 3.*last good checkpoint .*last.pt is intact"):
        trainer.fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())

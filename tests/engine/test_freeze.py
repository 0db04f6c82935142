"""student.freeze / train_bn: frozen parts stay as loaded, get no optimizer state, and resume exactly."""

from __future__ import annotations

import pytest
import torch

from beyondkd.config import load_config
from beyondkd.engine.build import prepare_run
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.freeze import apply_freeze
from beyondkd.errors import ConfigError
from beyondkd.models import build_model
from tests.conftest import slice_config
from tests.helpers import StopAfter


def _train_forward(model, steps=2):
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        model(torch.randn(8, 1, 28, 28, generator=g)).sum().backward()


def test_patterns_freeze_their_parameters_and_the_batch_norms_they_cover():
    model = build_model("cnn_tiny", 10, 1)
    report = apply_freeze(model, ["stage1.*"])
    assert report.frozen == ("stage1.0.0.weight", "stage1.0.1.weight", "stage1.0.1.bias")
    assert report.eval_norms == ("stage1.0.1",)
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    _train_forward(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items() if k.startswith("stage1."))
    assert not torch.equal(after["stage2.0.1.running_mean"], stats["stage2.0.1.running_mean"])
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("stage1."))
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("stage1."))


def test_train_bn_false_keeps_every_batch_norm_as_loaded():
    model = build_model("cnn_tiny", 10, 1)
    report = apply_freeze(model, [], train_bn=False)
    assert report.eval_norms == ("stage1.0.1", "stage2.0.1")
    assert set(report.frozen) == {"stage1.0.1.weight", "stage1.0.1.bias", "stage2.0.1.weight", "stage2.0.1.bias"}
    before = {k: v.clone() for k, v in model.state_dict().items() if ".0.1." in k}
    _train_forward(model)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert model.stage2[0][0].weight.grad is not None


def test_a_pattern_matching_nothing_is_one_line_with_a_hint():
    with pytest.raises(ConfigError, match=r"student.freeze pattern 'stage1' matches no parameter .*did you mean 'stage1\.\*'"):
        apply_freeze(build_model("cnn_tiny", 10, 1), ["stage1"])
    with pytest.raises(ConfigError, match="leave no parameter"):
        apply_freeze(build_model("cnn_tiny", 10, 1), ["*"])
    with pytest.raises(ConfigError, match="teacher is always frozen"):
        load_config(raw={"student": {"name": "cnn_tiny"}, "teacher": {"name": "cnn_small", "freeze": ["fc.*"]}})


def _config(root, out, epochs=2):
    raw = slice_config(root, out, None, name="frozen", model={"name": "cnn_tiny", "freeze": ["stage1.*", "hidden.*"]},
                       data={"augment": True, "subset": 256},
                       train={"epochs": epochs, "optimizer": {"name": "sgd", "lr": 0.05}, "checkpoint_every_steps": 2})
    return load_config(raw=raw)


def test_frozen_run_has_no_optimizer_state_for_frozen_weights_and_resumes_exactly(fmnist_slice, tmp_path):
    full = prepare_run(_config(fmnist_slice, tmp_path / "full"), "train-teacher")
    start = {k: v.clone() for k, v in full.distiller.student.state_dict().items()}
    full.trainer.fit()
    ckpt = load_checkpoint(tmp_path / "full" / "last.pt")
    trained = [n for n, p in full.distiller.student.named_parameters() if p.requires_grad]
    assert trained == ["stage2.0.0.weight", "stage2.0.1.weight", "stage2.0.1.bias", "fc.weight", "fc.bias"]
    opt_state = ckpt["optimizers"]["student"]
    assert len(opt_state["state"]) == len(trained) == len(opt_state["param_groups"][0]["params"])
    for k, v in ckpt["model"].items():
        frozen = k.startswith(("stage1.", "hidden."))
        assert torch.equal(v, start[k]) == frozen, k  # frozen parts (BN statistics too) untouched, the rest trained

    part = prepare_run(_config(fmnist_slice, tmp_path / "part"), "train-teacher")
    part.trainer.train_loader = StopAfter(part.trainer.train_loader, 6)  # epoch 2, step 2 of 4
    with pytest.raises(KeyboardInterrupt):
        part.trainer.fit()
    resumed = prepare_run(_config(fmnist_slice, tmp_path / "part"), "train-teacher")
    resumed.trainer.fit(resume=True)
    a, b = ckpt["model"], load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

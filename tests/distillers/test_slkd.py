"""The SLKD distiller: gradients by hand, SL-teacher construction, modes, bias, resume, runs on the real slice."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from beyondkd.bias.loss import bias_config
from beyondkd.bias.schedule import Progress
from beyondkd.config import load_config
from beyondkd.data.base import Batch
from beyondkd.distillers.base import DistillerContext
from beyondkd.distillers.registry import build_distiller, validate_params, get_distiller_class
from beyondkd.distillers.slkd import SLKD, SLKDParams
from beyondkd.engine.build import prepare_run
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.errors import BeyondKDError, ConfigError
from beyondkd.models.registry import build_model
from tests.conftest import slice_config
from tests.helpers import StopAfter


def _linear_pair(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(4, 3), nn.Linear(4, 3)


def _ctx(**kw):
    base = dict(num_classes=3, in_channels=1, image_size=2, num_samples=8, total_steps=8, total_epochs=2, seed=0)
    base.update(kw)
    return DistillerContext(**base)


def _batch(n=5, c=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 4, generator=g), torch.randint(0, c, (n,), generator=g))


def test_student_and_sl_teacher_gradients_match_a_hand_computation():
    student, teacher = _linear_pair()
    p = SLKDParams(sl_teachers=2, rho=0.3, lambda_ts=0.5, eta=2.0, alpha=0.25, sl_alpha=0.4, temperature=2.0)
    d = SLKD(student, teacher, p, None, _ctx())
    b = _batch()
    out = d.training_step(b, Progress(0, 8, 0, 2))
    out.loss.backward()

    x, y, T, n = b.images, b.targets, 2.0, 5
    onehot = torch.nn.functional.one_hot(y, 3).float()
    with torch.no_grad():
        z_s, z_t = student(x), teacher(x)
        z1, z2 = d.sl_teachers[0](x), d.sl_teachers[1](x)
        fused = 0.3 * z1 + 0.7 * z2
        sm = lambda z, t=1.0: torch.softmax(z / t, 1)  # noqa: E731
        # d/dz of CE = softmax - onehot; of T²·KL(p_g^T || p_z^T) = T·(p_z^T - p_g^T); mean over n rows
        g_s = ((0.5 + 2.0) * 0.25 * (sm(z_s) - onehot) + 0.5 * 0.75 * T * (sm(z_s, T) - sm(z_t, T))
               + 2.0 * 0.75 * T * (sm(z_s, T) - sm(fused, T))) / n
        g_1 = (0.4 * (sm(z1) - onehot) + 0.6 * T * (sm(z1, T) - sm(z_t, T))) / n
        g_2 = (0.4 * (sm(z2) - onehot) + 0.6 * T * (sm(z2, T) - sm(z_t, T))) / n
    assert torch.allclose(student.weight.grad, g_s.T @ x, atol=1e-6)
    assert torch.allclose(student.bias.grad, g_s.sum(0), atol=1e-6)
    # the SL-teachers learn from the teacher only (eq. 4-5): the student term sends them nothing
    assert torch.allclose(d.sl_teachers[0].weight.grad, g_1.T @ x, atol=1e-6)
    assert torch.allclose(d.sl_teachers[1].weight.grad, g_2.T @ x, atol=1e-6)
    assert all(q.grad is None for q in teacher.parameters())
    # the logged terms are the weighted means
    ce = torch.nn.functional.cross_entropy(z_s, y)
    assert out.terms["ce"].item() == pytest.approx(0.5 * 0.25 * ce.item(), rel=1e-5)
    assert out.terms["sl_ce"].item() == pytest.approx(2.0 * 0.25 * ce.item(), rel=1e-5)
    total = sum(v for v in out.terms.values())
    assert out.loss.item() == pytest.approx(float(total), rel=1e-5)


def test_rho_one_gives_the_student_the_gradient_of_a_single_sl_teacher():
    b = _batch(seed=3)
    grads = []
    for params in (SLKDParams(sl_teachers=2, rho=1.0), SLKDParams(sl_teachers=1)):
        student, teacher = _linear_pair(seed=4)
        d = SLKD(student, teacher, params, None, _ctx())
        d.training_step(b, Progress(0, 8, 0, 2)).loss.backward()
        grads.append((student.weight.grad.clone(), d.sl_teachers[0].weight.grad.clone()))
    # SL-teacher i has the same seed in both runs, so SL-T1 is the k = 1 teacher
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_k1_k3_and_prob_fusion_step():
    for params in (dict(sl_teachers=1), dict(sl_teachers=3, rho=[0.2, 0.3, 0.5], fusion="probs")):
        student, teacher = _linear_pair()
        d = SLKD(student, teacher, SLKDParams(**params), None, _ctx())
        out = d.training_step(_batch(), Progress(0, 8, 0, 2))
        assert torch.isfinite(out.loss) and len(d.sl_teachers) == params["sl_teachers"]
        assert {f"sl_teacher_{i + 1}" for i in range(params["sl_teachers"])} <= set(out.terms)
        assert set(d.param_groups()) == {"student", "sl_teachers"}
        assert len(d.param_groups()["sl_teachers"]) == 2 * params["sl_teachers"]


def test_sl_teachers_are_seeded_fresh_copies_of_the_architecture_and_leave_the_rng_alone():
    teacher = build_model("cnn_small", 10, 1)
    ctx = DistillerContext(10, 1, 28, 100, 10, 2, seed=5, teacher_model="cnn_small")
    student = build_model("cnn_tiny", 10, 1)
    before = torch.get_rng_state()
    a = SLKD(student, teacher, SLKDParams(), None, ctx)
    assert torch.equal(before, torch.get_rng_state())
    b = SLKD(build_model("cnn_tiny", 10, 1), teacher, SLKDParams(), None, ctx)
    sa, sb, st = a.sl_teachers.state_dict(), b.sl_teachers.state_dict(), teacher.state_dict()
    for k in st:
        assert torch.equal(sa[f"0.{k}"], sb[f"0.{k}"])  # reproducible
    w = "stage1.0.0.weight"
    assert not torch.equal(sa[f"0.{w}"], sa[f"1.{w}"])  # the two SL-teachers differ
    assert not torch.equal(sa[f"0.{w}"], st[w])  # and are not the teacher
    assert all(p.requires_grad for p in a.sl_teachers.parameters())
    assert not any(p.requires_grad for p in a.teacher.parameters())
    # the deepcopy route (no registry name): every parameter re-initialised
    student, lin_teacher = _linear_pair()
    d = SLKD(student, lin_teacher, SLKDParams(), None, _ctx())
    assert not torch.equal(d.sl_teachers[0].weight, lin_teacher.weight)
    keys = d.checkpoint_state().keys()
    assert any(k.startswith("sl_teachers.1.") for k in keys) and not any(k.startswith("teacher.") for k in keys)


def test_deepcopy_route_refuses_a_parameter_it_cannot_reinitialise():
    class WithRawParam(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.fc(x) * self.scale

    with pytest.raises(ConfigError, match="reset_parameters.*registry"):
        SLKD(nn.Linear(4, 3), WithRawParam(), SLKDParams(), None, _ctx())


def test_sequential_phases_touch_only_their_group():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    teacher = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    p = SLKDParams(mode="sequential", sl_epochs=1)
    d = SLKD(student, teacher, p, None, _ctx(total_epochs=3, total_steps=12))
    assert d.schedule_spans() == {"sl_teachers": (0, 1), "student": (1, 3)}
    d.train()
    d.on_epoch_start(0)
    bn = copy.deepcopy(student[1].state_dict())
    out = d.training_step(_batch(), Progress(1, 12, 0, 3))
    out.loss.backward()
    assert all(q.grad is None for q in student.parameters())
    assert all(torch.equal(v, student[1].state_dict()[k]) for k, v in bn.items())  # BN statistics untouched
    assert all(q.grad is not None for q in d.sl_teachers.parameters())
    assert set(out.terms) == {"sl_teacher_1", "sl_teacher_2"}
    d.zero_grad(set_to_none=True)
    d.on_epoch_start(1)
    d.train()
    sl_bn = copy.deepcopy(d.sl_teachers[0][1].state_dict())
    out = d.training_step(_batch(), Progress(5, 12, 1, 3))
    out.loss.backward()
    assert not d.sl_teachers.training and student.training
    assert all(q.grad is None for q in d.sl_teachers.parameters())
    assert all(q.grad is not None for q in student.parameters())
    assert all(torch.equal(v, d.sl_teachers[0][1].state_dict()[k]) for k, v in sl_bn.items())
    assert {"ce", "kd", "sl_ce", "sl_kd"} == set(out.terms)


def test_bad_parameters_are_one_line_config_errors():
    cls = get_distiller_class("slkd")
    for params, msg in (
        ({"mode": "sequential"}, "'sl_epochs'.*needs sl_epochs"),
        ({"sl_epochs": 3}, "'sl_epochs'.*sequential only"),
        ({"rho": [0.5, 0.6]}, "'rho'.*sum to 1"),
        ({"sl_teachers": 3, "rho": 0.5}, "'rho'.*list of 3"),
        ({"fusion": "mean"}, "fusion"),
        ({"etaa": 3}, "unknown parameter 'etaa'.*eta"),
    ):
        with pytest.raises(ConfigError, match=msg):
            validate_params(cls, params)
    student, teacher = _linear_pair()
    with pytest.raises(ConfigError, match="bias_on_sl_term needs the bias plug-in"):
        build_distiller("slkd", student, teacher, {"bias_on_sl_term": True}, None, _ctx())
    with pytest.raises(ConfigError, match="sl_epochs \\(2\\) must be smaller than train.epochs \\(2\\)"):
        build_distiller("slkd", student, teacher, {"mode": "sequential", "sl_epochs": 2}, None, _ctx())


def test_bias_plugin_on_both_terms_reports_both_row_sets():
    student, teacher = _linear_pair()
    d = SLKD(student, teacher, SLKDParams(bias_on_sl_term=True), bias_config("paper"), _ctx())
    out = d.training_step(_batch(n=8), Progress(2, 8, 1, 2))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert {"kd_easy", "kd_hard", "sl_kd_easy", "sl_kd_hard"} <= set(out.terms)
    assert out.stats["rows"] == 8 and "rows_sl_right" in out.stats and "rows_sl_rectified" in out.stats
    assert out.stats["rows_sl_rectified"] == 8 - out.stats["rows_sl_right"]
    assert student.weight.grad is not None and all(q.grad is None for q in teacher.parameters())


# -- real Fashion-MNIST slice ------------------------------------------------------------------
def _slkd_config(root, out, teacher, params=None, bias=None, **sections):
    method = {"name": "slkd", "params": {"sl_teachers": 2, **(params or {})}}
    if bias is not None:
        method["bias"] = bias
    sections["data"] = {"subset": 256, "val_subset": 200, "batch_size": 32, **sections.get("data", {})}
    raw = slice_config(root, out, teacher, method=method, **sections)
    raw["train"].setdefault("extra_optimizers", {"sl_teachers": {"name": "sgd", "lr": 0.05}})
    return load_config(raw=raw)


def _state(path):
    ckpt = load_checkpoint(path)
    return {**{f"student.{k}": v for k, v in ckpt["model"].items()}, **ckpt["distiller"]}, ckpt


def test_parallel_run_trains_sl_teachers_and_keeps_the_teacher(fmnist_slice, slice_teacher, tmp_path):
    prepared = prepare_run(_slkd_config(fmnist_slice, tmp_path / "p", slice_teacher), "distill")
    d = prepared.distiller
    assert d.context.teacher_model == "cnn_small" and type(d.sl_teachers[0]).__name__ == "SmallCNN"
    teacher0 = copy.deepcopy(d.teacher.state_dict())
    sl0 = copy.deepcopy(d.sl_teachers.state_dict())
    assert prepared.trainer.optimizers["sl_teachers"].param_groups[0]["lr"] == 0.05
    prepared.trainer.fit()
    assert all(torch.equal(v, d.teacher.state_dict()[k]) for k, v in teacher0.items())
    changed = [k for k, v in sl0.items() if v.is_floating_point() and not torch.equal(v, d.sl_teachers.state_dict()[k])]
    assert len(changed) == sum(1 for v in sl0.values() if v.is_floating_point())
    state, ckpt = _state(tmp_path / "p" / "last.pt")
    assert set(ckpt["optimizers"]) == {"student", "sl_teachers"}
    assert torch.equal(state["sl_teachers.1.fc.weight"], d.sl_teachers[1].fc.weight.detach())
    rec = json.loads((tmp_path / "p" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("loss_sl_teacher_1", "loss_sl_teacher_2", "loss_ce", "loss_kd", "loss_sl_kd", "sl_teacher_1_acc"):
        assert key in rec, key
    assert rec["sl_teacher_1_acc"] > 15  # 8 steps from the teacher already beat chance (10%)


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_interrupted_and_resumed_run_is_exact(fmnist_slice, slice_teacher, tmp_path, mode):
    params = {"mode": mode, "sl_epochs": 1} if mode == "sequential" else {}

    def config(out):
        return _slkd_config(fmnist_slice, out, slice_teacher, params, data={"augment": True},
                            train={"epochs": 2, "checkpoint_every_steps": 4, "grad_clip": 1.0})

    full = prepare_run(config(tmp_path / "full"), "distill")
    full.trainer.fit()
    part = prepare_run(config(tmp_path / "part"), "distill")
    part.trainer.train_loader = StopAfter(part.trainer.train_loader, 8)  # after epoch 1 of 2 (8 steps)
    with pytest.raises(KeyboardInterrupt):
        part.trainer.fit()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1
    resumed = prepare_run(config(tmp_path / "part"), "distill")
    resumed.trainer.fit(resume=True)
    (a, ca), (b, cb) = _state(tmp_path / "full" / "last.pt"), _state(tmp_path / "part" / "last.pt")
    assert a.keys() == b.keys() and any(k.startswith("sl_teachers.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for group in ("student", "sl_teachers"):
        sa, sb = ca["optimizers"][group]["state"], cb["optimizers"][group]["state"]
        assert sa.keys() == sb.keys()
        for i in sa:
            assert torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"])


def test_sequential_run_trains_sl_teachers_first_then_the_student(fmnist_slice, slice_teacher, tmp_path):
    cfg = _slkd_config(fmnist_slice, tmp_path / "s", slice_teacher, {"mode": "sequential", "sl_epochs": 1},
                       train={"epochs": 2, "grad_clip": 1.0})  # clipping sees only the group that steps
    prepared = prepare_run(cfg, "distill")
    d, trainer = prepared.distiller, prepared.trainer
    student0 = copy.deepcopy(d.student.state_dict())
    trainer.train_loader = StopAfter(trainer.train_loader, len(trainer.train_loader))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    after1, ck1 = _state(tmp_path / "s" / "last.pt")
    for k, v in student0.items():  # phase 1 left the student (weights, BN statistics) as it was
        assert torch.equal(after1[f"student.{k}"], v), k
    assert ck1["optimizers"]["student"]["state"] == {}
    assert ck1["optimizers"]["sl_teachers"]["state"]
    # the student's schedule has not started: its LR is still the base LR
    assert ck1["history"][0]["lr"] == pytest.approx(cfg.train.optimizer.lr)
    resumed = prepare_run(cfg, "distill")
    resumed.trainer.fit(resume=True)
    final, _ = _state(tmp_path / "s" / "last.pt")
    sl_keys = [k for k in final if k.startswith("sl_teachers.")]
    assert sl_keys and all(torch.equal(final[k], after1[k]) for k in sl_keys)  # frozen in phase 2
    assert any(not torch.equal(final[f"student.{k}"], v) for k, v in student0.items() if v.is_floating_point())
    # cosine over its own phase: the SL-teachers' schedule ended, the student's is at its end too
    assert resumed.trainer.optimizers["sl_teachers"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)
    assert resumed.trainer.optimizers["student"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)
    recs = [json.loads(l) for l in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert "loss_ce" not in recs[0] and "loss_sl_teacher_1" in recs[0]
    assert "loss_ce" in recs[1] and "loss_sl_teacher_1" not in recs[1]


def test_run_with_the_bias_plugin_on_both_terms(fmnist_slice, slice_teacher, tmp_path):
    cfg = _slkd_config(fmnist_slice, tmp_path / "b", slice_teacher, {"bias_on_sl_term": True}, bias={"preset": "paper"})
    result = prepare_run(cfg, "distill").trainer.fit()
    rec = result.history[-1]
    assert rec["rows"] == 256 and 0 < rec["rows_right"] <= 256
    assert 0 <= rec["rows_sl_right"] <= 256 and rec["rows_sl_rectified"] == 256 - rec["rows_sl_right"]
    assert "loss_sl_kd_hard" in rec and 0 < rec["gamma"] < 1 and result.best_acc > 0


@pytest.mark.parametrize("name", ["slkd.yaml", "slkd_btkd.yaml", "slkd_sequential.yaml",
                                  "configs/cifar100/slkd/s1_1.yaml", "configs/cifar100/slkd/s1_2.yaml"])
def test_packaged_configs_validate(name):
    cfg = load_config(name)
    assert cfg.method.name == "slkd"
    params = validate_params(get_distiller_class("slkd"), cfg.method.params)
    assert params.lambda_ts == 1.0 and params.eta == 3.0 and params.temperature == 4.0
    if "cifar100" in name:
        assert cfg.data.name == "cifar100" and cfg.data.batch_size == 64 and cfg.train.epochs == 240
        assert cfg.train.optimizer.lr == (0.05 if "s1_1" in name else 0.01) and cfg.train.optimizer.weight_decay == 5e-4
    if name == "slkd_sequential.yaml":
        assert params.mode == "sequential" and params.sl_epochs < cfg.train.epochs


def test_extra_optimizer_for_a_missing_group_is_refused(fmnist_slice, slice_teacher, tmp_path):
    raw = slice_config(fmnist_slice, tmp_path / "x", slice_teacher, method={"name": "kd"}, data={"subset": 128},
                       train={"extra_optimizers": {"sl_teachers": {"lr": 0.1}}})
    with pytest.raises(BeyondKDError, match="sl_teachers.*does not have"):
        prepare_run(load_config(raw=raw), "distill")

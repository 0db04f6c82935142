"""Every loss computes in its inputs' dtype: float64 stays float64 (value and gradient), and
half-precision inputs (float16/bfloat16, e.g. under autocast) are computed in float32, with
autocast's low-precision matmuls kept out of the loss."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.losses.at import at_loss
from beyondkd.losses.crd import contrast_scores, nce_loss
from beyondkd.losses.dkd import dkd_loss
from beyondkd.losses.fitnet import hint_loss
from beyondkd.losses.indistill import pruned_feature_mse
from beyondkd.losses.kd import cross_entropy, kd_kl
from beyondkd.losses.ofd import ofd_loss
from beyondkd.losses.reviewkd import hcl_loss
from beyondkd.losses.rkd import rkd_loss
from beyondkd.losses.slkd import fuse_outputs, slkd_student_loss
from beyondkd.losses.sp import sp_loss

N, C = 6, 5


def _inputs(seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: (3.0 * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)  # noqa: E731
    mem = torch.nn.functional.normalize(torch.randn(N, 4, 8, generator=g, dtype=torch.float64), dim=2).to(dtype)
    emb = torch.nn.functional.normalize(torch.randn(N, 8, generator=g, dtype=torch.float64), dim=1).to(dtype)
    return {"s": r(N, C), "t": r(N, C), "fs": r(N, 3, 8, 8), "ft": r(N, 3, 8, 8), "ft4": r(N, 4, 8, 8),
            "es": r(N, 7), "et": r(N, 9), "mem": mem, "emb": emb,
            "y": torch.randint(0, C, (N,), generator=g)}


#: name -> (function of the inputs, the input that gets a gradient)
LOSSES = {
    "kd_kl": (lambda x: kd_kl(x["s"], x["t"], 4.0), "s"),
    "kd_kl_per_sample_T": (lambda x: kd_kl(x["s"], x["t"], torch.linspace(1.0, 5.0, N)), "s"),
    "cross_entropy": (lambda x: cross_entropy(x["s"], x["y"]), "s"),
    "dkd": (lambda x: dkd_loss(x["s"], x["t"], x["y"], 1.0, 8.0, 4.0), "s"),
    "slkd": (lambda x: slkd_student_loss(x["s"], x["t"], fuse_outputs([x["t"], x["s"].detach()], [0.5, 0.5], "probs"),
                                         x["y"], 0.1, 4.0), "s"),
    "at": (lambda x: at_loss(x["fs"], x["ft4"]), "fs"),
    "fitnet": (lambda x: hint_loss(x["fs"], x["ft"]), "fs"),
    "indistill": (lambda x: pruned_feature_mse(x["fs"], x["ft4"], torch.tensor([0, 2, 3])), "fs"),
    "ofd": (lambda x: ofd_loss(x["fs"], x["ft"], torch.tensor([-0.5, -1.0, -0.2])), "fs"),
    "reviewkd": (lambda x: hcl_loss(x["fs"], x["ft"]), "fs"),
    "rkd": (lambda x: rkd_loss(x["es"], x["et"]), "es"),
    "sp": (lambda x: sp_loss(x["fs"], x["ft4"]), "fs"),
    "crd": (lambda x: nce_loss(contrast_scores(x["emb"], x["mem"]) / 50.0, 1.0 / 100), "emb"),
}


def _run(name: str, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    fn, wrt = LOSSES[name]
    x = dict(x)
    x[wrt] = x[wrt].clone().requires_grad_(True)
    out = fn(x)
    out.sum().backward()
    return out, x[wrt].grad


@pytest.mark.parametrize("name", sorted(LOSSES))
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_float64_inputs_give_float64_loss_and_gradient(name, seed):
    out64, grad64 = _run(name, _inputs(seed, torch.float64))
    assert out64.dtype == torch.float64 and grad64.dtype == torch.float64
    assert out64.shape == (N,) and torch.isfinite(out64).all()
    out32, _ = _run(name, _inputs(seed, torch.float32))
    assert out32.dtype == torch.float32
    # the float64 value is the float32 one without its rounding
    assert torch.allclose(out64.float(), out32, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_half_precision_inputs_under_autocast_are_computed_in_float32(name, low, seed):
    x_low = _inputs(seed, low)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grad = _run(name, x_low)
    assert out.dtype == torch.float32
    # the same inputs, upcast by hand and computed in float32 without autocast
    x32 = {k: (v.float() if v.is_floating_point() else v) for k, v in x_low.items()}
    ref, _ = _run(name, x32)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method,params", [("kd", {}), ("dkd", {}), ("ctkd", {"mode": "global"}),
                                           ("ctkd", {"mode": "instance"}), ("crd", {"nce_k": 16}), ("ofd", {})])
def test_distillers_on_float64_models_train_in_float64(method, params):
    from tests.distillers._zoo_helpers import batch, make, progress

    d = make(method, params).double()
    b = batch()
    b = type(b)(b.images.double(), b.targets, b.indices, None)
    out = d.training_step(b, progress())
    assert out.loss.dtype == torch.float64 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad.dtype == torch.float64 for p in d.student.parameters() if p.grad is not None)

"""Small helpers shared by the DKD / CTKD / CRD distiller tests."""

from __future__ import annotations

import torch

from beyondkd.bias.loss import bias_config
from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.models import build_model

CONTEXT = DistillerContext(num_classes=10, in_channels=1, image_size=28, num_samples=64, total_steps=20, total_epochs=4, seed=0)


def make(method: str, params: dict | None = None, bias: str | None = None, teacher: str = "cnn_small",
         context: DistillerContext = CONTEXT):
    torch.manual_seed(0)
    student = build_model("cnn_tiny", 10, 1)
    teach = build_model(teacher, 10, 1)
    return build_distiller(method, student, teach, params or {}, bias_config(bias) if bias else None, context)


def batch(n: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g), torch.randperm(64, generator=g)[:n])


def progress(epoch: int = 1) -> Progress:
    return Progress(step=epoch * 5, total_steps=20, epoch=epoch, total_epochs=4)


def grads_ok(distiller) -> None:
    """The student got finite gradient; the teacher got none."""
    student_grads = [p.grad for p in distiller.student.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in student_grads)
    assert all(torch.isfinite(g).all() for g in student_grads if g is not None)
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())

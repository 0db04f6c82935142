"""The CRD distiller: memory banks, negatives on the batch's device, gradients, checkpoints."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.errors import ConfigError
from tests.distillers._zoo_helpers import CONTEXT, batch, grads_ok, make, progress


def test_step_updates_only_batch_rows_of_both_banks_and_sets_z():
    d = make("crd", {"nce_k": 16})
    assert d.memory_student.shape == (CONTEXT.num_samples, 128) and d.z_student.item() < 0
    before_s, before_t = d.memory_student.clone(), d.memory_teacher.clone()
    b = batch(8)
    out = d.training_step(b, progress())
    changed_s = (d.memory_student != before_s).any(dim=1)
    changed_t = (d.memory_teacher != before_t).any(dim=1)
    expected = torch.zeros(CONTEXT.num_samples, dtype=torch.bool)
    expected[b.indices] = True
    assert torch.equal(changed_s, expected) and torch.equal(changed_t, expected)
    assert torch.allclose(d.memory_student[b.indices].norm(dim=1), torch.ones(8), atol=1e-5)
    assert d.z_student.item() > 0 and d.z_teacher.item() > 0
    assert out.terms["crd"].item() > 0 and torch.isfinite(out.loss)


@pytest.mark.parametrize("bias", [None, "paper"])
def test_gradient_reaches_student_and_both_embeddings_not_teacher(bias):
    d = make("crd", {"nce_k": 16, "kd_weight": 1.0}, bias)
    out = d.training_step(batch(), progress())
    out.loss.backward()
    grads_ok(d)
    for emb in (d.embed_student, d.embed_teacher):
        assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0
    group = {id(p) for p in d.param_groups()["student"]}
    assert id(d.embed_teacher.weight) in group and id(d.embed_student.weight) in group
    if bias:
        assert {"kd_easy", "kd_hard", "crd"} <= set(out.terms)


def test_banks_and_z_are_in_the_checkpoint_and_restore():
    d = make("crd", {"nce_k": 16})
    d.training_step(batch(), progress())
    state = d.checkpoint_state()
    assert {"memory_student", "memory_teacher", "z_student", "z_teacher"} <= set(state)
    assert not any(k.startswith("teacher.") for k in state)
    e = make("crd", {"nce_k": 16})
    e.load_checkpoint_state({k: v.clone() for k, v in state.items()})
    assert torch.equal(e.memory_teacher, d.memory_teacher) and e.z_student.item() == d.z_student.item()


def test_reads_teacher_features_so_no_logit_cache():
    from beyondkd.distillers import get_distiller_class

    assert get_distiller_class("crd").teacher_logits_only is False


def test_too_many_negatives_or_plugin_without_kd_is_a_clear_error():
    with pytest.raises(ConfigError, match="nce_k"):
        make("crd", {"nce_k": CONTEXT.num_samples})
    with pytest.raises(ConfigError, match="kd_weight"):
        make("crd", {"nce_k": 16}, bias="paper")


@pytest.mark.gpu
def test_negatives_and_banks_live_on_cuda():
    d = make("crd", {"nce_k": 16}).cuda()
    b = batch()
    b = type(b)(b.images.cuda(), b.targets.cuda(), b.indices.cuda())
    out = d.training_step(b, progress())
    assert d.memory_student.device.type == "cuda" and torch.isfinite(out.loss)



@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.sampled_from([1e-3, 1.0, 1e4]), st.integers(0, 1000))
def test_contrastive_loss_finite_on_extreme_features_and_batch_of_one(n, scale, seed):
    d = make("crd", {"nce_k": 8})
    g = torch.Generator().manual_seed(seed)
    fs = (torch.randn(n, 32, generator=g) * scale).requires_grad_(True)
    ft = torch.randn(n, 128, generator=g) * scale
    idx = torch.randperm(CONTEXT.num_samples, generator=g)[:n]
    loss, v_s, v_t = d.contrastive_loss(fs, ft, idx)
    assert loss.shape == (n,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(fs.grad).all() and torch.isfinite(d.embed_student.weight.grad).all()


def _crd_rank(rank: int, world: int, port: int, out: str) -> None:
    import dataclasses
    import os

    import torch.distributed as dist

    from beyondkd.data.base import Batch
    from beyondkd.engine.distributed import all_gather_rows

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same models and banks on every rank, as under torchrun
    # the engine hands CRD the gather through the context (the distiller imports no engine)
    d = make("crd", {"nce_k": 16}, context=dataclasses.replace(CONTEXT, gather_rows=all_gather_rows))
    g = torch.Generator().manual_seed(rank)
    for step in range(2):  # each rank sees its own, disjoint samples
        idx = torch.arange(8) * world + rank + 16 * world * step
        b = Batch(torch.randn(8, 1, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g), idx % 64)
        d.training_step(b, progress())
    torch.save({"s": d.memory_student, "t": d.memory_teacher, "z": torch.stack([d.z_student, d.z_teacher])}, f"{out}/bank{rank}.pt")
    dist.destroy_process_group()


def test_memory_banks_stay_identical_across_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_crd_rank, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    b0, b1 = (torch.load(tmp_path / f"bank{r}.pt") for r in (0, 1))
    assert torch.equal(b0["s"], b1["s"]) and torch.equal(b0["t"], b1["t"])
    assert torch.equal(b0["z"], b1["z"]) and bool((b0["z"] > 0).all())  # Z from every rank's first batch
    fresh = make("crd", {"nce_k": 16})
    changed = (b0["s"] != fresh.memory_student).any(1).nonzero().flatten().tolist()
    assert len(changed) == 32  # both ranks' 2 × 8 rows were written on each rank

"""Data-parallel training with torchrun: sharding covers every sample once, and a 2-process
gloo run on real Fashion-MNIST trains and evaluates the whole validation set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.data import DatasetInfo, TensorImages, TensorLoader
from beyondkd.data.loaders import shard

REPO = Path(__file__).resolve().parents[2]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), world=st.integers(1, 5))
def test_val_shards_partition_the_samples(n, world):
    order = torch.randperm(n)
    parts = [shard(order, r, world, equal=False) for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == sorted(order.tolist())


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), world=st.integers(1, 5))
def test_train_shards_are_equal_and_disjoint(n, world):
    order = torch.randperm(n)
    parts = [shard(order, r, world, equal=True) for r in range(world)]
    assert len({len(p) for p in parts}) == 1  # every rank runs the same number of steps
    flat = torch.cat(parts).tolist()
    assert len(flat) == len(set(flat)) and len(flat) > n - world


def test_val_loaders_of_all_ranks_see_each_sample_once():
    info = DatasetInfo("toy", 3, 1, 8, (0.5,), (0.25,))
    data = TensorImages(torch.zeros(37, 1, 8, 8, dtype=torch.uint8), torch.arange(37) % 3, info)
    seen = [b.indices for r in range(3) for b in TensorLoader(data, 5, train=False, rank=r, world_size=3)]
    assert sorted(torch.cat(seen).tolist()) == list(range(37))


def test_torchrun_two_processes_gloo(fmnist_slice, slice_teacher, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "beyondkd", "distill", "-c", "configs/kd_btkd.yaml", "-o", str(out),
           f"data.root={fmnist_slice}", "data.augment=false", "data.batch_size=32", "train.epochs=2",
           "train.progress_bar=false", "train.device=cpu", "teacher.name=cnn_small",
           f"teacher.checkpoint={slice_teacher}", "student.name=cnn_tiny"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]  # only rank 0 writes, once per epoch
    assert all(r["val_count"] == 1000 for r in rows)  # whole val set, each sample once
    assert rows[-1]["val_acc"] > 50.0  # it trains (10 classes: chance is 10%)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2

"""Data-parallel training with torchrun: sharding covers every sample once, and 2-process gloo runs
on real Fashion-MNIST record the saved model's accuracy, resume bit-identically after a kill,
refuse a second start on every process, and train SLKD (sequential phases) and CRD."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.cli.main import main
from beyondkd.data import DatasetInfo, TensorImages, TensorLoader
from beyondkd.data.loaders import shard
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.logging import read_metrics
from tests.conftest import REPO, slice_config, torchrun

TIMING = {"epoch_seconds", "images_per_second"}


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


def _config_file(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def _kd_config(fmnist_slice, slice_teacher, out: Path) -> dict:
    """KD + plug-in with augmentation (per-rank BN statistics), 8 steps per epoch per rank, mid-epoch checkpoints.

    The plug-in is pinned to ``eliminate-only``, the preset the 16-step accuracy bar below was set with
    (the default moved to ``constant``, which reaches 45 % in those 16 steps)."""
    return slice_config(fmnist_slice, out, slice_teacher, method={"name": "kd", "bias": {"preset": "eliminate-only"}},
                        data={"augment": True, "subset": 512, "batch_size": 32},
                        train={"epochs": 2, "checkpoint_every_steps": 3, "device": "cpu", "threads": 1})


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_run(fmnist_slice, slice_teacher, tmp_path_factory):
    """One uninterrupted 2-process run (the reference of the tests below)."""
    root = tmp_path_factory.mktemp("ddp")
    cfg = _config_file(root / "kd.yaml", _kd_config(fmnist_slice, slice_teacher, root / "full"))
    _ok(torchrun(["-m", "beyondkd", "distill", "-c", str(cfg)]))
    return root, root / "full"


def test_recorded_accuracy_is_the_accuracy_of_the_saved_model(ddp_run, fmnist_slice, capsys):
    _, out = ddp_run
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1]  # only rank 0 writes, once per epoch
    assert all(r["val_count"] == 1000 for r in rows)  # whole val set, each sample once
    assert rows[-1]["rows"] == 512 and rows[-1]["steps"] == 8  # both ranks' rows, 8 steps each
    assert rows[-1]["val_acc"] > 50.0  # it trains (10 classes: chance is 10%)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 2
    assert main(["eval", "-k", str(out / "last.pt"), "--data-root", str(fmnist_slice), "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # BN statistics are averaged over the processes before evaluation and saving: the same model
    assert (evaluated["val_acc"], evaluated["val_top5"]) == (rows[-1]["val_acc"], rows[-1]["val_top5"])


def test_killed_run_resumed_under_torchrun_is_bit_identical(ddp_run, fmnist_slice, slice_teacher):
    root, full = ddp_run
    part = root / "part"
    cfg = _config_file(root / "part.yaml", _kd_config(fmnist_slice, slice_teacher, part))
    stopped = torchrun([str(REPO / "tests" / "engine" / "ddp_interrupt.py"), str(cfg), "13"])
    assert stopped.returncode != 0  # every rank stopped after 13 batches
    ckpt = load_checkpoint(part / "last.pt")
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (1, 4)  # the mid-epoch checkpoint at step 12
    _ok(torchrun(["-m", "beyondkd", "distill", "-c", str(cfg), "--resume"]))
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizers"]["student"]["state"], b["optimizers"]["student"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]  # noqa: E731
    # the resumed epoch counts every batch, before and after the kill
    assert strip(read_metrics(part)) == strip(read_metrics(full))


def _ranks_without_peers(args: list[str]) -> list[subprocess.CompletedProcess]:
    """Each process of a 2-process run, started alone (each with its own rendezvous port): one that
    tried a collective call before checking the run folder would wait for its peer and time out."""
    import socket

    procs = []
    for rank in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "beyondkd", *args], env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err += "\n(timed out: it waited for its peer)"
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def test_a_second_start_or_a_changed_resume_is_one_line_on_every_process(ddp_run):
    root, _ = ddp_run
    cfg = str(root / "kd.yaml")
    for args, expected in (
        (["distill", "-c", cfg], "already holds a run: pass --resume"),
        (["distill", "-c", cfg, "--resume", "seed=5", "train.optimizer.lr=1.0"],
         "change training: seed (0 -> 5), train.optimizer.lr (0.05 -> 1.0)"),
    ):
        for proc in _ranks_without_peers(args):
            err = proc.stderr.strip()
            assert proc.returncode == 2, err[-2000:]
            assert err.startswith("error: ") and "\n" not in err and expected in err, err[-2000:]


def test_slkd_sequential_phases_train_under_torchrun(fmnist_slice, slice_teacher, tmp_path):
    raw = slice_config(fmnist_slice, tmp_path / "slkd", slice_teacher,
                       method={"name": "slkd", "params": {"mode": "sequential", "sl_epochs": 1, "sl_teachers": 1}},
                       data={"subset": 256, "batch_size": 32}, train={"epochs": 2, "device": "cpu"})
    _ok(torchrun(["-m", "beyondkd", "distill", "-c", str(_config_file(tmp_path / "slkd.yaml", raw))]))
    first, second = read_metrics(tmp_path / "slkd")
    # phase 1 trains the SL-teacher only (find_unused_parameters), phase 2 the student only
    assert "loss_sl_teacher_1" in first and "loss_ce" not in first
    assert "loss_ce" in second and "loss_sl_teacher_1" not in second
    assert {"lr_student", "lr_sl_teachers"} <= set(second) and second["val_count"] == 1000


def test_crd_trains_under_torchrun(fmnist_slice, slice_teacher, tmp_path):
    raw = slice_config(fmnist_slice, tmp_path / "crd", slice_teacher, method={"name": "crd", "params": {"nce_k": 64}},
                       data={"subset": 256, "batch_size": 32}, train={"epochs": 1, "device": "cpu"})
    _ok(torchrun(["-m", "beyondkd", "distill", "-c", str(_config_file(tmp_path / "crd.yaml", raw))]))
    (rec,) = read_metrics(tmp_path / "crd")
    assert rec["loss_crd"] > 0 and rec["val_count"] == 1000
    bank = load_checkpoint(tmp_path / "crd" / "last.pt")["distiller"]["memory_student"]
    # each rank saw 128 of the 256 rows, yet rank 0's bank holds a (normalised) update of every row
    assert torch.allclose(bank.norm(dim=1), torch.ones(256), atol=1e-5)

"""On a GPU, a training step does not wait for the device (the NaN flag stays there)."""

from __future__ import annotations

import warnings

import pytest
import torch

from beyondkd.bias.config import bias_config
from beyondkd.config import TrainConfig
from beyondkd.data import DatasetInfo, TensorImages, TensorLoader
from beyondkd.distillers import DistillerContext, build_distiller
from beyondkd.engine.trainer import Trainer
from beyondkd.models import build_model


def _synchronising_calls(steps: int, tmp_path) -> int:
    device = torch.device("cuda")
    torch.manual_seed(0)
    info = DatasetInfo("synthetic", 10, 1, 28, (0.5,), (0.25,))
    data = TensorImages(torch.randint(0, 256, (32 * steps, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (32 * steps,)), info)
    loader = TensorLoader(data, 32, train=True, device=device)
    context = DistillerContext(10, 1, 28, len(data), total_steps=steps, total_epochs=1)
    d = build_distiller("kd", build_model("cnn_tiny", 10, 1), build_model("cnn_small", 10, 1), {}, bias_config(), context).to(device)
    cfg = TrainConfig(epochs=1, progress_bar=False, log_every=10**6, nan_check_every=10**6, device="cuda")
    trainer = Trainer(d, loader, loader, cfg, tmp_path, device)
    trainer._train_epoch()  # warm-up: allocator, cuDNN
    trainer.epoch, trainer.step_in_epoch = 0, 0
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer._train_epoch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchronizing" in str(w.message) for w in caught)


@pytest.mark.gpu
def test_the_number_of_host_syncs_of_an_epoch_does_not_grow_with_its_steps(tmp_path):
    # the epoch's end reads the flag and the sums back once; the steps themselves never wait
    assert _synchronising_calls(4, tmp_path / "a") == _synchronising_calls(12, tmp_path / "b")

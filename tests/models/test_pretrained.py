"""Pretrained weights by name, through timm's and torchvision's own caches (no network: files are placed there)."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import pytest
import torch

from beyondkd.config import ModelConfig, load_config
from beyondkd.data.base import DatasetInfo
from beyondkd.engine.build import load_network
from beyondkd.errors import BeyondKDError, ConfigError
from beyondkd.models import build_model, get_spec

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

#: timm's tiny test network and the hub repository its default weights live in
TIMM_NAME, TIMM_REPO = "test_resnet", "timm/test_resnet.r160_in1k"
TV_NAME = "mobilenet_v3_small"


def _info(classes: int, channels: int = 3) -> DatasetInfo:
    return DatasetInfo("tiny", classes, channels, 32, (0.5,) * channels, (0.5,) * channels)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Empty library caches under tmp_path, and no way to reach the network."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def _published_timm_weights(cache: Path) -> dict[str, torch.Tensor]:
    """Write 'published' weights of test_resnet (1000 classes) into the hub cache layout; return them."""
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in timm.create_model(TIMM_NAME, pretrained=False).state_dict().items()}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + TIMM_REPO.replace("/", "--"))
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    safetensors_torch.save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    return state


def test_timm_weights_come_from_the_hub_cache(offline):
    published = _published_timm_weights(offline / "hf")
    same = build_model(f"timm:{TIMM_NAME}", 1000, library_weights=True)
    for k, v in same.state_dict().items():
        assert torch.equal(v, published[k]), k
    reheaded = build_model(f"timm:{TIMM_NAME}", 5, library_weights=True)
    state = reheaded.state_dict()
    assert state["fc.weight"].shape == (5, published["fc.weight"].shape[1])
    assert all(torch.equal(state[k], published[k]) for k in state if not k.startswith("fc."))
    gray = build_model(f"timm:{TIMM_NAME}", 5, in_channels=1, library_weights=True)
    first = next(k for k in published if k.endswith("weight") and published[k].dim() == 4)
    torch.testing.assert_close(gray.state_dict()[first], published[first].sum(1, keepdim=True))
    assert gray.beyondkd_spec.feature_points["stage1"] == "layer1"


def test_offline_without_cached_weights_names_the_cache_and_checkpoint(offline):
    with pytest.raises(BeyondKDError) as e:
        build_model(f"timm:{TIMM_NAME}", 5, library_weights=True)
    msg = str(e.value)
    assert "\n" not in msg and str(offline / "hf") in msg and "checkpoint:" in msg
    with pytest.raises(BeyondKDError) as e:
        build_model(f"torchvision:{TV_NAME}", 5, library_weights=True)
    msg = str(e.value)
    assert "\n" not in msg and str(offline / "torch" / "hub" / "checkpoints") in msg and "checkpoint:" in msg


def test_torchvision_weights_come_from_the_torch_hub_cache(offline):
    import torchvision.models as tvm

    weights = tvm.get_model_weights(TV_NAME).DEFAULT
    torch.manual_seed(3)
    published = tvm.get_model(TV_NAME, weights=None).state_dict()
    folder = offline / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(published, folder / Path(weights.url).name)
    same = build_model(f"torchvision:{TV_NAME}", 1000, library_weights=True)
    assert all(torch.equal(v, published[k]) for k, v in same.state_dict().items())
    reheaded = build_model(f"torchvision:{TV_NAME}", 4, in_channels=1, library_weights=True).state_dict()
    head = "classifier.3"
    assert reheaded[f"{head}.weight"].shape[0] == 4
    assert all(torch.equal(reheaded[k], published[k]) for k in reheaded
               if not k.startswith(head) and k != "features.0.0.weight")
    torch.testing.assert_close(reheaded["features.0.0.weight"], published["features.0.0.weight"].sum(1, keepdim=True))


def test_registry_wrappers_know_their_torchvision_weights():
    assert get_spec("resnet18_imagenet").weights == "torchvision:resnet18"
    assert get_spec("vgg16_imagenet").weights == "torchvision:vgg16_bn"
    assert get_spec("resnet8").weights is None
    with pytest.raises(ConfigError, match="'resnet8' has no published pretrained weights.*checkpoint:"):
        build_model("resnet8", 10, library_weights=True)


def test_teacher_with_another_class_count_is_refused_a_trained_model_reheaded(offline, caplog):
    _published_timm_weights(offline / "hf")
    cfg = ModelConfig(name=f"timm:{TIMM_NAME}", pretrained=True)
    with pytest.raises(ConfigError, match=r"predict 1000 classes but dataset 'tiny' has 5: fine-tune it first"):
        load_network(cfg, _info(5), "teacher", require_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger="beyondkd"):
        model, meta = load_network(cfg, _info(5), "model", require_checkpoint=False)
    assert meta["num_classes"] == 5 and model.get_classifier().out_features == 5
    assert any("re-headed" in r.getMessage() and "fc" in r.getMessage() for r in caplog.records)
    teacher, _ = load_network(cfg, _info(1000), "teacher", require_checkpoint=True)  # same classes: no checkpoint needed
    assert teacher.get_classifier().out_features == 1000


def test_pretrained_and_checkpoint_together_is_one_line():
    with pytest.raises(ConfigError, match="either checkpoint .* or pretrained: true"):
        load_config(raw={"model": {"name": "timm:resnet18", "pretrained": True, "checkpoint": "x.pt"}})

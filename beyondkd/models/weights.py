"""Load weights from local files into registered models (never downloads).

Accepted layouts of a file:

* a beyondkd checkpoint (``{"model": state_dict, "model_meta": {...}, ...}``);
* a plain ``state_dict``;
* a wrapper dict with the weights under ``model``, ``state_dict`` or ``net`` (the CRD /
  mdistiller ``cifar_teachers`` files, e.g. ``resnet32x4_vanilla/ckpt_epoch_240.pth``, are
  ``{"model": state_dict, "epoch": ..., "optimizer": ...}``);
* keys prefixed with ``module.`` (saved from ``DataParallel``/DDP) are unwrapped;
* a whole mdistiller *distiller* (``student.*`` and ``teacher.*`` keys, after unwrapping): the
  ``student.`` weights are taken;
* files written before PyTorch 0.4.1 lack the batch norms' ``num_batches_tracked`` counters:
  those (and only those) missing keys keep the model's own value.

**Key mapping of the field's CIFAR checkpoints.** Our CIFAR models use the module names of the
CRD/mdistiller models on purpose, so the mapping is the identity after the wrapper unwrap:

=================================  ==============================================================
registry names                     mdistiller/CRD class (``cifar_teachers`` folder) and key names
=================================  ==============================================================
``resnet8..110, resnet8x4/32x4``   ``resnet.py`` (``resnet56_vanilla``, ``resnet32x4_vanilla``...):
                                   ``conv1, bn1, layerK.J.{conv1,bn1,conv2,bn2,downsample.0/1}, fc``
``resnet18/34/50/101_cifar``       ``resnetv2.py`` (``ResNet50_vanilla``): ``conv1, bn1,
                                   layerK.J.{conv1..3,bn1..3,shortcut.0/1}, linear``
``wrn_16_1 .. wrn_40_2``           ``wrn.py`` (``wrn_40_2_vanilla``): ``conv1,
                                   blockK.layer.J.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc``
``vgg8 .. vgg19``                  ``vgg.py`` ``vggN_bn`` (``vgg13_vanilla``): ``blockK.I``
                                   (conv/BN at the Sequential positions), ``classifier``
``mobilenetv2, mobilenetv2_x0_5``  ``mobilenetv2.py`` (``mobile_half``): ``conv1.I,
                                   blocks.S.J.conv.I, conv2.I, classifier.0``
``shufflenetv1`` / ``shufflenetv2``  ``ShuffleNetv1.py`` / ``ShuffleNetv2.py``: ``conv1, bn1,
                                   layerK.J.{convI,bnI}, (conv2, bn2,) linear``
``mobilenetv1_imagenet``           mdistiller ImageNet ``mobilenetv1.py``: ``model.I.J, fc``
``*_imagenet`` (torchvision)       torchvision's own key names
=================================  ==============================================================

:data:`KEY_MAPPINGS` holds regex renames for layouts that differ (applied by
:func:`load_pretrained` through ``layout=``).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from beyondkd.errors import BeyondKDError
from beyondkd.torch_files import unreadable_reason

# (pattern, replacement) regex renames applied to foreign state-dict keys, per source layout.
# CRD/mdistiller CIFAR and ImageNet checkpoints need no renames: same module names as ours.
KEY_MAPPINGS: dict[str, list[tuple[str, str]]] = {
    "dataparallel": [(r"^module\.", "")],
}


def extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a loaded checkpoint object."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # type: ignore[return-value]
    raise BeyondKDError(
        "no state_dict found in the weights file: expected a state_dict or a dict with it under "
        "'model', 'state_dict' or 'net'"
    )


def rename_keys(state: dict[str, torch.Tensor], mapping: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply regex renames to every key of ``state``."""
    out = {}
    for key, value in state.items():
        for pattern, repl in mapping:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_weights_file(path: str | Path, weights_only: bool = True) -> object:
    """``torch.load`` a local file with a one-line error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BeyondKDError(f"weights file not found: {path} (give the path of a local .pt/.pth file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the user's file
        raise BeyondKDError(f"cannot read weights file {path}: {unreadable_reason(path, exc, weights_only)}") from exc


def load_pretrained(model: nn.Module, path: str | Path, weights_only: bool = True, layout: str | None = None) -> None:
    """Load a local weights file into ``model`` (strict: every key must match in name and shape).

    Args:
        model: the network.
        path: the file.
        weights_only: refuse pickled code objects (``torch.load(weights_only=True)``).
        layout: a key of :data:`KEY_MAPPINGS` whose renames are applied first (None: none).
    """
    state = extract_state_dict(load_weights_file(path, weights_only))
    if layout is not None:
        if layout not in KEY_MAPPINGS:
            raise BeyondKDError(f"unknown weights layout '{layout}': choose one of {', '.join(sorted(KEY_MAPPINGS))}")
        state = rename_keys(state, KEY_MAPPINGS[layout])
    load_state_into(model, state, path)


def _student_of_distiller(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``student.`` part of a whole-distiller state dict, when the keys do not fit as they are."""
    if any(k in own for k in state) or not any(k.startswith("student.") for k in state):
        return state
    return {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly, with a one-line error naming the first mismatch."""
    path = source
    state = rename_keys(state, KEY_MAPPINGS["dataparallel"])
    own = model.state_dict()
    state = _student_of_distiller(state, own)
    # files from before PyTorch 0.4.1 have no BN counters: keep the model's own (all other keys are strict)
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in state}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"shape of '{k}' is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model")
        if missing:
            detail.append(f"{len(missing)} keys missing (e.g. '{missing[0]}')")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (e.g. '{unexpected[0]}')")
        raise BeyondKDError(
            f"weights in {path} do not fit model {type(model).__name__}: {'; '.join(detail)} "
            "(check the model name, num_classes and in_channels)"
        )
    model.load_state_dict(state)

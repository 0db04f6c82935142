"""Load weights from local files into registered models (never downloads).

Accepted layouts of a file:

* a beyondkd checkpoint (``{"model": state_dict, "model_meta": {...}, ...}``);
* a plain ``state_dict``;
* a wrapper dict with the weights under ``model``, ``state_dict`` or ``net`` (the CRD /
  mdistiller ``cifar_teachers`` files keep them under ``model``);
* keys prefixed with ``module.`` (saved from ``DataParallel``/DDP) are unwrapped.

The CRD/mdistiller CIFAR ResNets name their layers as ours do (``conv1``, ``bn1``,
``layerK.J.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}``, ``fc``), so their files load
without renaming; :data:`KEY_MAPPINGS` holds renames for layouts that differ.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from beyondkd.errors import BeyondKDError

# (pattern, replacement) regex renames applied to foreign state-dict keys, per source layout.
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BeyondKDError(f"cannot read weights file {path}: {first}") from exc


def load_pretrained(model: nn.Module, path: str | Path, weights_only: bool = True) -> None:
    """Load a local weights file into ``model`` (strict: every key must match in name and shape)."""
    load_state_into(model, extract_state_dict(load_weights_file(path, weights_only)), path)


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` into ``model`` strictly, with a one-line error naming the first mismatch."""
    path = source
    state = rename_keys(state, KEY_MAPPINGS["dataparallel"])
    own = model.state_dict()
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

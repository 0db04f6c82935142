"""Read intermediate features of any model with forward hooks, by module name.

Feature methods (FitNet, AT, OFD, ...) need a model's intermediate tensors. Instead of
rewriting models to return them, :class:`FeatureHooks` registers forward hooks on named
modules (``"layer2"``, or ``"layer3.4.act_out:in"`` for the *input* of a module, i.e. a
pre-activation) and collects their latest output on every forward pass. Works for our models,
torchvision's and timm's alike.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from beyondkd.errors import ConfigError, suggest


def resolve_feature_point(model: nn.Module, point: str) -> str:
    """Map a semantic feature name (``stage2``) to a module path via the model's registry spec.

    A name that is already a module path (or ``path:in``) is returned unchanged.
    """
    spec = getattr(model, "beyondkd_spec", None)
    if spec is not None and point in spec.feature_points:
        return spec.feature_points[point]
    return point


class FeatureHooks:
    """Collect named intermediate outputs of ``model`` on each forward pass.

    Args:
        model: any ``nn.Module``.
        points: names of features to collect: semantic names of the model's registry spec
            (``stage1``, ``pool``, ``preact_stage3``) or module paths, optionally ``path:in``.

    Use ``hooks.features`` (a dict name -> tensor, refreshed each forward) after calling the
    model; ``hooks.remove()`` detaches the hooks. A module called several times in one forward
    (e.g. a shared ReLU) reports its last call.
    """

    def __init__(self, model: nn.Module, points: list[str] | tuple[str, ...]) -> None:
        self.features: dict[str, Tensor] = {}
        self._handles: list[Any] = []
        modules = dict(model.named_modules())
        for name in points:
            path = resolve_feature_point(model, name)
            module_path, _, which = path.partition(":")
            if which not in ("", "in", "out"):
                raise ConfigError(f"feature point '{path}': the suffix must be ':in' or ':out'")
            if module_path not in modules:
                known = [n for n in modules if n]
                raise ConfigError(
                    f"feature point '{name}' -> module '{module_path}' not found in "
                    f"{type(model).__name__}{suggest(module_path, known)}"
                )
            module = modules[module_path]
            if which == "in":
                # a pre-hook sees the input before an in-place module (ReLU(inplace=True))
                # overwrites it; clone so later in-place ops cannot change what we keep
                self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
            else:
                self._handles.append(module.register_forward_hook(self._output_hook(name)))

    def _input_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            self.features[name] = inputs[0].clone()

        return hook

    def _output_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self.features[name] = output

        return hook

    def remove(self) -> None:
        """Detach all hooks."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __del__(self) -> None:  # pragma: no cover - best effort cleanup
        try:
            self.remove()
        except Exception:
            pass

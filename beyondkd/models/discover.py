"""Feature points of models the registry did not write by hand: ``timm:<name>`` and ``torchvision:<name>``.

The feature methods address features by semantic names (``stem``, ``stage1..K``,
``preact_stageK``, ``pool``; see :mod:`beyondkd.models.registry`). For models built from other
libraries those names are found on the built model:

* **stages** — for timm, from the model's own ``feature_info`` (timm publishes the module,
  channels and reduction of every feature level): levels with reduction ≤ 2 give ``stem``, the
  others ``stage1..K`` in order. torchvision publishes no such table, so for ``torchvision:``
  models one forward of a small image is traced and, at each reduction 4, 8, 16, 32, the
  shallowest module giving a map of that size (the last such to finish) is the stage (ResNet:
  ``layer1..4``; VGG, MobileNet, EfficientNet, ConvNeXt: blocks of ``features``, the last stage
  being ``features`` itself);
* **pre-activation** ``preact_stageK`` — the same trace finds the last leaf module run inside the
  stage. If it returned the stage's output and is an activation (timm's ``layerK.J.act2``/
  ``act3``, torchvision's reused ``relu``), the point is that activation's input (``path:in``:
  the residual sum before the ReLU); if it is a norm or convolution, the stage ends linearly and
  is its own pre-activation. A stage ending in a functional operation (a residual sum outside
  any module, a concatenation, ``F.relu``) gets no such point: give it by module path;
* **pool** — the input of the classifier (timm's ``get_classifier()``, else the top-level module
  holding the last ``Linear`` run).

The trace runs in eval mode without gradient on a zero image, so it changes no weight, running
statistic or random state; on the ``meta`` device it costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

#: activation modules whose input is a pre-activation feature
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.Softplus,
)

#: side of the zero image traced (reduction 32 still leaves a 2×2 map); models refusing it get 224
PROBE_SIZES = (64, 224)


def is_activation(module: nn.Module) -> bool:
    """True for torch's activation modules and timm's own (``timm.layers.activations*``)."""
    if isinstance(module, ACTIVATIONS):
        return True
    return type(module).__module__.startswith("timm.layers.activations")


#: one call of a submodule: (module name, output shape or None, identity of the output value)
Call = tuple[str, "torch.Size | None", "tuple[int, int] | None"]

#: leaf modules whose output is a linear (pre-activation) feature
LINEAR_LEAVES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.conv._ConvNd, nn.Linear,
)


def trace(model: nn.Module, in_channels: int) -> tuple[int, list[Call]]:
    """One forward of a zero image, recording every call of every submodule.

    Returns:
        ``(side, calls)``: the image side used (the first of :data:`PROBE_SIZES` the model
        accepts) and a :data:`Call` per call in the order the calls finished (a parent after its
        children). The identity ``(id, version)`` of an output tells whether a later call
        returned the very same value, unmodified by any in-place operation in between.
        ``(0, [])`` if the model accepts no size.
    """
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    was = model.training
    for size in PROBE_SIZES:
        calls: list[Call] = []
        alive: list[Tensor] = []  # ids stay unique while the outputs are alive

        def record(name: str) -> Callable[..., None]:
            def hook(mod: nn.Module, inputs: object, output: object) -> None:
                if isinstance(output, Tensor):
                    alive.append(output)
                    calls.append((name, output.shape, (id(output), output._version)))
                else:
                    calls.append((name, None, None))

            return hook

        handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, in_channels, size, size, device=device))
            return size, calls
        except Exception:  # noqa: BLE001 - a model that refuses this size: try the next one
            continue
        finally:
            model.train(was)
            for h in handles:
                h.remove()
    return 0, []


def preact_points(model: nn.Module, stages: dict[str, str], calls: list[Call]) -> dict[str, str]:
    """``preact_stageK`` for each ``stageK -> path`` whose pre-activation the trace can prove.

    The last leaf module run inside the stage must have returned the stage's output itself
    (nothing after it, in-place operations included). If that leaf is an activation, the point
    is its input (``leaf:in``); if it is a norm, convolution or linear layer, the stage ends
    linearly and the point is the stage itself. Otherwise (a functional ``relu``, a sum or a
    concatenation ends the stage) there is none.
    """
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    for stage, path in stages.items():
        ends = [key for n, _, key in calls if n == path]
        leaves = [(n, key) for n, _, key in calls
                  if n.startswith(path + ".") and not any(True for _ in modules[n].children())]
        if not ends or not leaves or ends[-1] is None or leaves[-1][1] != ends[-1]:
            continue
        last = modules[leaves[-1][0]]
        if is_activation(last):
            out[f"preact_{stage}"] = f"{leaves[-1][0]}:in"
        elif isinstance(last, LINEAR_LEAVES):
            out[f"preact_{stage}"] = path
    return out


def classifier_input(model: nn.Module, calls: list[Call], classifier: nn.Module | None = None) -> dict[str, str]:
    """``{"pool": "<classifier path>:in"}``: the pooled feature the classifier reads (``{}`` if none).

    ``classifier`` (timm's ``get_classifier()``) is used when it is a submodule; otherwise the
    top-level module holding the last ``Linear`` run.
    """
    modules = dict(model.named_modules())
    named = {m: n for n, m in modules.items() if n}
    if classifier is not None and classifier in named and not isinstance(classifier, nn.Identity):
        return {"pool": f"{named[classifier]}:in"}
    linear = [n for n, _, _ in calls if isinstance(modules[n], nn.Linear)]
    return {"pool": f"{linear[-1].split('.')[0]}:in"} if linear else {}


def timm_feature_points(model: nn.Module, in_channels: int) -> dict[str, str]:
    """Feature points of a timm model from its ``feature_info`` (+ pre-activation and pool)."""
    info = getattr(model, "feature_info", None) or []
    levels = [(d["module"], int(d["reduction"])) for d in info if isinstance(d, dict) and d.get("module")]
    _, calls = trace(model, in_channels)
    points: dict[str, str] = {}
    stem = [m for m, r in levels if r <= 2]
    if stem:
        points["stem"] = stem[-1]
    stages = {f"stage{k}": m for k, m in enumerate((m for m, r in levels if r > 2), start=1)}
    points.update(stages)
    points.update(preact_points(model, stages, calls))
    get_classifier = getattr(model, "get_classifier", None)
    points.update(classifier_input(model, calls, get_classifier() if callable(get_classifier) else None))
    return points


def traced_feature_points(model: nn.Module, in_channels: int) -> dict[str, str]:
    """Feature points of a model without a feature table (torchvision): stages by reduction, traced."""
    side, calls = trace(model, in_channels)
    # reduction -> (depth, name) of the shallowest module giving a map of that size, the last such to finish
    last_at: dict[int, tuple[int, str]] = {}
    for name, shape, _ in calls:
        if shape is not None and len(shape) == 4 and shape[2] > 0 and side % shape[2] == 0:
            depth, r = name.count("."), side // shape[2]
            if r not in last_at or depth <= last_at[r][0]:
                last_at[r] = (depth, name)
    points: dict[str, str] = {}
    if 2 in last_at:
        points["stem"] = last_at[2][1]
    stages = {f"stage{k}": last_at[r][1] for k, r in enumerate((r for r in (4, 8, 16, 32) if r in last_at), start=1)}
    points.update(stages)
    points.update(preact_points(model, stages, calls))
    points.update(classifier_input(model, calls))
    return points

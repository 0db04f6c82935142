"""Freezing parts of the trained network: ``freeze`` (glob patterns) and ``train_bn: false``.

* ``freeze: ["conv1.*", "bn1.*", "layer1.*"]`` — every parameter whose name (as in
  ``model.named_parameters()``) matches one of the ``fnmatch`` patterns stops requiring
  gradient. It is then in no optimizer parameter group (so it gets no momentum or Adam state
  and no weight decay) and no gradient is computed for it. A pattern matching no parameter is a
  one-line error (a typo would otherwise silently train everything).
* A batch norm whose parameters are all frozen keeps its running statistics too: it always runs
  in eval mode (a forward pre-hook sets it, whatever ``model.train()`` did), so a frozen part is
  left exactly as it was loaded.
* ``train_bn: false`` does that for every batch norm of the network: weights, biases and
  running statistics stay as loaded (the usual setting for fine-tuning from pretrained weights
  with small batches).

Frozen tensors are still saved in checkpoints (the state dict is unchanged), so ``eval``,
resume and using the result as a teacher work as for any run.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from beyondkd.errors import ConfigError


@dataclass(frozen=True)
class FreezeReport:
    """What :func:`apply_freeze` did: frozen parameter names and batch norms kept in eval mode."""

    frozen: tuple[str, ...]
    eval_norms: tuple[str, ...]


def _keep_eval(module: nn.Module, inputs: object) -> None:
    module.train(False)


def apply_freeze(model: nn.Module, patterns: list[str], train_bn: bool = True, role: str = "student") -> FreezeReport:
    """Freeze ``model``'s parameters matching ``patterns`` (and every batch norm if not ``train_bn``).

    Args:
        model: the trained network.
        patterns: ``fnmatch`` globs over parameter names.
        train_bn: False keeps every batch norm's parameters and statistics as they are.
        role: config section for the messages (``student`` / ``model``).

    Returns:
        A :class:`FreezeReport`.

    Raises:
        ConfigError: a pattern matches nothing, or nothing of the network is left to train.
    """
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            wider = f"{pattern}.*"
            hint = f"; did you mean '{wider}'?" if any(fnmatchcase(n, wider) for n in names) else ""
            example = names[0] if names else "(none)"
            raise ConfigError(f"{role}.freeze pattern '{pattern}' matches no parameter (names look like '{example}'){hint}")
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    frozen_norm_params = set()
    if not train_bn:
        frozen_norm_params = {f"{n}.{p}" if n else p for n, m in norms.items() for p, _ in m.named_parameters(recurse=False)}
    frozen = []
    for name, param in model.named_parameters():
        if name in frozen_norm_params or any(fnmatchcase(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    if frozen and len(frozen) == len(names):
        raise ConfigError(f"{role}.freeze and train_bn leave no parameter of the network to train: freeze less")
    eval_norms = []
    for name, m in norms.items():
        own = list(m.parameters(recurse=False))
        if not train_bn or (own and not any(p.requires_grad for p in own)):
            m.register_forward_pre_hook(_keep_eval)
            eval_norms.append(name)
    return FreezeReport(tuple(frozen), tuple(eval_norms))

"""The non-finite loss guard: watched on the device every step, read back only every N steps.

Testing ``bool(torch.isfinite(loss))`` each step would block the host until the device has
finished the step. Instead :meth:`NonFiniteGuard.observe` records, with device operations only,
the first step whose loss is not finite and the values of that step's loss terms; the trainer
calls :meth:`NonFiniteGuard.check` every ``train.nan_check_every`` steps, before every
checkpoint and at the end of every epoch. A non-finite loss therefore stops the run within N
steps, its one-line error names the term and the step where it first happened, and no
checkpoint is ever written after it: the last good ``last.pt`` stays intact.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from beyondkd.engine.distributed import DistEnv
from beyondkd.errors import NonFiniteLossError

_NONE = 2**62  # "no bad step" in the cross-process minimum


class NonFiniteGuard:
    """See the module docstring.

    Args:
        device: the training device.
        first_step: the run's global step of the next observed step (non-zero after a resume).
        steps_per_epoch: to turn a global step into an epoch and a step for the message.
        last_path: the checkpoint the message says is intact (when it exists).
        hint: what to change, from the task.
        env: the process group; :meth:`check` is then a collective call.
    """

    def __init__(self, device: torch.device, first_step: int, steps_per_epoch: int, last_path: Path,
                 hint: str, env: DistEnv = DistEnv()) -> None:
        self.device = device
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.last_path = last_path
        self.hint = hint
        self.env = env
        self._step = torch.tensor(first_step, dtype=torch.int64, device=device)
        self._first_bad = torch.tensor(-1, dtype=torch.int64, device=device)
        self._keys: tuple[str, ...] | None = None
        self._values: Tensor | None = None

    def observe(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        """Record one step's loss and terms (device operations only)."""
        keys = tuple(terms)
        if keys != self._keys:  # another set of terms (a new phase): settle the old one first
            if self._keys is not None:
                self.check()
            self._keys = keys
            self._values = torch.zeros(len(keys) + 1, device=self.device)
        vec = torch.stack([loss.detach().float().reshape(())] + [v.detach().float().reshape(()) for v in terms.values()])
        new = torch.logical_and(~torch.isfinite(vec[0]), self._first_bad < 0)
        self._first_bad = torch.where(new, self._step, self._first_bad)
        self._values = torch.where(new, vec, self._values)
        self._step += 1

    def check(self) -> None:
        """Raise :class:`NonFiniteLossError` if some observed loss was not finite (host sync)."""
        mine = self._first_bad.clone()
        if not self.env.enabled:
            if int(mine) < 0:
                return
        else:
            first = self.env.all_reduce_min(torch.where(mine < 0, torch.full_like(mine, _NONE), mine))
            if int(first) == _NONE:
                return
        report = None
        if int(mine) >= 0 and self._values is not None:
            report = (int(mine), self._values.tolist())
        step, values = min(r for r in self.env.all_gather_objects(report) if r is not None)
        names = ["loss", *(self._keys or ())]
        bad = next((i for i in range(1, len(values)) if not math.isfinite(values[i])), 0)
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        kept = f"the last good checkpoint {self.last_path} is intact" if self.last_path.is_file() else "no checkpoint was written"
        raise NonFiniteLossError(
            f"non-finite loss ({names[bad]} = {values[bad]}) at epoch {epoch + 1}, step {in_epoch + 1}: {self.hint}; {kept}"
        )

"""An epoch's running sums, kept on the training device, and the epoch record made from them.

Per step the trainer adds the loss (weighted by the batch's samples), the task's sums (correct
top-1 predictions), every loss term and every statistic, each statistic by its declared
reduction (:class:`beyondkd.core.Stat`): ``sum`` and ``mean`` statistics are added up, ``last``
ones replaced. Nothing is read back to the host until the epoch ends, when one all-reduce over
the processes gives the totals.

A mid-epoch checkpoint stores :meth:`EpochSums.reduced_state` (the sums so far, over every
process), so a resumed epoch's record counts every batch of the epoch, before and after the
interruption.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from beyondkd.core import StepOutput, Trainable
from beyondkd.engine.distributed import DistEnv
from beyondkd.engine.task import Task


class EpochSums:
    """See the module docstring.

    Keys of :attr:`sums`: ``loss`` (sum of loss × samples), ``samples``, ``task/<k>``,
    ``term/<k>`` and ``stat/<k>`` for ``sum`` and ``mean`` statistics; :attr:`last` holds the
    ``last`` statistics.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps = 0
        self.elapsed = 0.0  # seconds of this epoch spent before a resume
        self.sums: dict[str, Tensor] = {}
        self.last: dict[str, Tensor] = {}
        self.reductions: dict[str, str] = {}
        self.integral: set[str] = set()
        self._zero = torch.zeros((), dtype=torch.float64, device=device)

    def _add(self, key: str, value: Tensor) -> None:
        self.sums[key] = self.sums.get(key, self._zero) + value.detach().double()

    def add(self, out: StepOutput, samples: int, task_sums: dict[str, Tensor]) -> None:
        """Count one step (device operations only)."""
        self._add("loss", out.loss * samples)
        self.sums["samples"] = self.sums.get("samples", self._zero) + samples
        for k, v in task_sums.items():
            self._add(f"task/{k}", v)
        for k, v in out.terms.items():
            self._add(f"term/{k}", v)
        for k, v in out.stats.items():
            how = out.reduction(k)
            self.reductions[k] = how
            if not v.is_floating_point():
                self.integral.add(k)
            if how == "last":
                self.last[k] = v.detach()
            else:
                self._add(f"stat/{k}", v)
        self.steps += 1

    def _reduced(self, env: DistEnv) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Copies of the sums added over the processes and of the last values averaged."""
        keys, lasts = sorted(self.sums), sorted(self.last)
        # (a statistic computed on the host, e.g. γ, is a CPU scalar: moved here, once, not per step)
        parts = [self.sums[k].reshape(1) for k in keys] + [self.last[k].to(self.device, torch.float64).reshape(1) for k in lasts]
        if not parts:
            return {}, {}
        flat = env.all_reduce_sum(torch.cat(parts))
        sums = {k: flat[i] for i, k in enumerate(keys)}
        last = {k: flat[len(keys) + i] / env.world_size for i, k in enumerate(lasts)}
        return sums, last

    def reduced_state(self, env: DistEnv) -> dict[str, Any]:
        """The partial epoch over every process, for a mid-epoch checkpoint (a collective call)."""
        sums, last = self._reduced(env)
        return {
            "steps": self.steps,
            "elapsed": self.elapsed,
            "sums": {k: v.cpu() for k, v in sums.items()},
            "last": {k: v.cpu() for k, v in last.items()},
            "reductions": dict(self.reductions),
            "integral": sorted(self.integral),
        }

    def load_state(self, state: dict[str, Any], holds_sums: bool) -> None:
        """Continue a partial epoch. Only one process (``holds_sums``) takes the stored sums,
        which already cover every process; the others start their share from zero."""
        self.steps = int(state["steps"])
        self.elapsed = float(state["elapsed"])
        self.reductions = dict(state["reductions"])
        self.integral = set(state["integral"])
        self.last = {k: v.to(self.device) for k, v in state["last"].items()}
        if holds_sums:
            self.sums = {k: v.to(self.device, torch.float64) for k, v in state["sums"].items()}
        else:
            self.sums = {k: torch.zeros_like(v, dtype=torch.float64, device=self.device) for k, v in state["sums"].items()}

    def record(self, env: DistEnv, task: Task, method: Trainable, seconds: float) -> dict[str, Any]:
        """The epoch's training figures (a collective call under torchrun).

        ``train_loss`` is the mean over samples, the task's figures (``train_acc``), each loss
        term ``loss_<k>`` and each ``mean`` statistic the mean over steps and processes, ``sum``
        statistics the total, ``last`` statistics the last step's value; then the method's own
        derived figures (:meth:`~beyondkd.core.Trainable.epoch_fields`).
        """
        if not self.steps:
            return {}
        sums, last = self._reduced(env)
        totals = {k: float(v) for k, v in sums.items()}
        steps = self.steps * env.world_size
        samples = totals["samples"]
        record: dict[str, Any] = {"train_loss": totals["loss"] / max(samples, 1.0)}
        record.update(task.train_fields({k[5:]: v for k, v in totals.items() if k.startswith("task/")}, samples))
        record.update({f"loss_{k[5:]}": v / steps for k, v in totals.items() if k.startswith("term/")})
        stats: dict[str, Any] = {}
        for k, how in self.reductions.items():
            if how == "last":
                stats[k] = float(last[k])
            elif how == "sum":
                v = totals[f"stat/{k}"]
                stats[k] = int(round(v)) if k in self.integral else v
            else:
                stats[k] = totals[f"stat/{k}"] / steps
        record.update(stats)
        record.update(method.epoch_fields(stats))
        record["steps"] = self.steps
        record["epoch_seconds"] = self.elapsed + seconds
        record["images_per_second"] = samples / max(self.elapsed + seconds, 1e-9)
        return record

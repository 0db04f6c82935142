"""Per-group LR schedule windows (``Distiller.schedule_spans`` → ``build_scheduler(start_step=)``)."""

from __future__ import annotations

import math

import pytest
import torch

from beyondkd.config import SchedulerConfig
from beyondkd.engine.optim import build_scheduler


def _lrs(cfg, steps_per_epoch, total_steps, start_step, run_steps):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, cfg, steps_per_epoch, total_steps, start_step=start_step)
    out = []
    for _ in range(run_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_a_delayed_cosine_waits_then_runs_over_its_own_span():
    lrs = _lrs(SchedulerConfig(name="cosine"), 2, 4, start_step=4, run_steps=8)
    assert lrs[:5] == [pytest.approx(0.1)] * 5  # before and at its first step: the base LR
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert lrs[4:] == pytest.approx(expected)


def test_delayed_milestones_count_from_the_groups_first_epoch():
    lrs = _lrs(SchedulerConfig(name="multistep", milestones=[1]), 2, 4, start_step=4, run_steps=8)
    assert lrs == pytest.approx([0.1] * 6 + [0.01] * 2)


def test_no_offset_is_the_old_schedule():
    cfg = SchedulerConfig(name="cosine", warmup_epochs=1)
    assert _lrs(cfg, 2, 6, 0, 6) == pytest.approx([0.05, 0.1] + [0.1 * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)])

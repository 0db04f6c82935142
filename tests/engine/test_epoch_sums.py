"""Epoch records from declared reductions, partial epochs that resume, and the on-device NaN guard."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.core import Stat, StepOutput, Trainable
from beyondkd.engine.classification import ClassificationTask
from beyondkd.engine.distributed import DistEnv
from beyondkd.engine.epoch_sums import EpochSums
from beyondkd.engine.nonfinite import NonFiniteGuard
from beyondkd.errors import NonFiniteLossError

TASK = ClassificationTask()


class _Plain(Trainable):
    """A method that derives nothing from its statistics."""


def _step(loss: float, counts: int, level: float, last: float, logits: torch.Tensor, n: int) -> StepOutput:
    # names chosen to look like the plug-in's: the reduction comes from the declaration alone
    stats = {"rows_seen": Stat(torch.tensor(counts), "sum"), "rows_mean": torch.tensor(level),
             "rows_last": Stat(torch.tensor(last), "last")}
    return StepOutput(torch.tensor(loss), logits[:n], {"ce": torch.tensor(loss)}, stats)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10, width=32), st.integers(0, 50), st.floats(-5, 5, width=32),
                                  st.floats(-5, 5, width=32), st.integers(1, 6)),
                min_size=1, max_size=12), st.integers(0, 11))
def test_each_statistic_is_reduced_as_it_declares_and_a_split_epoch_gives_the_same_record(steps, cut):
    logits = torch.eye(6)
    targets = torch.tensor([0, 1, 2, 0, 0, 0])  # the first min(n, 3) rows are right
    cpu = torch.device("cpu")
    outs = []
    for loss, counts, level, last, n in steps:
        out = _step(loss, counts, level, last, logits, n)
        outs.append((out, n, TASK.train_sums(out, type("B", (), {"targets": targets[:n]})())))
    whole, first, second = EpochSums(cpu), EpochSums(cpu), EpochSums(cpu)
    for out, n, task_sums in outs:
        whole.add(out, n, task_sums)
    for out, n, task_sums in outs[:cut]:
        first.add(out, n, task_sums)
    second.load_state(first.reduced_state(DistEnv()), holds_sums=True)  # a resume from a mid-epoch checkpoint
    for out, n, task_sums in outs[cut:]:
        second.add(out, n, task_sums)
    rec = whole.record(DistEnv(), TASK, _Plain(), seconds=1.0)
    samples = sum(n for *_, n in steps)
    assert rec["rows_seen"] == sum(c for _, c, *_ in steps) and isinstance(rec["rows_seen"], int)
    assert rec["rows_mean"] == pytest.approx(sum(s[2] for s in steps) / len(steps))
    assert rec["rows_last"] == pytest.approx(steps[-1][3])
    assert rec["train_loss"] == pytest.approx(sum(s[0] * s[4] for s in steps) / samples)
    assert rec["loss_ce"] == pytest.approx(sum(s[0] for s in steps) / len(steps))
    assert rec["train_acc"] == pytest.approx(100.0 * sum(min(n, 3) for *_, n in steps) / samples)
    assert rec["steps"] == len(steps) and "frac_seen" not in rec  # no derived figure the method did not ask for
    split = second.record(DistEnv(), TASK, _Plain(), seconds=1.0)
    timing = ("epoch_seconds", "images_per_second")
    assert {k: v for k, v in split.items() if k not in timing} == pytest.approx({k: v for k, v in rec.items() if k not in timing})


def test_stat_rejects_an_unknown_reduction_and_plain_tensors_are_averaged():
    with pytest.raises(ValueError, match="unknown reduction 'median'"):
        Stat(torch.tensor(1.0), "median")  # type: ignore[arg-type]
    out = StepOutput(torch.tensor(0.0), None, {}, {"a": torch.tensor(1.0), "b": Stat(torch.tensor(2), "sum")})
    assert out.stats["b"].item() == 2 and out.reduction("a") == "mean" and out.reduction("b") == "sum"


def _guard(tmp_path, steps_per_epoch=4):
    return NonFiniteGuard(torch.device("cpu"), 0, steps_per_epoch, tmp_path / "last.pt", "lower the lr")


def test_guard_names_the_term_and_step_of_the_first_non_finite_loss(tmp_path):
    guard = _guard(tmp_path)
    for step in range(9):
        bad = step >= 5  # from step 6 on; afterwards every term is nan (the weights are)
        terms = {"ce": torch.tensor(float("nan") if step > 5 else 1.0), "feat": torch.tensor(float("inf") if bad else 0.5)}
        guard.observe(terms["ce"] + terms["feat"], terms)
        if step == 3:
            guard.check()  # all finite so far: no error
    with pytest.raises(NonFiniteLossError, match=r"\(feat = inf\) at epoch 2, step 2: lower the lr; no checkpoint was written"):
        guard.check()


def test_guard_settles_a_phase_before_its_terms_change(tmp_path):
    guard = _guard(tmp_path)
    guard.observe(torch.tensor(math.nan), {"sl": torch.tensor(math.nan)})
    (tmp_path / "last.pt").write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=r"sl = nan.*epoch 1, step 1.*last.pt is intact"):
        guard.observe(torch.tensor(1.0), {"ce": torch.tensor(1.0)})

"""γ schedules (BTKD eq. 9 and the authors' code)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beyondkd.bias import GammaSchedule, Progress, register_schedule, schedule_names
from beyondkd.errors import ConfigError

fractions = st.floats(0.0, 1.0, allow_nan=False)


@given(fractions)
def test_linear_per_step_is_the_progress(x):
    assert GammaSchedule("linear")(x) == pytest.approx(x, abs=1e-6)


def test_linear_per_epoch_steps_at_epoch_boundaries():
    s = GammaSchedule("linear", per="epoch")
    assert [s(Progress(step=0, total_steps=100, epoch=e, total_epochs=4)) for e in range(4)] == [0.0, 0.25, 0.5, 0.75]
    # inside an epoch the value does not move
    assert s(Progress(10, 100, 1, 4)) == s(Progress(24, 100, 1, 4))


@given(st.integers(0, 9))
def test_sin2_matches_the_authors_formula(e):
    s = GammaSchedule("sin2", per="epoch")
    assert s(Progress(0, 1, e, 10)) == pytest.approx(math.sin(math.pi * e / 20) ** 2)


@given(fractions, fractions)
def test_schedules_are_monotone_and_bounded(a, b):
    lo, hi = min(a, b), max(a, b)
    for s in (GammaSchedule("linear"), GammaSchedule("sin2"), GammaSchedule("linear", cap=0.3), GammaSchedule("linear", warmup=0.2)):
        assert 0.0 <= s(lo) <= s(hi) <= 1.0


@given(fractions)
def test_cap_and_constant(x):
    assert GammaSchedule("linear", cap=0.4)(x) <= 0.4
    assert GammaSchedule("constant", value=0.3)(x) == 0.3
    assert GammaSchedule("none")(x) == 0.0
    assert not GammaSchedule("none").dynamic


def test_warmup_holds_gamma_at_zero_then_rescales():
    s = GammaSchedule("linear", warmup=0.5)
    assert s(0.25) == 0.0 and s(0.5) == 0.0
    assert s(0.75) == pytest.approx(0.5)
    assert s(1.0) == pytest.approx(1.0)


def test_progress_fraction_and_limits():
    assert Progress(50, 100).fraction == 0.5
    assert Progress.from_fraction(1.0).fraction == 1.0
    with pytest.raises(ValueError):
        Progress.from_fraction(1.5)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown gamma schedule 'lineer'.*did you mean 'linear'"):
        GammaSchedule("lineer")
    with pytest.raises(ConfigError, match="cap"):
        GammaSchedule("linear", cap=2.0)


def test_register_a_new_schedule():
    name = "test_quadratic"
    if name not in schedule_names():
        register_schedule(name, lambda x, s: x * x)
    assert GammaSchedule(name)(0.5) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="already registered"):
        register_schedule(name, lambda x, s: x)

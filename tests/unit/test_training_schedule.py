"""The retraining rule the live trainer and the in-process replay share."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recstream.models.errors import ValidationError
from recstream.models.training_schedule import training_due


def runs(n: int, every: int, min_events: int, growth: float) -> list[int]:
    """The event counts at which a trainer asked after every event trains."""
    out: list[int] = []
    for seen in range(1, n + 1):
        if training_due(
            seen, out[-1] if out else 0, every=every, min_events=min_events, growth=growth
        ):
            out.append(seen)
    return out


def test_the_default_schedule_doubles_then_runs_every_5000_events() -> None:
    assert runs(20_000, 5000, 500, 2.0) == [500, 1000, 2000, 4000, 8000, 13000, 18000]
    assert runs(20_000, 5000, 500, 1.0) == [500, 5500, 10500, 15500]  # growth off
    assert runs(20_000, 5000, 500, 0.0) == [500, 5500, 10500, 15500]


def test_nothing_is_due_twice_or_before_the_first_events() -> None:
    assert not training_due(499, 0, every=5000, min_events=500, growth=2.0)
    assert not training_due(1000, 1000, every=1, min_events=500, growth=2.0)
    assert not training_due(900, 1000, every=1, min_events=500, growth=2.0)  # a reset count
    with pytest.raises(ValidationError):
        training_due(10, 0, every=0, min_events=5, growth=2.0)


@given(
    every=st.integers(1, 400),
    min_events=st.integers(1, 300),
    growth=st.floats(0.0, 4.0, allow_nan=False),
)
def test_runs_start_at_min_events_and_are_never_more_than_every_apart(
    every: int, min_events: int, growth: float
) -> None:
    n = 2000
    points = runs(n, every, min_events, growth)
    assert points[0] == min_events
    for before, after in itertools.pairwise(points):
        gap = after - before
        assert gap <= every
        # Never sooner than the growth rule or the every rule allows.
        assert gap >= min(every, math.ceil(growth * before) - before if growth > 1 else every)
    assert n - points[-1] < every  # the last stretch is shorter than every

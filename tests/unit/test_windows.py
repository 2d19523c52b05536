"""Hopping-window starts: membership, count, grid alignment, and agreement with Faust."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import ValidationError
from recstream.models.windows import window_starts, windows_per_timestamp

FAST = settings(max_examples=50, deadline=None)


def faust_starts(ts: float, size: int, step: int) -> list[float]:
    """faust.windows.HoppingWindow.ranges (faust-streaming 0.15, pure-Python version), starts
    only, copied so the property runs without Faust; test_matches_installed_faust checks the
    copy against the real thing."""
    start = (ts // step) * step - size + step
    return [float(s) for s in range(int(start), int(ts) + 1, int(step))]


@FAST
@given(
    step=st.floats(0.01, 1e5),
    n=st.integers(1, 24),
    ts=st.floats(-1e9, 2e9, allow_nan=False),
)
def test_starts_are_consecutive_grid_points_ending_at_ts(step: float, n: int, ts: float) -> None:
    starts = window_starts(ts, step * n, step)
    assert len(starts) == n == windows_per_timestamp(step * n, step)
    last = round(starts[-1] / step)
    # Grid points as floats compute them: the window of ts is the last k with k·step <= ts.
    assert starts == [float(k * step) for k in range(last - n + 1, last + 1)]
    assert starts[-1] <= ts < (last + 1) * step


@FAST
@given(
    step=st.integers(1, 10_000),
    n=st.integers(1, 24),
    ts=st.floats(-1e9, 2e9, allow_nan=False),
)
def test_starts_are_exactly_the_windows_containing_ts(step: int, n: int, ts: float) -> None:
    # Exact rational membership [k·step, (k + n)·step) for whole-second steps, by brute force
    # over nearby grid points; float sums like start + size could round across the boundary.
    fts = Fraction(ts)
    near = math.floor(fts / step)
    expected = [
        float(k * step) for k in range(near - n - 2, near + 3) if k * step <= fts < (k + n) * step
    ]
    assert window_starts(ts, step * n, step) == expected


@FAST
@given(
    step=st.integers(1, 86_400),
    n=st.integers(1, 12),
    ts=st.one_of(st.floats(0.0, 2e9), st.integers(0, 10**9).map(float)),
)
def test_matches_faust_hopping_windows(step: int, n: int, ts: float) -> None:
    assert window_starts(ts, step * n, step) == faust_starts(ts, step * n, step)


@pytest.mark.parametrize(("size", "step"), [(3600, 600), (86_400, 3600), (10, 10), (7, 1)])
def test_matches_installed_faust(size: int, step: int) -> None:
    windows = pytest.importorskip("faust.windows")
    rng = np.random.default_rng(size)
    for ts in [*rng.uniform(0.0, 2e9, 200).tolist(), *(float(k * step) for k in range(50))]:
        expected = [start for start, _ in windows.HoppingWindow(size, step).ranges(ts)]
        assert window_starts(ts, size, step) == expected == faust_starts(ts, size, step)


def test_known_values() -> None:
    # One-hour windows every ten minutes; values as produced by Faust 0.15.
    assert window_starts(1000.7, 3600, 600) == [-2400.0, -1800.0, -1200.0, -600.0, 0.0, 600.0]
    assert window_starts(600.0, 1200, 600) == [0.0, 600.0]  # a boundary opens a window
    assert window_starts(5.0, 10, 10) == [0.0]  # tumbling


@pytest.mark.parametrize(
    ("size", "step"),
    [(10.0, 3.0), (0.0, 1.0), (10.0, 0.0), (-10.0, 5.0), (5.0, 10.0), (math.inf, 1.0)],
)
def test_rejects_sizes_that_are_not_whole_multiples_of_step(size: float, step: float) -> None:
    with pytest.raises(ValidationError):
        window_starts(0.0, size, step)


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf])
def test_rejects_non_finite_times(ts: float) -> None:
    with pytest.raises(ValidationError):
        window_starts(ts, 10.0, 5.0)

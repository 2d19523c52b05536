"""Hopping-window arithmetic in event time (seconds), matching Faust's `hopping()` tables.

A hopping window of `size_s` advancing by `step_s` is the half-open interval
[start, start + size_s) with start a whole multiple of `step_s` (k·step_s, k any integer).
Every timestamp lies in exactly size_s / step_s windows.

Faust (faust.windows.HoppingWindow.ranges) starts its windows at
floor(ts / step)·step − size + step + j·step, which are multiples of step only when size is a
multiple of step; it also truncates to whole seconds. We therefore require size_s to be a
whole multiple of step_s, and then, for whole-second sizes and timestamps >= 0, the starts
below equal Faust's (tests/unit/test_windows.py checks this against Faust itself). Faust
reports a window's end as start + size − 0.1; here the end is exclusive instead.

Starts are computed as k·step_s in floating point, and the window of ts is the last k with
k·step_s <= ts (as floats compute it). For whole-second steps this is exact arithmetic.
"""

from __future__ import annotations

import math

from recstream.models.errors import ValidationError

# Tolerance for "size is a whole multiple of step" when both are given as floats (e.g. 0.3/0.1).
_MULTIPLE_RTOL = 1e-9


def windows_per_timestamp(size_s: float, step_s: float) -> int:
    """How many windows contain any one timestamp: size_s / step_s (validated to be whole)."""
    if not (math.isfinite(size_s) and size_s > 0.0):
        raise ValidationError(f"window size_s must be finite and > 0, got {size_s!r}")
    if not (math.isfinite(step_s) and step_s > 0.0):
        raise ValidationError(f"window step_s must be finite and > 0, got {step_s!r}")
    ratio = size_s / step_s
    n = round(ratio)
    if n < 1 or abs(ratio - n) > _MULTIPLE_RTOL * ratio:
        raise ValidationError(
            f"window size_s ({size_s}) must be a whole multiple of step_s ({step_s}), "
            "as Faust's hopping windows otherwise start off the step grid"
        )
    return n


def window_starts(ts: float, size_s: float, step_s: float) -> list[float]:
    """Starts (s) of the hopping windows [start, start + size_s) that contain event time `ts`.

    Ascending; each start is a multiple of `step_s` and start <= ts < start + size_s. There are
    exactly size_s / step_s of them. Raises ValidationError unless size_s is a whole multiple
    of step_s (both > 0) and ts is finite.
    """
    n = windows_per_timestamp(size_s, step_s)
    if not math.isfinite(ts):
        raise ValidationError(f"event time ts must be finite (s), got {ts!r}")
    last = math.floor(ts / step_s)
    # ts / step_s is rounded; nudge so that last·step <= ts < (last + 1)·step holds exactly in
    # the float arithmetic the caller will use to test membership.
    if last * step_s > ts:
        last -= 1
    elif (last + 1) * step_s <= ts:
        last += 1
    # Multiply whole step counts rather than repeatedly subtracting step_s, so float steps do
    # not accumulate rounding error across windows.
    return [float((last - j) * step_s) for j in range(n - 1, -1, -1)]

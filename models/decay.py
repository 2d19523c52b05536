"""Exponential decay in event time (seconds), kept in log space relative to a fixed epoch.

A decayed sum S(t) = Σ_k w_k·e^(−λ(t − t_k)) over positive weights w_k at event times t_k is
stored as one number, the *log-mass*

    log_mass = log Σ_k w_k·e^(λ·t_k)

which does not depend on the evaluation time t: S(t) = e^(log_mass − λ·t). Why this form:

- Adding a term is a log-add-exp, which is commutative and associative, so replays and
  out-of-order events give the same value (up to float rounding) whatever the arrival order.
- λ·t_k for epoch-second timestamps is large (≈ 13 600 for a one-day half-life in 2024), so
  e^(λ·t_k) itself would overflow; its logarithm never does.
- Ranking several sums at one time t is ranking their log-masses: e^(−λt) is common to all.

Invariant: one half-life after an event, its contribution to S is exactly half its weight.
Precision: a log-mass near λ·t carries an absolute rounding error of about ulp(λ·t), i.e. a
relative error of ≈ λ·t·2.2e-16 in S per operation: 3e-12 for a one-day half-life at
2024 epoch seconds, 3e-7 for a one-second half-life. Keep event times in seconds, not ms.
The empty sum has log_mass = −inf (`EMPTY`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recstream.models.errors import ValidationError

EMPTY: float = -math.inf
"""The log-mass of the empty sum (no events yet)."""

_LN2 = math.log(2.0)


def decay_rate(half_life_s: float) -> float:
    """λ = ln 2 / half_life, in 1/seconds. `half_life_s` must be finite and > 0."""
    if not (math.isfinite(half_life_s) and half_life_s > 0.0):
        raise ValidationError(f"half_life_s must be finite and > 0, got {half_life_s!r}")
    return _LN2 / half_life_s


def _check_rate(rate: float) -> None:
    if not (math.isfinite(rate) and rate >= 0.0):
        raise ValidationError(f"decay rate must be finite and >= 0 (1/s), got {rate!r}")


def log_term(weight: float, ts: float, rate: float) -> float:
    """The log-mass of a single event: log(weight) + λ·ts. `weight` > 0, `ts` in seconds."""
    if not (math.isfinite(weight) and weight > 0.0):
        raise ValidationError(f"weight must be finite and > 0, got {weight!r}")
    if not math.isfinite(ts):
        raise ValidationError(f"event time ts must be finite (s), got {ts!r}")
    _check_rate(rate)
    return math.log(weight) + rate * ts


def logaddexp(a: float, b: float) -> float:
    """log(e^a + e^b) for two Python floats; what numpy.logaddexp computes, without its
    per-call overhead (≈ 5× faster on scalars), for hot paths that add one term at a time.

    Symmetric bit for bit (the arguments are ordered first), so adding terms commutes exactly.
    """
    if a < b:
        a, b = b, a
    if b == EMPTY:
        return a
    return a + math.log1p(math.exp(b - a))


def update(log_mass: float, weight: float, ts: float, rate: float) -> float:
    """Add an event of `weight` (> 0) at event time `ts` (s) to a sum; returns the new log-mass.

    Order independent: update(update(m, a, s, λ), b, t, λ) == update(update(m, b, t, λ), a, s, λ)
    up to float rounding. Raises ValidationError for weight <= 0 or non-finite inputs.
    """
    return float(np.logaddexp(log_mass, log_term(weight, ts, rate)))


def merge(log_mass_a: float, log_mass_b: float) -> float:
    """The log-mass of the union of two disjoint event sets (same rate): a log-add-exp."""
    return float(np.logaddexp(log_mass_a, log_mass_b))


def score(log_mass: float, at_ts: float, rate: float) -> float:
    """S(at_ts) = Σ_k w_k·e^(−λ(at_ts − t_k)): the decayed sum at event time `at_ts` (s).

    0.0 for the empty sum. Meant for at_ts >= the events' times; earlier times amplify the
    events (e^(+λ·Δ)) and overflow to inf far enough back.
    """
    if log_mass == EMPTY:
        return 0.0
    if not math.isfinite(at_ts):
        raise ValidationError(f"at_ts must be finite (s), got {at_ts!r}")
    exponent = log_mass - rate * at_ts
    # math.exp raises OverflowError past ~709; the sum is then larger than any float.
    return math.exp(exponent) if exponent < 709.0 else math.inf


@dataclass(slots=True)
class DecayedCounter:
    """One decayed sum with its own half-life (seconds); a thin object over the functions above.

    Invariant: `log_mass` is relative to the fixed epoch t = 0, never to "now", so the counter
    holds no clock and any two counters with the same half-life can be merged.
    """

    half_life_s: float
    log_mass: float = EMPTY

    def __post_init__(self) -> None:
        decay_rate(self.half_life_s)  # validates

    @property
    def rate(self) -> float:
        """λ in 1/seconds."""
        return decay_rate(self.half_life_s)

    def update(self, weight: float, ts: float) -> None:
        """Add `weight` (> 0) at event time `ts` (s)."""
        self.log_mass = update(self.log_mass, weight, ts, self.rate)

    def score(self, at_ts: float) -> float:
        """The decayed sum at event time `at_ts` (s)."""
        return score(self.log_mass, at_ts, self.rate)

    def merge(self, other: DecayedCounter) -> DecayedCounter:
        """A new counter holding both event sets; the half-lives must match (ValidationError)."""
        if other.half_life_s != self.half_life_s:
            raise ValidationError(
                f"cannot merge counters with half-lives {self.half_life_s} and {other.half_life_s}"
            )
        return DecayedCounter(self.half_life_s, merge(self.log_mass, other.log_mass))

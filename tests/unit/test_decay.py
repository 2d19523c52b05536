"""Log-space exponential decay: half-life semantics, order independence, no overflow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models import decay
from recstream.models.errors import ValidationError

FAST = settings(max_examples=50, deadline=None)

weights = st.floats(1e-3, 1e3)
times = st.floats(0.0, 2e9)  # epoch seconds, up to 2033
half_lives = st.floats(1.0, 1e8)
events = st.lists(st.tuples(weights, st.floats(0.0, 1e6)), min_size=1, max_size=30)


def log_rel_tol(rate: float, at: float) -> float:
    """Relative error the fixed-epoch form allows: log-masses near λ·t carry an absolute
    rounding error of a few ulp(λ·t) ≈ λ·t·2.2e-16, which is a relative error in the mass."""
    return 1e-12 + 8 * np.finfo(float).eps * rate * abs(at)


def test_decay_rate_is_ln2_over_half_life() -> None:
    assert decay.decay_rate(86_400.0) == pytest.approx(math.log(2) / 86_400.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_decay_rate_rejects_bad_half_life(bad: float) -> None:
    with pytest.raises(ValidationError):
        decay.decay_rate(bad)


@FAST
@given(w=weights, t=times, h=half_lives, k=st.integers(0, 10))
def test_each_half_life_halves_an_event(w: float, t: float, h: float, k: int) -> None:
    rate = decay.decay_rate(h)
    m = decay.update(decay.EMPTY, w, t, rate)
    at = t + k * h
    assert decay.score(m, t, rate) == pytest.approx(w, rel=log_rel_tol(rate, t))
    assert decay.score(m, at, rate) == pytest.approx(w * 0.5**k, rel=log_rel_tol(rate, at))


@FAST
@given(evs=events, h=st.floats(10.0, 1e6), data=st.data())
def test_updates_commute(evs: list[tuple[float, float]], h: float, data: st.DataObject) -> None:
    rate = decay.decay_rate(h)
    order = data.draw(st.permutations(range(len(evs))))
    a = b = decay.EMPTY
    for w, t in evs:
        a = decay.update(a, w, t, rate)
    for i in order:
        b = decay.update(b, evs[i][0], evs[i][1], rate)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12)


@FAST
@given(evs=events, h=st.floats(10.0, 1e6), lag=st.floats(0.0, 1e6))
def test_score_is_the_decayed_sum(evs: list[tuple[float, float]], h: float, lag: float) -> None:
    rate = decay.decay_rate(h)
    m = decay.EMPTY
    for w, t in evs:
        m = decay.update(m, w, t, rate)
    at = max(t for _, t in evs) + lag
    direct = sum(w * math.exp(-rate * (at - t)) for w, t in evs)  # no overflow: exponents <= 0
    assert decay.score(m, at, rate) == pytest.approx(direct, rel=1e-9, abs=1e-300)


def test_no_overflow_for_large_times_and_short_half_lives() -> None:
    rate = decay.decay_rate(1.0)  # λ·t ≈ 1.2e9: e^(λt) would overflow by far
    t = 1.7e9
    m = decay.EMPTY
    for _ in range(1000):
        m = decay.update(m, 1e3, t, rate)
    assert math.isfinite(m)
    # 1000 log-add-exps each lose ~ulp(λt); the error grows with the count.
    tol = 1000 * log_rel_tol(rate, t)
    assert decay.score(m, t, rate) == pytest.approx(1e6, rel=tol)
    assert decay.score(m, t + 2.0, rate) == pytest.approx(2.5e5, rel=tol)


def test_realistic_half_life_keeps_full_precision() -> None:
    rate = decay.decay_rate(86_400.0)  # λ·t ≈ 1.4e4 in 2024
    m = decay.EMPTY
    for i in range(1000):
        m = decay.update(m, 1.0, 1.7e9 + i, rate)
    direct = sum(math.exp(-rate * (1.7e9 + 1000 - (1.7e9 + i))) for i in range(1000))
    assert decay.score(m, 1.7e9 + 1000, rate) == pytest.approx(direct, rel=1e-9)


def test_score_of_empty_is_zero_and_far_past_is_inf() -> None:
    rate = decay.decay_rate(1.0)
    assert decay.score(decay.EMPTY, 123.0, rate) == 0.0
    m = decay.update(decay.EMPTY, 1.0, 1e6, rate)
    assert decay.score(m, 0.0, rate) == math.inf


@pytest.mark.parametrize("w", [0.0, -1.0, math.nan, math.inf])
def test_update_rejects_non_positive_or_non_finite_weights(w: float) -> None:
    with pytest.raises(ValidationError):
        decay.update(decay.EMPTY, w, 0.0, 1.0)


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf])
def test_update_rejects_non_finite_times(ts: float) -> None:
    with pytest.raises(ValidationError):
        decay.update(decay.EMPTY, 1.0, ts, 1.0)


def test_zero_rate_is_a_plain_sum() -> None:
    m = decay.EMPTY
    for t in (0.0, 1e6, 5.0):
        m = decay.update(m, 2.0, t, 0.0)
    assert decay.score(m, 1e9, 0.0) == pytest.approx(6.0)


@FAST
@given(a=st.lists(st.tuples(weights, times), max_size=10), b=st.lists(st.tuples(weights, times)))
def test_merge_equals_applying_both(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> None:
    rate = decay.decay_rate(3600.0)
    ma = mb = decay.EMPTY
    for w, t in a:
        ma = decay.update(ma, w, t, rate)
    for w, t in b:
        mb = decay.update(mb, w, t, rate)
    both = ma
    for w, t in b:
        both = decay.update(both, w, t, rate)
    assert decay.merge(ma, mb) == decay.merge(mb, ma)
    assert decay.merge(ma, mb) == pytest.approx(both, rel=1e-12, abs=1e-12)


@FAST
@given(a=st.floats(-1e6, 1e6), b=st.floats(-1e6, 1e6))
def test_scalar_logaddexp_matches_numpy_and_is_symmetric(a: float, b: float) -> None:
    assert decay.logaddexp(a, b) == decay.logaddexp(b, a)
    assert decay.logaddexp(a, b) == pytest.approx(float(np.logaddexp(a, b)), rel=1e-15)
    assert decay.logaddexp(a, decay.EMPTY) == a
    assert decay.logaddexp(decay.EMPTY, decay.EMPTY) == decay.EMPTY


def test_decayed_counter() -> None:
    c = decay.DecayedCounter(half_life_s=60.0)
    c.update(4.0, 100.0)
    assert c.score(160.0) == pytest.approx(2.0)
    other = decay.DecayedCounter(half_life_s=60.0)
    other.update(2.0, 160.0)
    assert c.merge(other).score(160.0) == pytest.approx(4.0)
    with pytest.raises(ValidationError):
        c.merge(decay.DecayedCounter(half_life_s=61.0))
    with pytest.raises(ValidationError):
        decay.DecayedCounter(half_life_s=0.0)

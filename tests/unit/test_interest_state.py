"""Per-user interest state: decay math against a direct oracle, order independence, merge,
de-duplication, bounded windows, serialization and its failure modes."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import StateError, ValidationError
from recstream.models.interest_state import (
    InterestEvent,
    InterestParams,
    InterestState,
    item_key,
    rating_weight,
)

FAST = settings(max_examples=50, deadline=None)

T0 = 1_700_000_000.0  # event times are epoch seconds
DIM = 8
N_ITEMS = 10
LABELS = ("astronomy", "cooking", "jazz", "travel")
PARAMS = InterestParams(
    dim=DIM, short_half_life_s=86_400.0, long_half_life_s=10 * 86_400.0, dedupe_capacity=64
)
_rng = np.random.default_rng(7)
ITEM_VECS = _rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
ITEM_VECS /= np.linalg.norm(ITEM_VECS, axis=1, keepdims=True)
QUERY_VECS = _rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
QUERY_VECS /= np.linalg.norm(QUERY_VECS, axis=1, keepdims=True)
# Item i has one or two categories; query i leans to one label.
ITEM_CATS = [tuple(LABELS[j % 4] for j in range(i, i + 1 + i % 2)) for i in range(N_ITEMS)]
QUERY_CATS = [{LABELS[i % 4]: 0.75, LABELS[(i + 1) % 4]: 0.25} for i in range(N_ITEMS)]
TYPES = ("view", "click", "add_to_cart", "purchase", "rate", "search", "skip", "dislike")


@dataclass(frozen=True)
class Call:
    """One update() call's arguments."""

    event: InterestEvent
    item_vec: npt.NDArray[np.float32] | None
    categories: tuple[str, ...]
    text_vec: npt.NDArray[np.float32] | None
    text_categories: Mapping[str, float] | None

    def apply(self, state: InterestState) -> bool:
        return state.update(
            self.event,
            self.item_vec,
            self.categories,
            self.text_vec,
            text_categories=self.text_categories,
        )


def make_call(i: int, etype: str, dt: float, item: int, rating: float) -> Call:
    ts = T0 + dt
    if etype == "search":
        return Call(InterestEvent(f"e{i}", etype, ts), None, (), QUERY_VECS[item], QUERY_CATS[item])
    value = rating if etype == "rate" else None
    event = InterestEvent(f"e{i}", etype, ts, f"item{item}", value)
    return Call(event, ITEM_VECS[item], ITEM_CATS[item], None, None)


raw_events = st.lists(
    st.tuples(
        st.sampled_from(TYPES),
        st.floats(0.0, 30 * 86_400.0),
        st.integers(0, N_ITEMS - 1),
        st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]),
    ),
    min_size=1,
    max_size=30,
)


def build(raw: Sequence[tuple[str, float, int, float]]) -> list[Call]:
    return [make_call(i, *r) for i, r in enumerate(raw)]


def state_of(calls: Sequence[Call], params: InterestParams = PARAMS) -> InterestState:
    s = InterestState(params)
    for c in calls:
        c.apply(s)
    return s


def text_weight(params: InterestParams, etype: str, w: float) -> float:
    return w if etype in params.text_event_types else params.review_text_weight * np.sign(w)


def oracle_vector(calls: Sequence[Call], half_life_s: float, at: float) -> tuple[np.ndarray, float]:
    """Σ w·e^(−λ(at − t))·v in float64, and Σ|w|·e^(...) (the scale rounding is relative to)."""
    rate = math.log(2) / half_life_s
    u, mass = np.zeros(DIM), 0.0
    for c in calls:
        w = PARAMS.weight_of(c.event.event_type, c.event.value)
        d = math.exp(-rate * (at - c.event.ts))
        if c.item_vec is not None:
            u += w * d * c.item_vec
            mass += abs(w) * d
        if c.text_vec is not None:
            tw = text_weight(PARAMS, c.event.event_type, w)
            u += tw * d * c.text_vec
            mass += abs(tw) * d
    return u, mass


def oracle_evidence(calls: Sequence[Call], at: float) -> dict[str, tuple[float, float]]:
    """category -> (P, N) decayed at `at`, straight from the rule in the module docstring."""
    rate = math.log(2) / PARAMS.evidence_half_life
    out: dict[str, list[float]] = {}
    for c in calls:
        w = PARAMS.weight_of(c.event.event_type, c.event.value)
        d = math.exp(-rate * (at - c.event.ts))
        shares = {cat: w / len(c.categories) for cat in c.categories}
        tw = text_weight(PARAMS, c.event.event_type, w)
        for cat, share in (c.text_categories or {}).items():
            shares[cat] = shares.get(cat, 0.0) + tw * share
        for cat, x in shares.items():
            pn = out.setdefault(cat, [0.0, 0.0])
            pn[0 if x > 0 else 1] += abs(x) * d
    return {k: (v[0], v[1]) for k, v in out.items()}


# ----------------------------------------------------------------------------- params, events


@pytest.mark.parametrize(
    "kwargs",
    [
        {"short_half_life_s": 0.0},
        {"long_half_life_s": -1.0},
        {"evidence_half_life_s": math.inf},
        {"dim": 0},
        {"dedupe_capacity": -1},
        {"max_consumed": 70_000},
        {"event_weights": {"view": math.nan}},
        {"event_weights": {"rate": 1.0}},
        {"rating_low": 4.0, "rating_high": 4.0},
    ],
)
def test_params_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        InterestParams(**kwargs)


def test_weights_and_ratings() -> None:
    p = InterestParams()
    expected = {"view": 1, "click": 2, "add_to_cart": 4, "purchase": 8, "search": 1.5}
    expected |= {"skip": -1, "dislike": -4}
    assert {t: p.weight_of(t) for t in expected} == expected
    assert [rating_weight(v) for v in (5.0, 4.0, 3.5, 3.0, 2.5, 2.0, 0.5)] == [
        4.0,
        4.0,
        0.5,
        0.5,
        0.5,
        -4.0,
        -4.0,
    ]
    assert p.weight_of("rate", 4.5) == 4.0
    with pytest.raises(ValidationError):
        p.weight_of("rate")
    with pytest.raises(ValidationError):
        p.weight_of("teleport")
    assert p.evidence_half_life == p.long_half_life_s


@pytest.mark.parametrize(
    "args",
    [
        ("", "view", 1.0),
        (None, "", 1.0),
        (None, "view", math.nan),
        (None, "view", 1.0, ""),
        (None, "rate", 1.0, "i", math.inf),
    ],
)
def test_event_validation(args: tuple[object, ...]) -> None:
    with pytest.raises(ValidationError):
        InterestEvent(*args)


def test_params_hash_and_events_take_numpy_numbers() -> None:
    assert hash(InterestParams()) == hash(InterestParams())
    assert InterestParams(consumed_event_types={"view"}).consumed_event_types == {"view"}
    e = InterestEvent("a", "rate", np.float32(T0), "i", np.int64(4))
    assert InterestState(PARAMS).update(e)
    with pytest.raises(ValidationError):
        InterestEvent("a", "view", True)


# ----------------------------------------------------------------------------- decay math


def test_one_half_life_halves_an_event_in_each_horizon() -> None:
    s = InterestState()  # default params: dim 384, 1-day and 60-day half-lives
    v = np.zeros(384, dtype=np.float32)
    v[3] = 1.0
    s.update(InterestEvent("a", "purchase", T0, "item"), v, ("cooking",))
    assert s.score_vector("short", T0)[3] == pytest.approx(8.0)
    assert s.score_vector("short", T0 + 86_400.0)[3] == pytest.approx(4.0, rel=1e-6)
    assert s.score_vector("long", T0 + 60 * 86_400.0)[3] == pytest.approx(4.0, rel=1e-6)
    assert s.evidence(T0 + 60 * 86_400.0) == {"cooking": pytest.approx(4.0)}


@FAST
@given(raw=raw_events, lag=st.floats(0.0, 10 * 86_400.0))
def test_vectors_and_evidence_match_the_direct_sums(
    raw: list[tuple[str, float, int, float]], lag: float
) -> None:
    calls = build(raw)
    s = state_of(calls)
    at = s.last_ts + lag
    for horizon, hl in (("short", PARAMS.short_half_life_s), ("long", PARAMS.long_half_life_s)):
        expected, mass = oracle_vector(calls, hl, at)
        got = s.score_vector(horizon, at)
        assert got.dtype == np.float32
        # float32 accumulation: error relative to the mass of the terms, not of the result.
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * mass + 1e-30)
    truth = oracle_evidence(calls, at)
    evidence = s.evidence(at)
    assert evidence.keys() == truth.keys()
    for cat, (pos, neg) in truth.items():
        assert evidence[cat] == pytest.approx(max(0.0, pos - neg), rel=0, abs=1e-9 * (pos + neg))


@FAST
@given(raw=raw_events, data=st.data())
def test_any_permutation_gives_the_same_state(
    raw: list[tuple[str, float, int, float]], data: st.DataObject
) -> None:
    calls = build(raw)
    a = state_of(calls)
    b = state_of(data.draw(st.permutations(calls)))
    assert a.isclose(b)
    assert a.log_scale("short") == b.log_scale("short")  # a max: exact in any order
    assert a.last_event_id == b.last_event_id
    at = a.last_ts
    np.testing.assert_allclose(
        a.score_vector("long", at), b.score_vector("long", at), rtol=1e-4, atol=1e-5
    )


# ----------------------------------------------------------------------------- duplicates


@FAST
@given(raw=raw_events, data=st.data())
def test_duplicates_are_ignored(
    raw: list[tuple[str, float, int, float]], data: st.DataObject
) -> None:
    calls = build(raw)
    replayed = data.draw(st.lists(st.sampled_from(calls), max_size=15))
    mixed = data.draw(st.permutations([*calls, *replayed]))
    s = InterestState(PARAMS)
    applied = [c.apply(s) for c in mixed]
    assert sum(applied) == len(calls)
    assert s.event_count == len(calls)
    assert s.isclose(state_of(calls))


def test_a_duplicate_changes_nothing() -> None:
    calls = build([("view", 0.0, 1, 0.0), ("click", 10.0, 2, 0.0)])
    s = state_of(calls)
    before = s.to_bytes()
    assert calls[0].apply(s) is False
    assert s.to_bytes() == before
    assert s.has_seen("e0") and not s.has_seen("e9")


def test_dedupe_window_is_bounded() -> None:
    params = InterestParams(dim=DIM, dedupe_capacity=3)
    s = InterestState(params)
    calls = build([("view", float(i), 0, 0.0) for i in range(5)])
    for c in calls:
        assert c.apply(s)
    assert len(s.recent_event_keys()) == 3
    assert calls[4].apply(s) is False
    assert calls[0].apply(s) is True  # forgotten: at-least-once protection is bounded


def test_events_without_id_are_always_applied() -> None:
    s = InterestState(PARAMS)
    e = InterestEvent(None, "view", T0, "item0")
    assert s.update(e, ITEM_VECS[0]) and s.update(e, ITEM_VECS[0])
    assert s.event_count == 2 and len(s.recent_event_keys()) == 0


# ----------------------------------------------------------------------------- merge


def _split(calls: list[Call], groups: list[int], k: int) -> list[list[Call]]:
    return [[c for c, g in zip(calls, groups, strict=True) if g == j] for j in range(k)]


# ----------------------------------------------------------------------------- serialization


@FAST
@given(raw=raw_events)
def test_bytes_round_trip(raw: list[tuple[str, float, int, float]]) -> None:
    s = state_of(build(raw))
    blob = s.to_bytes()
    back = InterestState.from_bytes(blob, PARAMS)
    assert back.isclose(s)
    assert back.event_count == s.event_count and back.last_ts == s.last_ts
    np.testing.assert_array_equal(
        back.score_vector("short", s.last_ts), s.score_vector("short", s.last_ts)
    )
    np.testing.assert_array_equal(back.consumed_keys(), s.consumed_keys())
    np.testing.assert_array_equal(back.recent_event_keys(), s.recent_event_keys())
    assert len(back.to_bytes()) == len(blob)


def test_empty_state_round_trips() -> None:
    s = InterestState(PARAMS)
    back = InterestState.from_bytes(s.to_bytes(), PARAMS)
    assert back.isclose(s) and back.event_count == 0 and back.last_ts == -math.inf
    assert not back.score_vector("long", T0).any()
    assert not back.blended(T0).any()


@FAST
@given(garbage=st.binary(max_size=400))
def test_garbage_raises_state_error(garbage: bytes) -> None:
    with pytest.raises(StateError):
        InterestState.from_bytes(garbage, PARAMS)


def test_truncated_corrupted_or_foreign_bytes_raise_state_error() -> None:
    blob = state_of(build([("view", 0.0, 1, 0.0), ("search", 5.0, 2, 0.0)])).to_bytes()
    for cut in (1, 4, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(StateError):
            InterestState.from_bytes(blob[:cut], PARAMS)
    for pos in (0, 7, 60, len(blob) - 5):
        flipped = bytearray(blob)
        flipped[pos] ^= 0x40
        with pytest.raises(StateError):
            InterestState.from_bytes(bytes(flipped), PARAMS)
    with pytest.raises(StateError):
        InterestState.from_bytes(blob, InterestParams(dim=DIM, long_half_life_s=86_400.0))
    with pytest.raises(StateError):
        InterestState.from_bytes(blob, InterestParams(dim=DIM + 1))
    with pytest.raises(StateError):
        InterestState.from_bytes("not bytes", PARAMS)


def test_valid_checksum_with_bad_values_raises_state_error() -> None:
    # A NaN written inside a correctly checksummed blob must still be refused.
    blob = bytearray(state_of(build([("view", 0.0, 1, 0.0)])).to_bytes()[:-4])
    header = 46 + len(b"e0")
    blob[header : header + 4] = struct.pack("<f", math.nan)
    blob += struct.pack("<I", zlib.crc32(bytes(blob)))
    with pytest.raises(StateError):
        InterestState.from_bytes(bytes(blob), PARAMS)


def test_smaller_capacities_on_load_keep_the_newest() -> None:
    s = state_of(build([("view", float(i), i, 0.0) for i in range(6)]))
    small = InterestParams(
        dim=DIM,
        short_half_life_s=PARAMS.short_half_life_s,
        long_half_life_s=PARAMS.long_half_life_s,
        dedupe_capacity=2,
        max_consumed=2,
    )
    back = InterestState.from_bytes(s.to_bytes(), small)
    assert [back.has_seen(f"e{i}") for i in (3, 4, 5)] == [False, True, True]
    assert [back.has_consumed(f"item{i}") for i in (3, 4, 5)] == [False, True, True]


def test_a_state_reads_under_another_evidence_half_life_with_its_evidence_at_the_last_event() -> (
    None
):
    s = state_of(build([("purchase", 0.0, 1, 0.0), ("click", 600.0, 2, 0.0)]))
    last = s.last_ts
    hour = replace(PARAMS, evidence_half_life_s=3600.0)
    assert hour.fingerprint() == PARAMS.fingerprint()  # states written before stay readable
    back = InterestState.from_bytes(s.to_bytes(), hour)
    now = s.evidence(last)
    assert back.evidence(last) == pytest.approx(now, rel=1e-6)
    later = back.evidence(last + 3600.0)
    assert later == pytest.approx({c: v / 2 for c, v in now.items()}, rel=1e-5)
    np.testing.assert_allclose(back.score_vector("long", last), s.score_vector("long", last))


def test_serialized_size_matches_the_formula_and_budget() -> None:
    rng = np.random.default_rng(0)
    s = InterestState()  # dim 384
    labels = ["astronomy", "cooking", "jazz", "football", "gardening", "programming"]
    for i in range(50):
        v = rng.standard_normal(384).astype(np.float32)
        s.update(
            InterestEvent(f"syn0-user-1-{i}", "view", T0 + 60.0 * i, f"item-{i}"),
            v / np.linalg.norm(v),
            (labels[i % 6],),
        )
    n_id = len(s.last_event_id or "")
    cats = sum(9 + len(c) for c in s.categories)
    expected = 50 + n_id + 8 * 384 + 8 * 50 + 4 * 50 + cats
    assert len(s.to_bytes()) == expected <= 4096


# ----------------------------------------------------------------------------- bookkeeping


def test_consumed_window_recency_capacity_and_search() -> None:
    params = InterestParams(dim=DIM, max_consumed=3)
    s = InterestState(params)
    for i, item in enumerate(["a", "b", "c", "a", "d"]):
        s.update(InterestEvent(f"e{i}", "view", T0 + i, item))
    s.update(InterestEvent("q", "search", T0 + 9), text_vec=QUERY_VECS[0])
    assert [s.has_consumed(x) for x in "abcd"] == [True, False, True, True]
    assert s.consumed_keys().tolist() == [item_key("c"), item_key("a"), item_key("d")]
    assert np.isin(
        np.array([item_key("b"), item_key("d")], np.uint32), s.consumed_keys()
    ).tolist() == [
        False,
        True,
    ]


def test_last_event_is_the_greatest_time_then_id() -> None:
    s = InterestState(PARAMS)
    s.update(InterestEvent("b", "view", T0 + 5))
    s.update(InterestEvent("a", "view", T0 + 1))  # late arrival
    assert (s.last_ts, s.last_event_id) == (T0 + 5, "b")
    s.update(InterestEvent("c", "view", T0 + 5))
    assert s.last_event_id == "c"


def test_evidence_rules_negative_floor_split_and_text() -> None:
    s = InterestState(PARAMS)
    s.update(InterestEvent("1", "click", T0, "x"), categories=("jazz", "travel"))  # +1 each
    s.update(InterestEvent("2", "dislike", T0, "y"), categories=("travel",))  # −4
    s.update(
        InterestEvent("3", "search", T0), text_categories={"jazz": 0.5, "cooking": 0.5}
    )  # +0.75 each
    assert s.evidence(T0) == {
        "cooking": pytest.approx(0.75),
        "jazz": pytest.approx(1.75),
        "travel": 0.0,
    }
    assert s.evidence_log_masses()["travel"][1] > -math.inf


def test_blended_mixes_unit_directions() -> None:
    s = InterestState(PARAMS)
    e0, e1 = np.eye(DIM, dtype=np.float32)[:2]
    s.update(InterestEvent("old", "purchase", T0 - 20 * 86_400.0, "a"), e0)
    s.update(InterestEvent("new", "view", T0, "b"), e1)
    for w in (0.0, 0.3, 1.0):
        out = s.blended(T0, short_weight=w)
        assert np.linalg.norm(out) == pytest.approx(1.0, rel=1e-6)
    # The short horizon has all but forgotten the old purchase: its direction is e1.
    assert s.blended(T0, 1.0)[1] == pytest.approx(1.0, abs=1e-6)
    # Two long half-lives (10 days each) leave the purchase at 8/4 = 2 against the view's 1.
    np.testing.assert_allclose(
        s.blended(T0, 0.0)[:2], np.array([2.0, 1.0]) / math.sqrt(5), rtol=1e-6
    )
    with pytest.raises(ValidationError):
        s.blended(T0, 1.5)


def test_invalid_inputs_leave_the_state_untouched() -> None:
    s = state_of(build([("view", 0.0, 1, 0.0)]))
    before = s.to_bytes()
    bad_calls = [
        lambda: s.update(InterestEvent("n", "view", T0, "i"), np.ones(DIM + 1)),
        lambda: s.update(InterestEvent("n", "view", T0, "i"), np.full(DIM, np.nan)),
        lambda: s.update(InterestEvent("n", "view", T0, "i"), None, "jazz"),
        lambda: s.update(InterestEvent("n", "view", T0, "i"), None, ("",)),
        lambda: s.update(InterestEvent("n", "view", T0), text_categories={"jazz": -1.0}),
        lambda: s.update(InterestEvent("n", "warp", T0)),
        lambda: s.update(InterestEvent("n", "rate", T0, "i")),
    ]
    for call in bad_calls:
        with pytest.raises(ValidationError):
            call()
    assert s.to_bytes() == before
    assert not s.has_seen("n")


def test_score_vector_argument_checks() -> None:
    s = state_of(build([("view", 0.0, 1, 0.0)]))
    with pytest.raises(ValidationError):
        s.score_vector("medium", T0)
    with pytest.raises(ValidationError):
        s.score_vector("short", T0 - 1e9)  # amplified past float32
    with pytest.raises(ValidationError):
        s.score_vector("short", math.nan)

"""The per-user record: its byte codec (round trip, corruption) and hopping-window counts."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import StateError
from recstream.models.interest_state import InterestEvent, InterestParams
from recstream.models.user_record import ServedList, UserRecord, WindowCounts
from recstream.models.weights import WeightState
from recstream.models.windows import window_starts

FAST = settings(max_examples=50, deadline=None)
PARAMS = InterestParams(dim=4)
K = 6

labels = st.sampled_from(["news", "sport", "tech", "ünïcode"])
finite = st.floats(-1e6, 1e6, allow_nan=False)
served_lists = st.builds(
    ServedList,
    rec_id=st.text(min_size=1, max_size=8),
    items=st.dictionaries(
        st.text(min_size=1, max_size=6), st.lists(st.floats(0.0, 1.0), min_size=K, max_size=K)
    ),
    lo=st.lists(finite, min_size=K, max_size=K),
    hi=st.lists(finite, min_size=K, max_size=K),
)
windows = st.builds(
    WindowCounts,
    st.dictionaries(
        st.integers(0, 10**6).map(lambda n: float(n * 1800)),
        st.dictionaries(labels, st.integers(1, 50).map(float), min_size=1),
        max_size=4,
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | finite | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


def interest_from(events: list[tuple[str, float, str]]) -> UserRecord:
    rec = UserRecord.new(PARAMS, K)
    rng = np.random.default_rng(len(events))
    for n, (kind, ts, category) in enumerate(events):
        rec.interest.update(
            InterestEvent(f"e{n}", kind, ts, f"item{n % 5}"),
            item_vec=rng.normal(size=PARAMS.dim),
            categories=(category,),
        )
    return rec


@st.composite
def records(draw: st.DrawFn) -> UserRecord:
    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["view", "click", "purchase", "skip", "dislike"]),
                st.floats(1e9, 1.1e9),
                labels,
            ),
            max_size=6,
        )
    )
    rec = interest_from(events)
    w = np.asarray(draw(st.lists(st.floats(0.01, 1.0), min_size=K, max_size=K)))
    rec.weights = WeightState(w / w.sum(), draw(st.integers(0, 10**6)))
    rec.recent = draw(st.lists(st.tuples(st.text(min_size=1, max_size=6), finite), max_size=5))
    rec.served = draw(st.lists(served_lists, max_size=3))
    rec.window_short = draw(windows)
    rec.window_long = draw(windows)
    rec.last_list = draw(st.one_of(st.none(), st.dictionaries(st.text(max_size=5), json_values)))
    return rec


def assert_same(a: UserRecord, b: UserRecord) -> None:
    assert a.interest.to_bytes() == b.interest.to_bytes()
    assert a.weights.to_bytes() == b.weights.to_bytes()
    assert a.recent == b.recent
    assert a.served == b.served
    assert a.window_short == b.window_short
    assert a.window_long == b.window_long
    assert a.last_list == b.last_list


# --- codec ---------------------------------------------------------------------------------


@FAST
@given(records())
def test_round_trip(rec: UserRecord) -> None:
    data = rec.to_bytes()
    assert data[:2] == b"RU"
    back = UserRecord.from_bytes(data, PARAMS)
    assert_same(back, rec)
    assert back.to_bytes() == data  # canonical: a second round trip is byte-identical


def test_new_record_is_empty_with_uniform_weights() -> None:
    rec = UserRecord.new(PARAMS, K)
    assert rec.interest.event_count == 0
    np.testing.assert_allclose(rec.weights.weights, np.full(K, 1.0 / K))
    assert rec.weights.n == 0
    assert rec.recent == [] and rec.served == [] and rec.last_list is None
    assert rec.served_list(None) is None
    assert_same(UserRecord.from_bytes(rec.to_bytes(), PARAMS), rec)


def test_served_list_by_id_else_latest() -> None:
    rec = UserRecord.new(PARAMS, K)
    a = ServedList("a", {"x": [0.0] * K}, [0.0] * K, [1.0] * K)
    b = ServedList("b", {"y": [1.0] * K}, [0.0] * K, [1.0] * K)
    rec.served = [a, b]
    assert rec.served_list("a") is a
    assert rec.served_list("b") is b
    assert rec.served_list("gone") is b
    assert rec.served_list(None) is b


def test_non_finite_values_are_refused_when_writing() -> None:
    rec = UserRecord.new(PARAMS, K)
    rec.recent = [("a", math.nan)]
    with pytest.raises(ValueError):
        rec.to_bytes()  # never writes a record it could not read back (orjson: NaN → null)


def make_sample() -> bytes:
    rec = interest_from([("click", 1e9, "news"), ("view", 1e9 + 60, "sport")])
    rec.recent = [("item0", 1e9), ("item1", 1e9 + 60)]
    rec.served = [ServedList("r", {"item3": [0.5] * K}, [0.0] * K, [1.0] * K)]
    rec.window_short.add(1e9, ("news",), 3600.0, 1800.0)
    rec.last_list = {"rec_id": "r", "items": []}
    return rec.to_bytes()


SAMPLE = make_sample()


@pytest.fixture
def sample() -> bytes:
    return SAMPLE


def body_replaced(data: bytes, **changes: Any) -> bytes:
    """The record with keys of its JSON part replaced (the JSON starts at the last '{"r')."""
    at = data.rindex(b'{"recent"')
    rest = json.loads(data[at:])
    rest.update(changes)
    return data[:at] + json.dumps(rest).encode()


def test_every_truncation_is_refused(sample: bytes) -> None:
    for n in range(len(sample)):
        with pytest.raises(StateError):
            UserRecord.from_bytes(sample[:n], PARAMS)


@FAST
@given(st.data())
def test_corrupt_bytes_are_refused_or_decoded_never_crash(data: Any) -> None:
    sample = SAMPLE
    pos = data.draw(st.integers(0, len(sample) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(sample)
    bad[pos] ^= flip
    with contextlib.suppress(StateError):  # a flip inside JSON may still decode
        UserRecord.from_bytes(bytes(bad), PARAMS)


def test_corrupt_headers_and_parts_are_refused(sample: bytes) -> None:
    bad_cases = [
        b"",
        b"XX" + sample[2:],  # magic
        sample[:2] + bytes([2]) + sample[3:],  # version
        sample + b"trailing",  # JSON with trailing garbage
        sample[:8] + bytes([sample[8] ^ 0xFF]) + sample[9:],  # inside the (checksummed) interest
        body_replaced(sample, recent=5),
        body_replaced(sample, recent=[["a"]]),
        body_replaced(sample, served=[{"rec_id": "r"}]),
        body_replaced(sample, ws=7),
    ]
    for bad in bad_cases:
        with pytest.raises(StateError):
            UserRecord.from_bytes(bad, PARAMS)
    del bad_cases
    with pytest.raises(StateError):
        UserRecord.from_bytes(sample, InterestParams(dim=5))  # other params: refused
    with pytest.raises(StateError):
        UserRecord.from_bytes("not bytes", PARAMS)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["ws", "wl"])
def test_window_bucket_of_the_wrong_type_is_refused(sample: bytes, field: str) -> None:
    with pytest.raises(StateError):
        UserRecord.from_bytes(body_replaced(sample, **{field: [[0, 5]]}), PARAMS)


# --- WindowCounts --------------------------------------------------------------------------

window_shapes = st.sampled_from([(3600.0, 1800.0), (3600.0, 3600.0), (86_400.0, 21_600.0)])
event_lists = st.lists(
    st.tuples(st.integers(0, 400_000).map(float), st.lists(labels, min_size=1, max_size=3)),
    min_size=1,
    max_size=30,
)


@FAST
@given(event_lists, window_shapes, st.integers(0, 100_000).map(float))
def test_window_counts_match_a_brute_force_count(
    events: list[tuple[float, list[str]]], shape: tuple[float, float], ahead: float
) -> None:
    size, step = shape
    w = WindowCounts()
    for ts, categories in events:  # any order: late events included
        w.add(ts, tuple(categories), size, step)
    newest = max(ts for ts, _ in events)
    for at in (newest, newest + ahead):
        # The window [s, s + size) that contains `at` and starts earliest.
        start = window_starts(at, size, step)[0]
        expected: dict[str, float] = {}
        for ts, categories in events:
            if start <= ts < start + size:
                for c in set(categories):  # an event counts once per category
                    expected[c] = expected.get(c, 0.0) + 1.0
        got = w.counts(at, size, step)
        assert got == expected
        assert list(got) == sorted(got)
    # Only buckets that can still belong to the latest window are kept.
    newest_bucket = math.floor(newest / step) * step
    assert all(newest_bucket - size < b <= newest_bucket for b in w.buckets)
    assert len(w.buckets) <= size / step


def test_window_counts_drop_expired_buckets() -> None:
    w = WindowCounts()
    w.add(0.0, ("a",), 3600.0, 1800.0)
    w.add(1800.0, ("a", "b", "a"), 3600.0, 1800.0)
    assert w.counts(1800.0, 3600.0, 1800.0) == {"a": 2.0, "b": 1.0}
    w.add(3600.0, ("b",), 3600.0, 1800.0)  # the 0-bucket leaves the latest window
    assert 0.0 not in w.buckets
    assert w.counts(3600.0, 3600.0, 1800.0) == {"a": 1.0, "b": 2.0}
    assert w.counts(10_000.0, 3600.0, 1800.0) == {}

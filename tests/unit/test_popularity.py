"""The popularity baseline's state and ranking."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models import decay
from recstream.models.popularity import ItemPopularity, merge_top, rank_popular

RATE = decay.decay_rate(3600.0)


def test_duplicates_are_ignored_and_bytes_round_trip() -> None:
    p = ItemPopularity()
    assert p.update("e1", 2.0, 1000.0, RATE, capacity=4)
    assert not p.update("e1", 2.0, 1000.0, RATE, capacity=4)
    assert math.isclose(p.score(1000.0, RATE), 2.0)
    assert math.isclose(p.score(1000.0 + 3600.0, RATE), 1.0)  # one half-life halves it
    q = ItemPopularity.from_bytes(p.to_bytes())
    assert q == p


def test_dedupe_memory_is_bounded() -> None:
    p = ItemPopularity()
    for i in range(10):
        p.update(f"e{i}", 1.0, 1000.0 + i, RATE, capacity=4)
    assert len(p.recent) == 4


@settings(max_examples=50, deadline=None)
@given(st.permutations([(f"e{i}", 1.0 + i % 3, 1000.0 + 97.0 * i) for i in range(12)]))
def test_order_of_updates_does_not_matter(events: list[tuple[str, float, float]]) -> None:
    p = ItemPopularity()
    for eid, w, ts in events:
        p.update(eid, w, ts, RATE, capacity=64)
    expected = sum(w * math.exp(-RATE * (5000.0 - ts)) for _, w, ts in events)
    assert math.isclose(p.score(5000.0, RATE), expected, rel_tol=1e-9)


def test_rank_excludes_consumed_and_unknown_items_and_orders_by_recent_mass() -> None:
    a, b, c = ItemPopularity(), ItemPopularity(), ItemPopularity()
    a.update("1", 5.0, 0.0, RATE, 8)  # old and heavy: decayed by 2^-10 at t=36000
    b.update("2", 1.0, 36_000.0, RATE, 8)
    c.update("3", 2.0, 36_000.0, RATE, 8)
    snaps = [{"a": a.log_mass}, {"b": b.log_mass, "c": c.log_mass}]
    ranked = rank_popular(snaps, at_ts=36_000.0, rate=RATE, k=5)
    assert [i for i, _ in ranked] == ["c", "b", "a"]
    assert [i for i, _ in rank_popular(snaps, 36_000.0, RATE, 5, exclude={"c"})] == ["b", "a"]
    only = rank_popular(snaps, 36_000.0, RATE, 5, allowed={"a": 1, "b": 1})
    assert [i for i, _ in only] == ["b", "a"]


def test_merge_top_keeps_the_largest_and_the_newest() -> None:
    merged = merge_top({"x": 1.0, "y": 5.0}, {"x": 3.0, "z": 4.0, "y": 2.0}, n=2)
    assert merged == {"y": 5.0, "z": 4.0}

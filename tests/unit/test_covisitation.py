"""Co-visitation: pair increments decayed by time gap, and the bounded neighbour map."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models import decay
from recstream.models.covisitation import CoVisitNeighbours, PairIncrement, pair_increments
from recstream.models.errors import StateError, ValidationError

FAST = settings(max_examples=50, deadline=None)

item_ids = st.sampled_from([f"i{k}" for k in range(12)])
recents = st.lists(st.tuples(item_ids, st.floats(0.0, 10_000.0)), max_size=20)
updates = st.lists(
    st.tuples(item_ids, st.floats(0.01, 100.0), st.floats(0.0, 1e6)), min_size=1, max_size=40
)


def test_gap_of_one_half_life_halves_the_pair_weight() -> None:
    incs = pair_increments(
        [("a", 1000.0), ("b", 1600.0)], "c", 1600.0, window_s=3600.0, gap_half_life_s=600.0
    )
    by_pair = {(i.item_id, i.neighbour_id): i for i in incs}
    assert by_pair["c", "a"].weight == pytest.approx(0.5)
    assert by_pair["c", "b"].weight == pytest.approx(1.0)
    assert by_pair["a", "c"] == PairIncrement("a", "c", by_pair["c", "a"].weight, 1600.0)
    assert len(incs) == 4


def test_window_self_pairs_and_direction() -> None:
    recent = [("a", 0.0), ("x", 50.0), ("x", 99.0), ("b", 500.0)]
    incs = pair_increments(recent, "x", 100.0, window_s=100.0, gap_half_life_s=60.0)
    # b is outside the window, x itself is skipped; symmetric by default.
    assert [(i.item_id, i.neighbour_id) for i in incs] == [("a", "x"), ("x", "a")]
    one_way = pair_increments(
        recent, "x", 100.0, window_s=100.0, gap_half_life_s=60.0, symmetric=False, weight=3.0
    )
    assert one_way == [PairIncrement("x", "a", 3.0 * 2 ** (-100 / 60), 100.0)]


@FAST
@given(recent=recents, ts=st.floats(0.0, 10_000.0), data=st.data())
def test_increments_ignore_the_order_of_recent_items(
    recent: list[tuple[str, float]], ts: float, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(recent))
    kw = {"window_s": 3000.0, "gap_half_life_s": 500.0}
    assert pair_increments(recent, "new", ts, **kw) == pair_increments(shuffled, "new", ts, **kw)


@FAST
@given(recent=recents, ts=st.floats(0.0, 10_000.0))
def test_repeats_count_once_with_the_closest_time(
    recent: list[tuple[str, float]], ts: float
) -> None:
    incs = pair_increments(recent, "new", ts, window_s=3000.0, gap_half_life_s=500.0)
    forward = [i for i in incs if i.item_id == "new"]
    assert len({i.neighbour_id for i in forward}) == len(forward)
    for inc in forward:
        gaps = [abs(ts - t) for item, t in recent if item == inc.neighbour_id]
        assert inc.weight == pytest.approx(2 ** (-min(gaps) / 500.0))
        assert min(gaps) <= 3000.0


def test_late_event_gets_the_same_increment_as_in_order() -> None:
    kw = {"window_s": 3600.0, "gap_half_life_s": 600.0}
    in_order = pair_increments([("a", 100.0)], "b", 700.0, **kw)
    late = pair_increments([("b", 700.0)], "a", 100.0, **kw)
    assert sorted(in_order, key=lambda i: i.item_id) == sorted(late, key=lambda i: i.item_id)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": -1.0, "gap_half_life_s": 1.0},
        {"window_s": 1.0, "gap_half_life_s": 0.0},
        {"window_s": 1.0, "gap_half_life_s": 1.0, "weight": 0.0},
    ],
)
def test_pair_increments_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        pair_increments([("a", 0.0)], "b", 1.0, **kwargs)


@FAST
@given(ups=updates, data=st.data())
def test_neighbour_map_is_order_independent_below_capacity(
    ups: list[tuple[str, float, float]], data: st.DataObject
) -> None:
    a, b = CoVisitNeighbours(12, 3600.0), CoVisitNeighbours(12, 3600.0)  # 12 >= distinct ids
    for n, w, t in ups:
        a.update(n, w, t)
    for n, w, t in data.draw(st.permutations(ups)):
        b.update(n, w, t)
    la, lb = a.log_masses(), b.log_masses()
    assert la.keys() == lb.keys()
    for k in la:
        assert la[k] == pytest.approx(lb[k], rel=1e-12, abs=1e-9)


@FAST
@given(ups=updates, capacity=st.integers(1, 5))
def test_capacity_holds_and_single_updates_keep_the_true_top(
    ups: list[tuple[str, float, float]], capacity: int
) -> None:
    nb = CoVisitNeighbours(capacity, 3600.0)
    seen: dict[str, tuple[float, float]] = {}
    for n, w, t in ups:
        if n in seen:
            continue  # one update per neighbour: then evicting the weakest is exact
        seen[n] = (w, t)
        nb.update(n, w, t)
        assert len(nb) <= capacity
    at = 2e6
    truth = sorted(
        ((n, w * 2 ** (-(at - t) / 3600.0)) for n, (w, t) in seen.items()),
        key=lambda p: (-p[1], p[0]),
    )
    got = nb.score(at)
    assert [n for n, _ in got] == [n for n, _ in truth[:capacity]]
    for (_, s_got), (_, s_true) in zip(got, truth, strict=False):
        assert s_got == pytest.approx(s_true, rel=1e-9, abs=1e-300)


@FAST
@given(ups=updates, capacity=st.integers(1, 5))
def test_eviction_matches_a_scan_for_the_weakest(
    ups: list[tuple[str, float, float]], capacity: int
) -> None:
    """Repeats, evictions and re-entries: the kept order gives what scanning every entry
    for the weakest (smallest mass, then largest id) gives, map and serving order alike."""
    nb = CoVisitNeighbours(capacity, 3600.0)
    reference: dict[str, float] = {}
    rate = decay.decay_rate(3600.0)
    for n, w, t in ups:
        term = decay.log_term(w, t, rate)
        nb.add_log_mass(n, term)
        old = reference.get(n)
        reference[n] = term if old is None else decay.logaddexp(old, term)
        if len(reference) > capacity:
            del reference[max(reference.items(), key=lambda e: (-e[1], e[0]))[0]]
        assert nb.log_masses() == reference
    served = sorted(reference.items(), key=lambda e: (-e[1], e[0]))
    assert [n for n, _ in nb.score(0.0)] == [n for n, _ in served]
    back = CoVisitNeighbours.from_dict(nb.to_dict())
    assert back.score(0.0) == nb.score(0.0)


def test_score_sorted_top_and_half_life() -> None:
    nb = CoVisitNeighbours(3, 100.0)
    nb.update("a", 1.0, 0.0)
    nb.update("b", 4.0, 0.0)
    nb.update("c", 2.0, 0.0)
    nb.update("d", 0.5, 0.0)  # weakest: not kept
    assert "d" not in nb
    assert nb.score(100.0) == [("b", pytest.approx(2.0)), ("c", pytest.approx(1.0)), ("a", 0.5)]
    assert [n for n, _ in nb.score(0.0, top=2)] == ["b", "c"]
    with pytest.raises(ValidationError):
        nb.score(0.0, top=-1)
    with pytest.raises(ValidationError):
        nb.update("a", -1.0, 0.0)


def test_ties_evict_the_larger_id() -> None:
    nb = CoVisitNeighbours(1, 100.0)
    nb.update("b", 1.0, 0.0)
    nb.update("a", 1.0, 0.0)
    assert nb.score(0.0) == [("a", 1.0)]


def test_apply_routes_increments_to_their_item() -> None:
    incs = pair_increments([("a", 0.0)], "b", 10.0, window_s=60.0, gap_half_life_s=10.0)
    nb = CoVisitNeighbours(5, 60.0)
    assert nb.apply(incs, "b") == 1
    assert nb.score(10.0) == [("a", pytest.approx(0.5))]


@FAST
@given(ups=updates)
def test_dict_round_trip_through_json(ups: list[tuple[str, float, float]]) -> None:
    nb = CoVisitNeighbours(6, 7200.0)
    for n, w, t in ups:
        nb.update(n, w, t)
    back = CoVisitNeighbours.from_dict(json.loads(json.dumps(nb.to_dict())))
    assert back.log_masses() == nb.log_masses()
    assert (back.capacity, back.half_life_s) == (6, 7200.0)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 2, "capacity": 1, "half_life_s": 1.0, "log_masses": {}},
        {"version": 1, "capacity": 1, "half_life_s": 1.0, "log_masses": {"a": 1.0, "b": 2.0}},
        {"version": 1, "capacity": 1, "half_life_s": 1.0, "log_masses": {"a": math.nan}},
        {"version": 1, "capacity": 1, "half_life_s": 1.0, "log_masses": [1, 2]},
        {"version": 1, "capacity": "x", "half_life_s": 1.0, "log_masses": {}},
    ],
)
def test_from_dict_rejects_garbage(data: dict[str, object]) -> None:
    with pytest.raises(StateError):
        CoVisitNeighbours.from_dict(data)

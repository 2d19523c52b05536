"""Shared statistics: per-batch deltas (codec, splitting) and the replica that applies them."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models import decay
from recstream.models.catalog import Catalog
from recstream.models.errors import StateError
from recstream.models.shared_stats import SharedDelta, SharedStats
from recstream.models.weights import SIMPLEX_TOL

FAST = settings(max_examples=50, deadline=None)
K = 6

item_ids = st.sampled_from([f"i{k}" for k in range(8)])
log_terms = st.floats(-50.0, 3000.0, allow_nan=False, allow_infinity=False)
weight_lists = st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=K, max_size=K)


@st.composite
def deltas(draw: st.DrawFn, shard: int | None = None) -> SharedDelta:
    d = SharedDelta(draw(st.integers(0, 3)) if shard is None else shard)
    for item_id, term in draw(st.lists(st.tuples(item_ids, log_terms), max_size=8)):
        d.add_popularity(item_id, term)
    for a, b, term in draw(st.lists(st.tuples(item_ids, item_ids, log_terms), max_size=12)):
        if a != b:
            d.add_pair(a, b, term)
    for a, b, term in draw(st.lists(st.tuples(item_ids, item_ids, log_terms), max_size=12)):
        if a != b:
            d.add_next(a, b, term)
    d.weights = draw(st.one_of(st.none(), weight_lists))
    return d


def stats(capacity: int = 30) -> SharedStats:
    return SharedStats(
        K, popularity_half_life_s=3600.0, covisit_half_life_s=7200.0, covisit_capacity=capacity
    )


def pairs_of(d: SharedDelta) -> list[tuple[str, str, str, float]]:
    """Every (kind, item, neighbour, log-term) of a delta's co-visit and sequence rows."""
    rows = (("covisit", d.covisit), ("sequence", d.sequence))
    return sorted((k, i, n, t) for k, r in rows for i, nbs in r.items() for n, t in nbs.items())


# --- SharedDelta ---------------------------------------------------------------------------


def test_add_accumulates_log_terms() -> None:
    d = SharedDelta(2)
    assert not d
    d.add_popularity("a", math.log(2.0))
    d.add_popularity("a", math.log(3.0))
    d.add_pair("a", "b", 0.0)
    d.add_pair("a", "b", 0.0)
    assert d
    assert d.popularity["a"] == pytest.approx(math.log(5.0))
    assert d.covisit == {"a": {"b": pytest.approx(math.log(2.0))}}
    assert SharedDelta(0, weights=[1.0] + [0.0] * (K - 1))  # weights alone are news


@FAST
@given(deltas())
def test_delta_round_trips_through_json(d: SharedDelta) -> None:
    wire = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    back = SharedDelta.from_dict(wire)
    assert back == d  # floats survive json exactly (repr precision)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "x",
        {},
        {"popularity": {}, "covisit": {}},  # no shard
        {"shard": 0, "covisit": {}},  # no popularity
        {"shard": 0, "popularity": {}},  # no covisit
        {"shard": "zero", "popularity": {}, "covisit": {}},
        {"shard": 0, "popularity": {"a": "heavy"}, "covisit": {}},
        {"shard": 0, "popularity": [1, 2], "covisit": {}},
        {"shard": 0, "popularity": {}, "covisit": {"a": 1.0}},
        {"shard": 0, "popularity": {}, "covisit": {"a": {"b": None}}},
        {"shard": 0, "popularity": {}, "covisit": {}, "weights": 3},
        {"shard": 0, "popularity": {}, "covisit": {}, "weights": ["w"]},
        {"shard": 0, "popularity": {"a": math.nan}, "covisit": {}},
        {"shard": 0, "popularity": {"a": math.inf}, "covisit": {}},
        {"shard": 0, "popularity": {"a": -math.inf}, "covisit": {}},
        {"shard": 0, "popularity": {}, "covisit": {"a": {"b": math.nan}}},
        {"shard": 0, "popularity": {}, "covisit": {"": {"b": 1.0}}},
        {"shard": 0, "popularity": {}, "covisit": {}, "sequence": {"a": 1.0}},
        {"shard": 0, "popularity": {}, "covisit": {}, "sequence": {"a": {"b": math.nan}}},
        {"shard": 0, "popularity": {}, "covisit": {}, "sequence": {"a": {"": 1.0}}},
    ],
)
def test_from_dict_rejects_malformed_input(data: Any) -> None:
    with pytest.raises(StateError):
        SharedDelta.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {"shard": 0, "popularity": {}, "covisit": {}, "weights": [math.nan] * K},
        {"shard": 0, "popularity": {}, "covisit": {}, "weights": [math.inf] + [0.0] * (K - 1)},
        {"shard": 0, "popularity": {}, "covisit": {"a": {"": 1.0}}},
    ],
)
def test_from_dict_rejects_what_apply_cannot_fold_in(data: dict[str, Any]) -> None:
    # json.loads accepts NaN/Infinity, so such a record can arrive from the wire.
    wire = json.loads(json.dumps(data))
    try:
        delta = SharedDelta.from_dict(wire)
    except StateError:
        return
    stats().apply(delta)  # whatever from_dict accepts must be appliable


@FAST
@given(deltas(), st.integers(1, 6))
def test_split_keeps_every_pair_once_and_the_rest_in_the_first_piece(
    d: SharedDelta, max_pairs: int
) -> None:
    pieces = list(d.split(max_pairs))
    assert pieces
    first, rest = pieces[0], pieces[1:]
    assert first.popularity == d.popularity and first.weights == d.weights
    assert all(p.shard == d.shard for p in pieces)
    for p in rest:
        assert p.popularity == {} and p.weights is None
        assert p.covisit or p.sequence  # no empty trailing pieces
    merged = sorted(x for p in pieces for x in pairs_of(p))
    assert merged == pairs_of(d)  # every pair exactly once
    for kind in ("covisit", "sequence"):
        items = [i for p in pieces for i in getattr(p, kind)]
        assert len(items) == len(set(items))  # an item's row is not split across pieces
    for p in pieces:
        n = sum(len(nbs) for nbs in [*p.covisit.values(), *p.sequence.values()])
        assert n <= max_pairs or len(p.covisit) + len(p.sequence) == 1  # one large row may
    # Applying the pieces is the same as applying the whole.
    whole, split = stats(), stats()
    whole.apply(d)
    for p in pieces:
        split.apply(p)
    assert split.popularity == whole.popularity
    for kind in ("covisit", "sequence"):
        assert {i: e.log_masses() for i, e in getattr(split, kind).items()} == {
            i: e.log_masses() for i, e in getattr(whole, kind).items()
        }
    assert split.shard_weights.keys() == whole.shard_weights.keys()


def test_split_of_an_empty_delta_is_one_piece() -> None:
    d = SharedDelta(1, {"a": 1.0})
    assert list(d.split(10)) == [d]


# --- SharedStats.apply ---------------------------------------------------------------------


@FAST
@given(st.lists(deltas(), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_popularity_does_not_depend_on_the_order_of_deltas(ds: list[SharedDelta], rnd: Any) -> None:
    a, b = stats(), stats()
    for d in ds:
        a.apply(d)
    shuffled = list(ds)
    rnd.shuffle(shuffled)
    for d in shuffled:
        b.apply(d)
    assert a.popularity.keys() == b.popularity.keys()
    for item_id, lm in a.popularity.items():
        assert b.popularity[item_id] == pytest.approx(lm, abs=1e-9)
    # Below capacity, co-visitation is order independent too.
    for item_id, entry in a.covisit.items():
        other = b.covisit[item_id].log_masses()
        assert other.keys() == entry.log_masses().keys()
        for n, lm in entry.log_masses().items():
            assert other[n] == pytest.approx(lm, abs=1e-9)
    # Popularity is the log of the sum of every delta's term.
    for item_id, lm in a.popularity.items():
        terms = [d.popularity[item_id] for d in ds if item_id in d.popularity]
        expected = max(terms) + math.log(sum(math.exp(t - max(terms)) for t in terms))
        assert lm == pytest.approx(expected, abs=1e-9)


@FAST
@given(st.lists(deltas(), min_size=1, max_size=6), st.integers(1, 3))
def test_covisit_capacity_is_respected(ds: list[SharedDelta], capacity: int) -> None:
    s = stats(capacity)
    for d in ds:
        s.apply(d)
        for entry in s.covisit.values():
            assert 1 <= len(entry) <= capacity
            assert all(math.isfinite(x) for x in entry.log_masses().values())
    # The strongest neighbour of an item seen in a single delta always survives.
    if len(ds) == 1:
        for item_id, nbs in ds[0].covisit.items():
            best = min(nbs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            assert best in s.covisit[item_id]


@FAST
@given(st.lists(st.tuples(st.integers(0, 4), weight_lists), max_size=8))
def test_global_weights_stay_on_the_simplex(updates: list[tuple[int, list[float]]]) -> None:
    s = stats()
    np.testing.assert_allclose(s.global_weights(), np.full(K, 1.0 / K))
    for shard, w in updates:
        s.apply(SharedDelta(shard, weights=w))
        for g in (s.global_weights(), s.global_weights(0, np.full(K, 1.0 / K))):
            assert g.shape == (K,)
            assert g.min() >= -SIMPLEX_TOL and abs(float(g.sum()) - 1.0) <= SIMPLEX_TOL
    if updates:
        assert set(s.shard_weights) == {shard for shard, _ in updates}  # latest copy per shard


def test_global_weights_are_the_projected_mean_and_own_replaces_a_copy() -> None:
    s = stats()
    e0, e1 = np.eye(K)[0], np.eye(K)[1]
    s.apply(SharedDelta(0, weights=e0.tolist()))
    s.apply(SharedDelta(1, weights=e1.tolist()))
    np.testing.assert_allclose(s.global_weights(), (e0 + e1) / 2)
    np.testing.assert_allclose(s.global_weights(1, e0), e0)  # shard 1's copy moved in-batch
    np.testing.assert_allclose(s.global_weights(7, e0), (2 * e0 + e1) / 3)  # a new shard
    s.apply(SharedDelta(0, weights=e1.tolist()))  # a shard's newer copy replaces its older
    np.testing.assert_allclose(s.global_weights(), e1)
    s.apply(SharedDelta(0, weights=[1.0, 0.0]))  # the wrong length is ignored
    np.testing.assert_allclose(s.global_weights(), e1)


def test_popularity_by_row_is_aligned_with_the_catalogue_and_cached_per_version() -> None:
    c = Catalog(2, capacity=2)
    for name in ("a", "b", "c"):
        c.upsert(name, [1.0, 0.0])
    s = stats()
    s.apply(SharedDelta(0, {"a": 5.0, "c": 7.0, "ghost": 9.0}))
    by_row = s.popularity_by_row(c)
    assert by_row.shape[0] >= c.rows
    assert by_row[c.row_of["a"]] == 5.0 and by_row[c.row_of["c"]] == 7.0
    assert by_row[c.row_of["b"]] == -math.inf
    assert s.popularity_by_row(c) is by_row  # nothing changed: cached
    s.apply(SharedDelta(1, {"b": 1.0}))  # stats changed
    assert s.popularity_by_row(c)[c.row_of["b"]] == 1.0
    c.remove("a")  # catalogue changed: the freed row forgets a's popularity
    assert s.popularity_by_row(c)[0] == -math.inf
    c.upsert("ghost", [0.0, 1.0])  # reuses row 0; ghost's popularity appears
    by_row = s.popularity_by_row(c)
    assert c.row_of["ghost"] == 0 and by_row[0] == 9.0
    for item_id, row in c.row_of.items():
        assert by_row[row] == s.popularity.get(item_id, -math.inf)


def test_neighbours_follow_deltas_and_the_catalogue() -> None:
    c = Catalog(2)
    for name in ("a", "b", "c"):
        c.upsert(name, [1.0, 0.0])
    s = stats(capacity=2)
    assert [x.tolist() for x in s.neighbours("a", c)] == [[], []]
    s.apply(SharedDelta(0, covisit={"a": {"b": 1.0, "zz": 2.0}}))
    rows, lms = s.neighbours("a", c)
    assert rows.dtype == np.int64 and dict(zip(rows.tolist(), lms.tolist(), strict=True)) == {
        1: 1.0
    }  # zz is not in the catalogue
    s.apply(SharedDelta(0, covisit={"a": {"c": 3.0}}))  # evicts b (weakest) at capacity 2
    rows, _ = s.neighbours("a", c)
    assert rows.tolist() == [2]
    c.upsert("zz", [0.0, 1.0])  # the catalogue learns zz: its row shows up
    rows, lms = s.neighbours("a", c)
    assert dict(zip(rows.tolist(), lms.tolist(), strict=True)) == {2: 3.0, 3: 2.0}


def test_neighbourhood_sums_in_item_order_and_follows_deltas() -> None:
    c = Catalog(2)
    for name in ("a", "b", "c", "d"):
        c.upsert(name, [1.0, 0.0])
    s = stats(capacity=4)
    s.apply(SharedDelta(0, covisit={"a": {"b": 1.0, "c": 2.0}, "d": {"b": 4.0}}))
    uniq, inverse, lms = s.neighbourhood(("a", "d"), c)
    assert uniq.tolist() == [1, 2]
    # One entry per (item, neighbour), item order: a's b and c, then d's b.
    assert [int(uniq[i]) for i in inverse] == [1, 2, 1]
    assert sorted(lms.tolist()) == [1.0, 2.0, 4.0]
    assert s.neighbourhood(("a", "d"), c) is s.neighbourhood(("a", "d"), c)  # memoised
    s.apply(SharedDelta(0, covisit={"d": {"c": 5.0}}))
    uniq, inverse, _ = s.neighbourhood(("a", "d"), c)  # the delta is seen
    assert sorted(int(uniq[i]) for i in inverse) == [1, 1, 2, 2]
    assert s.neighbourhood(("zz",), c)[0].size == 0


def test_a_delta_from_the_engine_rates_decays_like_decay_log_term() -> None:
    s = stats()
    d = SharedDelta(0)
    d.add_popularity("a", decay.log_term(2.0, 1000.0, s.pop_rate))
    s.apply(d)
    # One half-life later the decayed score has halved.
    assert decay.score(s.popularity["a"], 1000.0 + 3600.0, s.pop_rate) == pytest.approx(1.0)


def test_a_delta_without_sequence_rules_is_read_as_none() -> None:
    """Deltas of workers older than the sequence signal carry no "sequence" key."""
    d = SharedDelta.from_dict({"shard": 1, "popularity": {"a": 1.0}, "covisit": {}})
    assert d.sequence == {} and d.popularity == {"a": 1.0}


def test_next_items_are_each_rows_next_item_distribution() -> None:
    s = stats()
    cat = Catalog(2, capacity=4)
    for n, item_id in enumerate(["a", "b", "c"]):
        cat.upsert(item_id, np.array([1.0, float(n)], dtype=np.float32))
    s.apply(SharedDelta(0, sequence={"a": {"b": math.log(3.0), "ghost": 0.0}}))
    rows, probs = s.next_items("a", cat)
    # ghost (not in the catalogue) keeps its share of the row total: P(b | a) = 3 / 4.
    assert rows.tolist() == [cat.row_of["b"]] and probs.tolist() == pytest.approx([0.75])
    s.apply(SharedDelta(0, sequence={"a": {"c": math.log(4.0)}}))
    rows, probs = s.next_items("a", cat)  # the memo follows the delta
    assert dict(zip(rows.tolist(), probs.tolist(), strict=True)) == pytest.approx(
        {cat.row_of["b"]: 3 / 8, cat.row_of["c"]: 4 / 8}
    )
    uniq, inverse, p, source = s.sequence_hood(("c", "a"), cat)
    assert source.tolist() == [1, 1] and uniq[inverse].tolist() == rows.tolist()
    assert p.tolist() == probs.tolist()
    assert s.next_items("zz", cat)[0].size == 0

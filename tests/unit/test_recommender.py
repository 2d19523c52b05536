"""The pure engine: apply (events → states, requests, deltas) and rank (requests → lists).

A small synthetic catalogue (seeded random unit vectors, four categories) and small k keep
every batch cheap. Shared statistics come from a seeded warm-up batch, so every signal
(co-visitation and trending included) is live, and they are held fixed within a test: the
engine freezes them during a batch, so lists must be exact functions of the inputs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models import decay
from recstream.models.catalog import Catalog
from recstream.models.errors import ConfigError
from recstream.models.fusion import EXPLORATION_KEY
from recstream.models.interest_state import InterestParams
from recstream.models.recommender import (
    SIGNAL_NAMES,
    Applied,
    BatchWalk,
    EngineParams,
    Event,
    RecList,
    Recommender,
    rec_id_for,
)
from recstream.models.shared_stats import SharedDelta, SharedStats
from recstream.models.user_record import ServedList, UserRecord
from recstream.models.weights import SIMPLEX_TOL, WeightState

FAST = settings(max_examples=20, deadline=None)
D = 8
N_ITEMS = 40
T0 = 1_700_000_000.0
ITEMS = tuple(f"i{n:02d}" for n in range(N_ITEMS))
USERS = ("u0", "u1", "u2")
PARAMS = EngineParams(
    interest=InterestParams(dim=D),
    k=5,
    candidates_per_source=6,
    arm_items=4,
    exploration_share=0.2,  # one exploration slot in a list of 5
    covisit_window_s=3600.0,
    covisit_recent=4,
)
CONSUMED = PARAMS.interest.consumed_event_types
POSITIVE = ("view", "click", "add_to_cart", "purchase")


def make_catalog() -> Catalog:
    rng = np.random.default_rng(7)
    c = Catalog(D, capacity=8)
    for n, item_id in enumerate(ITEMS):
        categories = [f"c{n % 4}"] + (["c0"] if n % 5 == 0 else [])
        c.upsert(item_id, rng.normal(size=D), categories, ts=T0 - 3600.0 * n, title=item_id)
    return c


def unit_vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=D).astype(np.float32)
    return v / np.linalg.norm(v)


def warm_shared() -> SharedStats:
    """Shared statistics learned from a seeded batch of other users (deltas applied)."""
    catalog = make_catalog()
    shared = PARAMS.shared_stats()
    eng = Recommender(PARAMS, catalog, shared)
    rng = np.random.default_rng(11)
    events = [
        Event(
            f"w{n % 6}",
            f"warm{n}",
            str(rng.choice(POSITIVE)),
            T0 - 20_000.0 + 120.0 * n,
            ITEMS[int(rng.integers(N_ITEMS // 2))],
            shard=n % 2,
        )
        for n in range(60)
    ]
    applied = eng.apply({}, events, lists="every")
    eng.rank(applied)
    for delta in applied.deltas.values():
        shared.apply(delta)
    return shared


SHARED = warm_shared()


def engine(params: EngineParams = PARAMS) -> Recommender:
    """A fresh engine over a fresh catalogue and a copy of the warm shared statistics."""
    return Recommender(params, make_catalog(), copy.deepcopy(SHARED))


def ev(user: str, n: int, kind: str, item: str | None = None, **kw: object) -> Event:
    return Event(user, f"{user}-e{n}", kind, T0 + 60.0 * n, item, **kw)  # type: ignore[arg-type]


@st.composite
def event_lists(draw: st.DrawFn, max_size: int = 10) -> list[Event]:
    n = draw(st.integers(1, max_size))
    out, ts = [], T0
    for j in range(n):
        user = draw(st.sampled_from(USERS))
        kind = draw(st.sampled_from([*POSITIVE, "skip", "dislike", "rate", "search"]))
        ts += draw(st.sampled_from([0.0, 30.0, 600.0, 5000.0, -200.0]))  # some late events
        item = None if kind == "search" else draw(st.sampled_from([*ITEMS, "not-in-catalog"]))
        out.append(
            Event(
                user,
                f"ev{j}",
                kind,
                ts,
                item,
                value=draw(st.sampled_from([1.0, 3.0, 5.0])) if kind == "rate" else None,
                text_vec=unit_vec(j) if kind == "search" else None,
                shard=USERS.index(user) % 2,
            )
        )
    return out


def fresh_states() -> dict[str, UserRecord]:
    """Users with some history from an earlier batch (their own consumed items included)."""
    eng = engine()
    events = [ev(u, n, "click", ITEMS[3 * n + k]) for k, u in enumerate(USERS) for n in range(3)]
    history = [replace(e, event_id=f"hist-{e.event_id}", ts=e.ts - 50_000.0) for e in events]
    applied = eng.apply({}, history)
    eng.rank(applied)
    return applied.states


STATES = fresh_states()


def clone(states: Mapping[str, UserRecord]) -> dict[str, UserRecord]:
    """An independent copy (apply takes states over); the frozen params are shared."""
    return copy.deepcopy(dict(states), memo={id(PARAMS.interest): PARAMS.interest})


def run(
    events: Sequence[Event],
    states: Mapping[str, UserRecord] | None = None,
    lists: str = "every",
    params: EngineParams = PARAMS,
) -> tuple[Applied, list[RecList]]:
    eng = engine(params)
    applied = eng.apply(clone(STATES if states is None else states), events, lists)  # type: ignore[arg-type]
    return applied, eng.rank(applied)


def as_plain(lst: RecList) -> dict[str, object]:
    return lst.to_dict()


def consumed_before_batch(user: str) -> set[str]:
    rec = STATES.get(user)
    return {i for i in ITEMS if rec is not None and rec.interest.has_consumed(i)}


def check_list(lst: RecList, k: int = PARAMS.k) -> None:
    ids = [r.item_id for r in lst.items]
    assert len(ids) == len(set(ids)) <= k
    assert all(i in ITEMS for i in ids)
    for r in lst.items:
        assert math.isfinite(r.score)
        if r.explored:
            assert r.contributions == {EXPLORATION_KEY: r.score}
            assert r.signals == {}
        else:
            assert set(r.contributions) == set(SIGNAL_NAMES)
            assert abs(sum(r.contributions.values()) - r.score) <= 1e-12
            assert all(0.0 <= s <= 1.0 for s in r.signals.values())
            assert -1e-12 <= r.score <= 1.0 + 1e-12
    w = np.array(list(lst.weights.values()))
    assert set(lst.weights) == set(SIGNAL_NAMES)
    assert w.min() >= -SIMPLEX_TOL and abs(float(w.sum()) - 1.0) <= SIMPLEX_TOL


# --- apply + rank --------------------------------------------------------------------------


@FAST
@given(event_lists())
def test_every_event_gets_a_valid_list_in_event_order(events: list[Event]) -> None:
    applied, lists = run(events)
    assert applied.applied == len(events)
    assert applied.rejected == [] and applied.duplicates == []
    assert [lst.as_of_event_id for lst in lists] == [e.event_id for e in events]
    consumed = {u: consumed_before_batch(u) for u in USERS}
    latest = {u: STATES[u].interest.last_ts for u in USERS}
    for e, lst in zip(events, lists, strict=True):
        assert lst.user_id == e.user_id
        assert lst.rec_id == rec_id_for(e.user_id, e.event_id)
        latest[e.user_id] = max(latest[e.user_id], e.ts)
        assert lst.as_of_ts == latest[e.user_id]  # the user's event time, late events included
        if e.item_id is not None and e.event_type in CONSUMED:
            consumed[e.user_id].add(e.item_id)
        check_list(lst)
        assert not consumed[e.user_id] & {r.item_id for r in lst.items}, "a consumed item"
        assert len(lst.items) == PARAMS.k  # 40 items: there is always enough to fill a list
    for user, rec in applied.states.items():
        assert rec.last_list == as_plain([x for x in lists if x.user_id == user][-1])
        w = rec.weights.weights
        assert w.min() >= -SIMPLEX_TOL and abs(float(w.sum()) - 1.0) <= SIMPLEX_TOL
    for delta in applied.deltas.values():
        if delta.weights is not None:
            assert abs(sum(delta.weights) - 1.0) <= SIMPLEX_TOL and min(delta.weights) >= 0


@FAST
@given(event_lists())
def test_last_gives_one_list_per_user_and_none_gives_none(events: list[Event]) -> None:
    applied, last = run(events, lists="last")
    last_event = {e.user_id: e.event_id for e in events}
    assert sorted(lst.user_id for lst in last) == sorted(last_event)
    for lst in last:
        assert lst.as_of_event_id == last_event[lst.user_id]
        check_list(lst)
    # Lists come in event order.
    order = [e.event_id for e in events]
    positions = [order.index(str(lst.as_of_event_id)) for lst in last]
    assert positions == sorted(positions)
    applied_none, none = run(events, lists="none")
    assert none == []
    assert applied_none.applied == len(events)
    # What is learned from the events themselves does not depend on the list policy.
    for user, rec in applied_none.states.items():
        assert rec.interest.to_bytes() == applied.states[user].interest.to_bytes()
        assert rec.recent == applied.states[user].recent
    assert {s: (d.popularity, d.covisit) for s, d in applied_none.deltas.items()} == {
        s: (d.popularity, d.covisit) for s, d in applied.deltas.items()
    }


@FAST
@given(event_lists(), st.sets(st.sampled_from(USERS)))
def test_none_learns_the_weights_last_learns_and_snapshots_no_user_never_served(
    events: list[Event], unserved: set[str]
) -> None:
    """With lists off the η rule still learns from feedback on lists of earlier batches,
    exactly as with one list per user; a user never served a list gets no snapshot."""
    states = {u: r for u, r in STATES.items() if u not in unserved}  # the others start new
    applied_last, _ = run(events, states, lists="last")
    applied_none, none = run(events, states, lists="none")
    assert none == []
    assert {r.user_id for r in applied_none.requests} <= set(USERS) - unserved
    for user, rec in applied_none.states.items():
        assert rec.weights.to_bytes() == applied_last.states[user].weights.to_bytes()
        assert rec.interest.to_bytes() == applied_last.states[user].interest.to_bytes()
    assert {s: d.weights for s, d in applied_none.deltas.items()} == {
        s: d.weights for s, d in applied_last.deltas.items()
    }


@FAST
@given(event_lists())
def test_same_inputs_give_identical_lists(events: list[Event]) -> None:
    a_applied, a = run(events)
    b_applied, b = run(events)
    assert [as_plain(x) for x in a] == [as_plain(x) for x in b]  # exploration included
    assert {u: r.to_bytes() for u, r in a_applied.states.items()} == {
        u: r.to_bytes() for u, r in b_applied.states.items()
    }
    assert {s: d.to_dict() for s, d in a_applied.deltas.items()} == {
        s: d.to_dict() for s, d in b_applied.deltas.items()
    }


@FAST
@given(event_lists(max_size=8), st.data())
def test_a_list_does_not_depend_on_later_events(events: list[Event], data: st.DataObject) -> None:
    """Prequential honesty: the list after event i is the same whatever follows it."""
    _, full = run(events)
    by_event = {lst.as_of_event_id: as_plain(lst) for lst in full}
    for i, e in enumerate(events):
        _, prefix = run(events[: i + 1])
        assert prefix[-1].as_of_event_id == e.event_id
        assert as_plain(prefix[-1]) == by_event[e.event_id], f"list after event {i} changed"
    # Changing the events after i does not change it either.
    i = data.draw(st.integers(0, len(events) - 1))
    later = data.draw(event_lists(max_size=4))
    changed = [*events[: i + 1], *(replace(x, event_id=f"later{x.event_id}") for x in later)]
    _, other = run(changed)
    assert as_plain(other[i]) == by_event[events[i].event_id]


@FAST
@given(event_lists(max_size=8), st.data())
def test_duplicates_are_skipped_and_change_nothing(
    events: list[Event], data: st.DataObject
) -> None:
    j = data.draw(st.integers(0, len(events) - 1))
    at = data.draw(st.integers(j + 1, len(events)))
    # Same event id, possibly other content: at-least-once delivery repeats the id.
    dup = replace(events[j], ts=events[j].ts + 1.0, event_type="purchase", item_id=ITEMS[0])
    with_dup = [*events[:at], dup, *events[at:]]
    a_applied, a = run(events)
    b_applied, b = run(with_dup)
    assert b_applied.duplicates == [events[j].event_id]
    assert b_applied.applied == len(events)
    assert [as_plain(x) for x in a] == [as_plain(x) for x in b]
    assert {u: r.to_bytes() for u, r in a_applied.states.items()} == {
        u: r.to_bytes() for u, r in b_applied.states.items()
    }
    assert {s: d.to_dict() for s, d in a_applied.deltas.items()} == {
        s: d.to_dict() for s, d in b_applied.deltas.items()
    }


def test_events_applied_in_an_earlier_batch_are_duplicates() -> None:
    events = [ev("u0", 1, "click", ITEMS[5]), ev("u0", 2, "view", ITEMS[6])]
    applied, _ = run(events)
    again, lists = run(events, states=applied.states)
    assert again.duplicates == [e.event_id for e in events]
    assert again.applied == 0 and lists == [] and again.requests == []
    assert all(not d for d in again.deltas.values())


# --- refusals ------------------------------------------------------------------------------


def test_refused_events_are_reported_and_change_nothing() -> None:
    good = [ev("u0", 1, "click", ITEMS[5]), ev("u0", 4, "view", ITEMS[7])]
    bad = [
        replace(ev("u0", 2, "click", ITEMS[6]), ts=math.nan),  # non-finite time
        ev("u0", 3, "bogus"),  # unknown type (no item)
        ev("u1", 1, "search", text_vec=np.ones(D + 1, dtype=np.float32)),  # wrong text dim
    ]
    applied, lists = run([good[0], *bad, good[1]])
    assert [eid for eid, _ in applied.rejected] == [e.event_id for e in bad]
    assert all(reason for _, reason in applied.rejected)
    assert applied.applied == 2
    assert [lst.as_of_event_id for lst in lists] == [e.event_id for e in good]
    clean, clean_lists = run(good)
    assert [as_plain(x) for x in lists] == [as_plain(x) for x in clean_lists]
    assert applied.states["u0"].to_bytes() == clean.states["u0"].to_bytes()
    assert applied.states["u1"].interest.event_count == STATES["u1"].interest.event_count
    assert {s: d.to_dict() for s, d in applied.deltas.items() if d} == {
        s: d.to_dict() for s, d in clean.deltas.items() if d
    }


@pytest.mark.parametrize(
    "bad",
    [
        Event("u0", "s1", "search", T0, ITEMS[3], text_vec=unit_vec(1)),
        Event("u0", "s1", "bogus", T0, ITEMS[3]),
        Event("u0", "s1", "rate", T0, ITEMS[3]),
    ],
)
def test_events_with_an_item_and_no_feedback_sign_do_not_crash_apply(bad: Event) -> None:
    applied, _ = run([bad, ev("u0", 2, "view", ITEMS[4])])
    assert applied.applied + len(applied.rejected) == 2


# --- learning ------------------------------------------------------------------------------


def test_deltas_carry_popularity_and_covisit_pairs_within_the_window() -> None:
    w = PARAMS.covisit_window_s
    events = [
        replace(ev("u0", 0, "click", "i01"), shard=0),
        replace(ev("u0", 1, "view", "i02"), shard=0),  # 60 s later: a pair with i01
        replace(ev("u0", 2, "skip", "i03"), shard=0),  # negative weight: no pair, no popularity
        replace(ev("u1", 3, "purchase", "i04"), shard=1),  # other user: no pair with u0's
        replace(ev("u0", 4, "click", "i05"), ts=T0 + 60.0 + w + 1.0, shard=0),  # out of window
        replace(ev("u0", 5, "click", "not-in-catalog"), ts=T0 + 60.0 + w + 30.0, shard=0),
        replace(ev("u2", 6, "search", text_vec=unit_vec(3)), shard=0),  # no item
    ]
    applied, _ = run(events)
    d0, d1 = applied.deltas[0], applied.deltas[1]
    assert set(d0.popularity) == {"i01", "i02", "i05", "not-in-catalog"}
    assert set(d1.popularity) == {"i04"}
    rate = decay.decay_rate(PARAMS.popularity_half_life_s)
    weight = PARAMS.interest.weight_of
    assert d0.popularity["i01"] == pytest.approx(decay.log_term(weight("click"), T0, rate))
    assert d1.popularity["i04"] == pytest.approx(
        decay.log_term(weight("purchase"), T0 + 180.0, rate)
    )
    pairs = {(i, n) for i, nbs in d0.covisit.items() for n in nbs}
    assert pairs == {
        ("i01", "i02"),
        ("i02", "i01"),
        ("i05", "not-in-catalog"),
        ("not-in-catalog", "i05"),
    }
    assert d1.covisit == {}
    # A pair 60 s apart, one covisit_window_s/2 half-life: weight 2^(−60/1800), stamped later.
    gap_w = 2.0 ** (-60.0 / (w / 2))
    expected = decay.log_term(gap_w, T0 + 60.0, decay.decay_rate(PARAMS.covisit_half_life_s))
    assert d0.covisit["i01"]["i02"] == pytest.approx(expected)
    assert applied.states["u0"].recent[-2:] == [
        ("i05", T0 + 60.0 + w + 1.0),
        ("not-in-catalog", T0 + 60.0 + w + 30.0),
    ]
    # Once applied, consumed items have a finite popularity, aligned with their rows.
    eng = engine()
    for delta in applied.deltas.values():
        eng.shared.apply(delta)
    by_row = eng.shared.popularity_by_row(eng.catalog)
    for item in ("i01", "i02", "i04", "i05"):
        assert math.isfinite(by_row[eng.catalog.row_of[item]])
    assert by_row[eng.catalog.row_of["i03"]] == SHARED.popularity.get("i03", -math.inf)


@FAST
@given(event_lists())
def test_deltas_hold_the_positive_events_items(events: list[Event]) -> None:
    applied, _ = run(events)
    for shard in {e.shard for e in events}:
        expected = {
            e.item_id
            for e in events
            if e.shard == shard
            and e.item_id
            and PARAMS.interest.weight_of(e.event_type, e.value) > 0
        }
        delta = applied.deltas.get(shard)
        assert set(delta.popularity if delta else {}) == expected
        assert all(math.isfinite(t) for t in (delta.popularity.values() if delta else []))
    eng = engine()
    for delta in applied.deltas.values():
        eng.shared.apply(delta)
    by_row = eng.shared.popularity_by_row(eng.catalog)
    for e in events:
        if e.item_id in eng.catalog and PARAMS.interest.weight_of(e.event_type, e.value) > 0:
            assert math.isfinite(by_row[eng.catalog.row_of[e.item_id]])


def test_feedback_on_a_served_list_moves_weight_toward_the_clicked_items_signal() -> None:
    fresh = SIGNAL_NAMES.index("freshness")
    rec = engine().new_state()
    hot = [0.0] * len(SIGNAL_NAMES)
    hot[fresh] = 1.0
    rec.served = [
        ServedList(
            "r1",
            {"i01": hot, "i02": [0.0] * len(SIGNAL_NAMES), "i03": [0.0] * len(SIGNAL_NAMES)},
            [0.0] * len(SIGNAL_NAMES),
            [1.0] * len(SIGNAL_NAMES),
        )
    ]
    applied, _ = run([ev("u9", 1, "click", "i01", rec_id="r1")], states={"u9": rec})
    w = applied.states["u9"].weights
    assert w.n == 1
    assert int(np.argmax(w.weights)) == fresh
    assert w.weights[fresh] > 1.0 / len(SIGNAL_NAMES)
    shard_copy = applied.deltas[0].weights
    assert shard_copy is not None and int(np.argmax(shard_copy)) == fresh
    # A skip on the same item moves the other way; a view (neutral) does not move at all.
    applied, _ = run([ev("u9", 1, "skip", "i01", rec_id="r1")], states={"u9": rec})
    assert applied.states["u9"].weights.weights[fresh] < 1.0 / len(SIGNAL_NAMES)
    applied, _ = run([ev("u9", 1, "view", "i01", rec_id="r1")], states={"u9": rec})
    assert applied.states["u9"].weights.n == 0


def test_repeated_clicks_on_fresh_items_shift_weight_to_freshness() -> None:
    """Closed loop: each click goes to the served item most above the feedback baseline μ
    (the mean of the list's candidate pool) on freshness."""
    fresh = SIGNAL_NAMES.index("freshness")
    eng = engine()
    states: dict[str, UserRecord] = {}
    applied = eng.apply(states, [ev("u9", 0, "view", ITEMS[0])])
    lst = eng.rank(applied)[-1]
    states = applied.states
    for n in range(1, 26):
        fused = [r for r in lst.items if not r.explored]
        mean = states["u9"].served[-1].pool_mean
        assert mean is not None
        pick = max(fused, key=lambda r: (r.signals["freshness"] - mean[fresh], r.item_id))
        click = ev("u9", n, "click", pick.item_id, rec_id=lst.rec_id)
        applied = eng.apply(states, [click])
        lst = eng.rank(applied)[-1]
        states = applied.states
        for delta in applied.deltas.values():
            eng.shared.apply(delta)
    w = states["u9"].weights
    assert w.n >= 10
    assert int(np.argmax(w.weights)) == fresh
    assert w.weights[fresh] > 2.0 / len(SIGNAL_NAMES)
    effective = np.array([lst.weights[s] for s in SIGNAL_NAMES])
    assert effective[fresh] > 1.0 / len(SIGNAL_NAMES)


def test_feedback_within_a_batch_uses_the_previous_list() -> None:
    """Two events in one batch: the second is feedback on the list served after the first."""
    first = ev("u0", 1, "view", ITEMS[20])
    _, lists = run([first])
    clicked = next(r.item_id for r in lists[0].items if not r.explored)
    second = ev("u0", 2, "click", clicked)  # no rec_id: the latest list served
    applied, _ = run([first, second])
    assert applied.states["u0"].weights.n == STATES["u0"].weights.n + 1


def test_popularity_ranker_serves_popular_unconsumed_items() -> None:
    params = replace(PARAMS, ranker="popularity")
    events = [ev("u0", 1, "click", ITEMS[0]), ev("u0", 2, "view", ITEMS[1])]
    _, lists = run(events, params=params)
    consumed = consumed_before_batch("u0") | {ITEMS[0], ITEMS[1]}
    lst = lists[-1]
    assert lst.ranker == "popularity" and lst.weights == {"popularity": 1.0}
    ids = [r.item_id for r in lst.items]
    assert len(ids) == len(set(ids)) == PARAMS.k and not consumed & set(ids)
    scores = [r.score for r in lst.items]
    assert scores == sorted(scores, reverse=True)
    popular = sorted(
        (i for i in SHARED.popularity if i in ITEMS and i not in consumed),
        key=lambda i: (-SHARED.popularity[i], i),
    )
    assert ids == popular[: PARAMS.k]


def test_deltas_carry_directed_sequence_rules_within_the_window() -> None:
    w = PARAMS.sequence_window_s
    events = [
        ev("u7", 0, "click", "i01"),
        ev("u7", 1, "view", "i02"),  # 60 s later: i01 → i02
        ev("u7", 2, "click", "i03"),  # i02 → i03 (step 1), i01 → i03 (step 2)
        ev("u7", 3, "click", "i01"),  # a re-consumption teaches no rule
        replace(ev("u7", 4, "click", "i04"), ts=T0 + 180.0 + w + 1.0),  # out of every window
    ]
    applied, _ = run(events, states={})
    seq = applied.deltas[0].sequence
    assert {(i, n) for i, nbs in seq.items() for n in nbs} == {
        ("i01", "i02"),
        ("i02", "i03"),
        ("i01", "i03"),
    }
    rate = decay.decay_rate(PARAMS.sequence_half_life_s)
    assert seq["i01"]["i03"] == pytest.approx(decay.log_term(0.5, T0 + 120.0, rate))
    assert [i for i, _ in applied.states["u7"].recent] == ["i02", "i03", "i01", "i04"]


def test_next_items_of_the_latest_item_are_candidates_with_a_sequence_signal() -> None:
    eng = engine()
    after = "i33"
    delta = SharedDelta(0, sequence={"i05": {after: 0.0}})
    eng.shared.apply(delta)
    applied = eng.apply({}, [ev("u8", 1, "click", "i05")])
    (lst,) = eng.rank(applied)
    assert eng.catalog.row_of[after] in lst.pool.tolist()
    col = SIGNAL_NAMES.index("sequence")
    served = applied.states["u8"].served[-1]
    assert served.hi[col] > 0.0  # the pool's strongest next item has the signal


def test_a_record_from_before_the_sequence_signal_is_upgraded() -> None:
    old = engine().new_state()
    old.weights = WeightState(np.full(6, 1 / 6), n=3)
    old.served = [ServedList("r0", {"i01": [0.0] * 6}, [0.0] * 6, [1.0] * 6)]
    applied, lists = run([ev("u5", 1, "click", "i01", rec_id="r0")], states={"u5": old})
    rec = applied.states["u5"]
    assert rec.weights.k == len(SIGNAL_NAMES)
    assert rec.weights.weights[SIGNAL_NAMES.index("sequence")] == 0.0
    assert rec.weights.n == 3  # feedback on a six-signal list is skipped, not misread
    assert [s.rec_id for s in rec.served] == [lists[0].rec_id]


@FAST
@given(event_lists(max_size=10))
def test_ranking_lists_together_equals_ranking_each_before_the_next_feedback(
    events: list[Event],
) -> None:
    """The walk takes feedback on a list of the same batch from that list's pool (d: the
    item's row, μ: the pool's mean) and ranks every list at the end; forcing it to rank the
    staged lists before each such feedback (the served-list path) changes nothing."""
    together = run(events)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(BatchWalk, "waits_for_lists", lambda self, params: True)
        one_by_one = run(events)
    assert [as_plain(x) for x in together[1]] == [as_plain(x) for x in one_by_one[1]]
    assert {u: r.to_bytes() for u, r in together[0].states.items()} == {
        u: r.to_bytes() for u, r in one_by_one[0].states.items()
    }
    assert {s: d.to_dict() for s, d in together[0].deltas.items()} == {
        s: d.to_dict() for s, d in one_by_one[0].deltas.items()
    }


@FAST
@given(event_lists(max_size=8))
def test_the_served_baseline_learns_from_the_served_lists_of_the_batch(
    events: list[Event],
) -> None:
    """With μ the served list's mean the walk ranks before each feedback: every list valid,
    and the same inputs give the same lists."""
    params = replace(PARAMS, feedback_baseline="served")
    _, a = run(events, params=params)
    _, b = run(events, params=params)
    for lst in a:
        check_list(lst)
    assert [as_plain(x) for x in a] == [as_plain(x) for x in b]


def test_served_baseline_feedback_within_a_batch_moves_the_weights() -> None:
    first = ev("u0", 1, "view", ITEMS[20])
    params = replace(PARAMS, feedback_baseline="served")
    _, lists = run([first], params=params)
    clicked = next(r.item_id for r in lists[0].items if not r.explored)
    applied, _ = run([first, ev("u0", 2, "click", clicked)], params=params)
    assert applied.states["u0"].weights.n == STATES["u0"].weights.n + 1


@pytest.mark.parametrize(
    "change",
    [
        {"k": 0},
        {"mmr_pool": 0},
        {"candidates_per_source": 0},
        {"served_kept": 0},
        {"mmr_trade_off": 1.5},
        {"exploration_share": -0.1},
        {"eta": -0.01},
        {"feedback_temperature": 0.0},
        {"feedback_temperature": float("nan")},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))}",
)
def test_out_of_range_hyperparameters_are_refused_when_the_engine_is_configured(
    change: dict[str, float],
) -> None:
    with pytest.raises(ConfigError, match=next(iter(change))):
        EngineParams(**change)  # type: ignore[arg-type]

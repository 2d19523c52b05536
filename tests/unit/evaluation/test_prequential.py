"""Prequential alignment and scoring (evaluation/prequential.py) on hand-made cases."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recstream.evaluation.prequential import (
    ScoreCard,
    align,
    interest_from_top,
    is_target,
    prediction_points,
    recovery_after_switch,
    slice_edges,
    slice_index,
    total_variation,
)
from recstream.models.errors import ValidationError


def ev(user: str, eid: str, ts: float, item: str | None = "i1", etype: str = "click",
       value: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {"user_id": user, "event_id": eid, "ts": ts, "item_id": item, "event_type": etype,
            "value": value}  # fmt: skip


def lst(user: str, reflects: str, items: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:
    return {"user_id": user, "as_of": {"event_id": reflects, "ts": 0.0}, "items": items}


# --- is_target ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event", "views", "expected"),
    [
        (ev("u", "1", 0, etype="click"), False, True),
        (ev("u", "1", 0, etype="purchase"), False, True),
        (ev("u", "1", 0, etype="add_to_cart"), False, True),
        (ev("u", "1", 0, etype="rate", value=4.0), False, True),
        (ev("u", "1", 0, etype="rate", value=3.5), False, False),
        (ev("u", "1", 0, etype="rate", value=None), False, False),
        (ev("u", "1", 0, etype="view"), False, False),
        (ev("u", "1", 0, etype="view"), True, True),
        (ev("u", "1", 0, etype="skip"), True, False),
        (ev("u", "1", 0, etype="dislike"), True, False),
        (ev("u", "1", 0, item=None, etype="search"), True, False),
        (ev("u", "1", 0, item=None, etype="click"), True, False),
    ],
)
def test_is_target(event: dict[str, Any], views: bool, expected: bool) -> None:
    assert is_target(event, views_are_targets=views) is expected


# --- align -------------------------------------------------------------------------------------
def test_each_event_gets_the_list_of_the_same_users_previous_event() -> None:
    events = [
        ev("u", "u0", 1),
        ev("v", "v0", 2),
        ev("u", "u1", 3),
        ev("u", "u2", 4),
        ev("v", "v1", 5),
    ]
    lists = [
        lst("u", "u0", ("x",)),
        lst("v", "v0", ("y",)),
        lst("u", "u1", ("z",)),
        lst("u", "u2"),
        lst("v", "v1"),
    ]
    out = align(events, lists)
    assert [a.event["event_id"] for a in out] == ["u0", "v0", "u1", "u2", "v1"]
    assert [a.position for a in out] == [0, 0, 1, 2, 1]
    assert [a.previous_event_id for a in out] == [None, None, "u0", "u1", "v0"]
    assert [a.cold_start for a in out] == [True, True, False, False, False]
    predicted = [None if a.prediction is None else a.prediction["as_of"]["event_id"] for a in out]
    assert predicted == [None, None, "u0", "u1", "v0"]


def test_a_list_is_never_scored_on_the_event_it_reflects() -> None:
    # Lists arrive in any order, including the list of the event itself before the previous one.
    events = [ev("u", f"e{n}", n) for n in range(6)]
    lists = [lst("u", f"e{n}") for n in reversed(range(6))]
    for case in align(events, lists):
        if case.prediction is not None:
            reflected = case.prediction["as_of"]["event_id"]
            assert reflected != case.event["event_id"]
            assert reflected == case.previous_event_id


def test_missing_list_and_first_of_duplicates() -> None:
    events = [ev("u", "e0", 0), ev("u", "e1", 1), ev("u", "e2", 2)]
    first, second = lst("u", "e0", ("first",)), lst("u", "e0", ("second",))
    out = align(events, [first, second])  # nothing reflects e1
    assert out[1].prediction is first  # a redelivered duplicate list does not replace the first
    assert out[2].prediction is None and out[2].missing and not out[2].cold_start


def test_a_list_of_another_user_with_the_same_event_id_is_not_used() -> None:
    events = [ev("u", "same", 0), ev("u", "next", 1)]
    assert align(events, [lst("v", "same")])[1].prediction is None


def test_duplicate_events_are_skipped_like_the_worker_skips_them() -> None:
    events = [ev("u", "e0", 0), ev("u", "e0", 0), ev("u", "e1", 1)]
    out = align(events, [lst("u", "e0")])
    assert [a.index for a in out] == [0, 2]
    assert out[1].position == 1 and out[1].previous_event_id == "e0"


def test_align_rejects_events_without_ids() -> None:
    with pytest.raises(ValidationError):
        align([{"user_id": "u", "ts": 0}], [])


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=40))
def test_alignment_invariants(spec: list[tuple[str, bool]]) -> None:
    events = [ev(u, f"{u}{n}", n) for n, (u, _) in enumerate(spec)]
    lists = [lst(u, f"{u}{n}") for n, (u, published) in enumerate(spec) if published]
    out = align(events, lists)
    assert len(out) == len(events)
    last: dict[str, str] = {}
    for case in out:
        user = case.event["user_id"]
        assert case.previous_event_id == last.get(user)
        if case.prediction is not None:
            assert case.prediction["user_id"] == user
            assert case.prediction["as_of"]["event_id"] == last[user]
        last[user] = case.event["event_id"]


# --- prediction_points -------------------------------------------------------------------------
def test_prediction_points_mark_the_event_before_each_non_first_target() -> None:
    events = [
        ev("u", "u0", 0, etype="click"),  # u's first: cold start, no point before it
        ev("v", "v0", 1, etype="view"),
        ev("u", "u1", 2, etype="skip"),  # not a target: the point before it stays False
        ev("u", "u2", 3, etype="purchase"),
        ev("v", "v1", 4, etype="click"),
    ]
    points = prediction_points(events, lambda e: is_target(e))
    assert points == [False, True, True, False, False]


# --- ScoreCard ---------------------------------------------------------------------------------
def test_scorecard_metrics_and_cutoffs() -> None:
    card = ScoreCard(k=2, recall_k=4)
    card.add("u", 0.0, ["a", "b", "c", "d"], "b")  # rank 2: hit@2, ndcg 1/log2(3)
    card.add("u", 1.0, ["a", "b", "c", "d"], "d")  # rank 4: miss@2, recall@4 hit, rr 1/4
    card.add("v", 2.0, None, "a")  # missing list: a miss everywhere
    s = card.summary(catalog_size=10)
    assert s["hr@2"] == pytest.approx(1 / 3)
    assert s["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    assert s["recall@4"] == pytest.approx(2 / 3)
    assert s["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 3)
    assert s["coverage"] == pytest.approx(2 / 10)  # top-2 items a, b
    assert s["n"] == 3 and s["missing"] == 1
    assert s["novelty"] is None and s["ild"] is None


def test_scorecard_novelty_diversity_and_slices() -> None:
    card = ScoreCard(k=2, recall_k=2)
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    card.add("u", 0.0, ["a", "b"], "a", item_users={"a": 4, "b": 1}, n_users=4, vectors=vectors)
    card.add("u", 10.0, ["a", "b"], "z", item_users={"a": 4, "b": 1}, n_users=4, vectors=vectors)
    s = card.summary()
    assert s["novelty"] == pytest.approx((0.0 + 2.0) / 2)  # -log2(4/4), -log2(1/4)
    assert s["ild"] == pytest.approx(1.0)  # orthogonal vectors
    rows = card.slices(slice_edges(card.ts, 2))
    assert [r["n"] for r in rows] == [1, 1]
    assert [r["hr@2"] for r in rows] == [1.0, 0.0]


def test_slice_index_edges() -> None:
    edges = [0.0, 5.0, 10.0]
    which = slice_index(np.array([-1.0, 0.0, 4.9, 5.0, 10.0, 11.0]), edges)
    assert which.tolist() == [-1, 0, 0, 1, 1, -1]


# --- interests ---------------------------------------------------------------------------------
def test_interest_from_top_spreads_the_rest_over_unlisted_topics() -> None:
    p = interest_from_top([("a", 0.5), ("b", 0.3)], ["a", "b", "c", "d"])
    assert p is not None
    assert p.tolist() == pytest.approx([0.5, 0.3, 0.1, 0.1])
    assert interest_from_top([], ["a"]) is None
    assert interest_from_top([("zzz", 1.0)], ["a", "b"]) is None


def test_total_variation() -> None:
    assert total_variation(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0
    assert total_variation(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    with pytest.raises(ValidationError):
        total_variation(np.array([1.0]), np.array([0.5, 0.5]))


# --- recovery ----------------------------------------------------------------------------------
def test_recovery_counts_events_until_the_rolling_hit_rate_is_back() -> None:
    pre = [(None, 1.0), (None, 0.0)] * 10  # pre-switch HR 0.5 → threshold 0.4
    # Offsets 0..9 miss, from 10 on everything hits: the window [w, w+10) first holds 40% hits
    # at w = 4 (hits at 10..13 = 4 of 10).
    post = [(o, 0.0) for o in range(10)] + [(o, 1.0) for o in range(10, 30)]
    r = recovery_after_switch(pre + post, window=10, fraction=0.8, min_cases=1)
    assert r.pre_hr == pytest.approx(0.5)
    assert r.dip_hr == 0.0
    assert r.recovery_events == 4
    assert r.curve[0] == (0, 0.0, 10)


def test_recovery_is_none_without_pre_switch_cases_or_when_never_reached() -> None:
    assert recovery_after_switch([(0, 1.0)], min_cases=1).recovery_events is None
    never = [(None, 1.0)] * 5 + [(o, 0.0) for o in range(20)]
    assert recovery_after_switch(never, min_cases=1).recovery_events is None

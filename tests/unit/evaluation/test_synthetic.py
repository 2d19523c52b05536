"""Tests for recstream.evaluation.synthetic: determinism, wire format, ground-truth invariants."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.evaluation.synthetic import (
    EVENT_TYPES,
    TOPIC_VOCABULARIES,
    SyntheticConfig,
    SyntheticDataset,
    generate,
    iter_live,
)
from recstream.models.errors import ValidationError

EVENT_KEYS = {"user_id", "item_id", "event_type", "ts", "value", "text", "event_id", "rec_id"}
ITEM_KEYS = {"item_id", "title", "text", "categories", "attributes", "ts"}
SMALL = SyntheticConfig(n_items=120, n_users=20, n_topics=6, events_per_user=60, seed=7)


@pytest.fixture(scope="module")
def data() -> SyntheticDataset:
    return generate(SMALL)


def test_same_seed_gives_identical_output(data: SyntheticDataset) -> None:
    again = generate(SMALL)
    assert again.items == data.items
    assert again.events == data.events
    assert again.switch_times == data.switch_times
    assert again.drift_users == data.drift_users
    ts = data.events[len(data.events) // 2]["ts"]
    assert isinstance(ts, float)
    for uid in data.user_ids:
        np.testing.assert_array_equal(again.true_interest(uid, ts), data.true_interest(uid, ts))


def test_different_seed_gives_different_events(data: SyntheticDataset) -> None:
    other = generate(dataclasses.replace(SMALL, seed=8))
    assert other.events != data.events


def test_events_sorted_and_counted(data: SyntheticDataset) -> None:
    times = [e["ts"] for e in data.events]
    assert times == sorted(times)
    assert len(data.events) == SMALL.n_users * SMALL.events_per_user
    assert len({e["event_id"] for e in data.events}) == len(data.events)
    assert min(times) >= SMALL.start_ts


def test_event_wire_format(data: SyntheticDataset) -> None:
    item_ids = {i["item_id"] for i in data.items}
    users = set(data.user_ids)
    for e in data.events:
        assert set(e) == EVENT_KEYS
        assert e["event_type"] in EVENT_TYPES
        assert isinstance(e["user_id"], str) and e["user_id"] in users
        assert isinstance(e["ts"], float)
        assert isinstance(e["event_id"], str)
        assert e["rec_id"] is None
        if e["event_type"] == "search":
            assert e["item_id"] is None
            assert isinstance(e["text"], str) and e["text"]
        else:
            assert e["item_id"] in item_ids
        if e["event_type"] == "rate":
            assert isinstance(e["value"], float) and 0.5 <= e["value"] <= 5.0
            assert e["value"] * 2 == int(e["value"] * 2)  # half stars
        else:
            assert e["value"] is None
    # Every type with a positive share shows up in a stream of this size.
    assert set(Counter(e["event_type"] for e in data.events)) == set(EVENT_TYPES)


def test_item_wire_format_and_topic_vocabulary(data: SyntheticDataset) -> None:
    assert [i["item_id"] for i in data.items] == sorted(data.item_topic)
    for item in data.items:
        assert set(item) == ITEM_KEYS
        assert isinstance(item["ts"], float) and item["ts"] < SMALL.start_ts
        topic = data.item_topic[str(item["item_id"])]
        assert item["categories"] == [topic]
        attrs = item["attributes"]
        assert isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values())
        words = set(str(item["text"]).replace(",", " ").replace(".", " ").split())
        # The description names at least five words of its own topic and none of the others.
        assert len(words & set(TOPIC_VOCABULARIES[topic])) >= 5
        for other in data.topics:
            if other != topic:
                assert not words & set(TOPIC_VOCABULARIES[other])
    assert sum(data.item_popularity.values()) == pytest.approx(1.0)


def test_true_interest_is_a_distribution(data: SyntheticDataset) -> None:
    for uid in data.user_ids:
        for ts in (SMALL.start_ts - 1e5, SMALL.start_ts + 3333.3, SMALL.start_ts + 1e6):
            p = data.true_interest(uid, ts)
            assert p.shape == (SMALL.n_topics,)
            assert np.all(p >= 0.0)
            assert p.sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValidationError):
        data.true_interest("nobody", SMALL.start_ts)


def test_abrupt_switch_changes_interest_at_switch_time(data: SyntheticDataset) -> None:
    assert len(data.switch_times) == round(SMALL.abrupt_switch_fraction * SMALL.n_users)
    assert not set(data.switch_times) & data.drift_users
    for uid, tau in data.switch_times.items():
        before = data.true_interest(uid, tau - 0.001)
        after = data.true_interest(uid, tau)
        assert np.argmax(before) != np.argmax(after)
        assert np.abs(before - after).sum() > 0.2


def test_static_users_change_only_with_time_of_day(data: SyntheticDataset) -> None:
    static = [u for u in data.user_ids if u not in data.switch_times and u not in data.drift_users]
    assert static
    day = 86_400.0
    for uid in static:
        # Same time of day, many days apart: the periodic part repeats, nothing else moves.
        a = data.true_interest(uid, SMALL.start_ts)
        b = data.true_interest(uid, SMALL.start_ts + 30 * day)
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_gradual_drift_moves_smoothly(data: SyntheticDataset) -> None:
    day = 86_400.0
    for uid in data.drift_users:
        # Compare whole days apart to cancel the daily modulation: drift alone remains.
        early = data.true_interest(uid, SMALL.start_ts - day)
        late = data.true_interest(uid, SMALL.start_ts + 10 * day)
        assert np.abs(early - late).sum() > 0.0
        steps = [data.true_interest(uid, SMALL.start_ts + h * 60.0) for h in range(0, 100)]
        jumps = [np.abs(x - y).sum() for x, y in itertools.pairwise(steps)]
        assert max(jumps) < 0.05  # one minute never moves the mixture much


def test_negative_events_avoid_favourite_topic(data: SyntheticDataset) -> None:
    for e in data.events:
        if e["event_type"] in ("skip", "dislike"):
            p = data.true_interest(str(e["user_id"]), float(e["ts"]))
            topic = data.item_topic[str(e["item_id"])]
            assert data.topics.index(topic) != int(np.argmax(p))


def test_positive_events_follow_true_interest() -> None:
    cfg = SyntheticConfig(n_items=200, n_users=8, n_topics=4, events_per_user=400, seed=3)
    d = generate(cfg)
    # Mean predicted probability of the consumed item's topic must beat the uniform 1/n_topics
    # by a wide margin when users have concentrated (alpha < 1) interests.
    probs = []
    for e in d.events:
        if e["event_type"] in ("view", "click"):
            p = d.true_interest(str(e["user_id"]), float(e["ts"]))
            probs.append(p[d.topics.index(d.item_topic[str(e["item_id"])])])
    assert np.mean(probs) > 1.5 / cfg.n_topics


def test_popularity_is_zipf_like(data: SyntheticDataset) -> None:
    weights = sorted(data.item_popularity.values(), reverse=True)
    assert weights[0] / weights[9] == pytest.approx(10.0)  # rank ** -1


def test_live_stream_is_deterministic_and_advancing() -> None:
    start = 1_750_000_000.0
    first = list(itertools.islice(iter_live(SMALL, start), 600))
    again = list(itertools.islice(iter_live(SMALL, start), 600))
    assert first == again
    times = [e["ts"] for e in first]
    assert times == sorted(times) and times[0] >= start
    assert len({e["event_id"] for e in first}) == 600
    assert all(set(e) == EVENT_KEYS and e["event_type"] in EVENT_TYPES for e in first)
    # Same world as a batch anchored at the same time: items agree.
    anchored = generate(dataclasses.replace(SMALL, start_ts=start))
    item_ids = {i["item_id"] for i in anchored.items}
    assert all(e["item_id"] in item_ids for e in first if e["item_id"] is not None)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_topics=st.integers(2, len(TOPIC_VOCABULARIES)),
    amplitude=st.floats(0.0, 0.99),
    ts=st.floats(1.6e9, 1.8e9),
)
def test_true_interest_invariants_hold_for_any_config(
    seed: int, n_topics: int, amplitude: float, ts: float
) -> None:
    cfg = SyntheticConfig(
        n_items=n_topics * 3,
        n_users=4,
        n_topics=n_topics,
        events_per_user=3,
        daily_amplitude=amplitude,
        gradual_drift_fraction=0.5,
        abrupt_switch_fraction=0.5,
        seed=seed,
    )
    d = generate(cfg)
    for uid in d.user_ids:
        p = d.true_interest(uid, ts)
        assert np.all(p >= 0.0) and p.sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_topics", 1),
        ("n_topics", len(TOPIC_VOCABULARIES) + 1),
        ("n_items", 3),
        ("mean_gap_s", 0.0),
        ("daily_amplitude", 1.0),
        ("gradual_drift_fraction", 0.8),
        ("event_type_shares", (("view", 1.0), ("teleport", 1.0))),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        dataclasses.replace(SyntheticConfig(abrupt_switch_fraction=0.3), **{field: value})

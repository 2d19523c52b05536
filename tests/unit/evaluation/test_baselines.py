"""Tests for recstream.evaluation.baselines: one contract for every baseline, then each model."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from baseline_events import event as _event
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.evaluation.baselines import (
    DecayedPopularity,
    ItemKNNCoVisit,
    Recommender,
    StaticEmbeddingSimilarity,
    _rank,
)
from recstream.evaluation.sequence_baselines import RecentPopularity, SequenceKNN
from recstream.evaluation.synthetic import SyntheticConfig, SyntheticDataset, generate
from recstream.models.errors import ValidationError

# More than 64 items, so the score tables must grow past their initial capacity.
CFG = SyntheticConfig(n_items=150, n_users=12, n_topics=4, events_per_user=60, seed=11)


@pytest.fixture(scope="module")
def data() -> SyntheticDataset:
    return generate(CFG)


def _topic_vectors(data: SyntheticDataset) -> dict[str, np.ndarray]:
    """One-hot topic vector plus seeded noise per item: a stand-in for text embeddings."""
    rng = np.random.default_rng(0)
    vectors = {}
    for item_id, topic in sorted(data.item_topic.items()):
        v = np.zeros(len(data.topics))
        v[data.topics.index(topic)] = 1.0
        vectors[item_id] = v + rng.normal(0.0, 0.1, size=v.size)
    return vectors


Factory = Callable[[SyntheticDataset], Recommender]
FACTORIES: dict[str, Factory] = {
    "decayed_popularity": lambda d: DecayedPopularity(half_life_s=3600.0),
    "item_knn": lambda d: ItemKNNCoVisit(window=5, max_neighbours=10),
    "static_embedding": lambda d: StaticEmbeddingSimilarity(_topic_vectors(d)),
    "recent_popularity": lambda d: RecentPopularity(window_s=86_400.0),
    "sequence_knn": lambda d: SequenceKNN(n_last=5, window_s=86_400.0, max_neighbours=10),
}


def _trained(name: str, data: SyntheticDataset) -> Recommender:
    model = FACTORIES[name](data)
    for event in data.events:
        model.learn_one(event)
    return model


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_contract(name: str, data: SyntheticDataset) -> None:
    model = _trained(name, data)
    ids = [i["item_id"] for i in data.items]
    catalogue = set(ids)
    at = data.events[-1]["ts"] + 1.0
    users = [*data.user_ids, "never-seen-user"]
    for k in (1, 5, 20):
        for u, user in enumerate(users):
            exclude = set(ids[u : u + 7])
            recs = model.predict_one(user, at, k, exclude)
            assert isinstance(recs, list) and all(isinstance(r, str) for r in recs)
            assert len(recs) == k  # the catalogue is large enough to always fill k
            assert len(set(recs)) == len(recs)
            assert not set(recs) & exclude
            assert set(recs) <= catalogue
            # predict only reads: asking again gives the same answer
            assert model.predict_one(user, at, k, exclude) == recs
    assert model.predict_one(users[0], at, 0) == []
    with pytest.raises(ValidationError):
        model.predict_one(users[0], at, -1)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_contract_deterministic_across_instances(name: str, data: SyntheticDataset) -> None:
    first, second = _trained(name, data), _trained(name, data)
    at = data.events[-1]["ts"]
    for user in data.user_ids:
        assert first.predict_one(user, at, 10) == second.predict_one(user, at, 10)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_contract_untrained_and_odd_events(name: str, data: SyntheticDataset) -> None:
    model = FACTORIES[name](data)
    # Empty model: no popularity yet; content model with no profile falls back to nothing.
    assert model.predict_one("u", 0.0, 5) == []
    model.learn_one(_event("u", None, 1.0, "search"))  # no item: ignored
    model.learn_one(_event("u", "item-000", 2.0, "dislike"))  # negative: ignored
    assert model.predict_one("u", 3.0, 5) == []
    model.learn_one(_event("u", "item-001", 4.0, "purchase"))
    assert model.predict_one("v", 5.0, 5) == ["item-001"]
    assert model.predict_one("v", 5.0, 5, exclude={"item-001"}) == []
    with pytest.raises(ValidationError):
        model.learn_one({"item_id": "item-001", "event_type": "view", "ts": 1.0})
    with pytest.raises(ValidationError):
        model.learn_one(_event("u", "item-001", math.nan))


def test_decayed_popularity_half_life() -> None:
    model = DecayedPopularity(half_life_s=100.0, epoch_ts=0.0)
    model.learn_one(_event("u", "a", 1000.0))
    model.learn_one(_event("u", "b", 1100.0, "purchase"))  # weight 3
    assert model.decayed_count("a", 1100.0) == pytest.approx(0.5)
    assert model.decayed_count("b", 1300.0) == pytest.approx(0.75)
    assert model.decayed_count("never", 1300.0) == 0.0
    assert model.predict_one("anyone", 1100.0, 2) == ["b", "a"]
    # A burst of old views loses to one recent view once enough half-lives pass.
    for t in range(4):
        model.learn_one(_event("u", "c", 100.0 + t))
    assert model.predict_one("anyone", 1100.0, 3) == ["b", "a", "c"]
    # Low ratings are not popularity.
    model.learn_one({**_event("u", "d", 1200.0, "rate"), "value": 1.0})
    assert model.decayed_count("d", 1200.0) == 0.0


def test_decayed_popularity_survives_far_epochs() -> None:
    # lambda * (t - epoch) ~ 3.5e4 here: exp() would overflow, the log-space sum does not.
    model = DecayedPopularity(half_life_s=60.0, epoch_ts=0.0)
    for t, item in [(3e6, "a"), (3e6 + 60.0, "a"), (3e6 + 30.0, "b")]:
        model.learn_one(_event("u", item, t))
    assert math.isfinite(model.log_mass("a"))
    assert model.decayed_count("a", 3e6 + 60.0) == pytest.approx(1.5)
    assert model.predict_one("u", 3e6 + 60.0, 2) == ["a", "b"]


positive_events = st.lists(
    st.tuples(
        st.sampled_from(["i1", "i2", "i3", "i4", "i5"]),
        st.floats(1.6e9, 1.6e9 + 10 * 86_400.0),
        st.sampled_from(["view", "click", "add_to_cart", "purchase", "skip"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=50, deadline=None)
@given(events=positive_events, data=st.data())
def test_decayed_popularity_is_order_independent(
    events: list[tuple[str, float, str]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(events))
    a = DecayedPopularity(half_life_s=3600.0, epoch_ts=1.6e9)
    b = DecayedPopularity(half_life_s=3600.0, epoch_ts=1.6e9)
    for (item, ts, etype), (item2, ts2, etype2) in zip(events, shuffled, strict=True):
        a.learn_one(_event("u", item, ts, etype))
        b.learn_one(_event("u", item2, ts2, etype2))
    items = ["i1", "i2", "i3", "i4", "i5"]
    for item in items:
        la, lb = a.log_mass(item), b.log_mass(item)
        assert la == lb or math.isclose(la, lb, rel_tol=1e-12, abs_tol=1e-9)
    ranked_a = a.predict_one("u", 1.7e9, 5)
    ranked_b = b.predict_one("u", 1.7e9, 5)
    assert sorted(ranked_a) == sorted(ranked_b)
    # Positions may differ only between items whose masses agree to rounding.
    for x, y in zip(ranked_a, ranked_b, strict=True):
        assert x == y or math.isclose(a.log_mass(x), a.log_mass(y), rel_tol=1e-12, abs_tol=1e-9)


def test_item_knn_recommends_co_visited_items() -> None:
    model = ItemKNNCoVisit(window=3, max_neighbours=2)
    for user in ("u1", "u2"):
        model.learn_one(_event(user, "x", 1.0))
        model.learn_one(_event(user, "y", 2.0))
    model.learn_one(_event("u3", "x", 3.0))
    model.learn_one(_event("u3", "z", 4.0))
    model.learn_one(_event("u4", "x", 5.0))
    assert model.neighbours("x") == [("y", 2), ("z", 1)]
    assert model.predict_one("u4", 6.0, 2) == ["y", "z"]
    # The window forgets: with window 1 only the latest item pairs with a new one.
    narrow = ItemKNNCoVisit(window=1, max_neighbours=5)
    for t, item in enumerate(["a", "b", "c"]):
        narrow.learn_one(_event("u", item, float(t)))
    assert narrow.neighbours("a") == [("b", 1)]
    # Repeats refresh recency without adding pairs.
    narrow.learn_one(_event("u", "c", 5.0))
    assert narrow.neighbours("c") == [("b", 1)]


def test_static_embedding_follows_profile(data: SyntheticDataset) -> None:
    vectors = _topic_vectors(data)
    model = StaticEmbeddingSimilarity(vectors)
    topic_items = sorted(i for i, t in data.item_topic.items() if t == data.topics[2])
    for t, item in enumerate(topic_items[:3]):
        model.learn_one(_event("fan", item, float(t)))
    recs = model.predict_one("fan", 10.0, 5, exclude=set(topic_items[:3]))
    assert {data.item_topic[r] for r in recs} == {data.topics[2]}
    profile = model.profile("fan")
    assert profile is not None and profile.shape == (len(data.topics),)
    with pytest.raises(ValidationError):
        StaticEmbeddingSimilarity({"a": np.zeros(3)})
    with pytest.raises(ValidationError):
        StaticEmbeddingSimilarity({})


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from([-math.inf, 0.0, 0.5, 1.0, 2.0, math.nan]), max_size=30),
    st.integers(0, 12),
    st.sets(st.integers(0, 29), max_size=10),
)
def test_rank_is_the_full_sort_by_score_then_id(
    scores: list[float], k: int, banned: set[int]
) -> None:
    """The partial sort gives what sorting every item by (−score, id) gives, NaN last and
    the excluded ids skipped, ties included (scores drawn from few values); NaN is −inf."""
    ids = [f"i{j:02d}" for j in reversed(range(len(scores)))]  # positions ≠ id order
    exclude = {f"i{j:02d}" for j in banned}
    everything = sorted(
        (((-s if s == s else math.inf), i) for s, i in zip(scores, ids, strict=True)),
    )
    expected = [i for _, i in everything if i not in exclude][:k]
    assert _rank(ids, np.asarray(scores), k, exclude) == expected

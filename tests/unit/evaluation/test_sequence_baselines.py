"""Hand-checked cases for recstream.evaluation.sequence_baselines (the shared Recommender
contract runs over both models in test_baselines.py and test_system_contract.py)."""

from __future__ import annotations

import pytest
from baseline_events import event as _event

from recstream.evaluation.sequence_baselines import RecentPopularity, SequenceKNN
from recstream.models.errors import ValidationError


def _learn(model: RecentPopularity | SequenceKNN, events: list[tuple[str, str, float]]) -> None:
    for user, item, ts in events:
        model.learn_one(_event(user, item, ts))


# --- RecentPopularity --------------------------------------------------------------------------
def test_recent_popularity_counts_only_the_window_then_fills_all_time() -> None:
    model = RecentPopularity(window_s=100.0)
    _learn(model, [("u", "a", 0.0), ("v", "a", 10.0), ("u", "b", 50.0), ("u", "c", 120.0)])
    # Window [20, 120]: b and c once each (tie: by id); a (2 all-time) only fills up.
    assert model.predict_one("anyone", 120.0, 3) == ["b", "c", "a"]
    # Later than the newest event: window [100, 200] holds c alone; fill a (2) before b (1).
    assert model.predict_one("anyone", 200.0, 3) == ["c", "a", "b"]
    # Past every window: all-time popularity alone.
    assert model.predict_one("anyone", 1_000.0, 3) == ["a", "b", "c"]
    # Asking never changes the state.
    assert model.predict_one("anyone", 120.0, 3) == ["b", "c", "a"]


def test_recent_popularity_weights_exclusion_and_ties() -> None:
    model = RecentPopularity(window_s=1_000.0)
    _learn(model, [("u", "z", 1.0), ("u", "y", 2.0)])
    assert model.predict_one("u", 2.0, 2) == ["y", "z"]  # tie 1 : 1, ascending id
    model.learn_one(_event("v", "z", 3.0, "purchase"))  # weight 3
    assert model.predict_one("u", 3.0, 2) == ["z", "y"]
    assert model.predict_one("u", 3.0, 2, exclude={"z"}) == ["y"]
    model.learn_one({**_event("v", "x", 4.0, "rate"), "value": 1.0})  # low rating: ignored
    model.learn_one(_event("v", "x", 4.0, "skip"))  # negative: ignored
    assert model.predict_one("u", 4.0, 5) == ["z", "y"]


def test_recent_popularity_out_of_order_events() -> None:
    model = RecentPopularity(window_s=100.0)
    _learn(model, [("u", "a", 500.0), ("u", "b", 450.0)])  # late but inside the window
    assert model.predict_one("u", 500.0, 2) == ["a", "b"]
    assert model.predict_one("u", 560.0, 2) == ["a", "b"]  # window [460, 560]: a only, b fills
    model.learn_one(_event("v", "c", 300.0))  # older than the window of the newest: all-time only
    assert model.predict_one("u", 500.0, 3) == ["a", "b", "c"]
    model.learn_one(_event("v", "c", 301.0))
    assert model.predict_one("u", 500.0, 3) == ["a", "b", "c"]  # c (2 all-time) stays out
    assert model.predict_one("u", 1_000.0, 3) == ["c", "a", "b"]


def test_recent_popularity_expires_many_events() -> None:
    model = RecentPopularity(window_s=10.0)
    for t in range(3_000):  # enough expiries to compact the entry list
        model.learn_one(_event("u", f"i{t % 7}", float(t)))
    # Window [2989, 2999] (both ends included): the last 11 events.
    window = [f"i{t % 7}" for t in range(2_989, 3_000)]
    counts = {i: window.count(i) for i in set(window)}
    expected = sorted(counts, key=lambda i: (-counts[i], i))
    assert model.predict_one("u", 2_999.0, 7) == expected
    with pytest.raises(ValidationError):
        RecentPopularity(window_s=0.0)


# --- SequenceKNN -------------------------------------------------------------------------------
def test_sequence_knn_is_directed() -> None:
    model = SequenceKNN(window_s=60.0)
    _learn(model, [("u1", "x", 0.0), ("u1", "y", 10.0)])
    assert model.neighbours("x") == [("y", 1.0)]
    assert model.neighbours("y") == []  # y never had a follower
    _learn(model, [("u2", "x", 100.0)])
    assert model.predict_one("u2", 100.0, 1, exclude={"x"}) == ["y"]
    _learn(model, [("u3", "y", 200.0)])
    # After y nothing is known to follow: the list comes from recent popularity only.
    assert model.scores("u3", 200.0, exclude={"y"}) == {}
    assert model.predict_one("u3", 200.0, 1, exclude={"y"}) == ["x"]


def test_sequence_knn_simultaneous_events_pair_both_ways() -> None:
    both = SequenceKNN()
    one_way = SequenceKNN(simultaneous_both_ways=False)
    for model in (both, one_way):
        _learn(model, [("u", "x", 5.0), ("u", "y", 5.0)])
        assert model.neighbours("x") == [("y", 1.0)]
    assert both.neighbours("y") == [("x", 1.0)]
    assert one_way.neighbours("y") == []


def test_sequence_knn_steps_and_window() -> None:
    model = SequenceKNN(max_steps=2, window_s=100.0)
    _learn(model, [("u", "a", 0.0), ("u", "b", 1.0), ("u", "c", 2.0), ("u", "d", 3.0)])
    # d pairs with c (step 1) and b (step 2, weight 1/2), not with a (step 3).
    assert model.neighbours("a") == [("b", 1.0), ("c", 0.5)]
    assert model.neighbours("b") == [("c", 1.0), ("d", 0.5)]
    assert model.neighbours("c") == [("d", 1.0)]
    # More than window_s after the previous item: no pair at all.
    _learn(model, [("u", "e", 500.0)])
    assert model.neighbours("d") == []
    # A repeat refreshes recency without adding pairs.
    _learn(model, [("u", "d", 510.0)])
    assert model.neighbours("e") == []


def test_sequence_knn_position_and_gap_weights() -> None:
    linear = SequenceKNN(n_last=4, window_s=60.0, gap_half_life_s=None)
    inverse = SequenceKNN(n_last=4, window_s=60.0, position_decay="inverse", gap_half_life_s=None)
    decayed = SequenceKNN(n_last=4, window_s=60.0, gap_half_life_s=3_600.0)
    for model in (linear, inverse, decayed):
        _learn(model, [("t", "p", 0.0), ("t", "q", 3_600.0)])  # too far apart to pair
    assert linear.source_weights("t", 3_600.0) == [("q", 1.0), ("p", 0.75)]
    assert inverse.source_weights("t", 3_600.0) == [("q", 1.0), ("p", 0.5)]
    assert decayed.source_weights("t", 7_200.0) == [("q", 0.5), ("p", 0.75 * 0.25)]


def test_sequence_knn_ranks_the_most_recent_items_neighbours_first() -> None:
    model = SequenceKNN(n_last=2, window_s=60.0, gap_half_life_s=None)
    _learn(model, [("a", "p", 0.0), ("a", "P", 1.0), ("b", "q", 0.0), ("b", "Q", 1.0)])
    _learn(model, [("t", "p", 1_000.0), ("t", "q", 2_000.0)])  # q most recent
    assert model.scores("t", 2_000.0) == {"Q": 1.0, "P": 0.5}
    assert model.predict_one("t", 2_000.0, 2) == ["Q", "P"]
    _learn(model, [("s", "q", 1_000.0), ("s", "p", 2_000.0)])  # p most recent
    assert model.predict_one("s", 2_000.0, 2) == ["P", "Q"]
    # Consumed items never come back, and the rest is filled from recent popularity.
    assert model.predict_one("t", 2_000.0, 3, exclude={"Q", "p", "q"}) == ["P"]


def test_sequence_knn_normalises_rows() -> None:
    events = [("a", "h", 0.0), ("a", "x", 1.0), ("b", "h", 0.0), ("b", "x", 1.0)]
    events += [("c", "h", 2.0), ("c", "y", 3.0), ("d", "r", 0.0), ("d", "z", 1.0)]
    events += [("t", "r", 100.0), ("t", "h", 200.0)]  # h most recent, r before it
    plain = SequenceKNN(n_last=2, window_s=60.0, gap_half_life_s=None, normalise=False)
    normed = SequenceKNN(n_last=2, window_s=60.0, gap_half_life_s=None)
    for model in (plain, normed):
        _learn(model, events)
    # Row h = {x: 2, y: 1} (total 3), row r = {z: 1}; weights h 1, r 1/2.
    assert plain.scores("t", 200.0) == {"x": 2.0, "y": 1.0, "z": 0.5}
    assert normed.scores("t", 200.0) == pytest.approx({"x": 2 / 3, "y": 1 / 3, "z": 0.5})
    assert normed.predict_one("t", 200.0, 3) == ["x", "z", "y"]


def test_sequence_knn_ties_and_neighbour_cut_are_by_item_id() -> None:
    model = SequenceKNN(max_neighbours=2, window_s=60.0)
    for user, nxt in (("u1", "n3"), ("u2", "n1"), ("u3", "n2")):
        _learn(model, [(user, "s", 0.0), (user, nxt, 1.0)])
    assert model.neighbours("s") == [("n1", 1.0), ("n2", 1.0)]
    _learn(model, [("t", "s", 10.0)])
    assert model.predict_one("t", 10.0, 2, exclude={"s"}) == ["n1", "n2"]
    model.learn_one(_event("u4", "s", 20.0))
    model.learn_one(_event("u4", "n3", 21.0))  # n3 now leads the row: the memo is refreshed
    assert model.neighbours("s") == [("n3", 2.0), ("n1", 1.0)]


def test_sequence_knn_is_deterministic() -> None:
    events = [(f"u{i % 5}", f"i{(i * 7) % 11}", float(i)) for i in range(200)]
    first, second = SequenceKNN(window_s=5.0), SequenceKNN(window_s=5.0)
    _learn(first, events)
    _learn(second, events)
    for user in ("u0", "u1", "u2", "u3", "u4", "nobody"):
        assert first.predict_one(user, 200.0, 5) == second.predict_one(user, 200.0, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_last": 0},
        {"max_steps": 0},
        {"max_neighbours": 0},
        {"window_s": 0.0},
        {"window_s": float("inf")},
        {"gap_half_life_s": -1.0},
        {"position_decay": "exponential"},
        {"fill_window_s": 0.0},
    ],
)
def test_sequence_knn_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SequenceKNN(**kwargs)


def test_the_eval_runs_both_peers_beside_the_other_baselines() -> None:
    from recstream.config.settings import Settings
    from recstream.evaluation.data import EvalData
    from recstream.evaluation.oracle import TrueInterestOracle
    from recstream.evaluation.run import _baselines
    from recstream.evaluation.synthetic import SyntheticConfig, generate

    movielens_like = EvalData("ml", [], [], views_are_targets=False)
    models, skipped = _baselines(Settings(), None, "no vectors here", movielens_like)
    assert isinstance(models["recent_popularity"], RecentPopularity)
    assert isinstance(models["sequence_knn"], SequenceKNN)
    assert {"popularity", "item_knn"} <= set(models) and "oracle" not in models
    assert skipped == {"static_embedding": "no vectors here"}
    # Generated data also gets its ground-truth ceiling.
    syn = generate(SyntheticConfig(n_items=20, n_users=2, events_per_user=3))
    with_truth = EvalData("synthetic", [], [], views_are_targets=True, synthetic=syn)
    models, _ = _baselines(Settings(), None, "no vectors here", with_truth)
    assert isinstance(models["oracle"], TrueInterestOracle)

"""Tests for recstream.evaluation.metrics: hand-computed cases and invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.evaluation.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    percentiles,
    recall_at_k,
    reciprocal_rank,
)
from recstream.models.errors import ValidationError

RANKED = ["a", "b", "c", "d", "e"]


def test_hit_rate() -> None:
    assert hit_rate_at_k(RANKED, "c", 3) == 1.0
    assert hit_rate_at_k(RANKED, "d", 3) == 0.0
    assert hit_rate_at_k(RANKED, "z", 10) == 0.0
    assert hit_rate_at_k(RANKED, "a", 0) == 0.0
    with pytest.raises(ValidationError):
        hit_rate_at_k(RANKED, "a", -1)


def test_ndcg_single_target() -> None:
    assert ndcg_at_k(RANKED, {"a"}, 5) == pytest.approx(1.0)
    assert ndcg_at_k(RANKED, {"c"}, 5) == pytest.approx(1.0 / math.log2(4))
    assert ndcg_at_k(RANKED, {"c"}, 5) == pytest.approx(0.5)
    assert ndcg_at_k(RANKED, {"c"}, 2) == 0.0
    assert ndcg_at_k(RANKED, set(), 5) == 0.0


def test_ndcg_multiple_relevant() -> None:
    # Relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3).
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(RANKED, {"b", "d"}, 5) == pytest.approx(expected)
    # k smaller than |relevant|: the ideal list holds only k relevant items.
    assert ndcg_at_k(["x", "y"], {"x", "y", "z"}, 2) == pytest.approx(1.0)


def test_ndcg_counts_repeats_once() -> None:
    assert ndcg_at_k(["a", "a"], {"a", "b"}, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_recall() -> None:
    assert recall_at_k(RANKED, {"a", "e", "z"}, 5) == pytest.approx(2 / 3)
    assert recall_at_k(RANKED, {"a", "e", "z"}, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, set(), 5) == 0.0


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(RANKED, "a") == 1.0
    assert reciprocal_rank(RANKED, "d") == 0.25
    assert reciprocal_rank(RANKED, "z") == 0.0
    assert reciprocal_rank(["a", "b", "a"], "a") == 1.0


def test_catalog_coverage() -> None:
    assert catalog_coverage([["a", "b"], ["b", "c"], []], 10) == pytest.approx(0.3)
    assert catalog_coverage([], 5) == 0.0
    with pytest.raises(ValidationError):
        catalog_coverage([["a"]], 0)


def test_novelty() -> None:
    pop = {"a": 50, "b": 25, "c": 0}
    # -log2(50/100) = 1, -log2(25/100) = 2, unseen "c" and "d" count as 1 user: -log2(1/100).
    assert novelty(["a", "b"], pop, 100) == pytest.approx(1.5)
    assert novelty(["c"], pop, 100) == pytest.approx(math.log2(100))
    assert novelty(["d", "a"], pop, 100) == pytest.approx((math.log2(100) + 1) / 2)
    assert novelty([], pop, 100) == 0.0
    with pytest.raises(ValidationError):
        novelty(["a"], {"a": 101}, 100)


def test_intra_list_diversity() -> None:
    orthogonal = [np.array([1.0, 0.0]), np.array([0.0, 2.0])]
    assert intra_list_diversity(orthogonal) == pytest.approx(1.0)
    same = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    assert intra_list_diversity(same) == pytest.approx(0.0)
    # Pairs: (x, y) -> 1, (x, -x) -> 2, (y, -x) -> 1; mean 4/3.
    mixed = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert intra_list_diversity(mixed) == pytest.approx(4 / 3)
    assert intra_list_diversity([np.array([1.0, 0.0])]) == 0.0
    assert intra_list_diversity([]) == 0.0
    with pytest.raises(ValidationError):
        intra_list_diversity([np.zeros(2), np.ones(2)])


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 12).flatmap(
        lambda m: st.lists(
            st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4).filter(
                lambda v: math.hypot(*v) > 1e-3
            ),
            min_size=m,
            max_size=m,
        )
    )
)
def test_intra_list_diversity_is_mean_pairwise_distance(rows: list[list[float]]) -> None:
    """The O(n·d) sum equals the mean over the pairs i < j of 1 − cos(v_i, v_j)."""
    v = np.asarray(rows, dtype=float).reshape(len(rows), 4)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(len(u)), 2))
    expected = np.mean([1.0 - u[i] @ u[j] for i, j in pairs]) if pairs else 0.0
    assert intra_list_diversity(v) == pytest.approx(expected, abs=1e-9)


def test_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    out = percentiles(values)
    assert list(out) == [50, 95, 99]
    assert out[50] == pytest.approx(50.5)
    assert out[95] == pytest.approx(95.05)
    assert out[99] == pytest.approx(99.01)
    assert percentiles([3.0], [0, 100]) == {0: 3.0, 100: 3.0}
    assert all(math.isnan(v) for v in percentiles([]).values())
    with pytest.raises(ValidationError):
        percentiles([1.0], [101])


@settings(max_examples=50, deadline=None)
@given(
    ranked=st.lists(st.sampled_from("abcdefgh"), max_size=8),
    relevant=st.sets(st.sampled_from("abcdefgh")),
    k=st.integers(0, 10),
)
def test_metric_ranges(ranked: list[str], relevant: set[str], k: int) -> None:
    for value in (ndcg_at_k(ranked, relevant, k), recall_at_k(ranked, relevant, k)):
        assert 0.0 <= value <= 1.0 + 1e-12
    for target in relevant:
        assert hit_rate_at_k(ranked, target, k) == (1.0 if target in ranked[:k] else 0.0)
        # With one relevant item, NDCG is positive exactly when it is a hit.
        assert (ndcg_at_k(ranked, {target}, k) > 0) == (hit_rate_at_k(ranked, target, k) == 1)

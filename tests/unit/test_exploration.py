"""Exploration slots: rounding, placement, marking, determinism, Thompson preference."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import ValidationError
from recstream.models.exploration import CategoryArm, allocate_exploration, exploration_slots
from recstream.models.fusion import EXPLORATION_KEY, RankedItem


def fused(n: int) -> list[RankedItem]:
    return [
        RankedItem(f"r{i}", 1.0 - i / 100, {"sem": 1.0 - i / 100}, {"sem": 1.0 - i / 100})
        for i in range(n)
    ]


def arms() -> list[CategoryArm]:
    return [
        CategoryArm("books", 2.0, 8.0, ("b1", "b2", "b3")),
        CategoryArm("music", 8.0, 2.0, ("m1", "m2", "r0", "m3")),
        CategoryArm("games", 1.0, 1.0, ("g1",)),
    ]


@pytest.mark.parametrize(
    ("share", "k", "slots"),
    [(0.0, 10, 0), (0.1, 10, 1), (0.15, 10, 1), (0.29, 100, 29), (0.05, 10, 0), (1.0, 7, 7)],
)
def test_slots_round_down(share: float, k: int, slots: int) -> None:
    assert exploration_slots(share, k) == slots


def test_slots_reject_bad_share() -> None:
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValidationError):
            exploration_slots(bad, 10)


def test_explored_items_are_marked_spread_and_fresh() -> None:
    served = allocate_exploration(fused(20), arms(), share=0.2, k=10, rng=3)
    assert len(served) == 10
    explored = [i for i, item in enumerate(served) if item.explored]
    assert explored == [3, 6]  # ⌊(j+1)·10/3⌋ for j = 0, 1
    for i in explored:
        item = served[i]
        assert set(item.contributions) == {EXPLORATION_KEY}
        assert item.score == item.contributions[EXPLORATION_KEY]
        assert 0.0 <= item.score <= 1.0
    exploit = [item.item_id for item in served if not item.explored]
    assert exploit == [f"r{i}" for i in range(8)]  # best fused items, order kept
    assert len({item.item_id for item in served}) == 10
    assert "r0" not in [served[i].item_id for i in explored]  # already shown by fusion


def test_deterministic_for_a_seed() -> None:
    a = allocate_exploration(fused(20), arms(), 0.3, 10, rng=42)
    b = allocate_exploration(fused(20), arms(), 0.3, 10, rng=np.random.default_rng(42))
    assert a == b
    draws = {
        tuple(x.item_id for x in allocate_exploration(fused(20), arms(), 0.3, 10, rng=s))
        for s in range(20)
    }
    assert len(draws) > 1  # the seed matters


def test_thompson_prefers_the_better_category() -> None:
    rng = np.random.default_rng(0)
    counts: Counter[str] = Counter()
    for _ in range(300):
        served = allocate_exploration(fused(10), arms(), 0.1, 10, rng=rng)
        counts.update(item.item_id[0] for item in served if item.explored)
    # music: Beta(8, 2), mean 0.8; games: Beta(1, 1); books: Beta(2, 8), mean 0.2.
    assert counts["m"] > counts["g"] > counts["b"]
    assert counts.total() == 300


def test_no_share_returns_the_ranking() -> None:
    ranked = fused(15)
    assert allocate_exploration(ranked, arms(), 0.0, 10, rng=1) == ranked[:10]


def test_exhausted_categories_return_slots_to_the_ranking() -> None:
    pool = [CategoryArm("tiny", 1.0, 1.0, ("t1", "r1"))]  # r1 is already in the top k
    served = allocate_exploration(fused(20), pool, share=0.5, k=10, rng=5)
    assert [item.item_id for item in served if item.explored] == ["t1"]
    assert len(served) == 10
    assert allocate_exploration(fused(20), [], 0.5, 10, rng=5) == fused(20)[:10]


def test_short_ranking_is_padded_by_exploration_only_up_to_share() -> None:
    served = allocate_exploration(fused(2), arms(), share=0.3, k=10, rng=9)
    assert len(served) == 5  # 2 fused + ⌊0.3·10⌋ explored
    assert sum(item.explored for item in served) == 3


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 30),
    st.floats(0.0, 1.0),
    st.integers(0, 15),
    st.integers(0, 2**32 - 1),
)
def test_allocation_invariants(n_ranked: int, share: float, k: int, seed: int) -> None:
    ranked = fused(n_ranked)
    served = allocate_exploration(ranked, arms(), share, k, rng=seed)
    ids = [item.item_id for item in served]
    assert len(ids) == len(set(ids)) <= k
    n_explored = sum(item.explored for item in served)
    assert n_explored <= exploration_slots(share, k)
    assert len(served) == min(k, n_ranked + n_explored)
    assert [item for item in served if not item.explored] == ranked[: len(served) - n_explored]
    for item in served:
        assert sum(item.contributions.values()) == pytest.approx(item.score, abs=1e-12)


def test_category_arm_validates_posterior() -> None:
    with pytest.raises(ValidationError):
        CategoryArm("x", 0.0, 1.0, ())

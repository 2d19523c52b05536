"""Sequential rules: directed next-item pairs and the weights of a user's source items."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import ValidationError
from recstream.models.sequence_rules import NextPair, next_pairs, source_weights

FAST = settings(max_examples=60, deadline=None)


def test_pairs_are_directed_weighted_by_step_and_stop_at_the_window() -> None:
    history = [("a", 0.0), ("b", 100.0), ("c", 200.0)]
    assert next_pairs(history, "d", 250.0, window_s=200.0, max_steps=5) == [
        NextPair("c", "d", 1.0, 250.0),
        NextPair("b", "d", 0.5, 250.0),
        # "a" is 250 s before: outside the 200 s window, and the walk stops there
    ]
    assert next_pairs(history, "d", 250.0, window_s=1e6, max_steps=2) == [
        NextPair("c", "d", 1.0, 250.0),
        NextPair("b", "d", 0.5, 250.0),
    ]


def test_a_reconsumed_item_makes_no_rules() -> None:
    assert next_pairs([("a", 0.0), ("b", 1.0)], "a", 2.0, window_s=10.0, max_steps=5) == []


def test_a_pair_without_a_known_order_goes_both_ways() -> None:
    pairs = next_pairs([("a", 5.0)], "b", 5.0, window_s=10.0, max_steps=5)
    assert pairs == [NextPair("a", "b", 1.0, 5.0), NextPair("b", "a", 1.0, 5.0)]
    late = next_pairs([("a", 9.0)], "b", 5.0, window_s=10.0, max_steps=5)  # arrived late
    assert {(p.source, p.following) for p in late} == {("a", "b"), ("b", "a")}
    assert all(p.ts == 9.0 for p in late)  # stamped with the later time


@pytest.mark.parametrize("window_s, steps", [(0.0, 1), (float("nan"), 1), (1.0, 0)])
def test_bad_parameters_are_refused(window_s: float, steps: int) -> None:
    with pytest.raises(ValidationError):
        next_pairs([], "a", 0.0, window_s=window_s, max_steps=steps)


@FAST
@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 1000)), max_size=12),
    st.sampled_from("abcdefghij"),
    st.floats(0, 1000),
    st.integers(1, 6),
)
def test_pairs_name_each_earlier_item_once_with_strength_one_over_its_step(
    history: list[tuple[str, float]], item: str, ts: float, steps: int
) -> None:
    distinct = list({i: t for i, t in history}.items())
    pairs = next_pairs(distinct, item, ts, window_s=300.0, max_steps=steps)
    forward = [p for p in pairs if p.following == item]
    assert len({p.source for p in forward}) == len(forward) <= steps
    for step, p in enumerate(forward, start=1):
        assert p.strength == 1.0 / step and p.ts >= ts
    if any(i == item for i, _ in distinct):
        assert pairs == []


def test_source_weights_are_linear_in_position_and_halve_with_age() -> None:
    history = [("a", 0.0), ("b", 3600.0)]
    w = source_weights(history, 3600.0, n_last=4, gap_half_life_s=3600.0)
    # b: the most recent (4/4), age 0; a: second (3/4), one half-life old.
    np.testing.assert_allclose(w, [0.75 * 0.5, 1.0])
    assert source_weights([], 0.0, n_last=3, gap_half_life_s=1.0).size == 0
    with pytest.raises(ValidationError):
        source_weights(history, 0.0, n_last=1, gap_half_life_s=1.0)

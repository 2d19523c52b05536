"""RankedRow: the kept order answers what sorting the whole row would."""

from __future__ import annotations

import heapq

from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.evaluation.ranked_rows import RankedRow

additions = st.lists(
    st.tuples(st.sampled_from([f"i{k}" for k in range(15)]), st.sampled_from([0.5, 1.0, 1 / 3])),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(adds=additions, n=st.integers(0, 20))
def test_top_is_the_sorted_row(adds: list[tuple[str, float]], n: int) -> None:
    row = RankedRow()
    reference: dict[str, float] = {}
    for key, amount in adds:
        row.add(key, amount)
        reference[key] = reference.get(key, 0.0) + amount
        want = heapq.nsmallest(n, reference.items(), key=lambda kv: (-kv[1], kv[0]))
        assert row.top(n) == want
    assert len(row) == len(reference)
    assert all(row.get(k) == v for k, v in reference.items())
    assert row.get("absent") == 0.0

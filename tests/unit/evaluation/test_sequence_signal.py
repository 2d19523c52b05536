"""The engine's sequence signal is the sequence-neighbourhood peer's score.

`SequenceKNN` (evaluation) and the engine's sequential rules (models: next_pairs learned into
SharedStats, read by sequence_scores) implement the same rule. Without eviction (fewer
distinct next items than the capacity) and without mass decay (a half-life of ~forever), the
engine's score of every candidate equals the peer's, for any stream of positive events.
"""

from __future__ import annotations

import numpy as np
import pytest
from baseline_events import event
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.evaluation.sequence_baselines import SequenceKNN
from recstream.models import decay
from recstream.models.batch_signals import sequence_scores
from recstream.models.catalog import Catalog
from recstream.models.sequence_rules import next_pairs
from recstream.models.shared_stats import SharedDelta, SharedStats

ITEMS = [f"m{n}" for n in range(10)]
N_LAST, STEPS, WINDOW, GAP = 4, 3, 600.0, 900.0
FOREVER = 1e15  # s: mass decay below float resolution over the stream


def catalog() -> Catalog:
    cat = Catalog(2, capacity=len(ITEMS))
    for n, item_id in enumerate(ITEMS):
        cat.upsert(item_id, np.array([1.0, n + 1.0], dtype=np.float32))
    return cat


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["u0", "u1"]), st.sampled_from(ITEMS), st.floats(0, 400)),
        min_size=1,
        max_size=25,
    )
)
def test_engine_sequence_scores_equal_the_peers(steps: list[tuple[str, str, float]]) -> None:
    peer = SequenceKNN(
        n_last=N_LAST, window_s=WINDOW, max_steps=STEPS, max_neighbours=100,
        gap_half_life_s=GAP, fill_window_s=60.0,
    )  # fmt: skip
    shared = SharedStats(
        1, popularity_half_life_s=1.0, covisit_half_life_s=1.0, covisit_capacity=1,
        sequence_half_life_s=FOREVER, sequence_capacity=100,
    )  # fmt: skip
    rate = decay.decay_rate(FOREVER)
    histories: dict[str, list[tuple[str, float]]] = {}
    ts = 0.0
    for user, item, gap in steps:
        ts += gap
        peer.learn_one(event(user, item, ts, "click"))
        history = histories.setdefault(user, [])
        delta = SharedDelta(0)
        for p in next_pairs(history, item, ts, window_s=WINDOW, max_steps=STEPS):
            delta.add_next(p.source, p.following, decay.log_term(p.strength, p.ts, rate))
        shared.apply(delta)
        history[:] = [(i, t) for i, t in history if i != item][-(max(N_LAST, STEPS) - 1) :]
        history.append((item, ts))
    cat = catalog()
    for user, history in histories.items():
        at = ts + 120.0
        ours = sequence_scores(shared, cat, history, at, n_last=N_LAST, gap_half_life_s=GAP)
        got = {cat.ids[r]: v for r, v in zip(ours.rows.tolist(), ours.values.tolist(), strict=True)}
        want = {i: v for i, v in peer.scores(user, at).items() if v > 0}
        assert got.keys() == want.keys()
        for item_id, value in want.items():
            assert got[item_id] == pytest.approx(value, rel=1e-9)


def test_the_example_stream_scores_something() -> None:
    """One rule m1 → m2 and a user whose latest item is m1 (weight 1 at age 0)."""
    shared = SharedStats(1, popularity_half_life_s=1.0, covisit_half_life_s=1.0, covisit_capacity=1)
    delta = SharedDelta(0)
    delta.add_next("m1", "m2", 0.0)
    shared.apply(delta)
    got = sequence_scores(shared, catalog(), [("m1", 0.0)], 0.0, n_last=2, gap_half_life_s=GAP)
    assert got.rows.tolist() == [2] and got.values.tolist() == [1.0]  # P(m2 | m1) = 1
    older = sequence_scores(shared, catalog(), [("m1", 0.0), ("m5", 0.0)], GAP, n_last=2,
                            gap_half_life_s=GAP)  # fmt: skip
    assert older.values.tolist() == [0.25]  # second most recent (1/2), one half-life old

"""The sequence model as the engine's "sasrec" signal: absent before a snapshot, present after,
its top items in the pool, and snapshots of another catalogue refused."""

from __future__ import annotations

import numpy as np
import pytest

from recstream.models import sasrec
from recstream.models.catalog import Catalog
from recstream.models.errors import SnapshotError
from recstream.models.interest_state import InterestParams
from recstream.models.recommender import SIGNAL_NAMES, EngineParams, Event, Recommender
from recstream.models.sasrec import SasrecParams, Snapshot
from recstream.models.user_record import UserRecord
from recstream.models.weights import WeightState

D = 8
N = 40
T0 = 1_700_000_000.0
IDS = tuple(f"i{n:02d}" for n in range(N))
COL = SIGNAL_NAMES.index("sasrec")
PARAMS = EngineParams(interest=InterestParams(dim=D), k=5, candidates_per_source=4,
                      exploration_share=0.0, sasrec_candidates=5)  # fmt: skip
SMALL = SasrecParams(dim=16, heads=1, layers=1, max_len=8, dropout=0.0, epochs=20,
                     batch_size=16, lr=1e-2, loss_share=1.0)  # fmt: skip


def catalog(ids: tuple[str, ...] = IDS) -> Catalog:
    rng = np.random.default_rng(7)
    c = Catalog(D, capacity=8)
    for n, item_id in enumerate(ids):
        c.upsert(item_id, rng.normal(size=D), [f"c{n % 4}"], ts=T0 - 3600.0 * n, title=item_id)
    return c


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    cat = catalog()
    seqs = [[IDS[(u + t) % N] for t in range(10)] for u in range(N)]
    return sasrec.train(seqs, list(cat.ids), cat.vectors[: cat.rows], SMALL, seed=2)


def lists(eng: Recommender, user: str = "u1") -> tuple[UserRecord, list]:  # type: ignore[type-arg]
    events = [Event(user, f"{user}-{n}", "click", T0 + 60.0 * n, IDS[n]) for n in range(4)]
    applied = eng.apply({}, events)
    return applied.states[user], eng.rank(applied)


def test_the_signal_is_absent_before_a_snapshot_and_present_after(snap: Snapshot) -> None:
    eng = Recommender(PARAMS, catalog(), PARAMS.shared_stats())
    rec, before = lists(eng)
    assert eng.model_version is None
    assert all(lst.model_version is None for lst in before)
    assert all(it.signals["sasrec"] == 0.0 for lst in before for it in lst.items)
    assert all(s.hi[COL] == s.lo[COL] == 0.0 for s in rec.served)
    eng.use_model(snap)
    rec, after = lists(eng, "u2")
    assert eng.model_version == snap.version and after[-1].model_version == snap.version
    assert any(s.hi[COL] > s.lo[COL] for s in rec.served)
    # The model's top next item (after i03 comes i04) is in the pool.
    assert eng.catalog.row_of["i04"] in after[-1].pool.tolist()
    eng.use_model(None)
    _, gone = lists(eng, "u3")
    assert gone[-1].model_version is None


def test_feedback_puts_no_weight_on_an_absent_signal() -> None:
    eng = Recommender(PARAMS, catalog(), PARAMS.shared_stats())
    first = eng.apply({}, [Event("u1", "e0", "click", T0, IDS[0])])
    (lst,) = eng.rank(first)
    rec = first.states["u1"]
    rec.weights = WeightState(np.full(len(SIGNAL_NAMES), 1.0 / len(SIGNAL_NAMES)))
    before = rec.weights.weights[COL]
    clicked = lst.items[0].item_id
    fb = eng.apply({"u1": rec}, [Event("u1", "e1", "click", T0 + 60, clicked, rec_id=lst.rec_id)])
    eng.rank(fb)
    after = fb.states["u1"].weights
    assert after.n == 1  # the update was applied ...
    assert after.weights[COL] <= before + 1e-12  # ... and gave the absent signal nothing


def test_a_snapshot_of_another_catalogue_or_width_is_refused(snap: Snapshot) -> None:
    other = Recommender(PARAMS, catalog(tuple(f"x{n}" for n in range(N))), PARAMS.shared_stats())
    with pytest.raises(SnapshotError, match="another catalogue"):
        other.use_model(snap)
    assert other.model_version is None
    wide = EngineParams(interest=InterestParams(dim=D + 1))
    eng = Recommender(wide, Catalog(D + 1), wide.shared_stats())
    with pytest.raises(SnapshotError, match="-d item vectors"):
        eng.use_model(snap)


def test_a_record_with_seven_signals_is_upgraded() -> None:
    """A record of the seven signals before `sasrec` gets weight 0 for it (and for the
    signals added after it)."""
    eng = Recommender(PARAMS, catalog(), PARAMS.shared_stats())
    old = eng.new_state()
    old.weights = WeightState(np.full(7, 1 / 7), n=2)
    applied = eng.apply({"u9": old}, [Event("u9", "e0", "click", T0, IDS[1])])
    eng.rank(applied)
    w = applied.states["u9"].weights
    assert w.k == len(SIGNAL_NAMES) == 9 and w.weights[COL] == 0.0 and w.weights[-1] == 0.0

"""The in-process replay ranks a micro-batch in chunks of `shared_refresh_events`, each
chunk's shared delta taken in before the next is ranked, as a worker does (agents/events.py)."""

from __future__ import annotations

import numpy as np

from recstream.config.settings import Settings
from recstream.evaluation.inprocess import InProcessResult, replay_inprocess
from recstream.evaluation.synthetic import SyntheticConfig, generate


def _replay(refresh: int, batch_size: int) -> list[tuple[str | None, tuple[str, ...]]]:
    data = generate(SyntheticConfig(n_items=40, n_users=6, events_per_user=30, seed=1))
    rng = np.random.default_rng(0)
    vectors = {}
    for item in data.items:
        v = rng.standard_normal(384).astype(np.float32)
        vectors[str(item["item_id"])] = v / np.linalg.norm(v)
    settings = Settings(trainer_every_events=0, shared_refresh_events=refresh)
    res: InProcessResult = replay_inprocess(
        settings, data.items, data.events, vectors, batch_size=batch_size
    )
    assert len(res.lists) == len(data.events)
    return [(lst.event_id, lst.items) for lst in res.lists]


def test_chunks_of_one_give_the_lists_of_batches_of_one() -> None:
    # Every list ranks with the shared statistics of every earlier event, as with one event
    # per batch; only the states' byte round trip (once per batch) differs, below the lists.
    assert _replay(refresh=1, batch_size=50) == _replay(refresh=1, batch_size=1)


def test_one_chunk_per_batch_ranks_with_the_statistics_before_the_batch() -> None:
    fresh, stale = _replay(refresh=1, batch_size=50), _replay(refresh=50, batch_size=50)
    assert fresh[:1] == stale[:1]  # the first event: nothing learnt before it either way
    assert sum(a != b for a, b in zip(fresh, stale, strict=True)) > len(fresh) // 2

"""Micro-benchmark of the per-user interest state: update latency and serialized size.

Embedding is excluded: item and query vectors are random unit vectors computed up front, and
events are built before timing, so the figure is InterestState.update alone (de-duplication
hashing, validation, both horizon vectors, category evidence, bookkeeping).
Targets (design card): p50 <= 50 µs per update, <= 4096 bytes per user at dim 384.
"""

from __future__ import annotations

import time
import uuid

import numpy as np

from recstream.models.errors import ValidationError
from recstream.models.interest_state import InterestEvent, InterestParams, InterestState
from recstream.models.vocabulary import EVENT_TYPES

# Event mix of the synthetic generator's defaults (evaluation/synthetic.py), so the bench exercises
# each branch of update() about as often as live traffic does.
_EVENT_SHARES = np.array([0.52, 0.20, 0.06, 0.03, 0.05, 0.06, 0.06, 0.02])
_N_CATEGORIES = 20
_N_ITEMS = 5000


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def run_state_bench(
    n_users: int = 2000, events_per_user: int = 50, dim: int = 384, seed: int = 0
) -> dict[str, float | int]:
    """Time InterestState.update per event (perf_counter_ns) over synthetic users.

    Returns update_us_p50 / update_us_p99 (microseconds per update), bytes_per_user (mean
    len(to_bytes()) after all events), and the inputs dim, n_users, events_per_user.
    Deterministic inputs for a given seed; timings depend on the machine.
    """
    if n_users < 1 or events_per_user < 1 or dim < 1:
        raise ValidationError("n_users, events_per_user and dim must be >= 1")
    rng = np.random.default_rng(seed)
    params = InterestParams(dim=dim)
    item_vecs = _unit_rows(rng, _N_ITEMS, dim)
    query_vecs = _unit_rows(rng, 256, dim)
    labels = [f"cat{i:02d}" for i in range(_N_CATEGORIES)]
    # Each item has one or two categories, as in the synthetic catalogue.
    item_cats: list[tuple[str, ...]] = []
    for _ in range(_N_ITEMS):
        n = 1 + int(rng.random() < 0.3)
        item_cats.append(tuple(labels[j] for j in rng.choice(_N_CATEGORIES, n, replace=False)))
    shares = _EVENT_SHARES / _EVENT_SHARES.sum()

    timings = np.empty(n_users * events_per_user, dtype=np.int64)
    sizes = np.empty(n_users, dtype=np.int64)
    t0 = 1_700_000_000.0
    i = 0
    clock = time.perf_counter_ns
    for u in range(n_users):
        state = InterestState(params)
        types = rng.choice(len(EVENT_TYPES), events_per_user, p=shares)
        items = rng.integers(0, _N_ITEMS, events_per_user)
        gaps = rng.exponential(3600.0, events_per_user)
        ts = t0 + float(rng.uniform(0, 30 * 86_400)) + np.cumsum(gaps)
        calls: list[tuple[InterestEvent, np.ndarray | None, tuple[str, ...], np.ndarray | None]]
        calls = []
        for j in range(events_per_user):
            etype = EVENT_TYPES[int(types[j])]
            event_id = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | u << 16 | j))
            if etype == "search":
                event = InterestEvent(event_id, etype, float(ts[j]))
                calls.append((event, None, (), query_vecs[int(items[j]) % 256]))
            else:
                item = int(items[j])
                value = float(rng.integers(1, 11)) / 2.0 if etype == "rate" else None
                event = InterestEvent(event_id, etype, float(ts[j]), f"item-{item}", value)
                calls.append((event, item_vecs[item], item_cats[item], None))
        update = state.update
        for event, item_vec, cats, text_vec in calls:
            start = clock()
            update(event, item_vec, cats, text_vec)
            timings[i] = clock() - start
            i += 1
        sizes[u] = len(state.to_bytes())
    return {
        "update_us_p50": round(float(np.percentile(timings, 50)) / 1000.0, 2),
        "update_us_p99": round(float(np.percentile(timings, 99)) / 1000.0, 2),
        "bytes_per_user": round(float(sizes.mean()), 1),
        "dim": dim,
        "n_users": n_users,
        "events_per_user": events_per_user,
    }


if __name__ == "__main__":  # pragma: no cover - manual runs; the CLI wires `recstream bench state`
    print(run_state_bench())

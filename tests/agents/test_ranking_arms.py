"""Exploration arms: each category's items in popularity order, cached with the snapshot."""

from __future__ import annotations

import math
import random
import time
from types import SimpleNamespace
from typing import Any, cast

from recstream.agents.ranking import FusedRanker
from recstream.config.settings import Settings


def ranker_with(category_items: dict[str, set[str]]) -> FusedRanker:
    runtime = SimpleNamespace(category_items=category_items)
    return FusedRanker(Settings(), cast(Any, None), cast(Any, runtime))


def test_arm_order_is_popularity_then_id_and_follows_the_snapshot() -> None:
    rng = random.Random(7)
    items = [f"i{n}" for n in range(300)]
    cats = {c: {i for i in items if rng.random() < 0.3} for c in ("a", "b", "c")}
    ranker = ranker_with(cats)
    popular = {i: rng.choice([-1.0, 0.0, 2.5, rng.random()]) for i in items[:200]}
    # A snapshot fresh enough to be served from the cache (monotonic time, cache_s ≥ 0.05 s).
    ranker._popular = (time.monotonic() + 3600, popular)
    order = ranker.arm_order()
    for c, members in cats.items():
        assert order[c] == sorted(members, key=lambda i: (-popular.get(i, -math.inf), i))

    # Same snapshot: the cached order is reused even if the catalogue grew meanwhile...
    cats["a"].add("new")
    assert "new" not in ranker.arm_order()["a"]
    # ...and a refreshed snapshot rebuilds it, with the new item ranked by its popularity.
    fresh = {**popular, "new": 99.0}
    ranker._popular = (time.monotonic() + 7200, fresh)
    assert ranker.arm_order()["a"][0] == "new"

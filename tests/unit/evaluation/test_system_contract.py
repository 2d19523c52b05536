"""One contract over the engine and every baseline (evaluation/systems.py): one list per event,
in order; at most k distinct items; nothing the user consumed up to the event; deterministic;
and prequential: a list depends only on the events up to its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from recstream.evaluation.baselines import (
    DecayedPopularity,
    ItemKNNCoVisit,
    StaticEmbeddingSimilarity,
)
from recstream.evaluation.oracle import TrueInterestOracle
from recstream.evaluation.sequence_baselines import RecentPopularity, SequenceKNN
from recstream.evaluation.synthetic import SyntheticConfig, generate
from recstream.evaluation.systems import BaselineSystem, EngineSystem, System
from recstream.models.catalog import Catalog
from recstream.models.interest_state import InterestParams
from recstream.models.recommender import EngineParams, Recommender
from recstream.models.vocabulary import CONSUMED_EVENT_TYPES

K = 10
DATA = generate(SyntheticConfig(n_items=80, n_users=12, events_per_user=14, seed=3))
EVENTS = [dict(e, text=None) for e in DATA.events]  # texts need an encoder: left out here
RNG = np.random.default_rng(0)
VECTORS = {str(i["item_id"]): RNG.standard_normal(16).astype(np.float32) for i in DATA.items}


def engine() -> System:
    catalog = Catalog(16)
    for item in DATA.items:
        item_id = str(item["item_id"])
        catalog.upsert(item_id, VECTORS[item_id], tuple(item.get("categories") or ()))
    params = EngineParams(interest=InterestParams(dim=16), k=K, candidates_per_source=20)
    return EngineSystem(Recommender(params, catalog, params.shared_stats()), partitions=2)


FACTORIES: dict[str, Callable[[], System]] = {
    "engine": engine,
    "popularity": lambda: BaselineSystem(DecayedPopularity(half_life_s=7 * 86_400.0), K),
    "item_knn": lambda: BaselineSystem(ItemKNNCoVisit(), K),
    "static_embedding": lambda: BaselineSystem(StaticEmbeddingSimilarity(VECTORS), K),
    "recent_popularity": lambda: BaselineSystem(RecentPopularity(window_s=86_400.0), K),
    "sequence_knn": lambda: BaselineSystem(SequenceKNN(), K),
    "oracle": lambda: BaselineSystem(TrueInterestOracle(DATA), K),
}


def run(factory: Callable[[], System], events: list[dict[str, Any]], batch: int) -> list[Any]:
    system = factory()
    out = []
    for start in range(0, len(events), batch):
        out += system.process(events[start : start + batch])
    return out


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_one_list_per_event_in_order_without_consumed_items(name: str) -> None:
    lists = run(FACTORIES[name], EVENTS, batch=25)
    assert [e for e, _ in lists] == [str(e["event_id"]) for e in EVENTS]
    consumed: dict[str, set[str]] = {}
    for event, (_, items) in zip(EVENTS, lists, strict=True):
        user = str(event["user_id"])
        if event.get("item_id") is not None and event["event_type"] in CONSUMED_EVENT_TYPES:
            consumed.setdefault(user, set()).add(str(event["item_id"]))
        assert len(items) <= K and len(set(items)) == len(items)
        assert not set(items) & consumed.get(user, set()), (name, event["event_id"])
    assert any(items for _, items in lists)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_deterministic(name: str) -> None:
    assert run(FACTORIES[name], EVENTS, 25) == run(FACTORIES[name], EVENTS, 25)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_list_depends_only_on_the_events_up_to_it(name: str) -> None:
    full = run(FACTORIES[name], EVENTS, batch=1)
    cut = len(EVENTS) // 2
    prefix = run(FACTORIES[name], EVENTS[:cut], batch=1)
    assert prefix == full[:cut]

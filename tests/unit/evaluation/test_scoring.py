"""Tests for recstream.evaluation.scoring: baselines ranked in batches score as one by one."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
from rich.console import Console

from recstream.config.settings import Settings
from recstream.evaluation.baselines import BatchRanking, StaticEmbeddingSimilarity
from recstream.evaluation.prequential import ScoreCard, is_target
from recstream.evaluation.scoring import run_baselines
from recstream.evaluation.synthetic import SyntheticConfig, generate


class OneByOne:
    """A baseline seen through `Recommender` only: every prediction ranked when asked."""

    def __init__(self, inner: StaticEmbeddingSimilarity) -> None:
        self.inner = inner

    def learn_one(self, event: Mapping[str, Any]) -> None:
        self.inner.learn_one(event)

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        return self.inner.predict_one(user_id, at_ts, k, exclude)


def _cards(card: ScoreCard) -> tuple[Any, ...]:
    return card.ids, card.users, card.tops, card.hit, card.ild, card.n_missing


def test_batch_ranked_predictions_score_like_predictions_one_by_one() -> None:
    """More targets than one rank chunk, so cases wait for their chunk and the queue drains
    in event order; the cards must be those of ranking each prediction when it is made."""
    data = generate(SyntheticConfig(n_items=120, n_users=20, n_topics=4, events_per_user=40))
    rng = np.random.default_rng(3)
    vectors = {str(i["item_id"]): rng.normal(size=8) for i in data.items}
    events = [dict(e) for e in data.events]
    batched = StaticEmbeddingSimilarity(vectors)
    assert isinstance(batched, BatchRanking)
    assert not isinstance(OneByOne(batched), BatchRanking)

    def run(model: Any) -> tuple[dict[str, ScoreCard], dict[str, ScoreCard]]:
        return run_baselines(
            events, {"static": model}, lambda e: is_target(e, views_are_targets=True),
            settings=Settings(), item_users={}, n_users=0, vectors=vectors,
            console=Console(quiet=True),
        )  # fmt: skip

    warm, cold = run(batched)
    warm_one, cold_one = run(OneByOne(StaticEmbeddingSimilarity(vectors)))
    assert len(warm["static"]) > 256
    assert _cards(warm["static"]) == _cards(warm_one["static"])
    assert _cards(cold["static"]) == _cards(cold_one["static"])

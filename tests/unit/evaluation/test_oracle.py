"""The synthetic evaluation's ceiling: the generator's own probability of the next item."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from recstream.config.settings import Settings
from recstream.evaluation.baselines import DecayedPopularity, ItemKNNCoVisit
from recstream.evaluation.oracle import TrueInterestOracle
from recstream.evaluation.prequential import is_target
from recstream.evaluation.run import _interacting_users
from recstream.evaluation.scoring import run_baselines
from recstream.evaluation.sequence_baselines import RecentPopularity, SequenceKNN
from recstream.evaluation.synthetic import SyntheticConfig, generate

DATA = generate(SyntheticConfig(n_items=200, n_users=30, events_per_user=60, seed=5))


def test_probabilities_are_topic_interest_times_popularity_within_the_topic() -> None:
    oracle = TrueInterestOracle(DATA)
    user, ts = DATA.user_ids[3], float(DATA.events[len(DATA.events) // 2]["ts"])
    p = oracle.probabilities(user, ts)
    assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
    ids = sorted(DATA.item_popularity)
    truth = DATA.true_interest(user, ts)
    for k, topic in enumerate(DATA.topics):
        members = [j for j, i in enumerate(ids) if DATA.item_topic[i] == topic]
        assert p[members].sum() == pytest.approx(truth[k])  # the topic's share is its interest
        pops = np.array([DATA.item_popularity[ids[j]] for j in members])
        np.testing.assert_allclose(p[members] / p[members].sum(), pops / pops.sum())


def test_lists_skip_excluded_items_and_follow_the_probabilities() -> None:
    oracle = TrueInterestOracle(DATA)
    user, ts = DATA.user_ids[0], float(DATA.events[0]["ts"])
    best = oracle.predict_one(user, ts, 5)
    p = dict(zip(sorted(DATA.item_popularity), oracle.probabilities(user, ts), strict=True))
    assert [p[i] for i in best] == sorted((p[i] for i in best), reverse=True)
    assert max(v for i, v in p.items() if i not in best) <= p[best[-1]]
    rest = oracle.predict_one(user, ts, 5, exclude=set(best[:2]))
    assert rest[:3] == best[2:] and not set(rest) & set(best[:2])


def test_no_baseline_beats_the_oracle_in_the_same_prequential_run() -> None:
    models = {
        "oracle": TrueInterestOracle(DATA),
        "popularity": DecayedPopularity(half_life_s=7 * 86_400.0),
        "item_knn": ItemKNNCoVisit(),
        "recent_popularity": RecentPopularity(),
        "sequence_knn": SequenceKNN(),
    }
    item_users, n_users = _interacting_users(DATA.events)
    warm, _ = run_baselines(
        DATA.events, models, lambda e: is_target(e, views_are_targets=True), settings=Settings(),
        item_users=item_users, n_users=n_users, vectors=None, console=Console(quiet=True),
    )  # fmt: skip
    hr = {name: card.summary(len(DATA.items))["hr@10"] for name, card in warm.items()}
    assert hr["oracle"] > 1.2 * max(v for name, v in hr.items() if name != "oracle"), hr

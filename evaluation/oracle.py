"""The ceiling of a synthetic evaluation: a ranker that knows how the generator draws events.

On generated data (synthetic.py) a positive event at time t draws a topic k from the user's
true interest p(t), then an item of that topic by its popularity within the topic. The
probability that the next positive event is item i is therefore

    P(i | user, t) = p_topic(i)(t) · w_i / Σ_{j in topic(i)} w_j        (w: true popularity)

and ranking the items a list may show (the user's consumed items excluded, as for every
system) by it maximises the expected HR@k of a list made at t. No system that sees only the
events can do better in expectation, so `oracle`'s row in a synthetic report is the protocol's
ceiling, not a peer: it is left out wherever "the best other system" is meant. The list is
made at the user's previous event (the protocol's prediction time), so a user whose interest
drifts or switches before the target still costs the oracle something.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from recstream.evaluation.baselines import _check_k, _rank
from recstream.evaluation.synthetic import SyntheticDataset

#: The system name under which evaluations report the oracle.
ORACLE = "oracle"


class TrueInterestOracle:
    """The generator's own probability of each item as the user's next positive event
    (``Recommender`` protocol of baselines.py: ``learn_one`` learns nothing)."""

    def __init__(self, dataset: SyntheticDataset) -> None:
        self._data = dataset
        self._ids = sorted(dataset.item_popularity)
        topic_of = {t: k for k, t in enumerate(dataset.topics)}
        self._topic = np.array([topic_of[dataset.item_topic[i]] for i in self._ids])
        pop = np.array([dataset.item_popularity[i] for i in self._ids], dtype=np.float64)
        per_topic = np.bincount(self._topic, weights=pop, minlength=len(dataset.topics))
        self._within = pop / per_topic[self._topic]  # every topic has an item (synthetic.py)

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Nothing to learn: the ground truth is known."""

    def probabilities(self, user_id: str, at_ts: float) -> np.ndarray:
        """P(item | user, at_ts) of every item (sorted ids), summing to 1."""
        return self._data.true_interest(user_id, at_ts)[self._topic] * self._within

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        _check_k(k)
        return _rank(self._ids, self.probabilities(user_id, at_ts), k, exclude)

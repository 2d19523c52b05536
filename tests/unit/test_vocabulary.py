"""One event vocabulary: every module takes event types and rating thresholds from
recstream.models.vocabulary, so they agree at every threshold."""

from __future__ import annotations

from typing import get_args

import pytest

from recstream.config import settings
from recstream.evaluation import baselines, movielens, prequential, synthetic
from recstream.models import vocabulary as v
from recstream.models.interest_state import InterestParams, rating_weight
from recstream.models.weights import feedback_sign
from recstream.streams import schemas


def test_every_module_shares_the_event_types() -> None:
    assert get_args(schemas.EventIn.model_fields["event_type"].annotation) == v.EVENT_TYPES
    assert settings.EVENT_TYPES is v.EVENT_TYPES
    assert synthetic.EVENT_TYPES is v.EVENT_TYPES
    assert set(InterestParams().event_weights) | {"rate"} == set(v.EVENT_TYPES)
    assert set(v.FEEDBACK_SIGNS) | {"rate", "search"} == set(v.EVENT_TYPES)
    assert set(v.EVENT_TYPES) == v.CONSUMED_EVENT_TYPES | v.TEXT_EVENT_TYPES
    assert v.POSITIVE_EVENT_TYPES | v.NEGATIVE_EVENT_TYPES == v.CONSUMED_EVENT_TYPES
    assert v.ALWAYS_TARGET_TYPES <= v.POSITIVE_EVENT_TYPES
    assert set(baselines.DEFAULT_EVENT_WEIGHTS) <= v.POSITIVE_EVENT_TYPES


@pytest.mark.parametrize(
    ("rating", "weight", "sign", "ml_type", "target"),
    [
        (5.0, 4.0, 1, "rate", True),
        (4.0, 4.0, 1, "rate", True),
        (3.5, 0.5, 0, "view", False),
        (2.5, 0.5, 0, "view", False),
        (2.0, -4.0, -1, "dislike", False),
        (0.5, -4.0, -1, "dislike", False),
    ],
)
def test_rating_thresholds_agree(
    rating: float, weight: float, sign: int, ml_type: str, target: bool
) -> None:
    assert rating_weight(rating) == weight
    assert feedback_sign("rate", rating) == sign
    assert movielens._event_type(rating) == ml_type
    event = {"item_id": "i", "event_type": "rate", "value": rating}
    assert prequential.is_target(event) is target


def test_the_baselines_keep_their_own_laxer_rating_cut() -> None:
    assert baselines.DEFAULT_MIN_RATING == v.BASELINE_MIN_RATING < v.RATING_POSITIVE
    assert prequential.DEFAULT_MIN_TARGET_RATING == v.RATING_POSITIVE

"""The event vocabulary: event types, what each type means, default weights, rating thresholds.

Every other module takes these from here (the wire schema, settings, the interest state, the
feedback signs of the η rule, the MovieLens loader, the synthetic generator, the evaluation's
targets and baselines), so that one edit changes them everywhere.

Ratings are on the 1–5 (MovieLens: 0.5–5) star scale.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, get_args

EventType = Literal["view", "click", "add_to_cart", "purchase", "rate", "search", "skip", "dislike"]
"""The event types of the wire format (streams/schemas.py validates against this)."""

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
"""Every event type in a fixed order (the synthetic generator draws its shares in this order)."""

TEXT_EVENT_TYPES: frozenset[str] = frozenset({"search"})
"""Events that carry a query instead of an item."""

CONSUMED_EVENT_TYPES: frozenset[str] = frozenset(EVENT_TYPES) - TEXT_EVENT_TYPES
"""Events whose item counts as consumed (excluded from recommendations): all but search."""

NEGATIVE_EVENT_TYPES: frozenset[str] = frozenset({"skip", "dislike"})
"""Events that reject their item."""

POSITIVE_EVENT_TYPES: frozenset[str] = CONSUMED_EVENT_TYPES - NEGATIVE_EVENT_TYPES
"""Events whose item the user engaged with (a rate event of a low rating is still one)."""

ALWAYS_TARGET_TYPES: frozenset[str] = frozenset({"click", "add_to_cart", "purchase"})
"""Positive consumption whatever the data set: the evaluation always predicts these."""

# --- rating thresholds ----------------------------------------------------------------------
RATING_POSITIVE = 4.0
"""A rating >= this is positive: interest weight +4 (`rating_weight`), feedback sign +1, an
evaluation target, a MovieLens "rate" event, a synthetic "loved the" review."""

RATING_NEGATIVE = 2.0
"""A rating <= this is negative: interest weight −4, feedback sign −1, a MovieLens "dislike"
event, a synthetic "disappointing" review. Strictly between the two thresholds a rating is
lukewarm: interest weight +0.5, feedback sign 0, a MovieLens "view"."""

BASELINE_MIN_RATING = 3.5
"""The in-process baselines learn a rate event as positive feedback from this rating up; below
it a rate event teaches them nothing. It is the baselines' own, laxer cut, deliberately not
RATING_POSITIVE (which decides the evaluation's targets): the two differ only for a rate event
rated in [3.5, 4), on half-star data a 3.5 of the synthetic generator (MovieLens rate events are
all >= RATING_POSITIVE; its 2.5–3.5 ratings arrive as views)."""

# --- weights --------------------------------------------------------------------------------
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "view": 1.0,
        "click": 2.0,
        "add_to_cart": 4.0,
        "purchase": 8.0,
        "search": 1.5,
        "skip": -1.0,
        "dislike": -4.0,
    }
)
"""Signed interest weight per event type; "rate" is absent because it is weighted by its rating
(`recstream.models.interest_state.rating_weight`)."""

RATING_WEIGHT_POSITIVE = 4.0
"""Interest weight of a rating >= RATING_POSITIVE (like an add-to-cart)."""
RATING_WEIGHT_NEGATIVE = -4.0
"""Interest weight of a rating <= RATING_NEGATIVE (like a dislike)."""
RATING_WEIGHT_NEUTRAL = 0.5
"""Interest weight of a lukewarm rating (it still shows interest in the topic)."""

BASELINE_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "view": 1.0,
        "click": 1.0,
        "add_to_cart": 2.0,
        "purchase": 3.0,
        "rate": 1.0,
    }
)
"""Weight of each positive event type for the in-process baselines; types not listed (search,
skip, dislike) weigh 0. Deliberately not DEFAULT_EVENT_WEIGHTS: the baselines learn only
from positive events, with their own small integer weights, and "rate" has a plain weight."""

# Event types the serving layer emits, mapped to the sign of the weight update (the η rule,
# recstream.models.weights.feedback_sign; "rate" takes its sign from the rating thresholds).
# - Consumption (click, add_to_cart, purchase) is positive: the user picked this item over the
#   rest of the list, which is exactly the comparison d − μ encodes.
# - skip and dislike are negative: the item was rejected, so the signals that put it there
#   lose weight.
# - view is neutral (0). Views fire for whatever is on screen, mostly the top slots, which the
#   currently heaviest signals put there; counting them as positive would reward the ranking
#   for its own position bias and lock in the current weights (a feedback loop).
FEEDBACK_SIGNS: Mapping[str, int] = MappingProxyType(
    {
        "click": 1,
        "add_to_cart": 1,
        "purchase": 1,
        "skip": -1,
        "dislike": -1,
        "view": 0,
    }
)

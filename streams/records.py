"""Records Faust serializes: the recommendations output, dead letters and internal topics.

All are JSON on the wire without Faust's `__faust` metadata, so that any consumer (not only
Faust) can read them. Inbound schemas (events, items) are validated in schemas.py.
"""

from __future__ import annotations

import faust


class AsOf(faust.Record, include_metadata=False, serializer="json"):
    """The last event a list reflects: its event_id and event time (epoch seconds)."""

    event_id: str
    ts: float


class RecommendedItem(faust.Record, include_metadata=False, serializer="json"):
    """One item of a list; `contributions` per signal add up to `score`."""

    item_id: str
    score: float
    contributions: dict[str, float]
    title: str | None = None
    signals: dict[str, float] | None = None
    """Normalised signal values in [0, 1] as served (the weight update's d and μ)."""


class Recommendation(faust.Record, include_metadata=False, serializer="json"):
    """A refreshed top-K list for one user (topic `recommendations`, key user_id).

    `ts` is the wall-clock publish time (epoch s); `as_of` is event time.
    """

    user_id: str
    rec_id: str
    ts: float
    as_of: AsOf
    ranker: str
    items: list[RecommendedItem]
    weights: dict[str, float]
    top_interests: list[dict[str, float | str]]
    signal_bounds: dict[str, list[float]] | None = None
    """Raw per-signal min/max over the list's candidates (scale for feedback off the list)."""
    model_version: int | None = None
    """Version of the sequence-model snapshot whose "sasrec" signal the list used (None: no
    snapshot had arrived; the signal was absent)."""


class DeadLetter(faust.Record, include_metadata=False, serializer="json"):
    """A record that could not be decoded or validated, with the original bytes.

    `value_b64`/`key_b64` hold the original bytes (base64); `value_text` repeats the value
    when it was valid UTF-8, for people reading the topic.
    """

    source_topic: str
    partition: int
    offset: int
    reason: str
    error: str
    key_b64: str | None
    value_b64: str | None
    value_text: str | None
    size: int
    ts: float


class ItemVector(faust.Record, include_metadata=False, serializer="json"):
    """Internal: an item's embedding (base64 float32, L2-normalised) for `text_key`."""

    item_id: str
    text_key: str
    vec: str | None

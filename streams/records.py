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


class ItemHit(faust.Record, include_metadata=False, serializer="json"):
    """Internal: one interaction with an item, repartitioned by item_id for popularity.

    `flush=True` marks a control record (sent by a timer to one partition) that makes the
    partition's owner broadcast its pending popularity changes; it carries no interaction.
    """

    item_id: str
    event_id: str
    ts: float
    weight: float
    flush: bool = False


class EmbedRequest(faust.Record, include_metadata=False, serializer="json"):
    """Internal: an item text to embed (keyed by item_id). `text_key` = model id + text hash."""

    item_id: str
    text: str
    text_key: str


class ItemVector(faust.Record, include_metadata=False, serializer="json"):
    """Internal: an item's embedding (base64 float32, L2-normalised) for `text_key`."""

    item_id: str
    text_key: str
    vec: str | None


class UserText(faust.Record, include_metadata=False, serializer="json"):
    """Internal: a validated event with text, waiting for its embedding (keyed by user_id).

    `event` is the validated event as JSON; `event_id` its (possibly derived) id.
    """

    event: str
    event_id: str
    text_key: str


class EmbeddedText(faust.Record, include_metadata=False, serializer="json"):
    """Internal: an event with text and the text's embedding, ready for the user state."""

    event: str
    event_id: str
    vec: str | None


class CoVisitIncrements(faust.Record, include_metadata=False, serializer="json"):
    """Internal: one consumption's decayed co-visitation increments to one item's neighbours
    (keyed by item_id).

    Parallel lists: increment i adds ``weights[i]`` (> 0) to neighbour ``neighbours[i]`` at
    event time ``ts[i]`` (s). One record per (consumption, item) instead of one per pair: a
    consumption next to five recent items is 6 records, not 10, and 6 changelog writes.
    """

    item_id: str
    neighbours: list[str]
    weights: list[float]
    ts: list[float]
    increments_id: str = ""
    """event_id of the consumption + the item: for de-duplication (the same event always makes
    the same increments, so a redelivered record is skipped whole)."""

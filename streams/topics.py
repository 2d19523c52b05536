"""Topic declarations: names and partition counts from Settings, declared once per app."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from recstream.config.settings import Settings
from recstream.streams.records import DeadLetter, ItemHit, Recommendation


@dataclass(frozen=True)
class Topics:
    """Every topic the pipeline reads or writes.

    `events` and `items` are consumed as raw bytes: decoding happens in the agents so that a
    bad record becomes a dead letter instead of an exception inside Faust's deserializer.
    """

    events: faust.TopicT
    items: faust.TopicT
    recommendations: faust.TopicT
    dead_letters: faust.TopicT
    item_hits: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    return Topics(
        events=app.topic(
            settings.topic(settings.events_topic),
            partitions=settings.events_partitions,
            **raw,
        ),
        items=app.topic(
            settings.topic(settings.items_topic),
            partitions=settings.items_partitions,
            **raw,
        ),
        recommendations=app.topic(
            settings.topic(settings.recommendations_topic),
            key_type=str,
            value_type=Recommendation,
            key_serializer="raw",
            partitions=settings.recommendations_partitions,
        ),
        dead_letters=app.topic(
            settings.topic(settings.dead_letter_topic),
            key_type=str,
            value_type=DeadLetter,
            key_serializer="raw",
            partitions=settings.dead_letter_partitions,
        ),
        # Internal repartition by item_id, feeding the popularity table.
        item_hits=app.topic(
            settings.topic(f"{settings.app_id}-item-hits"),
            key_type=str,
            value_type=ItemHit,
            key_serializer="raw",
            partitions=settings.events_partitions,
            internal=True,
        ),
    )

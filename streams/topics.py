"""Topic declarations: names and partition counts from Settings, declared once per app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from recstream.config.settings import Settings
from recstream.streams.admin import internal_topic, internal_topic_specs
from recstream.streams.records import DeadLetter, ItemVector, Recommendation


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
    item_vectors: faust.TopicT


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }

    internal_specs = internal_topic_specs(settings)

    def internal(name: str, value_type: type) -> faust.TopicT:
        # Keyed like their source topic, with the same partition count (streams/admin.py, which
        # also creates them), so that every hop stays on the partition that owns the key.
        full = internal_topic(settings, name)
        return app.topic(
            full,
            key_type=str,
            value_type=value_type,
            key_serializer="raw",
            partitions=internal_specs[full],
            internal=True,
        )

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
        item_vectors=internal("item-vectors", ItemVector),
    )

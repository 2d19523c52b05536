"""Routing of records that fail decoding, validation or processing to the dead-letter topic."""

from __future__ import annotations

import logging

import faust

from recstream.streams.codecs import dead_letter
from recstream.streams.topics import Topics

log = logging.getLogger(__name__)


async def send_dead_letter(topics: Topics, event: faust.types.EventT, error: Exception) -> None:
    """Send the failed record, with its original bytes, source position and reason."""
    msg = event.message
    key = event.key if isinstance(event.key, bytes) else None
    value = event.value if isinstance(event.value, bytes) else None
    record = dead_letter(
        source_topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=key,
        value=value,
        error=error,
    )
    log.warning(
        "dead letter from %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, record.reason
    )
    await topics.dead_letters.send(key=f"{msg.topic}:{msg.partition}:{msg.offset}", value=record)

"""Routing of records that fail decoding, validation or processing to the dead-letter topic."""

from __future__ import annotations

import logging

import faust

from recstream.streams.codecs import dead_letter
from recstream.streams.topics import Topics

log = logging.getLogger(__name__)


def _raw(decoded: object, raw: object) -> bytes | None:
    # Source topics read raw bytes (event.key/value are the bytes). Internal topics hand the
    # agent a deserialized record; the message then still holds the bytes as they arrived.
    if isinstance(decoded, bytes):
        return decoded
    return raw if isinstance(raw, bytes) else None


async def send_dead_letter(topics: Topics, event: faust.types.EventT, error: BaseException) -> None:
    """Send the failed record, with its original bytes, source position and reason.

    Building the record cannot raise on any bytes or message (see `codecs.dead_letter`), so a
    hostile record always ends here as a dead letter, never as an agent crash.
    """
    msg = event.message
    record = dead_letter(
        source_topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=_raw(event.key, msg.key),
        value=_raw(event.value, msg.value),
        error=error,
    )
    log.warning(
        "dead letter from %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, record.reason
    )
    await topics.dead_letters.send(
        key=f"{record.source_topic}:{msg.partition}:{msg.offset}", value=record
    )

"""The user-events agent: validate → update the user's state → repartition hits → publish.

Partitioned by user (the `events` key). Runs with concurrency 1 because it writes tables.
A record that cannot be decoded or validated goes to the dead letters; so does one whose
processing raises, so that a worker never crashes on data and the records after it are all
processed.
"""

from __future__ import annotations

import logging

import faust

from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.publisher import ListPublisher
from recstream.agents.state import interest_params, load_user_state
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.errors import RecstreamError, ValidationError
from recstream.models.interest_state import InterestEvent
from recstream.streams.codecs import Limits, decode_event
from recstream.streams.records import ItemHit
from recstream.streams.schemas import EventIn
from recstream.streams.topics import Topics

log = logging.getLogger(__name__)


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_payload_bytes=settings.max_payload_bytes,
        min_event_ts=settings.min_event_ts,
        max_future_s=settings.max_future_s,
        max_text_chars=settings.max_text_chars,
    )


def derived_event_id(event: faust.types.EventT) -> str:
    """An id for events sent without one: their position in the source topic.

    The position is stable across redelivery, which is what de-duplication needs.
    """
    msg = event.message
    return f"{msg.topic}:{msg.partition}:{msg.offset}"


def register_events(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    publisher: ListPublisher,
) -> faust.types.AgentT:
    limits = limits_from(settings)
    params = interest_params(settings)

    async def handle(ev: EventIn, event_id: str) -> None:
        state = load_user_state(tables.user_state.get(ev.user_id), params)
        item = tables.catalog.get(ev.item_id) if ev.item_id else None
        categories = list(item.get("categories", ())) if item else []
        applied = state.update(
            InterestEvent(
                event_id=event_id,
                event_type=ev.event_type,
                ts=ev.ts,
                item_id=ev.item_id,
                value=ev.value,
            ),
            item_vec=None,
            categories=categories,
            text_vec=None,
        )
        if not applied:
            return  # a duplicate (at-least-once redelivery): state and outputs stay as they are
        tables.user_state[ev.user_id] = state.to_bytes()
        weight = params.weight_of(ev.event_type, ev.value)
        if ev.item_id is not None and weight > 0:
            await topics.item_hits.send(
                key=ev.item_id,
                value=ItemHit(item_id=ev.item_id, event_id=event_id, ts=ev.ts, weight=weight),
            )
        await publisher.on_user_event(ev.user_id, state, event_id)

    @app.agent(topics.events, name=f"{settings.app_id}.events", concurrency=1)
    async def events(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                ev = decode_event(event.value, limits)
            except ValidationError as exc:
                await send_dead_letter(topics, event, exc)
                continue
            key = event.key.decode("utf-8", "replace") if isinstance(event.key, bytes) else None
            if key != ev.user_id:
                # State is partitioned by user: a record keyed otherwise is re-sent once,
                # keyed by its user_id, so that it reaches the partition owning that user.
                await topics.events.send(key=ev.user_id.encode("utf-8"), value=event.value)
                continue
            try:
                await handle(ev, ev.event_id or derived_event_id(event))
            except RecstreamError as exc:
                await send_dead_letter(topics, event, exc)
            except faust.exceptions.FaustError:
                raise  # a deployment problem (e.g. partition mismatch), not bad data: fail loudly
            except Exception as exc:  # noqa: BLE001 - a worker never crashes on data
                log.exception("processing failed for an event of user %s", ev.user_id)
                await send_dead_letter(topics, event, RuntimeError(f"processing failed: {exc!r}"))

    return events

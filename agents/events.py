"""The user-events agents: validate → feedback → update the user's state → fan out → publish.

Partitioned by user (the `events` key); every agent here writes tables and runs with
concurrency 1. One event, in order:

1. decode and validate; a bad record goes to the dead letters (the worker never crashes on
   data), a record keyed by something other than its user_id is re-sent keyed right;
2. an event with text (a search query, a review) waits for its embedding: it goes to the
   batched text embedder and comes back on `user-text-vectors` (step 3 then runs there);
3. `apply_event`: skip a duplicate (event_id already applied); feedback moves the user's and
   the partition's global fusion weights (the η rule); the interest state takes the item's
   vector, categories and any text vector; co-visitation pairs and popularity hits are
   repartitioned by item; a list is published (debounced).
"""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import faust
import numpy as np

from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.embedding import EmbeddingRuntime, decode_vector, encode_vector
from recstream.agents.offsets import OffsetGapGuard
from recstream.agents.publisher import ListPublisher
from recstream.agents.ranking import FusedRanker, UserRanking
from recstream.agents.routing import reroute
from recstream.agents.state import interest_params, load_user_state
from recstream.agents.tables import Tables
from recstream.agents.windows import (
    SEP,
    WindowTables,
    add_user_categories,
    user_window_counts,
)
from recstream.config.settings import Settings
from recstream.models.covisitation import pair_increments
from recstream.models.errors import RecstreamError, ValidationError
from recstream.models.interest_posterior import category_evidence_from_text
from recstream.models.interest_state import InterestEvent
from recstream.models.item_text import clean_text, text_key
from recstream.models.weights import WeightState, feedback_sign
from recstream.streams.codecs import Limits, decode_event
from recstream.streams.records import CoVisitIncrements, EmbeddedText, ItemHit, UserText
from recstream.streams.schemas import EventIn
from recstream.streams.topics import Topics

log = logging.getLogger(__name__)


def limits_from(settings: Settings) -> Limits:
    return Limits.from_settings(settings)


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
    runtime: EmbeddingRuntime,
    ranker: FusedRanker,
    windows: WindowTables,
) -> dict[str, faust.types.AgentT]:
    limits = limits_from(settings)
    params = interest_params(settings)

    async def apply_event(
        ev: EventIn, event_id: str, partition: int, text_vec: np.ndarray | None = None
    ) -> None:
        state = load_user_state(tables.user_state.get(ev.user_id), params)
        if state.has_seen(event_id):
            return  # a duplicate (at-least-once redelivery): state and outputs stay as they are
        ranking = UserRanking.load(tables.user_ranking.get(ev.user_id))

        # Feedback on the lists served so far moves the fusion weights (before the state
        # changes: d is measured as the list was served).
        if ev.item_id is not None and settings.ranker == "fused":
            sign = feedback_sign(ev.event_type, ev.value)
            served = (tables.served_lists.get(ev.user_id) or {}).get("lists") or []
            moved = ranker.feedback(ranking, served, state, ev.item_id, sign, ev.rec_id)
            if moved is not None:
                key = f"p{partition}"
                current = tables.global_weights.get(key)
                gw = (
                    WeightState.from_dict(current["weights"])
                    if current
                    else WeightState.uniform(len(moved[0]))
                )
                if gw.update(moved[0], moved[1], ranker.eta_global, sign=sign):
                    tables.global_weights[key] = {"weights": gw.to_dict()}

        item_vec = runtime.item_vector(ev.item_id) if ev.item_id else None
        categories = list(runtime.item_categories.get(ev.item_id, ())) if ev.item_id else []
        if ev.item_id and not categories:
            meta = tables.catalog.get(ev.item_id)
            categories = list((meta or {}).get("categories") or ())
        text_categories = None
        if text_vec is not None:
            centroids = runtime.category_centroids()
            if centroids is not None:
                labels, matrix = centroids
                shares = category_evidence_from_text(text_vec, matrix)
                text_categories = dict(zip(labels, (float(x) for x in shares), strict=True))
        state.update(
            InterestEvent(
                event_id=event_id,
                event_type=ev.event_type,
                ts=ev.ts,
                item_id=ev.item_id,
                value=ev.value,
            ),
            item_vec=item_vec,
            categories=categories,
            text_vec=text_vec,
            text_categories=text_categories,
        )
        weight = params.weight_of(ev.event_type, ev.value)
        if ev.item_id is not None and weight > 0:
            increments = pair_increments(
                ranking.recent,
                ev.item_id,
                ev.ts,
                window_s=settings.covisit_window_s,
                gap_half_life_s=settings.covisit_window_s / 2,
            )
            # Sorted by item_id: one record per item carries all of this event's increments
            # to that item's neighbours.
            for target, group in itertools.groupby(increments, key=lambda inc: inc.item_id):
                incs = list(group)
                await topics.covisit_pairs.send(
                    key=target,
                    value=CoVisitIncrements(
                        item_id=target,
                        neighbours=[inc.neighbour_id for inc in incs],
                        weights=[inc.weight for inc in incs],
                        ts=[inc.ts for inc in incs],
                        increments_id=f"{event_id}{SEP}{target}",
                    ),
                )
            ranking.recent = [(i, t) for i, t in ranking.recent if i != ev.item_id]
            ranking.recent.append((ev.item_id, ev.ts))
            ranking.recent = ranking.recent[-settings.covisit_recent :]
            await topics.item_hits.send(
                key=ev.item_id,
                value=ItemHit(item_id=ev.item_id, event_id=event_id, ts=ev.ts, weight=weight),
            )
        if weight > 0 and categories:
            add_user_categories(windows, ev.user_id, categories, ev.ts)
            # Windowed values are read inside the stream (where the store knows the
            # partition) and kept with the user's ranking state for inspection.
            ranking.window_counts = user_window_counts(windows, ev.user_id, ev.ts)
        tables.user_state[ev.user_id] = state.to_bytes()
        tables.user_ranking[ev.user_id] = ranking.dump()
        await publisher.on_user_event(ev.user_id, state, event_id)

    async def guarded(event: faust.types.EventT, coro: Any, user_id: str) -> None:
        try:
            await coro
        except RecstreamError as exc:
            await send_dead_letter(topics, event, exc)
        except faust.exceptions.FaustError:
            raise  # a deployment problem (e.g. partition mismatch), not bad data: fail loudly
        except Exception as exc:
            log.exception("processing failed for an event of user %s", user_id)
            await send_dead_letter(topics, event, RuntimeError(f"processing failed: {exc!r}"))

    guard_events = OffsetGapGuard(app, [topics.events.get_topic_name()])

    @app.agent(topics.events, name=f"{settings.app_id}.events", concurrency=1)
    async def events(stream: faust.StreamT) -> None:
        encoder = await runtime.encoder()
        async for event in guard_events.events(stream):
            try:
                ev = decode_event(event.value, limits)
            except ValidationError as exc:
                await send_dead_letter(topics, event, exc)
                continue
            except Exception as exc:
                await send_dead_letter(topics, event, ValidationError(f"undecodable: {exc!r}"))
                continue
            key = event.key if isinstance(event.key, bytes) else None
            move = reroute(ev.user_id, key, event.message.partition, settings.events_partitions)
            if move is not None:
                # State is partitioned by user (murmur2, as Faust's tables and web routes): a
                # record keyed otherwise or placed by another partitioner is re-sent once, to
                # the owner's partition, and applied there (agents/routing.py).
                await topics.events.send(key=move.key, value=event.value, partition=move.partition)
                continue
            event_id = ev.event_id or derived_event_id(event)
            if ev.text and clean_text(ev.text):
                await topics.user_texts.send(
                    key=ev.user_id,
                    value=UserText(
                        event=ev.model_dump_json(),
                        event_id=event_id,
                        text_key=text_key(encoder.model_id, clean_text(ev.text)),
                    ),
                )
                continue
            await guarded(event, apply_event(ev, event_id, event.message.partition), ev.user_id)

    guard_user_texts = OffsetGapGuard(app, [topics.user_texts.get_topic_name()])

    @app.agent(topics.user_texts, name=f"{settings.app_id}.text-embedder", concurrency=1)
    async def text_embedder(stream: faust.StreamT) -> None:
        async for events in guard_user_texts.batches(
            stream, settings.embed_batch_size, settings.embed_wait_s
        ):
            batch = [event.value for event in events]
            texts = [clean_text(json.loads(r.event).get("text") or "") for r in batch]
            vectors = await runtime.embed([r.text_key for r in batch], texts)
            for req, vec in zip(batch, vectors, strict=True):
                user_id = json.loads(req.event)["user_id"]
                await topics.user_text_vectors.send(
                    key=user_id,
                    value=EmbeddedText(
                        event=req.event,
                        event_id=req.event_id,
                        vec=None if vec is None else encode_vector(vec),
                    ),
                )

    guard_user_text_vectors = OffsetGapGuard(app, [topics.user_text_vectors.get_topic_name()])

    @app.agent(topics.user_text_vectors, name=f"{settings.app_id}.user-text", concurrency=1)
    async def user_text(stream: faust.StreamT) -> None:
        async for event in guard_user_text_vectors.events(stream):
            rec = event.value
            try:
                ev = EventIn.model_validate_json(rec.event)
                vec = None if rec.vec is None else decode_vector(rec.vec)
            except Exception as exc:
                await send_dead_letter(
                    topics, event, ValidationError(f"corrupt text record: {exc}")
                )
                continue
            await guarded(
                event, apply_event(ev, rec.event_id, event.message.partition, vec), ev.user_id
            )

    return {"events": events, "text_embedder": text_embedder, "user_text": user_text}

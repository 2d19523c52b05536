"""The user-events agent: a thin micro-batch shell around the engine (models/recommender.py).

Partitioned by user (the `events` key); concurrency 1, since it writes tables. One batch (at
most `batch_max_events` records, or what arrived within `batch_wait_s`), in order:

1. decode and validate each record; a bad one goes to the dead letters (the worker never
   crashes on data), a record placed on another partition than its user's (another
   partitioner, another key) is re-sent once to the owner's partition (agents/routing.py);
2. embed the batch's texts (search queries, reviews) in one call, through the vector cache;
3. read each user's record once; `engine.apply` then `engine.rank` the batch in chunks of
   `shared_refresh_events`, each chunk's shared-statistics delta written (one record per
   partition and chunk) and taken in before the next chunk is ranked, its lists sent: in a
   burst of one user's events the later ones see what the earlier ones taught;
4. write each changed user once; Faust acks the batch after this body.

Debounce (`debounce_s` > 0): the engine ranks each user once per chunk (after its last event
there), and a user gets at most one list per `debounce_s` wall seconds; a list held back is
replaced by the user's newer ones and sent by a timer when the interval ends, so the last list
sent reflects the user's last event.

An event the engine refuses is dead-lettered and the rest of the batch applied; if a chunk
fails as a whole (a bug, not data), its users' records are restored and its events retried
one by one, and only the events that fail again are dead-lettered; a user record that cannot
be encoded at the batch's end keeps the stored one and dead-letters that user's events of the
batch. Duplicates (an event id already applied: at-least-once redelivery) change nothing and
publish nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import numpy as np
import orjson

from recstream.agents.current_event import as_current_event
from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.engine_runtime import EngineRuntime
from recstream.agents.offsets import OffsetGapGuard
from recstream.agents.routing import reroute
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.catalog import Catalog
from recstream.models.errors import RecstreamError, ValidationError
from recstream.models.item_text import clean_text, text_key
from recstream.models.recommender import Applied, Event, ListPolicy, RecList, Recommender
from recstream.models.shared_stats import SharedDelta
from recstream.models.user_record import UserRecord
from recstream.streams.codecs import Limits, decode_event
from recstream.streams.schemas import EventIn
from recstream.streams.topics import Topics

log = logging.getLogger(__name__)

#: Co-visit pairs per shared-delta record at most (keeps records far below Kafka's 1 MB).
DELTA_PAIRS_PER_RECORD = 4000


def derived_event_id(event: faust.types.EventT) -> str:
    """An id for events sent without one: their position in the source topic.

    The position is stable across redelivery, which is what de-duplication needs.
    """
    msg = event.message
    return f"{msg.topic}:{msg.partition}:{msg.offset}"


@dataclass(frozen=True)
class Decoded:
    """One good record of a batch: the Faust event, its validated payload and its id."""

    event: faust.types.EventT
    payload: EventIn
    event_id: str


@dataclass
class BatchWork:
    """A batch's user records while its chunks run (`states`: as loaded, then as each chunk
    left them; None: a new user) and the users some chunk changed (written at the end)."""

    states: dict[str, UserRecord | None]
    changed: set[str] = field(default_factory=set)

    def keep(self, users: Sequence[str]) -> dict[str, bytes]:
        """The encoded records of those of `users` an earlier chunk changed: what a failed
        chunk restores (the others are still as in the table)."""
        out: dict[str, bytes] = {}
        for user in dict.fromkeys(users):
            rec = self.states.get(user)
            if user in self.changed and rec is not None:
                out[user] = rec.to_bytes()
        return out


class EventsShell:
    """Reads a batch → calls the engine → writes each changed key once → sends."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        tables: Tables,
        runtime: EmbeddingRuntime,
        engine_rt: EngineRuntime,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.tables = tables
        self.runtime = runtime
        self.engine_rt = engine_rt
        self.limits = Limits.from_settings(settings)
        self.policy: ListPolicy = (
            "none"
            if not settings.publish_lists
            else ("every" if settings.debounce_s <= 0 else "last")
        )
        self.published = 0
        self._last_sent: dict[str, float] = {}  # user → monotonic time of its last list
        self._pending: dict[str, tuple[RecList, Catalog]] = {}  # lists held back by debounce

    async def decode(self, batch: Sequence[faust.types.EventT]) -> list[Decoded]:
        """The batch's good records in order; bad ones dead-lettered, misplaced ones moved."""
        out: list[Decoded] = []
        for event in batch:
            try:
                ev = decode_event(event.value, self.limits)
            except ValidationError as exc:
                await send_dead_letter(self.topics, event, exc)
                continue
            except Exception as exc:
                await send_dead_letter(self.topics, event, ValidationError(f"undecodable: {exc!r}"))
                continue
            key = event.key if isinstance(event.key, bytes) else None
            move = reroute(
                ev.user_id, key, event.message.partition, self.settings.events_partitions
            )
            if move is not None:
                await self.topics.events.send(
                    key=move.key, value=event.value, partition=move.partition
                )
                continue
            out.append(Decoded(event, ev, ev.event_id or derived_event_id(event)))
        return out

    async def to_engine(self, decoded: Sequence[Decoded], model_id: str) -> list[Event]:
        """Engine events, with the batch's texts embedded in one call (cached by text)."""
        texts = {i: clean_text(d.payload.text) for i, d in enumerate(decoded) if d.payload.text}
        texts = {i: t for i, t in texts.items() if t}
        vectors: dict[int, np.ndarray | None] = {}
        if texts:
            keys = [text_key(model_id, t) for t in texts.values()]
            found = await self.runtime.embed(keys, list(texts.values()))
            vectors = dict(zip(texts, found, strict=True))
        return [
            Event(
                user_id=d.payload.user_id,
                event_id=d.event_id,
                event_type=d.payload.event_type,
                ts=d.payload.ts,
                item_id=d.payload.item_id,
                value=d.payload.value,
                rec_id=d.payload.rec_id,
                text_vec=vectors.get(i),
                shard=d.event.message.partition,
            )
            for i, d in enumerate(decoded)
        ]

    def load_states(self, decoded: Sequence[Decoded]) -> dict[str, UserRecord | None]:
        """Each user's record, read once under an event of the user's own partition."""
        states: dict[str, UserRecord | None] = {}
        for d in decoded:
            if d.payload.user_id not in states:
                states[d.payload.user_id] = self.stored(d)
        return states

    def stored(self, d: Decoded) -> UserRecord | None:
        """The table's record of `d`'s user, read under `d` (the user's own partition)."""
        with as_current_event(d.event):
            return self.engine_rt.load_state(self.tables.user_state.get(d.payload.user_id))

    async def process(self, batch: Sequence[faust.types.EventT]) -> None:
        if self.engine_rt.needs_scan:
            self.engine_rt.scan(self.tables.shared_deltas, self.tables.catalog)
        decoded = await self.decode(batch)
        if not decoded:
            return
        encoder = await self.runtime.encoder()
        events = await self.to_engine(decoded, encoder.model_id)
        engine = self.engine_rt.engine(encoder.dim, ranking=True)
        work = BatchWork(self.load_states(decoded))
        size = self.settings.shared_refresh_events
        for a in range(0, len(events), size):
            await self.run_safely(engine, decoded[a : a + size], events[a : a + size], work)
        await self.write_states(work, decoded)
        self.engine_rt.ranked(events)

    async def run_safely(
        self, engine: Recommender, decoded: Sequence[Decoded], events: list[Event], work: BatchWork
    ) -> None:
        """Apply and rank one chunk, then publish it. Should the engine fail on the chunk as
        a whole (a bug, not data), its users' records are restored and its events retried one
        by one; an event that fails alone is dead-lettered."""
        kept = work.keep([ev.user_id for ev in events])
        try:
            applied = engine.apply(work.states, events, lists=self.policy)
            lists = engine.rank(applied)
        except Exception as exc:
            self.restore(work, kept, decoded)
            if len(events) == 1:
                log.exception("processing failed for an event of user %s", events[0].user_id)
                failure = RuntimeError(f"processing failed: {exc!r}")
                await send_dead_letter(self.topics, decoded[0].event, failure)
                return
            log.exception("a chunk of %d events failed; retrying them one by one", len(events))
            for d, ev in zip(decoded, events, strict=True):
                await self.run_safely(engine, [d], [ev], work)
            return
        await self.publish(applied, lists, decoded, work, engine.catalog)

    def restore(self, work: BatchWork, kept: dict[str, bytes], decoded: Sequence[Decoded]) -> None:
        """The chunk's users as before it: from `kept` if the batch had changed them, else
        from the table (the engine updates records in place)."""
        for d in decoded:
            user = d.payload.user_id
            work.states[user] = (
                self.engine_rt.load_state(kept[user]) if user in kept else self.stored(d)
            )

    async def publish(
        self,
        applied: Applied,
        lists: Sequence[RecList],
        decoded: Sequence[Decoded],
        work: BatchWork,
        catalog: Catalog,
    ) -> None:
        """A chunk's effects: its refused events dead-lettered, its delta written and taken in
        (the next chunk ranks with it), its lists sent; its records kept for the batch's end."""
        work.states.update(applied.states)
        work.changed.update(applied.states)
        by_id = {d.event_id: d for d in decoded}
        for event_id, reason in applied.rejected:
            await send_dead_letter(self.topics, by_id[event_id].event, ValidationError(reason))
        self.write_deltas(applied.deltas, decoded)
        for lst in lists:
            if self.due(lst.user_id):
                await self.send(lst, catalog)
            else:
                self._pending[lst.user_id] = (lst, catalog)

    async def write_states(self, work: BatchWork, decoded: Sequence[Decoded]) -> None:
        """Each user the batch changed, once, under its last event (its partition). A record
        that cannot be encoded (a bug: to_bytes refuses what it could not read back) keeps
        the stored one, and that user's events of the batch are dead-lettered."""
        last = {d.payload.user_id: d.event for d in decoded}
        for user in work.changed:
            rec = work.states.get(user)
            if rec is None:
                continue
            try:
                raw = rec.to_bytes()
            except Exception as exc:
                log.exception("the record of user %s could not be stored", user)
                failure = RuntimeError(f"user record not stored: {exc!r}")
                for d in decoded:
                    if d.payload.user_id == user:
                        await send_dead_letter(self.topics, d.event, failure)
                continue
            with as_current_event(last[user]):
                self.tables.user_state[user] = raw

    def due(self, user_id: str) -> bool:
        """With debounce, a user gets a list at most every `debounce_s` wall seconds."""
        last = self._last_sent.get(user_id)
        return last is None or time.monotonic() - last >= self.settings.debounce_s

    async def send(self, lst: RecList, catalog: Catalog) -> None:
        self._pending.pop(lst.user_id, None)
        await self.topics.recommendations.send(
            key=lst.user_id, value=wire(lst, catalog), value_serializer="raw"
        )
        if self.settings.debounce_s > 0:
            self._last_sent[lst.user_id] = time.monotonic()
        self.published += 1

    async def flush_due(self) -> None:
        """Send the held-back lists whose interval has ended (the newest list of each user:
        it reflects the user's last event so far). Sends need no table context."""
        for user_id in [u for u in self._pending if self.due(u)]:
            lst, catalog = self._pending[user_id]
            await self.send(lst, catalog)

    def write_deltas(self, deltas: dict[int, SharedDelta], decoded: Sequence[Decoded]) -> None:
        """One delta record (or a few pieces) per partition of the batch, applied here too:
        Faust does not read a worker's own writes back from the changelog."""
        last_of: dict[int, faust.types.EventT] = {}
        for d in decoded:
            last_of[d.event.message.partition] = d.event
        for shard, delta in deltas.items():
            if not delta or shard not in last_of:
                continue
            event = last_of[shard]
            for j, piece in enumerate(delta.split(DELTA_PAIRS_PER_RECORD)):
                key = f"{shard}:{event.message.offset}:{j}"
                with as_current_event(event):
                    self.tables.shared_deltas[key] = piece.to_dict()
                self.engine_rt.apply_delta(key, piece)


def wire(lst: RecList, catalog: Catalog) -> bytes:
    """The output record of a list, encoded: the JSON of streams/records.py Recommendation
    (publish time `ts` is the wall clock, here). orjson, not Faust's model layer: building a
    Record and encoding it with the standard library cost ~0.5 ms per list."""
    titles, rows = catalog.titles, catalog.row_of
    named = {r.item_id: titles[rows[r.item_id]] for r in lst.items if r.item_id in rows}
    record = lst.to_dict(named)
    record["ts"] = time.time()
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def register_events(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    runtime: EmbeddingRuntime,
    engine_rt: EngineRuntime,
) -> dict[str, faust.types.AgentT]:
    shell = EventsShell(settings, topics, tables, runtime, engine_rt)
    guard = OffsetGapGuard(app, [topics.events.get_topic_name()])
    if settings.debounce_s > 0:
        app.timer(interval=max(settings.debounce_s / 4, 0.05))(shell.flush_due)

    async def rescan(sender: Any, tps: set[Any], **_: Any) -> None:
        engine_rt.needs_scan = True  # partitions moved: the stores may hold unread records

    app.on_partitions_assigned.connect(rescan)  # type: ignore[arg-type]

    @app.agent(topics.events, name=f"{settings.app_id}.events", concurrency=1)
    async def events(stream: faust.StreamT) -> None:
        await runtime.encoder()
        async for batch in guard.batches(stream, settings.batch_max_events, settings.batch_wait_s):
            try:
                await shell.process(batch)
            except RecstreamError as exc:
                # Not data (decode errors are handled per record): e.g. the encoder failed.
                log.error("batch of %d events not processed: %s", len(batch), exc)
                for event in batch:
                    await send_dead_letter(topics, event, exc)

    return {"events": events}

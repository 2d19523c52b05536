"""Guarding agents against records that the Faust consumer skips (no good event is lost).

faust-streaming 0.15 has a race around recovery and rebalancing: records fetched while the
flow is suspended are discarded although the fetch position has already moved past them
(faust-streaming issues #216, #596). The consumer then sees the next record jump ahead and,
taking the jump for compaction, marks the missing offsets as a "gap" that counts as acked:
the offset commit moves past records nobody processed. After a worker crash this lost events
in our restart test, a few percent of a partition at a time.

Our source topics are append-only (cleanup.policy=delete) and written without transactions,
so their offsets are consecutive and a jump is a loss, not a gap. `OffsetGapGuard` therefore

1. stops Faust from filling gaps on the guarded topics (so the commit waits at the hole), and
2. watches the offsets an agent receives; on a jump it seeks the partition back to the first
   missing offset and drops the records that ran ahead (they are fetched again after the
   seek; duplicates are harmless, every stateful update is de-duplicated by event id).

A loss at the end of a partition shows no jump (no later record arrives), so a timer also
compares, per partition, the offset the consumer has read up to with the next offset the
agent expects: when the agent's queue is empty and the consumer is ahead, twice in a row,
the records in between were dropped and the partition is sought back the same way. Faust
forgets what it has read when it seeks to committed offsets after a rebalance, and on a
partition with no commit yet it does not seek at all; records fetched while the worker was
still recovering are then dropped with no trace in Faust's bookkeeping (seen when events
arrive while a second worker joins). The check therefore asks the Kafka client for its
fetch position whenever Faust has no read offset but the log holds records the agent has
not seen.

Agents that read micro-batches (`stream.take_events`) use `guard.batches(...)`: the same
check per record, and records waiting in the batch buffer count as queued, so a long
encode is not mistaken for a loss.

A seek that comes back above its target is usually Faust dropping the re-read records (a
batch fetched before the seek moved its read offset past them) and is simply repeated. Only if
it keeps coming back three times, RESEEK_AFTER_S apart, are the offsets taken as really missing
(a transactional producer's control records, or compaction done by an operator): the guard
then accepts the gap and hands it to Faust as before, so commits go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust

log = logging.getLogger(__name__)

RESEEK_AFTER_S = 5.0  # wall seconds a seek may take to show its first record before it is redone
POSITION_TIMEOUT_S = 2.0  # wall seconds to wait for the Kafka client's fetch position
QUICK_RESEEKS = 3  # re-seeks made at once when a seek comes back above its target ...
QUICK_RESEEK_GAP_S = 0.5  # ... and after those, at most one per this many wall seconds
SEEK_ATTEMPTS = 3  # seeks after which a jump that keeps coming back is taken as real
CHECK_INTERVAL_S = 1.0  # wall seconds between checks for records dropped at a partition's end


@dataclass
class _Seeking:
    target: int  # the first missing offset, where the partition was sought back to
    ran_ahead: int  # the highest offset dropped since the seek
    since: float  # monotonic time of the latest seek
    counted_at: float  # monotonic time of the latest counted attempt
    attempts: int = 1  # counted attempts: evidence, RESEEK_AFTER_S apart, of missing offsets
    quick: int = 0  # re-seeks made at once after the seek came back above its target


class OffsetGapGuard:
    """Per-partition check that an agent's offsets are consecutive; seeks back on a jump.

    Agents iterate `guard.events(stream)` instead of `stream.events()`; underneath,
    `admit(event)` is called for every event: False means "drop this record, it will come
    again". One guard per agent (its offsets are the agent's own); the state is per worker
    process and reset when partitions are revoked or assigned.
    """

    def __init__(self, app: faust.App, topics: Iterable[str]) -> None:
        """Create at registration time (the idle check is an app timer); `install` it when
        the agent starts."""
        self.app = app
        self.topics = frozenset(topics)
        self._backlog: Callable[[], int] = lambda: 0
        self._buffered = 0  # records in a take buffer, not yet handed to `admit` (batches)
        self._suspect: dict[Any, tuple[int, int]] = {}  # tp → (read offset, expected) seen
        app.timer(interval=CHECK_INTERVAL_S)(self._check_idle)
        self._expected: dict[Any, int] = {}  # tp → next offset this agent should receive
        self._seeking: dict[Any, _Seeking] = {}
        self.seeks = 0  # seeks issued (exposed for tests and stats)
        self.accepted_gaps = 0  # jumps confirmed after a seek (genuinely missing offsets)
        self._installed = False
        self._active = False  # only with a running Kafka consumer (not under test_context)

    def install(self, stream: faust.StreamT | None = None) -> None:
        """Stop Faust from treating jumps on the guarded topics as acked gaps.

        Called when the agent starts (the consumer exists then), with the agent's stream
        (its queue tells whether records wait). An instance attribute wraps the consumer's
        `_add_gap`; topics not guarded keep Faust's behaviour.
        """
        if stream is not None:
            # Set on every start: a restarted agent iterates a new stream.
            queue: Any = stream.channel.queue  # type: ignore[attr-defined]
            self._backlog = lambda: int(queue.qsize()) + self._buffered
        if self._installed:
            return
        self._installed = True
        try:
            consumer = self.app.consumer
            original = consumer._add_gap  # type: ignore[attr-defined]
        except Exception:  # no Kafka consumer at all: nothing to guard
            return
        if not getattr(consumer, "started", False):
            return  # agent.test_context(): events are put by hand, no fetch to go wrong
        self._active = True
        log.info("offset guard on %s", ", ".join(sorted(self.topics)))
        if getattr(original, "_recstream_guarded", None) is not None:
            original._recstream_guarded.update(self.topics)
            return
        guarded = set(self.topics)

        async def add_gap(tp: Any, offset_from: int, offset_to: int) -> None:
            if tp.topic in guarded:
                return  # the agent's guard decides (seek back, or accept_gap)
            await original(tp, offset_from, offset_to)

        add_gap._recstream_guarded = guarded  # type: ignore[attr-defined]
        add_gap._recstream_original = original  # type: ignore[attr-defined]
        consumer._add_gap = add_gap  # type: ignore[attr-defined]

        async def moved(sender: Any, tps: set[Any], **_: Any) -> None:
            self.forget(tps)

        self.app.on_partitions_revoked.connect(moved)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(moved)  # type: ignore[arg-type]

    async def events(self, stream: faust.StreamT) -> AsyncIterator[Any]:
        """The stream's events in offset order, without the records `admit` drops.

        Installs the guard first. Dropped records are acked like any other (the commit still
        waits at the hole: gap filling is off), and come again after the seek.
        """
        self.install(stream)
        async for event in stream.events():
            if await self.admit(event):
                yield event

    async def batches(
        self, stream: faust.StreamT, max_: int, within: float
    ) -> AsyncIterator[list[Any]]:
        """Micro-batches of the stream's events (Faust's `take_events`: at most `max_`
        events, or what arrived within `within` wall seconds), without the records `admit`
        drops; a batch left empty by the drops is not yielded.

        Installs the guard first. Records in the take buffer count as queued for the end
        check (they have reached the agent, only not yet `admit`). All events of a batch,
        dropped ones too, are acked when the next batch is asked for, as with `events`.
        """
        self.install(stream)

        def entered(value: Any) -> Any:
            # A stream processor: runs for every record that reaches the stream (Faust skips
            # the dropped ones before processors), before take's own buffer processor.
            self._buffered += 1
            return value

        stream.add_processor(entered)
        try:
            async for batch in stream.take_events(max_, within):  # type: ignore[attr-defined]
                self._buffered = max(self._buffered - len(batch), 0)
                admitted = [event for event in batch if await self.admit(event)]
                if admitted:
                    yield admitted
        finally:
            self._buffered = 0
            with contextlib.suppress(AttributeError, ValueError):  # already gone
                stream._processors.remove(entered)  # type: ignore[attr-defined]

    async def prefetched_batches(
        self, stream: faust.StreamT, max_: int, within: float, *, ack: bool = True
    ) -> AsyncIterator[list[Any]]:
        """Micro-batches of at most `max_` events, read ahead while the caller works.

        Faust's `take_events` stops reading the stream while its caller holds a batch and,
        once the caller is done, waits the full `within` to fill the next one: an encoder that
        takes a second per batch idles through both, and its batches hold only what the stream
        delivered in `within` (100-125 of 256 in the embedding bench). Here a reader task keeps
        admitting events (up to `max_` ahead of the batch being worked on) and a batch is
        handed out as soon as it is asked for: at once when `max_` events wait or the oldest
        has waited `within` (the usual case after a long batch), else when one of those comes
        true. `within` is thus the longest an event waits for company, as the setting says.

        Dropped records (`admit` False) are acked at once; a batch's events when the next
        batch is asked for (or the iteration ends), as with `batches`, or with `ack` False by
        the caller (`stream.ack`), who may then keep a batch in work past the next one.
        Installs the guard.
        """
        self.install(stream)
        ready: deque[tuple[float, Any]] = deque()  # (monotonic arrival, event), admitted
        first = asyncio.Event()  # an event waits
        full = asyncio.Event()  # max_ events wait
        room = asyncio.Event()  # the reader may read on
        room.set()
        acks_were = stream.enable_acks
        stream.enable_acks = False  # acked here, once their batch is done

        async def read() -> None:
            async for event in stream.events():
                if not await self.admit(event):
                    await stream.ack(event)
                    continue
                ready.append((time.monotonic(), event))
                first.set()
                if len(ready) >= max_:
                    full.set()
                    room.clear()
                    await room.wait()

        reader = asyncio.ensure_future(read())
        try:
            while True:
                while not ready:
                    first.clear()
                    await _until(first, reader, None)
                    if reader.done() and not ready:
                        reader.result()  # the reader's error, if any
                        return  # the stream ended
                deadline = ready[0][0] + within
                while len(ready) < max_ and not reader.done():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    full.clear()
                    await _until(full, reader, left)
                batch = [ready.popleft()[1] for _ in range(min(max_, len(ready)))]
                if len(ready) < max_:
                    room.set()
                try:
                    yield batch
                finally:
                    for event in batch if ack else ():
                        await stream.ack(event)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            stream.enable_acks = acks_were

    def forget(self, tps: Iterable[Any]) -> None:
        """Partitions that moved: their next offset is whatever comes first."""
        for tp in tps:
            self._expected.pop(tp, None)
            self._seeking.pop(tp, None)
            self._suspect.pop(tp, None)

    async def _check_idle(self) -> None:
        """Seek back a partition whose last records were read but never reached the agent."""
        if not self._active:
            return
        consumer: Any = self.app.consumer
        try:
            backlog = self._backlog()
            read = dict(consumer._read_offset)
            expecting = dict(self._expected)
            # A partition the agent has not seen a record of since it was assigned starts
            # where the group committed (auto_offset_reset=earliest: 0 when never committed).
            for tp in consumer.assignment():
                if tp.topic in self.topics and tp not in expecting:
                    expecting[tp] = consumer._committed_offset.get(tp) or 0
        except Exception:
            return
        if backlog:
            self._suspect.clear()
            return
        for tp, expected in expecting.items():
            seeking = self._seeking.get(tp)
            if seeking is not None:
                self._suspect.pop(tp, None)
                if time.monotonic() - seeking.since > RESEEK_AFTER_S:
                    # Nothing queued and the seek's records never came (dropped again, e.g.
                    # by a rebalance in between): seek once more.
                    log.warning(
                        "seek of %s[%d] to %d delivered nothing; seeking again",
                        tp.topic,
                        tp.partition,
                        seeking.target,
                    )
                    await self._reseek(tp, seeking)
                continue
            last_read = read.get(tp)
            # Faust keeps the last offset read, except that its seeks store the next one: a
            # read offset equal to `expected` means a record was read only if one exists.
            if last_read == expected and not self._exists(consumer, tp, expected):
                last_read = None
            if last_read is None and self._exists(consumer, tp, expected):
                # Faust has no read offset (reset by its seek to committed offsets) although
                # the log holds records from `expected` on: the client's fetch position says
                # whether they were handed out already.
                position = await self._position(consumer, tp)
                if position is not None and position > expected:
                    last_read = position - 1
            if last_read is None or last_read < expected:
                self._suspect.pop(tp, None)
                continue
            seen = (last_read, expected)
            if self._suspect.get(tp) != seen:
                self._suspect[tp] = seen  # once may be a record between queue and agent
                continue
            del self._suspect[tp]
            log.warning(
                "offsets %d..%d of %s[%d] were read but never delivered; seeking back",
                expected,
                last_read,
                tp.topic,
                tp.partition,
            )
            await self._seek(tp, expected, last_read)

    async def admit(self, event: faust.types.EventT) -> bool:
        msg = event.message
        if not self._active or msg.topic not in self.topics:
            return True
        tp, offset = msg.tp, msg.offset
        expected = self._expected.get(tp)
        seeking = self._seeking.get(tp)
        if seeking is not None:
            now = time.monotonic()
            if offset <= seeking.target:
                del self._seeking[tp]  # the seek delivered: back in order
            elif offset <= seeking.ran_ahead:
                # The seek came back above its target. Usually Faust dropped the re-read
                # records: a batch fetched before the seek was still being drained and moved
                # its read offset past them (it drops offsets below its read offset). Then
                # seeking again works. Only if that keeps happening for RESEEK_AFTER_S, three
                # times over, are the offsets taken as missing (transaction markers).
                if now - seeking.counted_at < RESEEK_AFTER_S:
                    if seeking.quick < QUICK_RESEEKS or now - seeking.since >= QUICK_RESEEK_GAP_S:
                        seeking.quick += 1
                        await self._reseek(tp, seeking)
                    return False
                if seeking.attempts < SEEK_ATTEMPTS:
                    seeking.attempts += 1
                    seeking.counted_at = now
                    await self._reseek(tp, seeking)
                    return False
                del self._seeking[tp]
                await self._accept_gap(tp, seeking.target, offset)
            else:
                seeking.ran_ahead = offset  # still records fetched before the seek
                if now - seeking.since > RESEEK_AFTER_S:
                    await self._reseek(tp, seeking)
                return False
        elif expected is not None and offset > expected:
            log.warning(
                "offsets %d..%d of %s[%d] were skipped by the consumer; seeking back",
                expected,
                offset - 1,
                msg.topic,
                msg.partition,
            )
            await self._seek(tp, expected, offset)
            return False
        self._expected[tp] = offset + 1
        return True

    @staticmethod
    async def _position(consumer: Any, tp: Any) -> int | None:
        """The Kafka client's next offset to hand out for `tp` (None if unknown now)."""
        try:
            position = await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
        except Exception:  # not assigned any more, no valid position yet, timed out
            return None
        return None if position is None else int(position)

    @staticmethod
    def _exists(consumer: Any, tp: Any, offset: int) -> bool:
        """Whether the partition's log reaches `offset` (by the consumer's last highwater)."""
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            return False
        return highwater is not None and highwater > offset

    async def _seek(self, tp: Any, target: int, ran_ahead: int) -> None:
        """Seek back to `target` for a newly found loss."""
        now = time.monotonic()
        self._seeking[tp] = _Seeking(target=target, ran_ahead=ran_ahead, since=now, counted_at=now)
        self.seeks += 1
        await self.app.consumer.seek(tp, target)

    async def _reseek(self, tp: Any, seeking: _Seeking) -> None:
        """Seek back to the same target again (the last seek did not deliver it)."""
        seeking.since = time.monotonic()
        self.seeks += 1
        await self.app.consumer.seek(tp, seeking.target)

    async def _accept_gap(self, tp: Any, first_missing: int, offset: int) -> None:
        self.accepted_gaps += 1
        log.warning(
            "offsets %d..%d of %s[%d] do not exist (transaction markers or compaction)",
            first_missing,
            offset - 1,
            tp.topic,
            tp.partition,
        )
        add_gap = getattr(self.app.consumer, "_add_gap", None)
        original = getattr(add_gap, "_recstream_original", None)
        if original is not None:
            await original(tp, first_missing, offset)


async def _until(flag: asyncio.Event, task: asyncio.Future[Any], timeout: float | None) -> None:
    """Wait until `flag` is set, `task` is done, or `timeout` seconds (None: no limit) pass."""
    waiter = asyncio.ensure_future(flag.wait())
    try:
        await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()

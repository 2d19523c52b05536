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
the records in between were dropped and the partition is sought back the same way.

If the same jump shows up again after three seeks, the offsets really are missing (a
transactional producer's control records, or compaction done by an operator): the guard then
accepts the gap and hands it to Faust as before, so commits go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust

log = logging.getLogger(__name__)

RESEEK_AFTER_S = 5.0  # wall seconds a seek may take to show its first record before it is redone
SEEK_ATTEMPTS = 3  # seeks after which a jump that keeps coming back is taken as real
CHECK_INTERVAL_S = 1.0  # wall seconds between checks for records dropped at a partition's end


@dataclass
class _Seeking:
    target: int  # the first missing offset, where the partition was sought back to
    ran_ahead: int  # the highest offset dropped since the seek
    since: float  # monotonic time of the seek
    attempts: int = 1  # seeks made for this jump


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
        if self._installed:
            return
        self._installed = True
        if stream is not None:
            self._backlog = lambda: int(stream.channel.queue.qsize())  # type: ignore[attr-defined]
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
            last_read = read.get(tp)
            # Faust keeps the last offset read, except that its seeks store the next one: a
            # read offset equal to `expected` means a record was read only if one exists.
            if last_read == expected and not self._exists(consumer, tp, expected):
                last_read = None
            if last_read is None or last_read < expected or tp in self._seeking:
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
            if offset <= seeking.target:
                del self._seeking[tp]  # the seek delivered: back in order
            elif offset <= seeking.ran_ahead:
                # The jump came again after the seek. Either a batch fetched before the seek
                # was still being drained (Faust then moves its read offset past the re-read
                # records and drops them), or the offsets do not exist: seek again a few
                # times before believing the latter.
                if seeking.attempts < SEEK_ATTEMPTS:
                    await self._seek(tp, seeking.target, offset, seeking.attempts + 1)
                    return False
                del self._seeking[tp]
                await self._accept_gap(tp, seeking.target, offset)
            else:
                seeking.ran_ahead = offset  # still records fetched before the seek
                if time.monotonic() - seeking.since > RESEEK_AFTER_S:
                    await self._seek(tp, seeking.target, offset, seeking.attempts)
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
    def _exists(consumer: Any, tp: Any, offset: int) -> bool:
        """Whether the partition's log reaches `offset` (by the consumer's last highwater)."""
        try:
            highwater = consumer.highwater(tp)
        except Exception:
            return False
        return highwater is not None and highwater > offset

    async def _seek(self, tp: Any, target: int, ran_ahead: int, attempts: int = 1) -> None:
        self._seeking[tp] = _Seeking(
            target=target, ran_ahead=ran_ahead, since=time.monotonic(), attempts=attempts
        )
        self.seeks += 1
        await self.app.consumer.seek(tp, target)

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

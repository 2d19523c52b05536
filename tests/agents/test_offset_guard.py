"""The offset guard: a jump in a partition's offsets is sought back, never skipped.

A stand-in consumer records seeks and Faust's gap bookkeeping; the guard sees events the way
an agent does (message.tp / topic / partition / offset).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from recstream.agents.offsets import OffsetGapGuard


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Message:
    tp: TP
    offset: int

    @property
    def topic(self) -> str:
        return self.tp.topic

    @property
    def partition(self) -> int:
        return self.tp.partition


@dataclass
class Event:
    message: Message


@dataclass
class Signal:
    receivers: list[Any] = field(default_factory=list)

    def connect(self, fun: Any) -> Any:
        self.receivers.append(fun)
        return fun

    async def send(self, tps: set[TP]) -> None:
        for fun in self.receivers:
            await fun(None, tps)


class Consumer:
    def __init__(self) -> None:
        self._read_offset: dict[TP, int] = {}  # Faust's: the last offset read per partition
        self._committed_offset: dict[TP, int] = {}  # Faust's: the next offset to read
        self.assigned: set[TP] = set()
        self.highwaters: dict[TP, int] = {}
        self.seeks: list[tuple[TP, int]] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self.positions: dict[TP, int] = {}  # the Kafka client's next offset to hand out

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)

    def assignment(self) -> set[TP]:
        return self.assigned

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp, offset_from, offset_to))


class App:
    def __init__(self, started: bool = True) -> None:
        self.consumer = Consumer()
        self.consumer.started = started  # type: ignore[attr-defined]
        self.on_partitions_revoked = Signal()
        self.on_partitions_assigned = Signal()
        self.timers: list[Any] = []

    def timer(self, interval: float) -> Any:
        def register(fun: Any) -> Any:
            self.timers.append(fun)
            return fun

        return register


EV = TP("events", 0)


def run(guard: OffsetGapGuard, offsets: list[int], tp: TP = EV) -> list[int]:
    """The offsets the guard admits, in order."""

    async def go() -> list[int]:
        return [o for o in offsets if await guard.admit(Event(Message(tp, o)))]  # type: ignore[arg-type]

    return asyncio.run(go())


def make() -> tuple[App, OffsetGapGuard]:
    app = App()
    guard = OffsetGapGuard(app, ["events"])  # type: ignore[arg-type]
    guard.install()
    return app, guard


def test_consecutive_offsets_pass_untouched() -> None:
    app, guard = make()
    assert run(guard, [5, 6, 7, 8]) == [5, 6, 7, 8]
    assert app.consumer.seeks == [] and guard.seeks == 0


def test_a_jump_seeks_back_and_drops_what_ran_ahead_until_the_seek_delivers() -> None:
    app, guard = make()
    # 60..64 read, 65..110 lost by the consumer, 111..113 ran ahead, then the seek delivers.
    admitted = run(guard, [60, 61, 62, 63, 64, 111, 112, 113, *range(65, 114)])
    assert admitted == list(range(60, 114))
    assert app.consumer.seeks == [(EV, 65)]


def test_faust_gap_filling_is_off_for_guarded_topics_only() -> None:
    app, _ = make()

    async def go() -> None:
        await app.consumer._add_gap(EV, 65, 110)
        await app.consumer._add_gap(TP("other", 0), 3, 4)

    asyncio.run(go())
    assert app.consumer.gaps == [(TP("other", 0), 3, 4)]


class Clock:
    """monotonic() for the guard, moved by hand."""

    def __init__(self, monkeypatch: Any) -> None:
        self.now = 1000.0
        monkeypatch.setattr("recstream.agents.offsets.time.monotonic", lambda: self.now)


def test_a_jump_that_keeps_coming_back_for_seconds_is_a_real_gap(monkeypatch: Any) -> None:
    clock = Clock(monkeypatch)
    app, guard = make()
    # Offsets 3..4 do not exist (e.g. transaction markers): after every seek 5 comes again.
    admitted = run(guard, [1, 2, 5, 6, 5, 6])  # seek, then one quick re-seek
    assert admitted == [1, 2]
    for _ in range(2):  # evidence counted at most once per RESEEK_AFTER_S
        clock.now += 6.0
        assert run(guard, [5, 6]) == []
    assert guard.accepted_gaps == 0
    clock.now += 6.0
    assert run(guard, [5, 6, 7]) == [5, 6, 7]
    assert guard.accepted_gaps == 1
    assert set(app.consumer.seeks) == {(EV, 3)}
    # Handed to Faust's own gap bookkeeping (so commits go on past offsets that do not exist).
    assert app.consumer.gaps == [(EV, 3, 5)]


def test_re_reads_dropped_by_faust_are_sought_again_and_never_taken_for_a_gap(
    monkeypatch: Any,
) -> None:
    """Seen with two workers: 5 lost, the seek issued while a fetched batch (7..13) was still
    being drained; Faust then dropped the re-read 5..12 (below its read offset) and delivered
    13 and new records, several times in a row within a fraction of a second."""
    clock = Clock(monkeypatch)
    app, guard = make()
    assert run(guard, [3, 4, 6, *range(7, 14)]) == [3, 4]
    for _ in range(6):
        clock.now += 0.05
        assert run(guard, [13, 14]) == []
    assert guard.accepted_gaps == 0 and app.consumer.gaps == []
    clock.now += 0.6
    assert run(guard, [13]) == []  # re-seeks go on, spaced out
    assert run(guard, list(range(5, 16))) == list(range(5, 16))
    assert guard.accepted_gaps == 0
    assert {seek for seek in app.consumer.seeks} == {(EV, 5)}
    assert len(app.consumer.seeks) == 1 + 3 + 1  # the seek, quick re-seeks, a spaced one


def test_replayed_offsets_are_admitted_and_partitions_that_move_start_afresh() -> None:
    app, guard = make()
    assert run(guard, [10, 11, 12, 8, 9, 10, 11, 12, 13]) == [10, 11, 12, 8, 9, 10, 11, 12, 13]
    asyncio.run(app.on_partitions_revoked.send({EV}))
    # Reassigned later, after another worker moved the partition on: no false jump.
    assert run(guard, [40, 41]) == [40, 41]
    assert app.consumer.seeks == []


def test_other_topics_are_not_watched() -> None:
    app, guard = make()
    assert run(guard, [1, 9, 20], tp=TP("items", 0)) == [1, 9, 20]
    assert app.consumer.seeks == []


def test_without_a_running_consumer_the_guard_stays_out_of_the_way() -> None:
    app = App(started=False)
    guard = OffsetGapGuard(app, ["events"])  # type: ignore[arg-type]
    guard.install()
    assert run(guard, [1, 5, 9]) == [1, 5, 9]
    assert app.consumer.seeks == []


def test_records_read_but_never_delivered_at_a_partitions_end_are_sought_back() -> None:
    app, guard = make()
    [check] = app.timers
    assert run(guard, [0, 1, 2]) == [0, 1, 2]
    app.consumer._read_offset[EV] = 2
    asyncio.run(check())
    asyncio.run(check())
    assert app.consumer.seeks == []  # the agent has everything the consumer read
    # The consumer read 3..6 but dropped them (flow suspended): nothing more arrives.
    app.consumer._read_offset[EV] = 6
    asyncio.run(check())
    assert app.consumer.seeks == []  # once may be a record on its way to the agent
    asyncio.run(check())
    assert app.consumer.seeks == [(EV, 3)]
    assert run(guard, [3, 4, 5, 6]) == [3, 4, 5, 6]


def test_the_end_check_waits_while_records_are_queued() -> None:
    app = App()
    guard = OffsetGapGuard(app, ["events"])  # type: ignore[arg-type]

    class Queue:
        def qsize(self) -> int:
            return 4

    class Stream:
        class channel:  # shaped like faust's stream.channel.queue
            queue = Queue()

    guard.install(Stream())  # type: ignore[arg-type]
    [check] = app.timers
    assert run(guard, [0]) == [0]
    app.consumer._read_offset[EV] = 4
    for _ in range(3):
        asyncio.run(check())
    assert app.consumer.seeks == []


def test_a_partition_whose_records_never_reached_the_agent_is_sought_back_to_its_commit() -> None:
    app, guard = make()
    [check] = app.timers
    # Assigned after a restart: committed at 60, the consumer read 60..77, the agent saw none.
    app.consumer.assigned = {EV, TP("items", 0)}
    app.consumer._committed_offset[EV] = 60
    app.consumer._read_offset[EV] = 77
    app.consumer._read_offset[TP("items", 0)] = 9  # not guarded here
    asyncio.run(check())
    asyncio.run(check())
    assert app.consumer.seeks == [(EV, 60)]
    assert run(guard, [60, 61]) == [60, 61]


def test_an_idle_partition_after_a_seek_is_not_mistaken_for_a_loss() -> None:
    app, _ = make()
    [check] = app.timers
    # Faust's own seek to the committed offset stores the *next* offset as "read".
    app.consumer.assigned = {EV}
    app.consumer._committed_offset[EV] = 60
    app.consumer._read_offset[EV] = 60
    app.consumer.highwaters[EV] = 60  # nothing at offset 60 yet
    for _ in range(3):
        asyncio.run(check())
    assert app.consumer.seeks == []
    # One record (offset 60) is written, read and dropped: the log now reaches past it.
    app.consumer.highwaters[EV] = 61
    asyncio.run(check())
    asyncio.run(check())
    assert app.consumer.seeks == [(EV, 60)]


def test_a_seek_undone_by_a_batch_still_being_drained_is_repeated() -> None:
    app, guard = make()
    # 36 lost; 37..40 ran ahead; the seek's re-read was dropped by Faust, 40 came again;
    # the second seek delivers.
    admitted = run(guard, [35, 37, 38, 39, 40, 40, *range(36, 42)])
    assert admitted == [35, *range(36, 42)]
    assert app.consumer.seeks == [(EV, 36), (EV, 36)]
    assert guard.accepted_gaps == 0


def test_records_handed_out_before_a_first_commit_are_sought_back_by_position() -> None:
    """A worker joining while events arrive: its consumer fetched offsets 0..2 during recovery
    and Faust dropped them; with no commit Faust's seek left the position at 3 and its read
    offset at None. The Kafka client's position shows what Faust forgot."""
    app, guard = make()
    [check] = app.timers
    app.consumer.assigned = {EV}
    app.consumer.highwaters[EV] = 3
    app.consumer.positions[EV] = 3
    asyncio.run(check())
    assert app.consumer.seeks == []  # once may be records on their way
    asyncio.run(check())
    assert app.consumer.seeks == [(EV, 0)]
    assert run(guard, [0, 1, 2]) == [0, 1, 2]


def test_a_position_at_the_expected_offset_is_no_loss() -> None:
    app, _ = make()
    [check] = app.timers
    app.consumer.assigned = {EV}
    app.consumer._committed_offset[EV] = 7
    app.consumer.highwaters[EV] = 9  # offsets 7, 8 exist and simply have not been fetched
    app.consumer.positions[EV] = 7
    for _ in range(3):
        asyncio.run(check())
    assert app.consumer.seeks == []


def test_a_seek_that_delivers_nothing_is_repeated(monkeypatch: Any) -> None:
    app, guard = make()
    [check] = app.timers
    now = [1000.0]
    monkeypatch.setattr("recstream.agents.offsets.time.monotonic", lambda: now[0])
    assert run(guard, [0, 1, 4]) == [0, 1]  # 2..3 lost: seek back to 2
    assert app.consumer.seeks == [(EV, 2)]
    asyncio.run(check())
    assert app.consumer.seeks == [(EV, 2)]  # just sought: give it time
    now[0] += 6.0  # the seek's records were dropped again (another rebalance, say)
    asyncio.run(check())
    assert app.consumer.seeks == [(EV, 2), (EV, 2)]
    assert run(guard, [2, 3, 4]) == [2, 3, 4]


class FakeTakeStream:
    """Shaped like the parts of a Faust stream `batches` uses: processors run on each record
    as it enters the stream; `take_events` yields the buffered events."""

    class channel:
        class queue:
            @staticmethod
            def qsize() -> int:
                return 0

    def __init__(self, batches: list[list[int]]) -> None:
        self._processors: list[Any] = []
        self.batches = batches
        self.in_buffer: list[Event] = []

    def add_processor(self, fun: Any) -> None:
        self._processors.append(fun)

    def arrive(self, offsets: list[int]) -> None:
        for o in offsets:
            event = Event(Message(EV, o))
            for fun in self._processors:
                fun(event)
            self.in_buffer.append(event)

    async def take_events(self, max_: int, within: float) -> Any:
        for offsets in self.batches:
            self.arrive(offsets)
            batch, self.in_buffer = self.in_buffer[:max_], self.in_buffer[max_:]
            yield batch


def test_batches_drop_what_ran_ahead_and_count_buffered_records_as_queued() -> None:
    app, guard = make()
    [check] = app.timers
    stream = FakeTakeStream([[0, 1, 2], [6, 7], [4, 5, 6, 7]])

    async def go() -> list[list[int]]:
        out = []
        async for batch in guard.batches(stream, 8, 0.05):  # type: ignore[arg-type]
            out.append([e.message.offset for e in batch])
            if len(out) == 1:
                # Offset 3 waits in the take buffer while this batch is encoded: read by the
                # consumer, not yet admitted, and not lost.
                stream.arrive([3])
                app.consumer._read_offset[EV] = 3
                await check()
                await check()
                assert app.consumer.seeks == []
        return out

    # 4..5 lost, 6..7 ran ahead and are dropped; the seek back to 4 delivers 4..7.
    assert asyncio.run(go()) == [[0, 1, 2], [3], [4, 5, 6, 7]]
    assert app.consumer.seeks == [(EV, 4)]
    assert guard._buffered == 0
    assert stream._processors == []  # the counting processor is removed afterwards


class FakeQueueStream:
    """Shaped like the parts of a Faust stream `prefetched_batches` uses: `events()` yields
    what is put on its queue (None ends it), `enable_acks`, and `ack` records the offsets."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.enable_acks = True
        self.acked: list[int] = []
        self.read: list[int] = []  # offsets the stream has handed out

        class channel:
            queue = self.queue

        self.channel = channel

    def put(self, offsets: list[int]) -> None:
        for o in offsets:
            self.queue.put_nowait(Event(Message(EV, o)))

    async def events(self) -> Any:
        while (event := await self.queue.get()) is not None:
            self.read.append(event.message.offset)
            yield event

    async def ack(self, event: Event) -> bool:
        self.acked.append(event.message.offset)
        return True


def test_prefetched_batches_read_on_while_a_batch_is_worked_on() -> None:
    """The stream is read while the caller holds a batch (take_events stops it), at most
    `max_` events ahead, and the next batch goes out at once when `max_` wait."""
    _, guard = make()

    async def go() -> tuple[list[list[int]], FakeQueueStream]:
        stream = FakeQueueStream()
        stream.put(list(range(4)))
        out: list[list[int]] = []
        async for batch in guard.prefetched_batches(stream, 4, 10.0):  # type: ignore[arg-type]
            out.append([e.message.offset for e in batch])
            assert not stream.enable_acks  # acked by the batcher, after the batch
            if len(out) == 1:
                assert stream.acked == []  # not before the batch is done
                stream.put(list(range(4, 13)))
                await asyncio.sleep(0.01)  # "encoding": the reader reads on meanwhile
                # max_ (4) events read ahead, the rest left in the stream's queue.
                assert stream.read == list(range(8))
            if len(out) == 3:
                stream.queue.put_nowait(None)
        return out, stream

    t0 = time.monotonic()
    out, stream = asyncio.run(go())
    # The first two batches were full: no wait for `within` (10 s). The last one, one event,
    # waited for company until the stream ended.
    assert out == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12]]
    assert time.monotonic() - t0 < 5
    assert stream.acked == list(range(13))
    assert stream.enable_acks  # restored


def test_prefetched_batches_wait_within_for_company_then_go() -> None:
    """A lone event waits `within` for others, then goes out by itself; records the guard
    drops (they ran ahead of a loss) are acked at once and never handed out."""
    app, guard = make()

    async def go() -> tuple[list[list[int]], list[float], FakeQueueStream]:
        stream = FakeQueueStream()
        stream.put([0, 1])
        out: list[list[int]] = []
        waited: list[float] = []
        t = time.monotonic()
        async for batch in guard.prefetched_batches(stream, 8, 0.05):  # type: ignore[arg-type]
            waited.append(time.monotonic() - t)
            out.append([e.message.offset for e in batch])
            if len(out) == 1:
                # 2..3 lost: 4..5 ran ahead and are dropped; the seek back delivers 2..3.
                stream.put([4, 5, 2, 3])
                stream.queue.put_nowait(None)
            t = time.monotonic()
        return out, waited, stream

    out, waited, stream = asyncio.run(go())
    assert out == [[0, 1], [2, 3]]
    assert waited[0] >= 0.04  # waited for company, about `within`
    assert app.consumer.seeks == [(EV, 2)]
    assert stream.acked == [0, 1, 4, 5, 2, 3]  # dropped ones at once, before their batch

"""The offset guard: a jump in a partition's offsets is sought back, never skipped.

A stand-in consumer records seeks and Faust's gap bookkeeping; the guard sees events the way
an agent does (message.tp / topic / partition / offset).
"""

from __future__ import annotations

import asyncio
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


def test_a_jump_that_comes_again_after_the_seek_is_a_real_gap() -> None:
    app, guard = make()
    # Offsets 3..4 do not exist (e.g. transaction markers): after the seek 5 comes again.
    admitted = run(guard, [1, 2, 5, 6, 5, 6, 5, 6, 5, 6, 7])
    assert admitted == [1, 2, 5, 6, 7]
    assert app.consumer.seeks == [(EV, 3)] * 3
    assert guard.accepted_gaps == 1
    # Handed to Faust's own gap bookkeeping (so commits go on past offsets that do not exist).
    assert app.consumer.gaps == [(EV, 3, 5)]


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

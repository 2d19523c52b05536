"""Replay a recorded event stream through real worker processes and collect every list.

Shared by `recstream eval` and `recstream bench pipeline`. One replay:

1. derives throwaway settings (topic prefix and app id ``<tag>``, debounce 0, top_k >= 20) and
   creates the topics;
2. starts a collector thread reading the recommendations topic from offset 0;
3. publishes the catalog, starts the worker processes and waits until they are ready: the
   consumer group is stable with every worker in it, the catalog table holds every item, and a
   probe event on every events partition came back as a list;
4. sends the events in the given order (optionally paced), stamping each record with the wall
   time of sending as its Kafka timestamp;
5. waits until lists reflecting every event arrived (or nothing arrived for a while);
6. stops the workers and deletes every topic of the run, also on errors and Ctrl-C.

With ``completion="offsets"`` (workers that publish no lists: ``publish_lists=False``) the
probes in 3. and the wait in 5. use the workers' consumer group instead of lists: done when the
group's committed offsets on the events topic reach the topic's end offsets. Faust commits
every ``broker_commit_interval`` (1 s, streams/app.py; also after every 1000 acked records,
checked when the next record arrives), so this signal lags the processing by up to one commit
interval plus one poll (`COMMIT_POLL_S`).

Latency of a list = its Kafka record timestamp (set by the worker's producer when it sent it)
minus the Kafka timestamp of the event it reflects (set here when the event was sent); both
clocks are this machine's, in milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recstream.config.settings import Settings
from recstream.evaluation.workers import TrainerProcess, WorkerProcess
from recstream.models.errors import RecstreamError, ReplayCancelled, ValidationError
from recstream.streams.admin import delete_topics_with_prefix, ensure_topics
from recstream.streams.codecs import Limits
from recstream.streams.producer import check_record, make_producer

#: Lists are asked for at least this long, so that Recall@20 is meaningful.
MIN_TOP_K = 20
PROBE_PREFIX = "__probe-"
#: How a replay knows the workers are done: lists reflecting every event, or (workers that
#: publish no lists) the consumer group's committed offsets on the events topic.
Completion = Literal["lists", "offsets"]
#: Seconds between two reads of the committed offsets while waiting for them (offsets mode).
COMMIT_POLL_S = 0.1


class CandidatePool:
    """The candidate pool a list was cut from, as a set of item ids (``item in pool``).

    Kept compact because the in-process runner holds one per list (100k lists × ~150
    candidates): sorted int32 catalogue rows (4 bytes a candidate) plus a reference to the
    run's id → row map, which every pool of the run shares (never copied per list).
    """

    __slots__ = ("_row_of", "_rows")

    def __init__(self, rows: npt.ArrayLike, row_of: Mapping[str, int]) -> None:
        self._rows = np.unique(np.asarray(rows, dtype=np.int32))
        self._row_of = row_of

    def __contains__(self, item_id: object) -> bool:
        row = self._row_of.get(item_id) if isinstance(item_id, str) else None
        if row is None:
            return False
        at = int(np.searchsorted(self._rows, row))
        return at < self._rows.size and int(self._rows[at]) == row

    def __len__(self) -> int:
        return int(self._rows.size)


@dataclass(frozen=True, slots=True)
class CollectedList:
    """The parts of one published list an evaluation needs.

    ``as_of_ts`` is event time (epoch s); ``kafka_ts_ms`` the list's Kafka record timestamp (wall
    ms); ``items`` the item ids best first; ``top_interests`` (category, share) pairs;
    ``candidates`` the pool the list was cut from (in-process runner, fused ranker only; None
    for lists read from Kafka, whose wire format does not carry it).
    """

    user_id: str
    event_id: str
    as_of_ts: float
    kafka_ts_ms: int
    ranker: str
    items: tuple[str, ...]
    weights: dict[str, float]
    top_interests: tuple[tuple[str, float], ...]
    candidates: CandidatePool | None = field(default=None, compare=False)
    #: The sequence-model snapshot the list used (None: none served yet).
    model_version: int | None = field(default=None, compare=False)


def parse_list(raw: bytes, kafka_ts_ms: int) -> CollectedList | None:
    """A CollectedList from a recommendations record; None for a record that is not a list."""
    try:
        rec = json.loads(raw)
        return CollectedList(
            user_id=str(rec["user_id"]),
            event_id=str(rec["as_of"]["event_id"]),
            as_of_ts=float(rec["as_of"]["ts"]),
            kafka_ts_ms=int(kafka_ts_ms),
            ranker=str(rec.get("ranker")),
            items=tuple(str(i["item_id"]) for i in rec.get("items") or ()),
            weights={str(k): float(v) for k, v in (rec.get("weights") or {}).items()},
            top_interests=tuple(
                (str(t["category"]), float(t["share"])) for t in rec.get("top_interests") or ()
            ),
            model_version=None if rec.get("model_version") is None else int(rec["model_version"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


class _Collector(threading.Thread):
    """Reads every list from offset 0 of every partition until stopped.

    The main thread registers the event ids it waits for (`expect`) before sending them; this
    thread removes each one when a list reflecting it arrives.
    """

    def __init__(self, settings: Settings, cancel: threading.Event | None = None) -> None:
        super().__init__(name="recstream-collector", daemon=True)
        #: Set from outside to stop the replay this collector serves (`_check_workers`).
        self.cancel = cancel
        topic = settings.topic(settings.recommendations_topic)
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            max_poll_records=5000,
        )
        # Explicit assignment: no group protocol, every partition from the first offset.
        parts = [TopicPartition(topic, p) for p in range(settings.recommendations_partitions)]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)
        self.lists: list[CollectedList] = []
        self.invalid = 0
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        # Signalled whenever lists arrive, so that the sender waits without polling (a 1 ms
        # polling loop took a third of the replay process's CPU on a 2-core machine).
        self._arrived = threading.Condition(self._lock)
        self._halt = threading.Event()
        self.last_arrival = time.monotonic()
        self.error: BaseException | None = None

    def expect(self, event_ids: Sequence[str]) -> None:
        with self._lock:
            self._waiting.update(event_ids)

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def wait_until_waiting_at_most(self, n: int, timeout_s: float) -> bool:
        """Block until at most `n` expected events lack a list, or `timeout_s` passed.

        Returns whether the condition holds."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self._waiting) <= n, timeout_s)

    def is_waiting_for(self, event_id: str) -> bool:
        with self._lock:
            return event_id in self._waiting

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                batch = self._consumer.poll(timeout_ms=200)
                got: list[CollectedList] = []
                for messages in batch.values():
                    for msg in messages:
                        rec = parse_list(msg.value, msg.timestamp)
                        if rec is None:
                            self.invalid += 1
                        else:
                            got.append(rec)
                if got:
                    self.lists.extend(got)
                    with self._arrived:
                        self._waiting.difference_update(r.event_id for r in got)
                        self._arrived.notify_all()
                    self.last_arrival = time.monotonic()
        except BaseException as exc:  # reported by the main thread, which owns the run
            self.error = exc
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


@dataclass
class ReplayResult:
    """What one replay measured.

    Attributes:
        settings: the settings the workers ran with (throwaway topics, debounce 0, ...).
        lists: every list received for the replayed events, in arrival order (probe lists
            are dropped).
        sent_ts_ms: event_id → Kafka timestamp (wall ms) of the sent event.
        n_events: events sent.
        first_sent_ms / last_sent_ms: Kafka timestamps of the first and last event sent.
        last_list_ms: Kafka timestamp of the latest list reflecting a replayed event.
        unreflected: event ids for which no list arrived.
        startup_s: wall seconds from starting the workers to passing the readiness checks.
        send_s: wall seconds spent sending the events.
        worker_logs: log files of the workers.
        notes: things the report should mention (readiness fallbacks, timeouts).
        rate / max_in_flight: the pacing the events were sent with (None: none).
        completion: "lists" or "offsets" (see `replay`). In offsets mode no list is expected
            (`unreflected` then names every event no list reflected: all of them when the
            workers publish none).
        committed_ms: offsets mode: wall ms when the group was first seen to have committed
            every event (None: lists mode, or the offsets never caught up).
        uncommitted: offsets mode: events topic records still uncommitted when the wait
            ended (0: all done; -1: the offsets could not be read; None: lists mode).
    """

    settings: Settings
    lists: list[CollectedList]
    sent_ts_ms: dict[str, int]
    n_events: int
    first_sent_ms: int
    last_sent_ms: int
    last_list_ms: int
    unreflected: list[str]
    startup_s: float
    send_s: float
    worker_logs: list[Path]
    notes: list[str] = field(default_factory=list)
    rate: float | None = None
    max_in_flight: int | None = None
    completion: Completion = "lists"
    committed_ms: int | None = None
    uncommitted: int | None = None

    def model_timeline(self, event_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Per sequence-model version its lists: the first event (index in `event_ids`, the
        replay order) whose list used it, and how many lists did."""
        at = {e: i for i, e in enumerate(event_ids)}
        first: dict[int, int] = {}
        count: dict[int, int] = {}
        for rec in self.lists:
            v = rec.model_version
            if v is None or rec.event_id not in at:
                continue
            first[v] = min(first.get(v, at[rec.event_id]), at[rec.event_id])
            count[v] = count.get(v, 0) + 1
        return [{"version": v, "first_event": first[v], "lists": count[v]} for v in sorted(first)]

    def latencies_ms(self) -> np.ndarray:
        """Event → list latency (ms) of the first list reflecting each replayed event."""
        seen: set[str] = set()
        out: list[float] = []
        for rec in self.lists:
            sent = self.sent_ts_ms.get(rec.event_id)
            if sent is None or rec.event_id in seen:
                continue
            seen.add(rec.event_id)
            out.append(float(rec.kafka_ts_ms - sent))
        return np.asarray(out, dtype=float)

    @property
    def span_s(self) -> float:
        """Wall seconds from the first event sent to the last list received (offsets mode:
        to every event committed; nan when that never happened)."""
        if self.completion == "offsets":
            if self.committed_ms is None:
                return float("nan")
            return max((self.committed_ms - self.first_sent_ms) / 1000.0, 1e-9)
        return max((self.last_list_ms - self.first_sent_ms) / 1000.0, 1e-9)

    @property
    def events_per_s(self) -> float:
        """Events / (first event sent → last list received, or offsets mode: all committed)."""
        return self.n_events / self.span_s

    @property
    def lists_per_s(self) -> float:
        """Lists received / (first event sent → last list received)."""
        return len(self.lists) / self.span_s


def run_settings(base: Settings, work_dir: Path, **overrides: Any) -> tuple[Settings, str]:
    """Throwaway settings for one run: (settings, tag); every topic of the run starts with tag."""
    tag = f"eval{uuid.uuid4().hex[:8]}"
    values = base.model_dump()
    values.update(
        bootstrap=base.bootstrap_servers,
        app_id=tag,
        topic_prefix=f"{tag}-",
        debounce_s=0.0,  # a list after every event: the protocol scores each of them
        top_k=max(base.top_k, MIN_TOP_K),
        data_dir=work_dir / "workers",
        snapshot_dir=work_dir / "workers" / "snapshots",  # the run's trainer, if it has one
    )
    values.update(overrides)
    return Settings(**values), tag


def encode_records(
    kind: str, records: Sequence[dict[str, Any]], settings: Settings
) -> list[tuple[bytes, bytes | None]]:
    """(key, value) bytes per record, validated as the worker will validate them.

    Raises:
        ValidationError: naming the first invalid record (a replay must not lose events
            silently: the protocol would then wait for lists that never come).
    """
    limits = Limits.from_settings(settings)
    out: list[tuple[bytes, bytes | None]] = []
    for n, record in enumerate(records):
        try:
            key, value = check_record(kind, record, limits)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ValidationError(f"{kind} record {n} is invalid: {exc}") from exc
        out.append((key.encode("utf-8"), value))
    return out


def _logs(workers: list[WorkerProcess], lines: int = 30) -> str:
    """The last lines of every worker's log, for error messages."""
    return "\n".join(f"--- {w.log_file}:\n{w.log_tail(lines)}" for w in workers)


#: What Faust logs when an agent raised: the worker lives on, but that agent stops for good.
AGENT_CRASHED = "Crashed reason="
_log_offsets: dict[Path, int] = {}


def _crash_line(worker: WorkerProcess) -> str | None:
    """The first agent-crash line logged since the last call (reads only the new bytes)."""
    try:
        with worker.log_file.open("rb") as fh:
            size = fh.seek(0, 2)
            start = _log_offsets.get(worker.log_file, 0)
            start = 0 if start > size else start  # a new log file at the same path
            fh.seek(start)
            new = fh.read()
    except OSError:
        return None
    # Keep a partial last line for the next call.
    _log_offsets[worker.log_file] = start + new.rfind(b"\n") + 1
    for line in new.decode("utf-8", "replace").splitlines():
        if AGENT_CRASHED in line:
            return line.strip()
    return None


def _check_workers(workers: list[WorkerProcess], collector: _Collector) -> None:
    """Raise if a worker exited or one of its agents crashed, or the collector failed."""
    for w in workers:
        if not w.alive():
            raise RecstreamError(f"a worker exited; log {w.log_file}:\n{w.log_tail()}")
        crash = _crash_line(w)
        if crash is not None:
            raise RecstreamError(
                f"an agent of a worker crashed ({crash}); log {w.log_file}:\n{w.log_tail()}"
            )
    if collector.error is not None:
        raise RecstreamError(f"the list collector failed: {collector.error!r}")
    if collector.cancel is not None and collector.cancel.is_set():
        raise ReplayCancelled("stopped: the replay running beside this one failed")


def _group_ready(settings: Settings, members: int) -> bool:
    """True when the workers' consumer group is Stable with `members` members."""
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000)
    try:
        desc = admin.describe_groups([settings.app_id]).get(settings.app_id) or {}
    finally:
        admin.close()
    state = str(desc.get("group_state") or desc.get("state") or "")
    return state.lower() == "stable" and len(desc.get("members") or ()) == members


def _pipeline_lag(settings: Settings, tag: str) -> int:
    """Records produced to the run's consumed topics but not yet committed by the workers' group.

    Counts every topic of the run except changelogs (read only on recovery) and the dead
    letters (nobody consumes them). 0 means the pipeline has caught up with everything sent so
    far: the catalog, its embedding requests and vectors, probes. Faust commits every second,
    so a worker that is done reads as done at most about a second later.
    """
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    try:
        dead = settings.topic(settings.dead_letter_topic)
        topics = [
            t
            for t in admin.list_topics()
            if t.startswith(tag) and not t.endswith("-changelog") and t != dead
        ]
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = consumer.end_offsets(parts)
        committed = admin.list_group_offsets(settings.app_id)
        # kafka-python 3 nests the answer by group id; older versions return it flat.
        committed = committed.get(settings.app_id, committed)
        lag = 0
        for tp, end in ends.items():
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag += max(int(end) - int(done), 0)
        return lag
    finally:
        consumer.close()
        admin.close()


def uncommitted(ends: dict[Any, int], committed: dict[Any, Any]) -> tuple[int, int]:
    """(records not yet committed, records committed) summed over the partitions of `ends`.

    `ends`: partition → end offset; `committed`: partition → OffsetAndMetadata (or a bare
    offset) of the group; a partition missing there, or with offset -1, has committed nothing.
    """
    lag = done = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        offset = getattr(meta, "offset", meta)
        at = int(offset) if offset is not None and int(offset) >= 0 else 0
        done += min(at, int(end))
        lag += max(int(end) - at, 0)
    return lag, done


class _EventsCommitted:
    """The workers' group's committed offsets on the run's events topic vs its end offsets.

    One admin client and one consumer for the whole run: the completion wait polls every
    `COMMIT_POLL_S`, and new clients per poll would cost the workers CPU on a small machine.
    """

    def __init__(self, settings: Settings) -> None:
        topic = settings.topic(settings.events_topic)
        self.group = settings.app_id
        self.parts = [TopicPartition(topic, p) for p in range(settings.events_partitions)]
        self._admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000
        )
        self._consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)

    def __call__(self) -> tuple[int, int]:
        """(events not yet committed, events committed) right now; see `uncommitted`."""
        ends = self._consumer.end_offsets(self.parts)
        answer = self._admin.list_group_offsets({self.group: self.parts})
        # kafka-python 3 nests the answer by group id; older versions return it flat.
        committed = answer.get(self.group, answer)
        return uncommitted(ends, committed)

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


def _wait_committed(
    watch: _EventsCommitted,
    workers: list[WorkerProcess],
    collector: _Collector,
    idle_timeout_s: float,
    on_progress: Callable[[int], None],
) -> tuple[int | None, int]:
    """Poll until every events record is committed: (wall ms when seen, 0), or (None, lag)
    when the committed offsets did not move for `idle_timeout_s` (lag -1: never read)."""
    moved = time.monotonic()
    last = lag = -1
    while True:
        _check_workers(workers, collector)
        try:
            lag, done = watch()
        except KafkaError:  # a slow answer on a busy machine: ask again (counts as idle)
            done = last
        else:
            if lag == 0:
                return int(time.time() * 1000), 0
        if done != last:
            last, moved = done, time.monotonic()
            on_progress(done)
        elif time.monotonic() - moved > idle_timeout_s:
            return None, lag
        time.sleep(COMMIT_POLL_S)


class _CaughtUp:
    """Callable: True once the pipeline lag has been 0 for `quiet_s` seconds in a row."""

    def __init__(self, settings: Settings, tag: str, quiet_s: float = 2.0) -> None:
        self.settings, self.tag, self.quiet_s = settings, tag, quiet_s
        self.since: float | None = None

    def __call__(self) -> bool:
        if _pipeline_lag(self.settings, self.tag) > 0:
            self.since = None
            return False
        if self.since is None:
            self.since = time.monotonic()
        # Two commit intervals: offsets are committed every second.
        return time.monotonic() - self.since >= self.quiet_s


def _wait(
    what: str,
    ready: Any,
    timeout_s: float,
    workers: list[WorkerProcess],
    collector: _Collector,
    interval_s: float = 0.5,
) -> bool:
    """Poll `ready()` until true or the timeout; raise if a worker dies meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_workers(workers, collector)
        try:
            if ready():
                return True
        except Exception:
            pass
        time.sleep(interval_s)
    return False


def replay(
    base: Settings,
    items: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    *,
    workers: int,
    work_dir: Path,
    rate: float | None = None,
    max_in_flight: int | None = None,
    console: Console | None = None,
    idle_timeout_s: float = 60.0,
    startup_timeout_s: float = 180.0,
    catalog_timeout_s: float = 900.0,
    overrides: dict[str, Any] | None = None,
    embedding_cache: Path | None = None,
    on_phase: Callable[[str, Settings], None] | None = None,
    completion: Completion = "lists",
    trainer: bool = False,
    cancel: threading.Event | None = None,
) -> ReplayResult:
    """Run the events through `workers` real worker processes; see the module docstring.

    Args:
        base: settings to start from (broker, partitions, ranker knobs); see `run_settings`.
        items / events: wire-format dicts; events are sent in the given order.
        workers: worker processes (>= 1), each with its own data dir and web port.
        work_dir: where worker data dirs and logs go.
        rate: events per wall second (None: as fast as the producer goes).
        max_in_flight: send the next event only while fewer than this many sent events have
            no list yet (None or 0: no limit). Keeps the replay near-live: without it, events
            queue up and every list is computed behind a backlog.
        idle_timeout_s: give up waiting for lists after this many seconds without a new one.
        startup_timeout_s: limit (s) for the group and probe readiness checks.
        catalog_timeout_s: limit (s) for the workers to ingest the catalog (embedding a large
            catalog on a CPU takes minutes on a cold embedding cache).
        overrides: extra settings for the workers.
        embedding_cache: a folder kept between runs: each worker's embedding cache starts as a
            copy of it, and the first worker's cache is copied back at the end. Only worker
            start-up (embedding the catalog) gets faster; the replay itself is unaffected.
        on_phase: called as ``on_phase("ready", settings)`` once the workers are ready, right
            before the first event is sent, ``on_phase("completed", settings)`` when the wait
            for the events ended, before the workers are stopped, and
            ``on_phase("stopped", settings)`` after the workers stopped, before the run's
            topics are deleted (the pipeline bench reads the topics' end offsets there). An
            error in the "completed" or "stopped" call is printed, not raised.
        completion: "lists" (the default): ready and done when lists arrive; "offsets": for
            workers that publish no lists, ready and done when the workers' group has
            committed every events record (see the module docstring); no flow control then
            (`max_in_flight` must be None or 0).
        trainer: also run the sequence-model trainer (`recstream trainer`, one process) beside
            the workers, started once they are ready, with the run's own snapshot folder
            (only with `trainer_every_events` > 0). It dying does not stop the replay; it is
            noted.
        cancel: once set (by another thread), the replay stops at its next check of the
            workers (within about a second) and raises ReplayCancelled.

    Raises:
        RecstreamError: a worker died or never became ready; ValidationError: an invalid record;
        ReplayCancelled: `cancel` was set.
    """
    if workers < 1:
        raise ValidationError(f"workers must be >= 1, got {workers}")
    if completion not in ("lists", "offsets"):
        raise ValidationError(f"completion must be 'lists' or 'offsets', got {completion!r}")
    if completion == "offsets" and max_in_flight:
        raise ValidationError("max_in_flight needs lists; it cannot be used with offsets")
    console = console or Console(stderr=True)
    settings, tag = run_settings(base, work_dir, **(overrides or {}))
    item_records = encode_records("items", list(items), settings)
    event_records = encode_records("events", list(events), settings)
    event_ids = [str(e["event_id"]) for e in events]
    if len(set(event_ids)) != len(event_ids):
        raise ValidationError("event ids must be unique within a replay")
    notes: list[str] = []
    # A fresh folder per run: worker logs are appended to, and stale tables must not leak in.
    shutil.rmtree(work_dir / "workers", ignore_errors=True)

    ensure_topics(settings)
    collector = _Collector(settings, cancel)
    procs: list[WorkerProcess] = []
    trainer_proc: TrainerProcess | None = None
    producer = make_producer(settings)
    watch: _EventsCommitted | None = None
    committed_ms: int | None = None
    lag: int | None = None
    try:
        collector.start()
        items_topic = settings.topic(settings.items_topic)
        for key, value in item_records:
            producer.send(items_topic, key=key, value=value)
        producer.flush()

        started = time.monotonic()
        if trainer and settings.trainer_every_events > 0:
            # Started first, so that its imports and consumer start-up overlap the workers':
            # started once they were ready, it trained its first model on thousands of events
            # instead of the schedule's first 500. It waits for the catalog changelog, and
            # the first run needs events, which come only after the catalog is ingested.
            trainer_proc = TrainerProcess(
                settings,
                data_dir=work_dir / "workers" / "trainer",
                log_file=work_dir / "workers" / "trainer.log",
            )
            trainer_proc.start()
        with console.status(f"starting {workers} worker(s) ..."):
            # Workers start one at a time, each joining a group that is stable and has caught
            # up, as when scaling out a running pipeline: workers joining together while
            # tables recover were seen to stall for minutes.
            for n in range(workers):
                _log_offsets.pop(work_dir / "workers" / f"w{n}.log", None)
                _seed_embedding_cache(embedding_cache, work_dir / "workers" / f"w{n}")
                procs.append(
                    WorkerProcess(
                        settings,
                        data_dir=work_dir / "workers" / f"w{n}",
                        log_file=work_dir / "workers" / f"w{n}.log",
                    ).start()
                )
                members = n + 1
                if not _wait(
                    "group",
                    functools.partial(_group_ready, settings, members),
                    startup_timeout_s,
                    procs,
                    collector,
                ):
                    notes.append(
                        f"the consumer group never reported Stable with {members} member(s); "
                        "relied on the probes"
                    )
                # The catalog (and whatever the pipeline derives from it, such as item
                # vectors) must be fully ingested before the replay: events arriving meanwhile
                # would be ranked against a partial catalog, on a CPU busy embedding it.
                if not _wait(
                    "catalog", _CaughtUp(settings, tag), catalog_timeout_s, procs, collector, 1.0
                ):
                    notes.append(
                        f"{members} worker(s) had not caught up with the catalog after "
                        f"{catalog_timeout_s:.0f} s; went on anyway"
                    )
            probes = _send_probes(settings, producer, tag, events)
            if completion == "offsets":
                watch = committed_now = _EventsCommitted(settings)
                if not _wait(
                    "probes",
                    lambda: committed_now()[0] == 0,
                    startup_timeout_s,
                    procs,
                    collector,
                    0.2,
                ):
                    raise RecstreamError(
                        f"the workers' group had not committed the {len(probes)} probe events "
                        f"(one per events partition) within {startup_timeout_s:.0f} s; worker "
                        f"logs:\n{_logs(procs)}"
                    )
            collector.expect(probes if completion == "lists" else ())
            if not _wait(
                "probes",
                lambda: not any(collector.is_waiting_for(p) for p in probes),
                startup_timeout_s,
                procs,
                collector,
                interval_s=0.2,
            ):
                missing = [p for p in probes if collector.is_waiting_for(p)]
                raise RecstreamError(
                    f"no list for {len(missing)} of {len(probes)} probe events (one per events "
                    f"partition) within {startup_timeout_s:.0f} s; worker logs:\n{_logs(procs)}"
                )
        startup_s = time.monotonic() - started
        console.print(f"workers ready after {startup_s:.1f} s")
        if on_phase is not None:
            on_phase("ready", settings)

        sent_ts: dict[str, int] = {}
        collector.expect(event_ids if completion == "lists" else ())
        committed_at_ready = watch()[1] if watch is not None else 0
        events_topic = settings.topic(settings.events_topic)
        failures: list[BaseException] = []
        progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            console=console,
        )
        with progress:
            sending = progress.add_task("producing", total=len(event_records), speed="")
            collecting = progress.add_task("collecting", total=len(event_records), speed="")

            def refresh() -> None:
                progress.update(collecting, completed=len(event_records) - collector.waiting())

            send_started = time.monotonic()
            shown = 0.0
            total = len(event_records)
            for i, ((key, value), event_id) in enumerate(
                zip(event_records, event_ids, strict=True)
            ):
                if max_in_flight:
                    # Flow control: at most max_in_flight events sent but not yet reflected by a
                    # list, so the pipeline works near-live instead of through a backlog.
                    # Room for event i: fewer than max_in_flight of events 0..i-1 unreflected,
                    # i.e. at most max_in_flight - 1 + (total - i) expected ids still waiting.
                    while not collector.wait_until_waiting_at_most(
                        max_in_flight - 1 + total - i, 0.1
                    ):
                        _check_workers(procs, collector)
                        if (
                            time.monotonic() - max(collector.last_arrival, send_started)
                            > idle_timeout_s
                        ):
                            raise RecstreamError(
                                f"no list for {idle_timeout_s:.0f} s with {max_in_flight} events "
                                f"in flight; worker logs:\n{_logs(procs)}"
                            )
                now_ms = int(time.time() * 1000)
                sent_ts[event_id] = now_ms
                future = producer.send(events_topic, key=key, value=value, timestamp_ms=now_ms)
                future.add_errback(failures.append)
                if time.monotonic() - shown >= 0.25:
                    shown = time.monotonic()
                    elapsed = shown - send_started
                    progress.update(
                        sending, completed=i + 1, speed=f"{(i + 1) / max(elapsed, 1e-9):,.0f}/s"
                    )
                    refresh()
                    _check_workers(procs, collector)
                if rate:
                    # Pace against the schedule, not per record, so bursts average out.
                    ahead = (i + 1) / rate - (time.monotonic() - send_started)
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush()
            send_s = time.monotonic() - send_started
            progress.update(sending, completed=len(event_records))
            if failures:
                raise RecstreamError(f"{len(failures)} events failed to send: {failures[0]!r}")

            if watch is not None:
                committed_ms, lag = _wait_committed(
                    watch,
                    procs,
                    collector,
                    idle_timeout_s,
                    lambda done: progress.update(collecting, completed=done - committed_at_ready),
                )
                progress.update(collecting, completed=len(event_records) - max(lag, 0))
                if committed_ms is None:
                    notes.append(
                        f"stopped waiting: committed offsets did not move for "
                        f"{idle_timeout_s:.0f} s with {lag} events records uncommitted"
                    )
            while collector.waiting():
                _check_workers(procs, collector)
                refresh()
                if time.monotonic() - max(collector.last_arrival, send_started) > idle_timeout_s:
                    notes.append(
                        f"stopped waiting: no list for {idle_timeout_s:.0f} s with "
                        f"{collector.waiting()} events unreflected"
                    )
                    break
                time.sleep(0.2)
            if watch is None:
                refresh()
        if on_phase is not None:
            try:
                on_phase("completed", settings)
            except Exception as exc:
                console.print(f"[yellow]on_phase('completed') failed: {exc!r}[/yellow]")
    finally:
        producer.close()
        if watch is not None:
            watch.close()
        collector.stop()
        for w in procs:
            w.stop()
        if trainer_proc is not None:
            if not trainer_proc.alive():
                notes.append(f"the trainer died during the replay; see {trainer_proc.log_file}")
            trainer_proc.stop()
        if procs:
            _keep_embedding_cache(work_dir / "workers" / "w0", embedding_cache)
        if on_phase is not None:
            try:
                on_phase("stopped", settings)
            except Exception as exc:
                console.print(f"[yellow]on_phase('stopped') failed: {exc!r}[/yellow]")
        try:
            delete_topics_with_prefix(settings, tag)
        except Exception as exc:
            console.print(f"[yellow]could not delete the {tag}* topics: {exc}[/yellow]")

    wanted = set(event_ids)
    lists = [r for r in collector.lists if r.event_id in wanted]
    reflected = {r.event_id for r in lists}
    first_list_per_event: dict[str, int] = {}
    for r in lists:
        first_list_per_event.setdefault(r.event_id, r.kafka_ts_ms)
    return ReplayResult(
        settings=settings,
        lists=lists,
        sent_ts_ms=sent_ts,
        n_events=len(event_records),
        first_sent_ms=sent_ts[event_ids[0]] if event_ids else 0,
        last_sent_ms=sent_ts[event_ids[-1]] if event_ids else 0,
        last_list_ms=max(first_list_per_event.values(), default=0),
        unreflected=[e for e in event_ids if e not in reflected],
        startup_s=startup_s,
        send_s=send_s,
        worker_logs=[w.log_file for w in procs],
        notes=notes,
        rate=rate,
        max_in_flight=max_in_flight or None,
        completion=completion,
        committed_ms=committed_ms,
        uncommitted=lag if completion == "offsets" else None,
    )


#: Subfolder of a worker's data dir holding its embedding cache (agents/embedding.py).
WORKER_EMBEDDING_CACHE = "embedding-cache"


@contextlib.contextmanager
def _cache_lock(cache: Path, mode: int) -> Iterator[None]:
    """`flock(mode)` on the lock file beside the kept cache, released on leaving."""
    with open(cache.with_name(cache.name + ".lock"), "a") as lock:
        fcntl.flock(lock, mode)  # released when the file closes
        yield


def _seed_embedding_cache(cache: Path | None, data_dir: Path) -> None:
    """Copy the kept embedding cache into a worker's (new) data dir (under a shared lock:
    see `_keep_embedding_cache`)."""
    if cache is None or not cache.is_dir():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache, fcntl.LOCK_SH):
        shutil.copytree(cache, data_dir / WORKER_EMBEDDING_CACHE, dirs_exist_ok=True)


def _keep_embedding_cache(data_dir: Path, cache: Path | None) -> None:
    """Replace the kept cache with a (stopped) worker's cache, via a temporary copy. Under
    an exclusive lock on a file beside it: two replays running at once (the eval's
    fixed-weights twin) end at about the same time, and one's swap must not meet the
    other's copy."""
    source = data_dir / WORKER_EMBEDDING_CACHE
    if cache is None or not source.is_dir():
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _cache_lock(cache, fcntl.LOCK_EX):
        tmp = cache.with_name(cache.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(cache, ignore_errors=True)
        tmp.rename(cache)


def _send_probes(
    settings: Settings, producer: Any, tag: str, events: Sequence[dict[str, Any]]
) -> list[str]:
    """One search event (no item: it changes no item popularity) per events partition.

    A list for each proves that every partition has an owner that processes events.
    Returns the probe event ids.
    """
    ts = float(events[0]["ts"]) if events else time.time()
    topic = settings.topic(settings.events_topic)
    ids = []
    for p in range(settings.events_partitions):
        user = f"{PROBE_PREFIX}{tag}-{p}"
        event_id = f"{PROBE_PREFIX}{tag}-{p}"
        body = {
            "user_id": user,
            "event_type": "search",
            "text": "probe",
            "ts": ts,
            "event_id": event_id,
        }
        producer.send(topic, key=user.encode(), value=json.dumps(body).encode(), partition=p)
        ids.append(event_id)
    producer.flush()
    return ids

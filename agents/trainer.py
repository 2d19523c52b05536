"""The trainer process (`recstream trainer`): events in, sequence-model snapshots out.

It is a plain Kafka client, not a Faust worker: it keeps no per-partition state that would
need a changelog, only every user's recent item sequence, which it rebuilds from the events
topic at each start (its own consumer group, `<app_id>-trainer`, reading from the earliest
offset on every assignment: the topic's retention bounds how far back it learns). Item
vectors come from the workers' catalog changelog (`<app_id>-catalog-changelog`, compacted),
read from the beginning too.

It retrains after `trainer_every_events` new events, when the events seen have grown to
`trainer_growth` times those of its last run (models/training_schedule.py, the in-process
replay's rule too), or after `trainer_every_s` seconds with any new event (the first run once
`trainer_min_events` arrived), warm-started from its last
snapshot, and writes each snapshot to the snapshot directory (agents/snapshots.py). One
trainer runs per cluster: a second one in the same group would be given half of the
partitions and train on half of the users.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition

from recstream.agents.embedding import decode_vector
from recstream.agents.snapshots import SnapshotStore
from recstream.config.engine_params import sasrec_params
from recstream.config.settings import Settings
from recstream.models import sasrec
from recstream.models.errors import RecstreamError
from recstream.models.sasrec import Snapshot
from recstream.models.training_schedule import training_due
from recstream.models.user_sequences import UserSequences
from recstream.streams.codecs import Limits, decode_event

log = logging.getLogger(__name__)


class Trainer:
    """The trainer's state and schedule, without Kafka (the loop below feeds it)."""

    def __init__(self, settings: Settings, store: SnapshotStore) -> None:
        self.settings = settings
        self.store = store
        self.params = sasrec_params(settings)
        self.limits = Limits.from_settings(settings)
        self.sequences = UserSequences(keep=4 * self.params.max_len)
        self.vectors: dict[str, np.ndarray] = {}
        self.previous: Snapshot | None = None
        self.trained_at_events = 0
        self.trained_at_s = time.monotonic()
        self.bad_events = 0
        #: Reading the events topic again from the beginning (after an assignment): no run
        #: until it is near the end. A run on a prefix of the history (the schedule's first
        #: 500, 1,000, ... events) would be a newer version than the model the workers serve.
        self.replaying = False

    def reset(self) -> None:
        """Forget the sequences (the events are read again from the beginning)."""
        self.sequences = UserSequences(keep=4 * self.params.max_len)
        self.trained_at_events = 0
        self.replaying = True

    def add_event(self, raw: bytes | None) -> None:
        try:
            e = decode_event(raw, self.limits, now=time.time())
        except RecstreamError:
            self.bad_events += 1  # the workers dead-letter it; the trainer just skips it
            return
        self.sequences.add(e.user_id, e.event_type, e.item_id, e.value, e.ts)

    def add_item(self, key: bytes | None, value: bytes | None) -> None:
        """A catalog changelog record: the item's vector, or its deletion (None)."""
        if not key:
            return
        item_id = key.decode("utf-8", "replace").strip('"')
        try:
            entry = json.loads(value) if value else None
            vec = decode_vector(entry["vec"]) if entry and entry.get("vec") else None
        except (ValueError, TypeError, KeyError):
            return
        if vec is None or not np.isfinite(vec).all():
            self.vectors.pop(item_id, None)
        else:
            self.vectors[item_id] = vec

    def due(self, now: float) -> bool:
        s = self.settings
        if self.replaying or not self.vectors:
            return False
        seen, last = self.sequences.events, self.trained_at_events
        if training_due(
            seen, last, every=max(s.trainer_every_events, 1), min_events=s.trainer_min_events,
            growth=s.trainer_growth,
        ):  # fmt: skip
            return True
        # The wall-clock rule, for a slow stream: whatever arrived since the last run.
        return (
            seen >= s.trainer_min_events
            and seen > last
            and now - self.trained_at_s >= s.trainer_every_s
        )

    def train(self) -> Snapshot:
        """Train on everything read so far and write the snapshot (the next version)."""
        s = self.settings
        ids = sorted(self.vectors)
        dims = {v.shape[0] for v in self.vectors.values()}
        dim = max(dims, key=lambda d: sum(v.shape[0] == d for v in self.vectors.values()))
        vecs = np.stack([self.vectors[i] if self.vectors[i].shape[0] == dim else
                         np.zeros(dim, np.float32) for i in ids]).astype(np.float32)  # fmt: skip
        events = self.sequences.events
        snap = sasrec.train(
            self.sequences.sequences(), ids, vecs, self.params, s.trainer_seed, self.previous,
            device=s.trainer_device, trained_events=events,
            trained_through_ts=self.sequences.latest_ts,
        )  # fmt: skip
        snap = snap.with_version(self.store.latest_version() + 1)
        path = self.store.write(snap)
        self.previous, self.trained_at_events = snap, events
        self.trained_at_s = time.monotonic()
        log.info(
            "snapshot v%d: %d users, %d items, %d events, loss %.3f, %.1f s -> %s",
            snap.version, len(self.sequences), len(ids), events, snap.loss, snap.train_s, path,
        )  # fmt: skip
        return snap


class _Rewind(ConsumerRebalanceListener):
    """On every assignment: read the events again from the beginning, from empty sequences."""

    def __init__(self, consumer: KafkaConsumer, trainer: Trainer) -> None:
        self.consumer, self.trainer = consumer, trainer

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        pass

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        parts = list(assigned)
        self.trainer.reset()
        if parts:
            self.consumer.seek_to_beginning(*parts)


def _consumer(settings: Settings, group_id: str | None) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        client_id=f"{settings.app_id}-trainer",
    )


def _assign_catalog(consumer: KafkaConsumer, topic: str) -> bool:
    """Assign every partition of the catalog changelog once the workers created it."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        return False
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return True


def _caught_up(consumer: KafkaConsumer) -> bool:
    """Whether the assigned partitions were read to their end offsets at this moment."""
    tps = list(consumer.assignment())
    ends = consumer.end_offsets(tps)
    return all(consumer.position(tp) >= ends[tp] for tp in tps)


def _lag(consumer: KafkaConsumer) -> int | None:
    """Records between the assigned partitions' positions and their end offsets now (None
    before an assignment)."""
    tps = list(consumer.assignment())
    if not tps:
        return None
    ends = consumer.end_offsets(tps)
    return sum(max(ends[tp] - consumer.position(tp), 0) for tp in tps)


def _drain(consumer: KafkaConsumer, handle: Any, timeout_ms: int) -> int:
    n = 0
    for records in consumer.poll(timeout_ms=timeout_ms, max_records=5000).values():
        for msg in records:
            handle(msg)
            n += 1
    return n


def run_trainer(
    settings: Settings, stop: threading.Event | None = None, max_runs: int | None = None
) -> int:
    """Consume, train on schedule, write snapshots until `stop` is set (or `max_runs`
    snapshots were written); returns the number of snapshots written."""
    stop = stop or threading.Event()
    # Process-wide, and this process only trains: torch's default of one thread per core
    # would spin on the cores of a worker beside it (many small ops per optimiser step).
    torch.set_num_threads(settings.trainer_threads)
    # The first optimiser built imports torch's compiler stack (seconds): pay it now, not in
    # the first training run, which the workers are waiting for.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    trainer = Trainer(settings, SnapshotStore(settings.snapshots, settings.trainer_keep))
    events = _consumer(settings, f"{settings.app_id}-trainer")
    events.subscribe([settings.topic(settings.events_topic)], listener=_Rewind(events, trainer))
    items = _consumer(settings, None)
    catalog_topic = f"{settings.app_id}-catalog-changelog"
    assigned, catalog_read, runs = False, False, 0
    log.info(
        "trainer: snapshots in %s, %d torch threads", settings.snapshots, torch.get_num_threads()
    )
    try:
        while not stop.is_set() and (max_runs is None or runs < max_runs):
            if not assigned:
                assigned = _assign_catalog(items, catalog_topic)
            if assigned:
                _drain(items, lambda m: trainer.add_item(m.key, m.value), 100)
                # A model of part of the catalogue would be refused by the workers.
                catalog_read = catalog_read or _caught_up(items)
            _drain(events, lambda m: trainer.add_event(m.value), 500)
            if trainer.replaying:
                # Near the end: within a first run's worth of events (a live topic is never
                # read exactly to its end).
                lag = _lag(events)
                trainer.replaying = lag is None or lag >= settings.trainer_min_events
            if catalog_read and trainer.due(time.monotonic()):
                trainer.train()
                runs += 1
    finally:
        events.close()
        items.close()
    return runs

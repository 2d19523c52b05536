"""Sequence-model snapshots between the trainer and the workers (agents/snapshots.py and
agents/trainer.py, without a broker): atomic, versioned writes; hot swaps; refusals that keep
the last good model; a snapshot that waits for the worker's event time; a trainer that
trains on schedule."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from recstream.agents.embedding import encode_vector
from recstream.agents.snapshots import SnapshotStore, SnapshotWatcher
from recstream.agents.trainer import Trainer
from recstream.config.settings import Settings
from recstream.models import sasrec
from recstream.models.catalog import Catalog
from recstream.models.interest_state import InterestParams
from recstream.models.recommender import EngineParams, Recommender
from recstream.models.sasrec import SasrecParams, Snapshot

D = 8
N = 20
IDS = tuple(f"i{n:02d}" for n in range(N))
TINY = SasrecParams(dim=8, heads=1, layers=1, max_len=6, epochs=1, batch_size=8)


def vectors(seed: int = 5) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def engine() -> Recommender:
    params = EngineParams(interest=InterestParams(dim=D), exploration_share=0.0)
    catalog = Catalog(D)
    for item_id, v in zip(IDS, vectors(), strict=True):
        catalog.upsert(item_id, v, ("c",), 1.7e9, item_id)
    return Recommender(params, catalog, params.shared_stats())


def snapshot(ids: tuple[str, ...] = IDS, version: int = 1) -> Snapshot:
    seqs = [[ids[(u + t) % N] for t in range(8)] for u in range(N)]
    return sasrec.train(seqs, ids, vectors(), TINY, seed=0).with_version(version)


def test_writes_are_atomic_versioned_and_pruned(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps", keep=2)
    assert store.versions() == [] and store.latest_version() == 0
    snap = snapshot()
    for v in (1, 2, 3):
        store.write(snap.with_version(v))
    assert [v for v, _ in store.versions()] == [2, 3]
    assert not list((tmp_path / "snaps").glob(".sasrec-*"))  # no temporary file left
    assert Snapshot.from_bytes(store.versions()[-1][1].read_bytes()).version == 3


def test_a_worker_swaps_newer_snapshots_and_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(snapshot_dir=tmp_path, snapshot_poll_s=5.0)
    watcher, eng, store = SnapshotWatcher(settings), engine(), SnapshotStore(tmp_path)
    assert not watcher.poll(eng, now=0.0) and eng.model_version is None  # no trainer yet
    store.write(snapshot(version=1))
    assert not watcher.poll(eng, now=1.0)  # within the poll interval
    assert watcher.poll(eng, now=6.0) and eng.model_version == 1
    bad = {
        2: b"garbage",
        3: bytearray(snapshot(version=3).to_bytes()),
        4: snapshot(tuple(f"x{n}" for n in range(N)), version=4).to_bytes(),
    }
    bad[3][200] ^= 0xFF
    reasons = {2: "bad magic|truncated", 3: "checksum", 4: "another catalogue"}
    now = 6.0
    with caplog.at_level(logging.ERROR, logger="recstream.agents.snapshots"):
        for version, data in bad.items():
            (tmp_path / f"sasrec-{version:010d}.snap").write_bytes(bytes(data))
            now += 10.0
            assert not watcher.poll(eng, now=now)
            assert eng.model_version == 1 and watcher.version == 1  # the last good model
            assert version in watcher.refused
            assert any(r in watcher.refused[version] for r in reasons[version].split("|"))
    assert sum("refused, keeping v1" in r.getMessage() for r in caplog.records) == 3
    # A refused version is not read again; a good newer one is taken.
    assert not watcher.poll(eng, now=now + 10.0)
    store.write(snapshot(version=5))
    assert watcher.poll(eng, now=now + 20.0) and eng.model_version == 5 and watcher.swaps == 2


def test_a_snapshot_waits_until_the_worker_is_past_the_events_it_was_trained_on(
    tmp_path: Path,
) -> None:
    """Prequential: a worker behind the trainer keeps its model until its own event time is
    later than the newest event the snapshot learnt from, or the wait times out."""
    settings = Settings(snapshot_dir=tmp_path, snapshot_poll_s=1.0, snapshot_max_wait_s=30.0)
    watcher, eng, store = SnapshotWatcher(settings), engine(), SnapshotStore(tmp_path)
    snap = snapshot()
    store.write(dataclasses.replace(snap, version=1, trained_through_ts=1000.0))
    assert not watcher.poll(eng, now=0.0, event_time=999.0)  # still before event 1000
    assert not watcher.poll(eng, now=5.0, event_time=1000.0)  # ties: the same second
    assert watcher.pending and eng.model_version is None
    # A trainer that has moved on (v2 learnt from event 1001) does not starve the worker: the
    # newest snapshot it is past serves, and the newer one waits on.
    store.write(dataclasses.replace(snap, version=2, trained_through_ts=1001.0))
    assert watcher.poll(eng, now=6.0, event_time=1000.5) and eng.model_version == 1
    assert [v.version for _, v in watcher.pending] == [2]
    assert watcher.poll(eng, now=6.5, event_time=1001.5) and eng.model_version == 2
    # A worker whose event time never gets there serves it after snapshot_max_wait_s.
    store.write(dataclasses.replace(snap, version=3, trained_through_ts=5000.0))
    assert not watcher.poll(eng, now=10.0, event_time=1002.0)
    assert not watcher.poll(eng, now=39.0, event_time=1003.0) and eng.model_version == 2
    assert watcher.poll(eng, now=40.5, event_time=1004.0) and eng.model_version == 3


def test_the_trainer_trains_on_schedule_and_versions_increase(tmp_path: Path) -> None:
    settings = Settings(
        snapshot_dir=tmp_path, trainer_min_events=20, trainer_every_events=30,
        trainer_every_s=1e9, sasrec_dim=8, sasrec_layers=1, sasrec_max_len=6, sasrec_epochs=1,
    )  # fmt: skip
    store = SnapshotStore(tmp_path)
    store.write(snapshot(version=7))  # an earlier trainer's: the next version is 8
    trainer = Trainer(settings, store)
    for item_id, v in zip(IDS, vectors(), strict=True):
        trainer.add_item(f'"{item_id}"'.encode(), json.dumps({"vec": encode_vector(v)}).encode())
    trainer.add_item(b'"gone"', None)
    trainer.add_event(b"not json")
    assert trainer.bad_events == 1
    n = 0
    for t in range(12):
        for u in range(3):
            event = {"user_id": f"u{u}", "event_type": "click", "item_id": IDS[(u + t) % N],
                     "ts": 1.7e9 + 60 * t}  # fmt: skip
            trainer.add_event(json.dumps(event).encode())
            n += 1
            if trainer.due(0.0):
                snap = trainer.train()
                assert snap.trained_events == n
                assert snap.trained_through_ts == 1.7e9 + 60 * t  # the latest event it saw
    assert [v for v, _ in store.versions()][-1] == 8
    assert trainer.previous is not None and trainer.previous.item_ids == tuple(sorted(IDS))


def test_the_trainer_trains_on_no_prefix_of_the_history_it_reads_again(tmp_path: Path) -> None:
    """After an assignment the trainer reads every event again from the beginning: a run on
    the schedule's first few hundred events would be a newer version than the model the
    workers serve, trained on far less. No run is due until the loop says it caught up."""
    settings = Settings(
        snapshot_dir=tmp_path, trainer_min_events=20, trainer_every_events=30,
        trainer_every_s=1e9, sasrec_dim=8, sasrec_layers=1, sasrec_max_len=6,
    )  # fmt: skip
    trainer = Trainer(settings, SnapshotStore(tmp_path))
    for item_id, v in zip(IDS, vectors(), strict=True):
        trainer.add_item(f'"{item_id}"'.encode(), json.dumps({"vec": encode_vector(v)}).encode())
    trainer.reset()  # what the rebalance listener does on every assignment
    for t in range(40):
        event = {"user_id": f"u{t % 3}", "event_type": "click", "item_id": IDS[t % N],
                 "ts": 1.7e9 + 60 * t}  # fmt: skip
        trainer.add_event(json.dumps(event).encode())
        assert not trainer.due(0.0), t
    trainer.replaying = False  # the loop found the topic read to near its end
    assert trainer.due(0.0)  # one run on everything read

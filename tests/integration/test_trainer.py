"""The trainer process on the real broker: it writes a snapshot that a running worker picks
up without a restart, once the worker's events are later than the ones the snapshot learnt
from, and the worker's lists then name that model version."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rs_harness import Topic, event, item

from recstream.agents.snapshots import SnapshotStore
from recstream.config.settings import Settings
from recstream.evaluation.workers import TrainerProcess, WorkerProcess

T0 = 1_700_000_000.0


def test_a_trainer_snapshot_reaches_a_running_worker(
    run_settings: Settings, tmp_path: Path, topics: dict[str, Topic]
) -> None:
    settings = run_settings.model_copy(
        update={
            "snapshot_dir": tmp_path / "snapshots", "snapshot_poll_s": 0.5,
            "trainer_min_events": 10, "trainer_every_events": 10, "trainer_every_s": 2.0,
            "sasrec_dim": 8, "sasrec_layers": 1, "sasrec_max_len": 6, "sasrec_epochs": 1,
        }
    )  # fmt: skip
    topics["items"].send([item(f"i{n}", f"Item {n}", ["jazz"]) for n in range(8)])
    worker = WorkerProcess(settings, data_dir=tmp_path / "w", log_file=tmp_path / "w.log").start()
    trainer = TrainerProcess(settings, data_dir=tmp_path / "t", log_file=tmp_path / "t.log")
    try:
        warm = [event(f"u{u}", f"u{u}-{t}", T0 + t, item=f"i{(u + t) % 8}")
                for u in range(4) for t in range(5)]  # fmt: skip
        topics["events"].send(warm)
        topics["recommendations"].read_until(lambda r: len(r) >= 20, 120, worker=worker)
        trainer.start()  # after the worker wrote the catalog changelog (item vectors)
        store = SnapshotStore(settings.snapshots)
        deadline = time.monotonic() + 120
        while not store.versions() and time.monotonic() < deadline:
            assert trainer.alive(), trainer.log_tail()
            time.sleep(0.5)
        assert store.versions(), f"no snapshot:\n{trainer.log_tail()}"
        # Events no later than the ones the snapshot learnt from (the worker's event time has
        # not passed them): the worker keeps serving without the model.
        topics["events"].send([event("late", f"late-{t}", T0 + t, item="i1") for t in range(3)])
        recs = topics["recommendations"].read_until(
            lambda r: sum(x["user_id"] == "late" for x in r) >= 3, 60, worker=worker
        )
        assert all(r.get("model_version") is None for r in recs if r["user_id"] == "late")

        def served(recs: list[Any]) -> bool:
            return any((r.get("model_version") or 0) >= 1 for r in recs)

        n = 0
        while True:  # keep events coming until a list used the model (polled every 0.5 s)
            n += 1
            topics["events"].send([event("probe", f"probe-{n}", T0 + 100 + n, item=f"i{n % 8}")])
            try:
                recs = topics["recommendations"].read_until(served, 5, worker=worker)
                break
            except AssertionError:
                assert n < 24, f"no list used the model:\n{worker.log_tail()}"
        last = next(r for r in recs if (r.get("model_version") or 0) >= 1)
        assert "sasrec" in last["weights"]
    finally:
        trainer.stop()
        worker.stop()

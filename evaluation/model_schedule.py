"""The trainer's schedule inside the in-process replay: prequential, like the live trainer.

Before each micro-batch, when a run is due (models/training_schedule.py, the live trainer's
rule: from `trainer_min_events` on, every `every` events and whenever the events seen have
doubled), a model is trained on the events before the batch (warm-started from the
previous snapshot) and the engine serves it from that batch on: a list at event t only
ever uses a model trained on events before t. The timeline records which version served
which events.

Training reads only the events and the catalogue, never a list, so every in-process replay
of one evaluation (the run under test, fixed_weights, the ablations) would train the same
models. `train_ahead` trains them once, as a job of its own, and writes each snapshot to a
folder; each replay's `SnapshotFeed` waits for the one it is due, as the live workers load
the live trainer's. The snapshots are the ones a replay would have trained itself
(same inputs, same seed, one torch thread per job), so the lists do not change.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recstream.config.engine_params import sasrec_params
from recstream.config.settings import Settings
from recstream.models import sasrec
from recstream.models.catalog import Catalog
from recstream.models.errors import JobFailed
from recstream.models.recommender import Recommender
from recstream.models.sasrec import Snapshot
from recstream.models.training_schedule import training_due
from recstream.models.user_sequences import UserSequences


@dataclass(frozen=True)
class ServedVersion:
    """Model `version` served events [first_event, …) (indexes into the replay's events),
    trained on the `trained_events` before it in `train_s` seconds to `loss`."""

    version: int
    first_event: int
    trained_events: int
    train_s: float
    loss: float


class ModelSchedule:
    """The training runs of one replay: when each is due and what it is trained on.

    Invariant: `train(start)` sees exactly the events added before `start` (`add` after each
    micro-batch), so its snapshot depends on the events and the catalogue only.
    """

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.every = settings.trainer_every_events
        self.params = sasrec_params(settings)
        self.sequences = UserSequences(keep=4 * self.params.max_len)
        self.snapshot: Snapshot | None = None
        self.last_trained = 0

    def due(self, start: int) -> bool:
        s = self.settings
        return bool(self.every) and training_due(
            start, self.last_trained, every=self.every, min_events=s.trainer_min_events,
            growth=s.trainer_growth,
        )  # fmt: skip

    def train(self, start: int) -> Snapshot:
        """A model of the events added so far (the `start` events before the batch)."""
        s, cat = self.settings, self.catalog
        snap = sasrec.train(
            self.sequences.sequences(), cat.ids[: cat.rows], cat.vectors[: cat.rows],
            self.params, s.trainer_seed, self.snapshot, device=s.trainer_device,
            trained_events=start, trained_through_ts=self.sequences.latest_ts,
        )  # fmt: skip
        self.served(snap, start)
        return snap

    def served(self, snap: Snapshot, start: int) -> None:
        self.snapshot, self.last_trained = snap, start

    def add(self, events: Sequence[Mapping[str, Any]]) -> None:
        for e in events:
            value = e.get("value")
            item = e.get("item_id")
            self.sequences.add(
                str(e["user_id"]), str(e["event_type"]), None if item is None else str(item),
                None if value is None else float(value), float(e["ts"]),
            )  # fmt: skip


def snapshot_path(folder: Path, start: int) -> Path:
    return folder / f"{start:010d}.snapshot"


def train_ahead(
    settings: Settings,
    catalog: Catalog,
    events: Sequence[Mapping[str, Any]],
    folder: Path,
    batch_size: int | None = None,
) -> int:
    """Every training run of a replay of `events` in micro-batches of `batch_size` (default
    the workers' `batch_max_events`), each snapshot written to `folder` (atomically) as soon
    as it is trained; returns how many. On an error it leaves `failed` (the reason) there, so
    that the feeds waiting on it stop too; on success, `done`."""
    folder.mkdir(parents=True, exist_ok=True)
    schedule = ModelSchedule(settings, catalog)
    size = batch_size or settings.batch_max_events
    runs = 0
    try:
        for start in range(0, len(events), size):
            if schedule.due(start):
                tmp = folder / f".{start}.tmp"
                tmp.write_bytes(schedule.train(start).to_bytes())
                os.replace(tmp, snapshot_path(folder, start))
                runs += 1
            schedule.add(events[start : start + size])
    except BaseException as exc:
        (folder / "failed").write_text(f"{type(exc).__name__}: {exc}")
        raise
    (folder / "done").write_text(str(runs))
    return runs


class SnapshotFeed:
    """The snapshots `train_ahead` writes to `folder`, as a replay falls due for them."""

    def __init__(self, folder: Path, poll_s: float = 0.02) -> None:
        self.folder = folder
        self.poll_s = poll_s
        self.waited_s = 0.0

    def wait_for(self, start: int, fingerprint: str) -> Snapshot:
        """The model trained on the `start` events before the batch at `start` (blocks until
        it is written). Raises JobFailed when the trainer failed or ended without it."""
        path = snapshot_path(self.folder, start)
        began = time.perf_counter()
        while not path.exists():
            failed, done = self.folder / "failed", self.folder / "done"
            ended = failed.exists() or done.exists()
            # The trainer writes a snapshot before it ends: look once more, it may be there now.
            if ended and not path.exists():
                if failed.exists():
                    why = failed.read_text()
                    raise JobFailed(f"the shared sequence-model trainer failed: {why}")
                raise JobFailed(f"the shared trainer made no model for the batch at {start}")
            time.sleep(self.poll_s)
        self.waited_s += time.perf_counter() - began
        return Snapshot.from_bytes(path.read_bytes(), fingerprint)


class InProcessTrainer:
    """Trains on the live trainer's schedule (`settings.trainer_every_events` 0: never), or,
    with a `feed`, serves the snapshots a shared `train_ahead` job trains on that schedule."""

    def __init__(
        self, settings: Settings, engine: Recommender, feed: SnapshotFeed | None = None
    ) -> None:
        self.engine = engine
        self.feed = feed
        self.schedule = ModelSchedule(settings, engine.catalog)
        self.timeline: list[ServedVersion] = []

    def before_batch(self, start: int) -> None:
        """Train when due, on the `start` events seen so far, and serve the new model."""
        schedule = self.schedule
        if not schedule.due(start):
            return
        if self.feed is None:
            snap = schedule.train(start)
        else:
            cat = schedule.catalog
            snap = self.feed.wait_for(start, sasrec.fingerprint(cat.ids[: cat.rows]))
            schedule.served(snap, start)
        self.engine.use_model(snap)
        self.timeline.append(ServedVersion(snap.version, start, start, snap.train_s, snap.loss))

    def after_batch(self, events: Sequence[Mapping[str, Any]]) -> None:
        if self.feed is None:  # the feed's trainer keeps the sequences
            self.schedule.add(events)

    def report(self) -> list[dict[str, Any]]:
        return [asdict(v) for v in self.timeline]

    def note(self, n_events: int) -> str | None:
        """One line: which version served which events, and the training time."""
        if not self.timeline:
            return None
        spans = []
        for v, nxt in zip(self.timeline, [*self.timeline[1:], None], strict=True):
            end = n_events if nxt is None else nxt.first_event
            spans.append(f"v{v.version} [{v.first_event}, {end})")
        total = sum(v.train_s for v in self.timeline)
        return (
            f"sasrec: {len(self.timeline)} training runs, {total:.1f} s in all "
            f"({total / len(self.timeline):.1f} s each); no model for events "
            f"[0, {self.timeline[0].first_event}); " + ", ".join(spans)
        )

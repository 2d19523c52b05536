"""Sequence-model snapshots on disk: the trainer writes them, every worker picks them up.

Layout: ``<snapshot_dir>/sasrec-<version, 10 digits>.snap``, each `Snapshot.to_bytes()`.
A snapshot is written to a temporary file in the same directory, flushed to disk and renamed
(rename is atomic on POSIX), so a reader sees a whole snapshot or none; versions increase
monotonically across trainer restarts (the next is the highest on disk + 1), and the trainer
keeps the newest `keep` files.

A worker looks for a newer version every `snapshot_poll_s` seconds (before a batch) and
hot-swaps it into its engine. A snapshot that is corrupt, of another catalogue or of a shape
the engine cannot use is refused with its reason logged, once per version, and the worker
keeps serving its last good model (or none). No trainer, no directory: no model, nothing else
changes.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

from recstream.config.settings import Settings
from recstream.models.errors import SnapshotError
from recstream.models.recommender import Recommender
from recstream.models.sasrec import Snapshot

log = logging.getLogger(__name__)
_NAME = re.compile(r"^sasrec-(\d{10})\.snap$")
#: Snapshots a worker holds while they wait to serve (a few MB each).
_MAX_PENDING = 3


class SnapshotStore:
    """The snapshot directory."""

    def __init__(self, directory: Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def versions(self) -> list[tuple[int, Path]]:
        """(version, path) of every snapshot file, oldest first ([] without a directory)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = [(int(m.group(1)), self.directory / n) for n in names if (m := _NAME.match(n))]
        return sorted(found)

    def path_of(self, version: int) -> Path:
        return self.directory / f"sasrec-{version:010d}.snap"

    def latest_version(self) -> int:
        found = self.versions()
        return found[-1][0] if found else 0

    def write(self, snapshot: Snapshot) -> Path:
        """Write `snapshot` (its own version) atomically; prune all but the newest `keep`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_of(snapshot.version)
        fd, tmp = tempfile.mkstemp(prefix=".sasrec-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(snapshot.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for _, old in self.versions()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final


class SnapshotWatcher:
    """A worker's view of the snapshot directory: the model its engine serves."""

    def __init__(self, settings: Settings) -> None:
        self.store = SnapshotStore(settings.snapshots)
        self.poll_s = settings.snapshot_poll_s
        self.current: Snapshot | None = None
        self.refused: dict[int, str] = {}
        self.swaps = 0
        #: (wall time read, snapshot), oldest first: read, newer than `current`, not served
        #: yet (each waits for the worker's events to pass the ones it learnt from).
        self.pending: list[tuple[float, Snapshot]] = []
        self.max_wait_s = settings.snapshot_max_wait_s
        self._next_poll = 0.0

    @property
    def version(self) -> int | None:
        return None if self.current is None else self.current.version

    def poll(
        self, engine: Recommender, now: float | None = None, *, event_time: float | None = None
    ) -> bool:
        """Swap a newer snapshot into `engine`; True when it swapped. The directory is read at
        most once per poll interval.

        `event_time` is the worker's event-time high-water mark (epoch s) before the batch
        about to be ranked. A snapshot trained through event time T waits until the worker has
        processed an event later than T, so that a worker behind the trainer does not rank
        events with a model that saw the events after them (a list at t only uses a model of
        events before t, for events that arrive in time order). Of the snapshots waiting, the
        newest one the worker is past serves; the newer ones wait on, so a trainer that keeps
        training on the latest events does not starve the worker. A snapshot waits at most
        `snapshot_max_wait_s` wall seconds: a worker whose producers' clocks lag would
        otherwise never serve one. None: no constraint.
        """
        now = time.monotonic() if now is None else now
        if now >= self._next_poll:
            self._next_poll = now + self.poll_s
            self._read_newest(now)
        if not self.pending:
            return False
        past = [
            i for i, (_, snap) in enumerate(self.pending)
            if snap.trained_through_ts is None or event_time is None
            or event_time > snap.trained_through_ts
        ]  # fmt: skip
        forced = not past and now - self.pending[0][0] >= self.max_wait_s
        if not past and not forced:
            return False
        at = past[-1] if past else len(self.pending) - 1
        since, waiting = self.pending[at]
        del self.pending[: at + 1]
        try:
            engine.use_model(waiting)
        except SnapshotError as exc:
            self._refuse(waiting.version, self.store.path_of(waiting.version), exc)
            return False
        self.current = waiting
        self.swaps += 1
        if forced:
            log.warning(
                "sequence-model snapshot v%d serves after waiting %.0f s for events later than "
                "%.0f (the worker's event time is %s)",
                waiting.version, now - since, waiting.trained_through_ts, event_time,
            )  # fmt: skip
        else:
            log.info("sequence-model snapshot v%d now serves", waiting.version)
        return True

    def _read_newest(self, now: float) -> None:
        """The newest snapshot on disk joins `pending` if it is newer than what is served or
        waits, and readable (at most `_MAX_PENDING` wait: the oldest go)."""
        found = self.store.versions()
        if not found:
            return
        version, path = found[-1]
        known = max([self.version or 0, *(snap.version for _, snap in self.pending)])
        if version <= known or version in self.refused:
            return
        try:
            self.pending.append((now, Snapshot.from_bytes(path.read_bytes())))
        except (SnapshotError, OSError) as exc:
            self._refuse(version, path, exc)
        del self.pending[:-_MAX_PENDING]

    def _refuse(self, version: int, path: Path, exc: Exception) -> None:
        self.refused[version] = str(exc)
        log.error(
            "sequence-model snapshot v%d (%s) refused, keeping %s: %s",
            version, path, f"v{self.version}" if self.current else "no model", exc,
        )  # fmt: skip

    def reapply(self, engine: Recommender) -> None:
        """Serve the current model from a rebuilt engine (another catalogue dimension)."""
        if self.current is None:
            return
        try:
            engine.use_model(self.current)
        except SnapshotError as exc:
            log.error("sequence model v%d dropped by the new engine: %s", self.version, exc)
            self.current = None

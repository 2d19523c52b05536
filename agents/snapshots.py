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

    def latest_version(self) -> int:
        found = self.versions()
        return found[-1][0] if found else 0

    def write(self, snapshot: Snapshot) -> Path:
        """Write `snapshot` (its own version) atomically; prune all but the newest `keep`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"sasrec-{snapshot.version:010d}.snap"
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
        self._next_poll = 0.0

    @property
    def version(self) -> int | None:
        return None if self.current is None else self.current.version

    def poll(self, engine: Recommender, now: float | None = None) -> bool:
        """Swap the newest snapshot into `engine` when one newer than the served model has
        appeared (at most once per poll interval); True when it swapped."""
        now = time.monotonic() if now is None else now
        if now < self._next_poll:
            return False
        self._next_poll = now + self.poll_s
        found = self.store.versions()
        if not found:
            return False
        version, path = found[-1]
        if version <= (self.version or 0) or version in self.refused:
            return False
        try:
            snapshot = Snapshot.from_bytes(path.read_bytes())
            engine.use_model(snapshot)
        except (SnapshotError, OSError) as exc:
            self.refused[version] = str(exc)
            log.error(
                "sequence-model snapshot v%d (%s) refused, keeping %s: %s",
                version, path, f"v{self.version}" if self.current else "no model", exc,
            )  # fmt: skip
            return False
        self.current = snapshot
        self.swaps += 1
        log.info("sequence-model snapshot v%d now serves (%s)", version, path)
        return True

    def reapply(self, engine: Recommender) -> None:
        """Serve the current model from a rebuilt engine (another catalogue dimension)."""
        if self.current is None:
            return
        try:
            engine.use_model(self.current)
        except SnapshotError as exc:
            log.error("sequence model v%d dropped by the new engine: %s", self.version, exc)
            self.current = None

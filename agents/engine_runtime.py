"""The engine on a worker: its catalogue mirror, its replica of the shared statistics.

The catalogue the engine ranks over (models/catalog.py) mirrors the worker's catalog
GlobalTable through `EmbeddingRuntime`: every catalog change marks its id, and `sync()`
re-reads only the marked ids (vector from the index, categories, time, title) before a batch.
Shared statistics arrive as `SharedDelta` records in the `shared-deltas` GlobalTable: this
worker applies its own deltas when it writes them and everyone else's when Faust reads them
from the changelog (`on_shared_delta`), so every worker applies every delta once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from recstream.agents.embedding import EmbeddingRuntime
from recstream.agents.snapshots import SnapshotWatcher
from recstream.config.engine_params import engine_params
from recstream.config.settings import Settings
from recstream.models.catalog import Catalog
from recstream.models.errors import StateError
from recstream.models.recommender import Event, Recommender
from recstream.models.shared_stats import SharedDelta
from recstream.models.user_record import UserRecord

log = logging.getLogger(__name__)


class EngineRuntime:
    """One worker's engine. `engine` is built when the encoder's dimension is known."""

    def __init__(self, settings: Settings, runtime: EmbeddingRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.params = engine_params(settings)
        self.shared = self.params.shared_stats()
        self._engine: Recommender | None = None
        self.deltas_applied = 0
        self.bad_deltas = 0
        self.bad_states = 0
        # Keys of the deltas applied: each delta is applied once, whether it arrives as this
        # worker's own write, as a changelog record, or from the local store (scan).
        self.applied_keys: set[str] = set()
        self.needs_scan = True
        # The trainer's sequence model, hot-swapped between batches (agents/snapshots.py).
        self.models = SnapshotWatcher(settings)
        #: The latest event time (epoch s) of the batches ranked so far; None before the first.
        self.event_time: float | None = None

    def ranked(self, events: Sequence[Event]) -> None:
        """Advance the event-time high-water mark past a ranked batch."""
        latest = max((ev.ts for ev in events), default=None)
        if latest is not None and (self.event_time is None or latest > self.event_time):
            self.event_time = latest

    def engine(self, dim: int, ranking: bool = False) -> Recommender:
        """The engine over a catalogue of `dim`-wide vectors, synced with the catalog. With
        `ranking` (a batch is about to be ranked) a newer sequence model is swapped in first,
        once this worker's event time has passed what it was trained on (agents/snapshots.py);
        a web read leaves the served model as it is."""
        if self._engine is None or self._engine.catalog.dim != dim:
            self.params = self.params.with_dim(dim)
            self._engine = Recommender(self.params, Catalog(dim), self.shared)
            self.runtime.changed.update(self.runtime.item_meta)
            self.models.reapply(self._engine)
        self.sync(self._engine.catalog)
        if ranking:
            self.models.poll(self._engine, event_time=self.event_time)
        return self._engine

    def sync(self, catalog: Catalog) -> None:
        """Bring `catalog` up to date with every catalog change since the last sync."""
        rt = self.runtime
        while rt.changed:
            item_id = rt.changed.pop()
            meta = rt.item_meta.get(item_id)
            if meta is None:
                catalog.remove(item_id)
                rt.new_vectors.pop(item_id, None)
                continue
            cats = rt.item_categories.get(item_id, ())
            if item_id in catalog and item_id not in rt.new_vectors:
                catalog.set_categories(item_id, cats)  # a cluster relabel: the vector stays
                continue
            vec = rt.new_vectors.pop(item_id, None)
            if vec is not None and vec.shape[0] != catalog.dim:
                vec = None
            ts, title = meta
            catalog.upsert(item_id, vec, cats, ts, title)

    def load_state(self, raw: bytes | None) -> UserRecord | None:
        """A stored user record; None (a fresh state) when absent or unreadable."""
        if raw is None:
            return None
        try:
            return UserRecord.from_bytes(raw, self.params.interest)
        except StateError as exc:
            # A record from an older layout or a corrupt one: the user starts afresh rather
            # than the worker stopping (logged and counted in /stats/engine/).
            self.bad_states += 1
            log.error("unreadable user state, starting afresh: %s", exc)
            return None

    def apply_delta(self, key: str, delta: SharedDelta) -> None:
        if key in self.applied_keys:
            return
        self.applied_keys.add(key)
        self.shared.apply(delta)
        self.deltas_applied += 1

    def apply_raw(self, key: Any, value: Any) -> None:
        """Apply a stored or read delta record (JSON bytes, text or dict); a corrupt one is
        logged, counted and skipped."""
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        name = name.strip('"')
        try:
            if isinstance(value, bytes | str):
                value = json.loads(value)
            if value is not None:
                self.apply_delta(name, SharedDelta.from_dict(value))
        except (StateError, ValueError, TypeError) as exc:
            self.bad_deltas += 1
            log.error("unreadable shared delta %s skipped: %s", name, exc)

    async def on_shared_delta(self, event: Any) -> None:
        """Faust callback for every shared-deltas changelog record read (recovery, others)."""
        self.apply_raw(event.key, event.value)

    def scan(self, deltas: Any, catalog: Any) -> None:
        """Apply what the local stores hold but the callbacks never delivered: Faust resumes
        recovery from the offsets persisted in RocksDB, so after a restart on the same data
        directory the records before them are in the store but were never read again."""
        for key, value in list(catalog.items()):
            item_id = str(key).strip('"')
            if item_id not in self.runtime.item_meta:
                self.runtime.apply_catalog(item_id, value)
        for key, value in list(deltas.items()):
            self.apply_raw(key, value)
        self.needs_scan = False

"""The embedding stage: catalog items and user text → vectors, in micro-batches.

    items ──► items agent (micro-batches; cache hit: vector now, misses: one encode call)
      │           ▼
      │       catalog GlobalTable  ◄── item-vector agent ◄── item-vectors
      │           │ (changelog, every worker)   (vectors made elsewhere)
      │           ▼
      └──►  per-worker VectorIndex + category map (EmbeddingRuntime)

    events with text ──► user-texts ──► text embedder (batched) ──► user-text-vectors
                                                                      └─► user state agent

Item batches are bounded by size (`embed_batch_size`) and wait (`embed_wait_s`: the longest
the oldest record waits for company) and read ahead (`OffsetGapGuard.prefetched_batches`);
while one batch is encoded the next is decoded and the one before written, so the encoder
waits neither for records that have arrived, nor for their decoding, nor for writes.
Encoding runs in a worker thread (torch and ONNX Runtime release the GIL), so the event loop
keeps serving other agents meanwhile. Vectors are
cached in RocksDB (rocksdict) under `model id + sha256(text)`: a re-sent or unchanged item, or
a restarted worker, costs no re-encoding, and a different model never reads another model's
vectors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recstream.config.settings import Settings
from recstream.models.errors import RecstreamError
from recstream.models.interest_posterior import assign, fit_centroids
from recstream.models.vector_index import VectorIndex

log = logging.getLogger(__name__)


def encode_vector(vec: np.ndarray) -> str:
    """float32 vector → base64 text (JSON-safe, 4 bytes per dimension before base64)."""
    return base64.b64encode(np.ascontiguousarray(vec, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32)


@dataclass
class BatchStats:
    """Sizes, encode times (ms) and start times (epoch s) of recent micro-batches, for
    benchmarks and metrics (the start times tell how long the encoder sat idle)."""

    sizes: list[int] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    cache_hits: int = 0
    encoded: int = 0

    def record(self, size: int, ms: float, started_at: float | None = None) -> None:
        self.sizes.append(size)
        self.encode_ms.append(ms)
        self.started_at.append(time.time() - ms / 1000 if started_at is None else started_at)
        if len(self.sizes) > 10_000:  # bounded memory on long runs
            del self.sizes[:5000], self.encode_ms[:5000], self.started_at[:5000]


def encoder_from_settings(settings: Settings) -> Any:
    """The TextEncoder the settings describe (model, device, batch size, limits, backend)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recstream.models.encoder import TextEncoder

    return TextEncoder(
        settings.embed_model,
        device=settings.embed_device,
        batch_size=settings.embed_batch_size,
        max_seq_length=settings.embed_max_seq_length,
        precision=settings.embed_precision,
        backend=settings.embed_backend,
        num_threads=settings.embed_threads,
        export_dir=settings.embed_export_dir or settings.home / "onnx",
        log=log.warning,  # an ONNX export takes a while: say so even at log level warning
    )


class EmbeddingRuntime:
    """Per-worker embedding resources: encoder, vector cache, vector index, category map.

    The encoder is loaded once, off the event loop, on first use. The index holds the vectors of
    every catalog item this worker knows (the catalog GlobalTable reaches every worker).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._encoder: Any = None
        self._load_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._cache: Any = None
        self.index: VectorIndex | None = None
        self.category_items: dict[str, set[str]] = {}
        # In-memory mirror of the catalog's keys, categories, times and titles: the ranker reads
        # these per candidate, where a RocksDB read (and JSON decode of a 2 KB vector) would
        # dominate the cost of a list.
        self.item_categories: dict[str, tuple[str, ...]] = {}
        self.item_meta: dict[str, tuple[float | None, str]] = {}
        # Items the catalog gave no categories: k-means clusters of their vectors stand in
        # (see refresh_clusters); `_clustered_at` is the count of such items at the last fit.
        self._uncategorised: set[str] = set()
        # Those of them with a vector in the index: what k-means can cluster.
        self._uncategorised_indexed: set[str] = set()
        self._cluster_of: dict[str, str] = {}
        self._centres: np.ndarray | None = None
        self._clustered_at = 0
        self.stats = BatchStats()
        self._centroids: tuple[list[str], np.ndarray] | None = None
        self._centroids_dirty = True
        self.stale_vectors = 0
        # Ids whose catalog entry, vector or categories changed since the engine's catalogue
        # (agents/engine_runtime.py) last synced; it drains this set.
        self.changed: set[str] = set()
        # The vectors exactly as stored (before the index normalises them again), until the
        # engine's catalogue takes them: both runners must rank over the same float32 values.
        self.new_vectors: dict[str, np.ndarray | None] = {}

    # --- encoder and cache -------------------------------------------------------------------
    def _load_encoder(self) -> Any:
        return encoder_from_settings(self.settings)

    def load_now(self) -> None:
        """Load the encoder synchronously (worker start-up, before any record is read), so
        that the model id is known while the catalog is recovered."""
        if self._encoder is None:
            self._encoder = self._load_encoder()

    @property
    def model_id(self) -> str | None:
        return None if self._encoder is None else str(self._encoder.model_id)

    async def encoder(self) -> Any:
        if self._encoder is None:
            async with self._load_lock:
                if self._encoder is None:
                    loop = asyncio.get_running_loop()
                    self._encoder = await loop.run_in_executor(self._executor, self._load_encoder)
                    log.info("encoder ready: %s", self._encoder)
        return self._encoder

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from rocksdict import Rdict

            path = Path(self.settings.data_dir) / "embedding-cache"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._cache = Rdict(str(path))
        return self._cache

    def cached(self, key: str) -> np.ndarray | None:
        raw = self.cache.get(key.encode("utf-8"))
        return None if raw is None else np.frombuffer(raw, dtype=np.float32)

    async def embed(self, keys: Sequence[str], texts: Sequence[str]) -> list[np.ndarray | None]:
        """Vectors for texts (None where a text is empty), from the cache or one encode call.

        Duplicate keys within the batch are encoded once. Texts are sorted by length inside
        the library's encode, which keeps padding low.
        """
        out: list[np.ndarray | None] = [None] * len(texts)
        missing: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            hit = self.cached(key)
            if hit is not None:
                out[i] = hit
                self.stats.cache_hits += 1
            else:
                missing.setdefault(key, []).append(i)
        if missing:
            encoder = await self.encoder()
            order = list(missing)
            batch = [texts[missing[k][0]] for k in order]
            loop = asyncio.get_running_loop()
            wall = time.time()
            started = time.perf_counter()
            vectors, valid = await loop.run_in_executor(
                self._executor, encoder.encode_with_mask, batch
            )
            self.stats.record(len(batch), (time.perf_counter() - started) * 1000, wall)
            self.stats.encoded += len(batch)
            for key, vec, ok in zip(order, vectors, valid, strict=True):
                if not ok:
                    continue  # empty after cleaning: no vector, and nothing cached
                self.cache[key.encode("utf-8")] = vec.tobytes()
                for i in missing[key]:
                    out[i] = vec
        return out

    # --- index and category map --------------------------------------------------------------
    def apply_catalog(
        self,
        item_id: str,
        entry: dict[str, Any] | None,
        vector: np.ndarray | None = None,
        *,
        refresh: bool = True,
    ) -> None:
        """Mirror one catalog change (an upsert, or None for a deletion) into memory.

        ``vector``: the entry's `vec` already as an array (the embedder has it: decoding the
        base64 text again cost a share of the event loop). ``refresh`` False leaves the
        cluster refit check to the caller, who makes it once for a whole batch.
        """
        self.apply_catalog_many([(item_id, entry, vector)], refresh=refresh)

    def apply_catalog_many(
        self,
        changes: Sequence[tuple[str, dict[str, Any] | None, np.ndarray | None]],
        *,
        refresh: bool = True,
        backlog: bool = False,
    ) -> None:
        """Mirror catalog changes, in order, into memory: (item id, entry or None for a
        deletion, the entry's vector as an array or None to decode its `vec`).

        The batch's vectors go into the index in one upsert and its new uncategorised items
        join their nearest clusters in one matrix product (done per item, these two took a
        fifth of the items agent's event-loop time). ``refresh``/``backlog``: see
        :meth:`maybe_refresh_clusters`.
        """
        to_index: dict[str, np.ndarray] = {}
        for item_id, entry, vector in changes:
            self._forget(item_id)
            to_index.pop(item_id, None)
            if entry is None:
                self.new_vectors.pop(item_id, None)
                if self.index is not None:
                    self.index.remove(item_id)
                continue
            cats = tuple(entry.get("categories") or ())
            if not cats:
                self._uncategorised.add(item_id)
            ts = entry.get("ts")
            title = str(entry.get("title") or "")
            self.item_meta[item_id] = (None if ts is None else float(ts), title)
            v = self._entry_vector(entry, vector)
            self.new_vectors[item_id] = v
            if v is not None:
                to_index[item_id] = v
            elif self.index is not None:
                self.index.remove(item_id)
            self.item_categories[item_id] = cats
            for c in cats:
                self.category_items.setdefault(c, set()).add(item_id)
        self._cluster_new(self._index_vectors(to_index))
        if refresh:
            self.maybe_refresh_clusters(backlog=backlog)

    def _forget(self, item_id: str) -> None:
        """Drop the item from the category map, metadata and cluster sets (not the index)."""
        self._centroids_dirty = True
        self.changed.add(item_id)
        old = self.item_categories.pop(item_id, ())
        self.item_meta.pop(item_id, None)
        self._uncategorised.discard(item_id)
        self._uncategorised_indexed.discard(item_id)
        self._cluster_of.pop(item_id, None)
        for c in old:
            members = self.category_items.get(c)
            if members is not None:
                members.discard(item_id)

    def _index_vectors(self, vectors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Upsert into the index (made on the first vector) in one call; the ones indexed.

        A vector of another dimension, or one the index would refuse (non-finite, zero), is
        left out, and the item's older vector removed: one bad vector never holds up the
        batch's others.
        """
        if not vectors:
            return {}
        if self.index is None:
            dim = next(iter(vectors.values())).shape[0]
            self.index = VectorIndex(dim, exact_threshold=self.settings.ann_threshold)
        index = self.index
        fits = {i: v for i, v in vectors.items() if v.shape == (index.dim,)}
        good: dict[str, np.ndarray] = {}
        if fits:
            matrix = np.vstack(list(fits.values()))
            ok = index.storable(matrix)
            good = {i: v for (i, v), keep in zip(fits.items(), ok, strict=True) if keep}
            if good:
                index.upsert_many(list(good), matrix[ok])
        for item_id in vectors.keys() - good.keys():
            index.remove(item_id)
        return good

    def _cluster_new(self, indexed: dict[str, np.ndarray]) -> None:
        """Uncategorised items just indexed become clusterable; between refits each joins its
        nearest existing cluster."""
        new = [i for i in indexed if i in self._uncategorised]
        self._uncategorised_indexed.update(new)
        if not new or self._centres is None:
            return
        labels = assign(np.vstack([indexed[i] for i in new]), self._centres)
        for item_id, c in zip(new, labels, strict=True):
            label = self._cluster_label(int(c))
            self._cluster_of[item_id] = label
            self.item_categories[item_id] = (label,)
            self.category_items.setdefault(label, set()).add(item_id)

    def _entry_vector(self, entry: dict[str, Any], vector: np.ndarray | None) -> np.ndarray | None:
        """The entry's vector (``vector`` when given, else its decoded `vec`), or None when it
        has none or another model embedded it."""
        vec = entry.get("vec")
        if not vec:
            return None
        model = self.model_id
        if model is not None and not str(entry.get("text_key", "")).startswith(model + ":"):
            # Embedded by another model: never mix two models' vectors in one index. The item
            # is re-embedded when it is published again.
            self.stale_vectors += 1
            return None
        return vector if vector is not None else decode_vector(vec)

    async def on_catalog_changelog(self, event: Any) -> None:
        """Faust callback for every catalog changelog record read (recovery and standby)."""
        key = event.key
        item_id = key.decode("utf-8") if isinstance(key, bytes) else str(key)
        item_id = item_id.strip('"') if item_id.startswith('"') else item_id
        value = event.value
        if isinstance(value, bytes | str):
            value = json.loads(value) if value else None
        self.apply_catalog(item_id, value)

    @staticmethod
    def _cluster_label(i: int) -> str:
        return f"cluster_{i}"

    def maybe_refresh_clusters(self, *, backlog: bool = False) -> None:
        """Refit the k-means clusters when the indexed uncategorised items grew by 10% since
        the last fit (a set's length: this runs after every catalog change), or by 100% while
        ``backlog`` says more items wait to be written.

        During a bulk load every micro-batch grew the set by 10% and paid a refit on the event
        loop (a quarter of the items agent's time, sharing the CPU with the encoder); doubling
        keeps the total refit work within twice the last fit's, and the items in between join
        their nearest existing cluster. The load's last batch (no backlog) refits at 10%.
        """
        n = len(self._uncategorised_indexed)
        k = self.settings.interest_clusters
        growth = 2.0 if backlog else 1.1
        if n < k * 2 or (self._clustered_at and n < self._clustered_at * growth):
            return
        self.refresh_clusters()

    def refresh_clusters(self) -> None:
        """k-means over the vectors of items without catalog categories; each gets the label
        of its cluster (`cluster_<i>`), which the posterior then treats as a category.

        Seeded, so the same catalog gives the same clusters; labels may change meaning after a
        refit (the catalog changed), which decayed evidence absorbs over time.
        """
        if self.index is None:
            return
        index = self.index
        # Sorted: k-means depends on the order of its data, and set order varies per process.
        found = {i: index.get(i) for i in sorted(self._uncategorised_indexed)}
        pairs = [(i, v) for i, v in found.items() if v is not None]
        k = self.settings.interest_clusters
        if len(pairs) < k * 2:
            return
        ids = [i for i, _ in pairs]
        vectors = np.vstack([v for _, v in pairs])
        previous = self._centres
        warm = previous if previous is not None and previous.shape == (k, index.dim) else None
        try:
            # Full k-means with restarts for small catalogs; mini-batches for large ones. A
            # refit starts from the last centres (one run, not four restarts): about 10× less
            # work while a catalog without categories streams in (a cold 4-restart fit of
            # 1,000 vectors took 0.57 s of the event loop, once per 10% of growth), and labels
            # keep their meaning across refits.
            batch = None if len(pairs) < 10_000 else 1024
            restarts = 4 if batch is None and warm is None else 1
            centres = fit_centroids(vectors, k, 0, n_init=restarts, batch_size=batch, init=warm)
        except RecstreamError as exc:
            log.warning("clustering the catalog failed: %s", exc)
            return
        labels = assign(vectors, centres)
        for item_id in list(self._cluster_of):
            old = self._cluster_of.pop(item_id)
            self.category_items.get(old, set()).discard(item_id)
        for item_id, c in zip(ids, labels, strict=True):
            label = self._cluster_label(int(c))
            self._cluster_of[item_id] = label
            self.item_categories[item_id] = (label,)
            self.changed.add(item_id)
            self.category_items.setdefault(label, set()).add(item_id)
        self._centres = centres
        self._clustered_at = len(pairs)
        self._centroids_dirty = True

    def in_catalog(self, item_id: str) -> bool:
        """True for a live catalog item; also True for every item while the catalog is empty
        (events may arrive before, or without, a catalog)."""
        return not self.item_categories or item_id in self.item_categories

    def item_vector(self, item_id: str) -> np.ndarray | None:
        return None if self.index is None else self.index.get(item_id)

    def category_centroids(self) -> tuple[list[str], np.ndarray] | None:
        """Mean item vector per category (unit rows), for folding user text into categories.

        Recomputed only after the catalog changed.
        """
        if not self._centroids_dirty:
            return self._centroids
        self._centroids_dirty = False
        self._centroids = self._compute_centroids()
        return self._centroids

    def _compute_centroids(self) -> tuple[list[str], np.ndarray] | None:
        if self.index is None:
            return None
        labels: list[str] = []
        rows: list[np.ndarray] = []
        for c, members in sorted(self.category_items.items()):
            vecs = [v for v in (self.index.get(i) for i in members) if v is not None]
            if not vecs:
                continue
            mean = np.mean(vecs, axis=0)
            norm = float(np.linalg.norm(mean))
            if norm > 0:
                labels.append(c)
                rows.append(mean / norm)
        if not rows:
            return None
        return labels, np.vstack(rows).astype(np.float32)

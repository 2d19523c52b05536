"""The item catalogue as the engine reads it: one row per item, vectors in one matrix.

Rows are stable while an item lives (a deleted item's row is freed and reused), so every
per-item quantity the engine keeps (popularity, co-visitation neighbours) is addressed by row
and a batch's signals are gathers and matrix products over row arrays, never per-item dict
reads. Invariants: ``vectors`` rows are unit length or zero (an item without a vector);
``alive[r]`` is False for freed rows, whose vector is zero and whose categories are empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from recstream.models.errors import ValidationError
from recstream.models.interest_state import item_key

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Catalog:
    """Items with their unit vectors (float32, ``dim`` wide), categories, time and title."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        if dim < 1:
            raise ValidationError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.row_of_key: dict[int, int] = {}
        self.categories: list[tuple[str, ...]] = []
        self.titles: list[str] = []
        self._free: list[int] = []
        cap = max(capacity, 1)
        self.vectors = np.zeros((cap, dim), dtype=np.float32)
        self.has_vector = np.zeros(cap, dtype=bool)
        self.alive = np.zeros(cap, dtype=bool)
        self.item_ts = np.full(cap, np.nan)
        self.version = 0  # bumped on every change: caches built from the catalogue key on it
        self._category_rows: dict[str, list[int]] | None = None
        self._id_rank: tuple[int, IntArray] | None = None
        self._category_index: tuple[int, tuple[str, ...], IntArray] | None = None

    def __len__(self) -> int:
        return len(self.row_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.row_of

    @property
    def rows(self) -> int:
        """Rows in use or freed (the length of every per-row array the engine keeps)."""
        return len(self.ids)

    def upsert(
        self,
        item_id: str,
        vector: npt.ArrayLike | None,
        categories: Sequence[str] = (),
        ts: float | None = None,
        title: str = "",
    ) -> int:
        """Add or replace an item; returns its row. A vector is L2-normalised (zero: none)."""
        if not item_id:
            raise ValidationError("item_id must be a non-empty str")
        unit = self._unit(vector)  # validated before anything changes: all or nothing
        row = self.row_of.get(item_id)
        if row is None:
            row = self._allocate(item_id)
        self.alive[row] = True
        self.categories[row] = tuple(dict.fromkeys(categories))
        self.titles[row] = title
        self.item_ts[row] = np.nan if ts is None or not math.isfinite(ts) else float(ts)
        self.has_vector[row] = unit is not None
        self.vectors[row] = 0.0 if unit is None else unit
        self.version += 1
        self._category_rows = None
        return row

    def set_categories(self, item_id: str, categories: Sequence[str]) -> None:
        """Replace an item's categories (e.g. k-means clusters standing in for none)."""
        row = self.row_of[item_id]
        self.categories[row] = tuple(dict.fromkeys(categories))
        self.version += 1
        self._category_rows = None

    def remove(self, item_id: str) -> bool:
        """Delete an item; its row is freed for reuse. False if it was not there."""
        row = self.row_of.pop(item_id, None)
        if row is None:
            return False
        self.row_of_key.pop(item_key(item_id), None)
        self.alive[row] = False
        self.has_vector[row] = False
        self.vectors[row] = 0.0
        self.categories[row] = ()
        self.titles[row] = ""
        self.item_ts[row] = np.nan
        self._free.append(row)
        self.version += 1
        self._category_rows = None
        return True

    def vector(self, item_id: str) -> npt.NDArray[np.float32] | None:
        row = self.row_of.get(item_id)
        if row is None or not self.has_vector[row]:
            return None
        return self.vectors[row]

    def rows_of(self, item_ids: Iterable[str]) -> IntArray:
        """Rows of the ids that are in the catalogue (unknown ids are left out)."""
        get = self.row_of.get
        return np.fromiter((r for r in (get(i) for i in item_ids) if r is not None), dtype=np.int64)

    def category_rows(self) -> dict[str, list[int]]:
        """category → rows of its live items, in row order (cached until the next change)."""
        if self._category_rows is None:
            out: dict[str, list[int]] = {}
            for row, cats in enumerate(self.categories):
                for c in cats:
                    out.setdefault(c, []).append(row)
            self._category_rows = out
        return self._category_rows

    def id_rank(self) -> IntArray:
        """int64[rows]: each row's position in the sorted order of the row ids (cached until
        the next change). Ties between scores are broken by item id, not by row, because rows
        are assigned in arrival order, which differs between runners and workers; comparing
        these integers orders rows exactly as comparing their id strings would."""
        if self._id_rank is None or self._id_rank[0] != self.version:
            order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
            rank = np.empty(len(self.ids), dtype=np.int64)
            rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order), dtype=np.int64)
            self._id_rank = (self.version, rank)
        return self._id_rank[1]

    def category_index(self) -> tuple[tuple[str, ...], IntArray]:
        """(labels, index): the sorted category labels and int64[rows, width] of each row's
        label positions, padded with len(labels) (a slot callers map to "none"); cached until
        the next change. Built in a Python loop over every row: per batch it cost more than the
        rest of a small batch's ranking."""
        if self._category_index is None or self._category_index[0] != self.version:
            labels = tuple(sorted(self.category_rows()))
            pos = {c: i for i, c in enumerate(labels)}
            width = max((len(c) for c in self.categories), default=0) or 1
            index = np.full((self.rows, width), len(labels), dtype=np.int64)
            for row, cats in enumerate(self.categories):
                for j, c in enumerate(cats):
                    index[row, j] = pos[c]
            self._category_index = (self.version, labels, index)
        return self._category_index[1], self._category_index[2]

    def _allocate(self, item_id: str) -> int:
        if self._free:
            row = self._free.pop()
            self.ids[row] = item_id
        else:
            row = len(self.ids)
            if row >= self.vectors.shape[0]:
                self._grow(2 * self.vectors.shape[0])
            self.ids.append(item_id)
            self.categories.append(())
            self.titles.append("")
        self.row_of[item_id] = row
        self.row_of_key[item_key(item_id)] = row
        return row

    def _grow(self, capacity: int) -> None:
        n = self.vectors.shape[0]
        self.vectors = np.vstack([self.vectors, np.zeros((capacity - n, self.dim), np.float32)])
        self.has_vector = np.concatenate([self.has_vector, np.zeros(capacity - n, bool)])
        self.alive = np.concatenate([self.alive, np.zeros(capacity - n, bool)])
        self.item_ts = np.concatenate([self.item_ts, np.full(capacity - n, np.nan)])

    def _unit(self, vector: npt.ArrayLike | None) -> npt.NDArray[np.float32] | None:
        """The L2-normalised vector (None: no vector, or a zero one); ValidationError for a
        wrong shape or a non-finite value."""
        if vector is None:
            return None
        v = np.asarray(vector, dtype=np.float32)
        if v.shape != (self.dim,):
            raise ValidationError(f"vector must have shape ({self.dim},), got {v.shape}")
        norm = float(np.linalg.norm(v))
        if not math.isfinite(norm):
            raise ValidationError("vector must be finite")
        return v / np.float32(norm) if norm > 0.0 else None

"""Statistics shared by every user: decayed item popularity, co-visitation, global weights.

Each shard (in the Kafka runner: an events partition) learns from its own users and publishes
what it learned as a `SharedDelta` once per micro-batch; every replica of `SharedStats` (every
worker, or the one in-process replay) applies every shard's deltas. Popularity and
co-visitation masses are sums of decayed terms kept as log-masses (decay.py), so applying
deltas is a log-add-exp: order independent and exact up to rounding (co-visitation keeps the
top `capacity` neighbours per item, the only order-dependent step). Global weights: each
shard owns one copy, moved by the η rule on its users' feedback; a delta carries the shard's
latest copy, and the global weights are the projected mean of all copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recstream.models import decay
from recstream.models.catalog import Catalog
from recstream.models.covisitation import CoVisitNeighbours
from recstream.models.errors import StateError
from recstream.models.weights import project_to_simplex

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
#: SharedStats.neighbourhood: (distinct neighbour rows, index of each into them, log-masses).
Neighbourhood = tuple[IntArray, IntArray, FloatArray]
#: SharedStats.sequence_hood: a Neighbourhood of probabilities plus each entry's source index.
SequenceHood = tuple[IntArray, IntArray, FloatArray, IntArray]
_EMPTY = -math.inf


@dataclass
class SharedDelta:
    """What one shard learned in one batch. Log-terms are log(Σ w·e^(λ·ts)) of the batch.

    ``popularity``: item → log-term; ``covisit``: item → {neighbour → log-term};
    ``weights``: the shard's global weight copy after the batch (None: unchanged);
    ``sequence``: item → {item consumed next → log-term} (sequence_rules.py).
    """

    shard: int
    popularity: dict[str, float] = field(default_factory=dict)
    covisit: dict[str, dict[str, float]] = field(default_factory=dict)
    weights: list[float] | None = None
    sequence: dict[str, dict[str, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.popularity or self.covisit or self.sequence or self.weights is not None)

    def add_popularity(self, item_id: str, term: float) -> None:
        self.popularity[item_id] = decay.logaddexp(self.popularity.get(item_id, _EMPTY), term)

    def add_pair(self, item_id: str, neighbour_id: str, term: float) -> None:
        row = self.covisit.setdefault(item_id, {})
        row[neighbour_id] = decay.logaddexp(row.get(neighbour_id, _EMPTY), term)

    def add_next(self, item_id: str, following_id: str, term: float) -> None:
        row = self.sequence.setdefault(item_id, {})
        row[following_id] = decay.logaddexp(row.get(following_id, _EMPTY), term)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "popularity": self.popularity,
            "covisit": self.covisit,
            "weights": self.weights,
            "sequence": self.sequence,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharedDelta:
        """Inverse of to_dict; StateError for anything else (a corrupt record)."""
        try:
            weights = data.get("weights")
            delta = cls(
                shard=int(data["shard"]),
                popularity={str(k): float(v) for k, v in dict(data["popularity"]).items()},
                covisit=_rows_from(data["covisit"]),
                weights=None if weights is None else [float(w) for w in weights],
                # Absent in the deltas of workers older than the sequence signal.
                sequence=_rows_from(data.get("sequence", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"malformed shared delta: {exc!r}") from None
        terms = [*delta.popularity.values(), *(delta.weights or ())]
        ids = [*delta.popularity]
        for rows in (delta.covisit, delta.sequence):
            terms += [t for nbs in rows.values() for t in nbs.values()]
            ids += [*rows, *(n for nbs in rows.values() for n in nbs)]
        if not all(math.isfinite(t) for t in terms) or not all(ids):
            raise StateError("shared delta needs finite log-terms and weights, non-empty ids")
        return delta

    def split(self, max_pairs: int) -> Iterator[SharedDelta]:
        """Pieces of at most ~`max_pairs` co-visit and sequence pairs each (records stay
        small); the popularity and weights travel with the first piece."""
        piece = SharedDelta(self.shard, dict(self.popularity), {}, self.weights)
        pairs = 0
        rows = [("covisit", i, nbs) for i, nbs in self.covisit.items()]
        rows += [("sequence", i, nbs) for i, nbs in self.sequence.items()]
        for kind, item_id, nbs in rows:
            if pairs and pairs + len(nbs) > max_pairs:
                yield piece
                piece, pairs = SharedDelta(self.shard), 0
            (piece.covisit if kind == "covisit" else piece.sequence)[item_id] = nbs
            pairs += len(nbs)
        yield piece


def _rows_from(raw: Any) -> dict[str, dict[str, float]]:
    """item → {item → log-term} from decoded JSON (TypeError/ValueError/... when not one)."""
    return {
        str(i): {str(n): float(t) for n, t in dict(nbs).items()} for i, nbs in dict(raw).items()
    }


class SharedStats:
    """One replica of the shared statistics. Hyperparameters are constructor arguments.

    popularity_half_life_s / covisit_half_life_s / sequence_half_life_s: decay of the three
    masses (event-time s); covisit_capacity / sequence_capacity: neighbours (next items)
    kept per item; k_signals: length of a weight vector.
    """

    def __init__(
        self,
        k_signals: int,
        *,
        popularity_half_life_s: float,
        covisit_half_life_s: float,
        covisit_capacity: int,
        sequence_half_life_s: float = 365 * 86_400.0,
        sequence_capacity: int = 100,
    ) -> None:
        self.k = k_signals
        self.pop_rate = decay.decay_rate(popularity_half_life_s)
        self.covisit_half_life_s = covisit_half_life_s
        self.covisit_rate = decay.decay_rate(covisit_half_life_s)
        self.covisit_capacity = covisit_capacity
        self.popularity: dict[str, float] = {}
        self.covisit: dict[str, CoVisitNeighbours] = {}
        self.sequence_half_life_s = sequence_half_life_s
        self.sequence_capacity = sequence_capacity
        self.sequence: dict[str, CoVisitNeighbours] = {}
        self.shard_weights: dict[int, FloatArray] = {}
        self.version = 0
        self._pop_rows: tuple[tuple[int, int], FloatArray] | None = None
        self._nb_rows: dict[str, tuple[IntArray, FloatArray]] = {}
        self._nb_catalog = -1
        self._hoods: tuple[tuple[int, int], dict[tuple[str, ...], Neighbourhood]] = ((-1, -1), {})
        self._next_rows: dict[str, tuple[IntArray, FloatArray]] = {}
        self._seq_hoods: tuple[tuple[int, int], dict[tuple[str, ...], SequenceHood]] = (
            (-1, -1),
            {},
        )

    # --- applying ------------------------------------------------------------------------------
    def apply(self, delta: SharedDelta) -> None:
        """Fold one shard's delta in (every replica applies every delta exactly once)."""
        for item_id, term in delta.popularity.items():
            self.popularity[item_id] = decay.logaddexp(self.popularity.get(item_id, _EMPTY), term)
        covisit = (self.covisit_capacity, self.covisit_half_life_s)
        _fold(self.covisit, delta.covisit, self._nb_rows, *covisit)
        sequence = (self.sequence_capacity, self.sequence_half_life_s)
        _fold(self.sequence, delta.sequence, self._next_rows, *sequence)
        if delta.weights is not None and len(delta.weights) == self.k:
            self.shard_weights[delta.shard] = project_to_simplex(delta.weights)
        self.version += 1

    # --- reading -------------------------------------------------------------------------------
    def global_weights(self, shard: int | None = None, own: FloatArray | None = None) -> FloatArray:
        """The projected mean of every shard's copy (uniform when none); `own` replaces the
        copy of `shard` (a shard's copy moves within a batch before its delta is applied)."""
        copies = dict(self.shard_weights)
        if shard is not None and own is not None:
            copies[shard] = own
        if not copies:
            return np.full(self.k, 1.0 / self.k)
        return project_to_simplex(np.mean(list(copies.values()), axis=0))

    def popularity_by_row(self, catalog: Catalog) -> FloatArray:
        """Log-mass per catalogue row (−inf: none), cached per (stats, catalogue) version."""
        stamp = (self.version, catalog.version)
        if self._pop_rows is None or self._pop_rows[0] != stamp:
            out = np.full(catalog.vectors.shape[0], _EMPTY)
            for item_id, lm in self.popularity.items():
                row = catalog.row_of.get(item_id)
                if row is not None:
                    out[row] = lm
            self._pop_rows = (stamp, out)
        return self._pop_rows[1]

    def neighbourhood(self, items: tuple[str, ...], catalog: Catalog) -> Neighbourhood:
        """(distinct rows, each neighbour's index into them, log-masses) of the neighbours of
        `items`, in item order. Memoised until the statistics or the catalogue change (within
        a batch, a user's consecutive requests mostly share their recent items)."""
        stamp = (self.version, catalog.version)
        if self._hoods[0] != stamp:
            self._hoods = (stamp, {})
        hit = self._hoods[1].get(items)
        if hit is None:
            hit = _stacked([self.neighbours(item_id, catalog) for item_id in items])[:3]
            self._hoods[1][items] = hit
        return hit

    def sequence_hood(self, items: tuple[str, ...], catalog: Catalog) -> SequenceHood:
        """The next items of `items` (sources, in order): (distinct rows, each entry's index
        into them, each entry's P(next = row | source), each entry's source index into
        `items`). Memoised until the statistics or the catalogue change (a user's requests
        in one batch mostly share their sources; only the sources' weights differ)."""
        stamp = (self.version, catalog.version)
        if self._seq_hoods[0] != stamp:
            self._seq_hoods = (stamp, {})
        hit = self._seq_hoods[1].get(items)
        if hit is None:
            hit = _stacked([self.next_items(item_id, catalog) for item_id in items])
            self._seq_hoods[1][items] = hit
        return hit

    def next_items(self, item_id: str, catalog: Catalog) -> tuple[IntArray, FloatArray]:
        """(rows, P(next = row | item)) of the items consumed next after `item_id` that are
        in the catalogue. P is the rule mass over the row's total (every kept rule, in the
        catalogue or not): the same at any event time, since a row's masses decay alike."""
        hit = self._memo(catalog, self._next_rows).get(item_id)
        if hit is None:
            rules = self.sequence.get(item_id)
            masses = rules.log_masses() if rules is not None else {}
            lms = np.fromiter(masses.values(), dtype=np.float64, count=len(masses))
            probs = np.exp(lms - lms.max()) if lms.size else lms
            probs = probs / probs.sum() if lms.size else probs
            hit = self._next_rows[item_id] = _in_catalog(masses, probs.tolist(), catalog)
        return hit

    def neighbours(self, item_id: str, catalog: Catalog) -> tuple[IntArray, FloatArray]:
        """(rows, log-masses) of an item's co-visited neighbours that are in the catalogue."""
        hit = self._memo(catalog, self._nb_rows).get(item_id)
        if hit is None:
            entry = self.covisit.get(item_id)
            masses = entry.log_masses() if entry is not None else {}
            hit = self._nb_rows[item_id] = _in_catalog(masses, list(masses.values()), catalog)
        return hit

    def _memo(
        self, catalog: Catalog, rows: dict[str, tuple[IntArray, FloatArray]]
    ) -> dict[str, tuple[IntArray, FloatArray]]:
        """`rows` (a per-item memo), both memos emptied first when the catalogue changed."""
        if self._nb_catalog != catalog.version:
            self._nb_rows.clear()
            self._next_rows.clear()
            self._nb_catalog = catalog.version
        return rows


def _fold(
    into: dict[str, CoVisitNeighbours],
    rows: Mapping[str, Mapping[str, float]],
    memo: dict[str, tuple[IntArray, FloatArray]],
    capacity: int,
    half_life_s: float,
) -> None:
    """Add a delta's per-item log-terms to bounded neighbour lists (co-visits or sequence
    rules), forgetting the memoised rows of the items it touched."""
    for item_id, terms in rows.items():
        entry = into.get(item_id)
        if entry is None:
            entry = into[item_id] = CoVisitNeighbours(capacity, half_life_s)
        for other_id, term in terms.items():
            entry.add_log_mass(other_id, term)
        memo.pop(item_id, None)


def _in_catalog(
    ids: Iterable[str], values: Sequence[float], catalog: Catalog
) -> tuple[IntArray, FloatArray]:
    """(rows, values) of the ids that are in the catalogue, in the given order."""
    kept = [
        (r, v) for r, v in zip(map(catalog.row_of.get, ids), values, strict=True) if r is not None
    ]
    return (
        np.array([r for r, _ in kept], dtype=np.int64),
        np.array([v for _, v in kept], dtype=np.float64),
    )


def _stacked(found: list[tuple[IntArray, FloatArray]]) -> SequenceHood:
    """Per-source (rows, values) stacked source by source: (distinct rows, each entry's
    index into them, the values, each entry's source index)."""
    sizes = [r.size for r, _ in found]
    if not sum(sizes):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64), empty
    rows = np.concatenate([r for r, _ in found])
    uniq, inverse = np.unique(rows, return_inverse=True)
    source = np.repeat(np.arange(len(found), dtype=np.int64), sizes)
    values = np.concatenate([v for _, v in found])
    return uniq, inverse.astype(np.int64), values, source

"""Ranking and beyond-accuracy metrics, and an accumulator for prequential evaluation.

Conventions shared by every function:

- ``ranked`` is a recommendation list, best first; rank r is 1-based. Only the first
  occurrence of an item counts if a list repeats it.
- ``k`` is a cut-off >= 0; ``ranked[:k]`` is what is scored, so lists shorter than k are fine.
- Relevance is binary: an item is relevant or it is not.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from recstream.models.errors import ValidationError


def _check_k(k: int) -> None:
    if k < 0:
        raise ValidationError(f"cut-off k must be >= 0, got {k}")


def _first_occurrences(ranked: Sequence[str], k: int) -> list[str | None]:
    """``ranked[:k]`` with repeats blanked to None (first occurrence kept, ranks preserved)."""
    seen: set[str] = set()
    out: list[str | None] = []
    for item in ranked[:k]:
        out.append(None if item in seen else item)  # None keeps the slot so ranks do not shift
        seen.add(item)
    return out


def hit_rate_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """HR@k = 1.0 if ``target`` is among the first ``k`` items of ``ranked``, else 0.0."""
    _check_k(k)
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalised discounted cumulative gain at k, binary relevance, log2 discount.

    ``DCG@k = sum_{r=1..k} rel_r / log2(r + 1)`` with ``rel_r = 1`` if the item at rank r is in
    ``relevant`` (first occurrence only), and ``IDCG@k = sum_{r=1..min(|relevant|, k)}
    1 / log2(r + 1)``, the DCG of a perfect list. Returns ``DCG@k / IDCG@k`` in [0, 1], and 0.0
    when ``relevant`` is empty or k == 0. A single target at rank 3 scores 1 / log2(4) = 0.5.
    """
    _check_k(k)
    relevant_set = set(relevant)
    n_ideal = min(len(relevant_set), k)
    if n_ideal == 0:
        return 0.0
    dcg = sum(
        1.0 / math.log2(rank + 1)
        for rank, item in enumerate(_first_occurrences(ranked, k), start=1)
        if item in relevant_set
    )
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, n_ideal + 1))
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Recall@k = |relevant ∩ ranked[:k]| / |relevant| in [0, 1]; 0.0 when ``relevant`` is empty."""
    _check_k(k)
    relevant_set = set(relevant)
    if not relevant_set:
        return 0.0
    return len(relevant_set.intersection(ranked[:k])) / len(relevant_set)


def reciprocal_rank(ranked: Sequence[str], target: str) -> float:
    """1 / r for the 1-based rank r of the first occurrence of ``target``; 0.0 if absent.

    The mean over queries is the MRR. No cut-off: pass ``ranked[:k]`` for MRR@k.
    """
    for rank, item in enumerate(ranked, start=1):
        if item == target:
            return 1.0 / rank
    return 0.0


def catalog_coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Catalogue coverage = |union of all items in ``lists``| / ``catalog_size``.

    The fraction of the catalogue recommended at least once; in [0, 1] when every listed item is
    in the catalogue. Pass lists already cut to k for coverage@k.
    """
    if catalog_size <= 0:
        raise ValidationError(f"catalog_size must be > 0, got {catalog_size}")
    distinct: set[str] = set()
    for ranked in lists:
        distinct.update(ranked)
    return len(distinct) / catalog_size


def novelty(
    ranked: Sequence[str], item_popularity: Mapping[str, int | float], n_users: int
) -> float:
    """Mean self-information of a list, in bits: ``mean_i -log2 p(i)``, ``p(i) = pop(i) / n_users``.

    ``item_popularity[i]`` is the number of distinct users who interacted with item i, so p(i)
    is the fraction of users who know it (Zhou et al., 2010). Items with a count below 1 or no
    entry are treated as count 1, the rarest observable item: otherwise an unseen item would have
    infinite novelty. Repeats count once. Returns 0.0 for an empty list.

    Raises:
        ValidationError: ``n_users`` < 1, or a count above ``n_users`` (p(i) > 1 is impossible).
    """
    if n_users < 1:
        raise ValidationError(f"n_users must be >= 1, got {n_users}")
    items = list(dict.fromkeys(ranked))
    if not items:
        return 0.0
    bits = []
    for item in items:
        count = float(item_popularity.get(item, 0.0))
        if count > n_users:
            raise ValidationError(
                f"item {item!r} has popularity {count} > n_users {n_users}; pass user counts"
            )
        bits.append(-math.log2(max(count, 1.0) / n_users))
    return float(np.mean(bits))


def intra_list_diversity(vectors: Sequence[np.ndarray] | np.ndarray) -> float:
    """Mean pairwise cosine distance of a list: ``mean_{i<j} (1 - cos(v_i, v_j))``, in [0, 2].

    ``vectors`` holds one embedding per recommended item (shape (n, d)). Returns 0.0 for fewer
    than two vectors.

    Raises:
        ValidationError: a zero vector (its cosine is undefined) or a non-2-D input.
    """
    matrix = np.asarray(vectors, dtype=float)
    if matrix.ndim == 1 and matrix.size == 0:
        return 0.0
    if matrix.ndim != 2:
        raise ValidationError(f"vectors must form an (n, d) array, got shape {matrix.shape}")
    n = matrix.shape[0]
    if n < 2:
        return 0.0
    norms = np.linalg.norm(matrix, axis=1)
    if np.any(norms == 0.0):
        raise ValidationError("intra_list_diversity is undefined for a zero vector")
    unit = matrix / norms[:, None]
    cos = unit @ unit.T
    upper = np.triu_indices(n, k=1)
    return float(np.mean(1.0 - cos[upper]))


def percentiles(values: Iterable[float], ps: Sequence[float] = (50, 95, 99)) -> dict[float, float]:
    """The ``ps`` percentiles (0..100) of ``values`` with linear interpolation between ranks.

    Uses numpy's default ("linear") method: the p-th percentile of sorted x_0..x_{n-1} is the
    value at fractional index ``p/100 * (n - 1)``. Returns ``{p: value}``; every value is NaN
    when ``values`` is empty (e.g. no latencies recorded yet).
    """
    for p in ps:
        if not 0.0 <= p <= 100.0:
            raise ValidationError(f"percentile must be in [0, 100], got {p}")
    data = np.fromiter(values, dtype=float)
    if data.size == 0:
        return {p: math.nan for p in ps}
    result = np.percentile(data, list(ps))
    return {p: float(v) for p, v in zip(ps, result, strict=True)}


@dataclass(frozen=True)
class MetricSummary:
    """Metrics over one group of evaluation records; NaN metrics when ``n == 0``.

    Attributes:
        n: number of records.
        n_users: distinct users among them.
        hit_rate: mean HR@k.
        ndcg: mean NDCG@k with the single target as the relevant set.
        mrr: mean reciprocal rank of the target within the top k (0 beyond k).
        coverage: distinct items in the top-k lists / catalogue size; None without a catalogue
            size.
    """

    n: int
    n_users: int
    hit_rate: float
    ndcg: float
    mrr: float
    coverage: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain dict for JSON reports."""
        return {
            "n": self.n,
            "n_users": self.n_users,
            "hit_rate": self.hit_rate,
            "ndcg": self.ndcg,
            "mrr": self.mrr,
            "coverage": self.coverage,
        }


@dataclass(frozen=True)
class TimeSlice:
    """Metrics of records with ``start_ts <= ts < end_ts`` (the last slice includes end_ts)."""

    start_ts: float
    end_ts: float
    summary: MetricSummary


@dataclass(frozen=True)
class MetricReport:
    """Returned by ``MetricAccumulator.report``: overall, warm vs cold start, per time slice."""

    k: int
    overall: MetricSummary
    warm: MetricSummary
    cold_start: MetricSummary
    slices: list[TimeSlice] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        """Plain dict for JSON reports."""
        return {
            "k": self.k,
            "overall": self.overall.to_dict(),
            "warm": self.warm.to_dict(),
            "cold_start": self.cold_start.to_dict(),
            "slices": [
                {"start_ts": s.start_ts, "end_ts": s.end_ts, **s.summary.to_dict()}
                for s in self.slices
            ],
        }


class MetricAccumulator:
    """Collects next-item evaluation records and reports accuracy metrics at cut-off ``k``.

    Each record is one prediction made before the user's next event: the ranked list the model
    produced at event time ``ts`` and the item the user actually consumed (``target``). Per-record
    scores are computed on ``update``; only the top-k ids are kept (for coverage).

    Args:
        k: cut-off for every metric (>= 1).
        catalog_size: catalogue size for coverage, or None to report coverage as None.
    """

    def __init__(self, k: int = 10, catalog_size: int | None = None):
        if k < 1:
            raise ValidationError(f"k must be >= 1, got {k}")
        if catalog_size is not None and catalog_size < 1:
            raise ValidationError(f"catalog_size must be >= 1, got {catalog_size}")
        self.k = k
        self.catalog_size = catalog_size
        self._users: list[str] = []
        self._ts: list[float] = []
        self._hit: list[float] = []
        self._ndcg: list[float] = []
        self._rr: list[float] = []
        self._cold: list[bool] = []
        self._top: list[tuple[str, ...]] = []

    def __len__(self) -> int:
        return len(self._ts)

    def update(
        self,
        user_id: str,
        ts: float,
        ranked: Sequence[str],
        target: str,
        is_cold_start: bool,
    ) -> None:
        """Record one prediction at event time ``ts`` (epoch seconds) and its true next item."""
        if not math.isfinite(ts):
            raise ValidationError(f"ts must be finite epoch seconds, got {ts}")
        top = tuple(ranked[: self.k])
        self._users.append(user_id)
        self._ts.append(float(ts))
        self._hit.append(hit_rate_at_k(top, target, self.k))
        self._ndcg.append(ndcg_at_k(top, (target,), self.k))
        self._rr.append(reciprocal_rank(top, target))
        self._cold.append(bool(is_cold_start))
        self._top.append(top)

    def _summary(self, mask: np.ndarray) -> MetricSummary:
        idx = np.flatnonzero(mask)
        n = int(idx.size)
        if n == 0:
            cov = None if self.catalog_size is None else math.nan
            return MetricSummary(0, 0, math.nan, math.nan, math.nan, cov)
        coverage = None
        if self.catalog_size is not None:
            coverage = catalog_coverage((self._top[i] for i in idx), self.catalog_size)
        return MetricSummary(
            n=n,
            n_users=len({self._users[i] for i in idx}),
            hit_rate=float(np.mean(np.asarray(self._hit)[idx])),
            ndcg=float(np.mean(np.asarray(self._ndcg)[idx])),
            mrr=float(np.mean(np.asarray(self._rr)[idx])),
            coverage=coverage,
        )

    def report(self, n_slices: int = 1) -> MetricReport:
        """Summaries overall, for warm and cold-start records, and for ``n_slices`` time slices.

        Slices have equal width in event time between the earliest and latest record; slice i
        covers ``[t0 + i*w, t0 + (i+1)*w)`` and the last one also includes the latest record.
        With no records every summary has n == 0 and no slices are returned.
        """
        if n_slices < 1:
            raise ValidationError(f"n_slices must be >= 1, got {n_slices}")
        ts = np.asarray(self._ts, dtype=float)
        cold = np.asarray(self._cold, dtype=bool)
        everything = np.ones(len(ts), dtype=bool)
        slices: list[TimeSlice] = []
        if len(ts):
            t0, t1 = float(ts.min()), float(ts.max())
            edges = np.linspace(t0, t1, n_slices + 1)
            # Index by position rather than comparing to edges, so every record lands in exactly
            # one slice even when rounding puts it on an edge.
            width = (t1 - t0) / n_slices
            which = (
                np.zeros(len(ts), dtype=np.int64)
                if width == 0.0
                else np.minimum(((ts - t0) / width).astype(np.int64), n_slices - 1)
            )
            for i in range(n_slices):
                summary = self._summary(which == i)
                slices.append(TimeSlice(float(edges[i]), float(edges[i + 1]), summary))
        return MetricReport(
            k=self.k,
            overall=self._summary(everything),
            warm=self._summary(~cold),
            cold_start=self._summary(cold),
            slices=slices,
        )

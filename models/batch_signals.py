"""Candidates and raw signals for a batch of ranking requests, vectorised over the batch.

One matrix product scores every request's short and long interest vectors against the whole
catalogue (float32, (2R × d)·(d × N)); the semantic candidates are each row's top
`per_source` (argpartition), and the same product gives the semantic signals of every other
candidate by a gather. Column order of the raw signal matrix (see ranker.py): semantic_short,
semantic_long, covisit, trending, category, freshness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.models.catalog import Catalog
from recstream.models.shared_stats import SharedStats

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
N_SIGNALS = 6


@dataclass(frozen=True)
class SignalInputs:
    """Per-request inputs. ``exclude``: catalogue rows the request may not return."""

    short: npt.NDArray[np.float32]
    long: npt.NDArray[np.float32]
    at_ts: float
    recent: tuple[tuple[str, float], ...]
    exclude: IntArray
    category_mean: dict[str, float]


def unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32] | None:
    """v / ‖v‖, or None for a zero or non-finite vector."""
    n = float(np.linalg.norm(v))
    return v / np.float32(n) if n > 0.0 and math.isfinite(n) else None


def semantic_scores(catalog: Catalog, requests: Sequence[SignalInputs]) -> npt.NDArray[np.float32]:
    """Cosines float32[R, rows] of each request's query (the mean of its unit short and long
    interest vectors, normalised; zero when it has neither) with every catalogue row; dead
    rows and each request's excluded rows are −inf. One matrix product for the whole batch:
    one query row per request (not one per horizon) halves the dominant cost of a batch."""
    rows = catalog.rows
    q = np.zeros((len(requests), catalog.dim), dtype=np.float32)
    for r, req in enumerate(requests):
        parts = [u for u in (unit(req.short), unit(req.long)) if u is not None]
        mixed = unit(np.sum(parts, axis=0)) if parts else None
        if mixed is not None:
            q[r] = mixed
    scores = q @ catalog.vectors[:rows].T
    scores[:, ~catalog.alive[:rows]] = -np.inf
    for r, req in enumerate(requests):
        if req.exclude.size:
            scores[r, req.exclude] = -np.inf
    return scores


def cosines(catalog: Catalog, rows: IntArray, req: SignalInputs) -> npt.NDArray[np.float64]:
    """float64[2, len(rows)]: cosine of each row's vector with the request's short and long
    interest vector (0 for a missing vector or an empty horizon)."""
    out = np.zeros((2, rows.size), dtype=np.float64)
    vecs = catalog.vectors[rows]
    for j, v in enumerate((req.short, req.long)):
        u = unit(v)
        if u is not None:
            # Per-row sums in float64: BLAS blocks a float32 product by row position, so the
            # same item would score differently in another catalogue order (another worker).
            out[j] = np.einsum("ij,j->i", vecs, u.astype(np.float64))
    return out


def top_rows(
    values: npt.NDArray[np.floating], n: int, ids: Sequence[str] | None = None
) -> IntArray:
    """Positions of the `n` largest finite values, best first. Ties go by `ids[position]`
    when given (rows are assigned in arrival order, which differs between runners and
    workers; ids do not), else by position."""
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size > n:
        part = np.argpartition(-values[finite], n - 1)[:n]
        finite = finite[part]
    if ids is None:
        order = np.lexsort((finite, -values[finite]))
    else:
        order = np.lexsort((np.array([ids[r] for r in finite.tolist()]), -values[finite]))
    return np.asarray(finite[order], dtype=np.int64)


def covisit_scores(
    shared: SharedStats, catalog: Catalog, recent: Sequence[tuple[str, float]], at_ts: float
) -> dict[int, float]:
    """row → Σ over the recent items of their neighbours' decayed co-visitation mass."""
    out: dict[int, float] = {}
    rate = shared.covisit_rate
    for item_id, _ in recent:
        rows, lms = shared.neighbours(item_id, catalog)
        if rows.size == 0:
            continue
        scores = np.exp(np.minimum(lms - rate * at_ts, 700.0))
        for row, s in zip(rows.tolist(), scores.tolist(), strict=True):
            out[row] = out.get(row, 0.0) + s
    return out


@dataclass(frozen=True)
class BatchContext:
    """What every request of a batch shares: popularity per row, the top popular rows, the
    padded category index per row, and the category labels."""

    pop_lm: FloatArray
    popular: IntArray
    category_index: IntArray
    labels: tuple[str, ...]

    @classmethod
    def build(cls, catalog: Catalog, shared: SharedStats, n_popular: int) -> BatchContext:
        rows = catalog.rows
        pop = shared.popularity_by_row(catalog)[:rows]
        live = np.where(catalog.alive[:rows], pop, -np.inf)
        labels = tuple(sorted(catalog.category_rows()))
        pos = {c: i for i, c in enumerate(labels)}
        width = max((len(c) for c in catalog.categories), default=0) or 1
        index = np.full((rows, width), len(labels), dtype=np.int64)  # pad: the extra 0 slot
        for row, cats in enumerate(catalog.categories[:rows]):
            for j, c in enumerate(cats):
                index[row, j] = pos[c]
        return cls(pop, top_rows(live, n_popular, catalog.ids), index, labels)


#: Extra semantic rows taken from the float32 product before the exact re-score.
SEMANTIC_MARGIN = 16


def query(req: SignalInputs) -> npt.NDArray[np.float64] | None:
    """The request's semantic query in float64: the normalised mean of its unit short and
    long interest vectors (None when it has neither)."""
    parts = [u.astype(np.float64) for u in (unit(req.short), unit(req.long)) if u is not None]
    if not parts:
        return None
    q = np.sum(parts, axis=0)
    n = float(np.linalg.norm(q))
    return q / n if n > 0 else None


def semantic_top(
    sem: npt.NDArray[np.float32], req: SignalInputs, catalog: Catalog, n: int, ids: Sequence[str]
) -> IntArray:
    """The `n` rows nearest the query. The float32 product of the whole batch rounds each
    score differently with the row's position (BLAS blocking), and rows are in arrival order,
    which differs between workers and runners: its top n + margin are re-scored exactly (per
    row, float64) and cut by (score, id), so the choice is the same everywhere."""
    q = query(req)
    if q is None:
        return np.zeros(0, dtype=np.int64)
    rough = top_rows(sem, n + SEMANTIC_MARGIN)
    exact = np.einsum("ij,j->i", catalog.vectors[rough], q)
    return np.asarray(rough[top_rows(exact, n, [ids[r] for r in rough.tolist()])], np.int64)


def candidate_pool(
    sem: npt.NDArray[np.float32],
    req: SignalInputs,
    catalog: Catalog,
    covisit: dict[int, float],
    ctx: BatchContext,
    per_source: int,
) -> IntArray:
    """Union of the 2·per_source semantic top rows (the request's row of semantic_scores),
    the strongest co-visited rows and the most popular rows, without excluded or dead rows;
    first-seen order."""
    ids = catalog.ids
    parts: list[IntArray] = [semantic_top(sem, req, catalog, 2 * per_source, ids)]
    if covisit:
        keys = np.fromiter(covisit.keys(), dtype=np.int64, count=len(covisit))
        vals = np.fromiter(covisit.values(), dtype=np.float64, count=len(covisit))
        key_ids = [ids[k] for k in keys.tolist()]
        parts.append(keys[top_rows(vals, per_source, key_ids)])
    parts.append(ctx.popular)
    pool = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    _, first = np.unique(pool, return_index=True)
    pool = pool[np.sort(first)]
    # Excluded and dead rows are −inf in the semantic row (semantic_scores).
    return np.asarray(pool[np.isfinite(sem[pool])], dtype=np.int64)


def raw_signals(
    rows: IntArray,
    owner: IntArray,
    requests: Sequence[SignalInputs],
    covisits: Sequence[dict[int, float]],
    ctx: BatchContext,
    catalog: Catalog,
    *,
    pop_rate: float,
    fresh_rate: float,
) -> FloatArray:
    """Raw signals float64[len(rows), 6]: row j is catalogue row `rows[j]` as a candidate of
    request `owner[j]` (vectorised over the whole batch; `covisits[r]` is request r's)."""
    raw = np.zeros((rows.size, N_SIGNALS), dtype=np.float64)
    if rows.size == 0:
        return raw
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    ends = np.r_[starts[1:], owner.size]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        r = int(owner[a])
        raw[a:b, 0:2] = cosines(catalog, rows[a:b], requests[r]).T
        cov = covisits[r]
        if cov:
            raw[a:b, 2] = [cov.get(x, 0.0) for x in rows[a:b].tolist()]
    at = np.array([q.at_ts for q in requests], dtype=np.float64)[owner]
    lm = ctx.pop_lm[rows]
    with np.errstate(over="ignore"):
        raw[:, 3] = np.where(np.isfinite(lm), np.exp(np.minimum(lm - pop_rate * at, 700.0)), 0.0)
    means = np.array([[q.category_mean.get(c, 0.0) for c in ctx.labels] + [0.0] for q in requests])
    raw[:, 4] = means[owner[:, None], ctx.category_index[rows]].max(axis=1)
    age = np.maximum(at - catalog.item_ts[rows], 0.0)
    raw[:, 5] = np.where(np.isfinite(age), np.exp(-fresh_rate * age), 0.0)
    return raw


def segment_bounds(raw: FloatArray, offsets: IntArray) -> tuple[FloatArray, FloatArray]:
    """Per-segment column (min, max) of raw[offsets[s]:offsets[s+1]]: float64[S, 6] each;
    zeros for an empty segment."""
    n_seg = offsets.size - 1
    lo = np.zeros((n_seg, raw.shape[1]))
    hi = np.zeros((n_seg, raw.shape[1]))
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    if nonempty.size:
        starts = offsets[:-1][nonempty]
        lo[nonempty] = np.minimum.reduceat(raw, starts, axis=0)
        hi[nonempty] = np.maximum.reduceat(raw, starts, axis=0)
    return lo, hi

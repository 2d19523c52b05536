"""Candidates and raw signals for a batch of ranking requests, vectorised over the batch.

One matrix product scores every request's short and long interest vectors against the whole
catalogue (float32, (2R × d)·(d × N)); the semantic candidates are each row's top
`per_source` (argpartition), and the same product gives the semantic signals of every other
candidate by a gather. Column order of the raw signal matrix: the registry's
(signals.py): semantic_short, semantic_long, covisit, trending, category, freshness, sequence,
sasrec (filled in by the engine from the sequence model), predictive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.models.catalog import Catalog
from recstream.models.sequence_rules import source_weights
from recstream.models.shared_stats import SharedStats
from recstream.models.signals import DEFAULT_SIGNAL_NAMES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
N_SIGNALS = len(DEFAULT_SIGNAL_NAMES)
PREDICTIVE = DEFAULT_SIGNAL_NAMES.index("predictive")


@dataclass(frozen=True)
class SignalInputs:
    """Per-request inputs. ``exclude``: catalogue rows the request may not return;
    ``recent``: the (item, ts) pairs whose co-visits count; ``history``: the last distinct
    (item, ts) consumptions whose next items count (sequence), both oldest first."""

    short: npt.NDArray[np.float32]
    long: npt.NDArray[np.float32]
    at_ts: float
    recent: tuple[tuple[str, float], ...]
    exclude: IntArray
    category_mean: dict[str, float]
    history: tuple[tuple[str, float], ...] = ()


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


def top_rows(values: npt.NDArray[np.floating], n: int, ties: IntArray | None = None) -> IntArray:
    """Positions of the `n` largest finite values, best first. Ties go by `ties[position]`
    when given (the rows' `Catalog.id_rank`: rows are assigned in arrival order, which
    differs between runners and workers; ids do not), else by position."""
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size > n:
        # Every value tied with the n-th enters the sort (argpartition alone would pick
        # among them by memory order), so the tie rule decides which of them are kept.
        v = values[finite]
        kth = -np.partition(-v, n - 1)[n - 1] if n > 0 else np.inf
        finite = finite[v >= kth]
    second = finite if ties is None else ties[finite]
    order = np.lexsort((second, -values[finite]))[:n]
    return np.asarray(finite[order], dtype=np.int64)


@dataclass(frozen=True)
class CoVisits:
    """A request's co-visitation scores: distinct catalogue ``rows`` (ascending) and their
    ``values``, Σ over the recent items of their neighbours' decayed mass."""

    rows: IntArray
    values: FloatArray

    @classmethod
    def empty(cls) -> CoVisits:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))

    def __bool__(self) -> bool:
        return bool(self.rows.size)


def covisit_scores(
    shared: SharedStats, catalog: Catalog, recent: Sequence[tuple[str, float]], at_ts: float
) -> CoVisits:
    """Σ over the recent items of their neighbours' decayed co-visitation mass, per row. Sums
    run in recent-item order (bincount adds in input order), as a running dict sum would."""
    uniq, inverse, lms = shared.neighbourhood(tuple(i for i, _ in recent), catalog)
    if not uniq.size:
        return CoVisits.empty()
    scores = np.exp(np.minimum(lms - shared.covisit_rate * at_ts, 700.0))
    summed = np.asarray(np.bincount(inverse, weights=scores, minlength=uniq.size), np.float64)
    return CoVisits(uniq, summed)


def sequence_scores(
    shared: SharedStats,
    catalog: Catalog,
    history: Sequence[tuple[str, float]],
    at_ts: float,
    *,
    n_last: int,
    gap_half_life_s: float,
) -> CoVisits:
    """Σ over the last `n_last` history items of weight × P(next = row | item), per row
    (sequence_rules.py; weights by position and age at `at_ts`, s)."""
    last = tuple(history[-n_last:])
    uniq, inverse, probs, source = shared.sequence_hood(tuple(i for i, _ in last), catalog)
    if not uniq.size:
        return CoVisits.empty()
    weight = source_weights(last, at_ts, n_last=n_last, gap_half_life_s=gap_half_life_s)
    summed = np.bincount(inverse, weights=probs * weight[source], minlength=uniq.size)
    return CoVisits(uniq, np.asarray(summed, dtype=np.float64))


@dataclass(frozen=True)
class BatchContext:
    """What every request of a batch shares: popularity per row, the top popular rows, the
    padded category index per row, the category labels, and each row's share of its
    categories' popularity (:func:`category_shares`, same shape as the index)."""

    pop_lm: FloatArray
    popular: IntArray
    category_index: IntArray
    labels: tuple[str, ...]
    shares: FloatArray

    @classmethod
    def build(cls, catalog: Catalog, shared: SharedStats, n_popular: int) -> BatchContext:
        rows = catalog.rows
        pop = shared.popularity_by_row(catalog)[:rows]
        live = np.where(catalog.alive[:rows], pop, -np.inf)
        labels, index = catalog.category_index()  # pad: the extra 0 slot of the means
        shares = category_shares(live, index, len(labels))
        return cls(pop, top_rows(live, n_popular, catalog.id_rank()), index, labels, shares)


def category_shares(pop_lm: FloatArray, category_index: IntArray, n_labels: int) -> FloatArray:
    """float64[rows, width]: P(item | category), each row's share of the decayed popularity of
    each of its categories, pop_i / sum of pop_j over the rows j of that category. `pop_lm` is
    popularity as log mass (-inf: none, or not servable); the time factor of the decay is the
    same for every item and cancels in the ratio. Pad slots (`n_labels`) and rows without
    popularity get 0. Invariant: per category, its rows' shares sum to 1, or to 0 when none
    of them has popularity."""
    out = np.zeros(category_index.shape, dtype=np.float64)
    finite = np.isfinite(pop_lm)
    if not finite.any():
        return out
    mass = np.where(finite, np.exp(pop_lm - pop_lm[finite].max()), 0.0)
    width = category_index.shape[1]
    totals = np.bincount(
        category_index.ravel(), weights=np.repeat(mass, width), minlength=n_labels + 1
    )
    denom = totals[category_index]
    real = (category_index < n_labels) & (denom > 0)
    np.divide(np.broadcast_to(mass[:, None], out.shape), denom, out=out, where=real)
    return out


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


#: Requests whose gathered candidate vectors are re-scored in one float64 product.
RESCORE_CHUNK = 64
#: Candidate rows whose cosines are computed in one float64 product (bounds the memory).
COSINE_CHUNK = 8192


def semantic_tops(
    sem: npt.NDArray[np.float32], requests: Sequence[SignalInputs], catalog: Catalog, n: int
) -> list[IntArray]:
    """Per request (row of `sem`), the `n` rows nearest its query. The float32 product of the
    whole batch rounds each score differently with the row's position (BLAS blocking), and
    rows are in arrival order, which differs between workers and runners: each request's top
    n + margin are re-scored exactly (per row, float64) and cut by (score, id), so the choice
    is the same everywhere. One argpartition and one product for the whole batch."""
    out = [np.zeros(0, dtype=np.int64)] * len(requests)
    queries = [query(r) for r in requests]
    live = [i for i, q in enumerate(queries) if q is not None]
    if not live or sem.shape[1] == 0:
        return out
    m = min(n + SEMANTIC_MARGIN, sem.shape[1])
    rank = catalog.id_rank()
    for a in range(0, len(live), RESCORE_CHUNK):
        idx = np.asarray(live[a : a + RESCORE_CHUNK], dtype=np.int64)
        block = sem[idx]
        rough = (
            np.argpartition(-block, m - 1, axis=1)[:, :m]
            if m < block.shape[1]
            else (np.broadcast_to(np.arange(m), (idx.size, m)))
        )
        finite = np.isfinite(np.take_along_axis(block, rough, axis=1))
        q = np.stack([queries[i] for i in idx.tolist()])
        exact = np.einsum("rkd,rd->rk", catalog.vectors[rough], q)  # float64 sums
        exact[~finite] = -np.inf
        order = np.lexsort((rank[rough], -exact), axis=-1)[:, :n]
        best = np.take_along_axis(rough, order, axis=1)
        keep = np.take_along_axis(finite, order, axis=1)
        for j, i in enumerate(idx.tolist()):
            out[i] = np.asarray(best[j][keep[j]], dtype=np.int64)
    return out


def candidate_pool(
    sem: npt.NDArray[np.float32],
    semantic: IntArray,
    covisit: CoVisits,
    ctx: BatchContext,
    rank: IntArray,
    per_source: int,
    sequence: CoVisits | None = None,
    per_sequence: int = 0,
) -> IntArray:
    """Union of the semantic top rows (`semantic`, from semantic_tops), the strongest
    co-visited rows, the strongest `per_sequence` next items and the most popular rows,
    without excluded or dead rows (−inf in the request's row `sem` of semantic_scores);
    first-seen order."""
    parts: list[IntArray] = [semantic]
    for source, n in ((covisit, per_source), (sequence, per_sequence)):
        if source and n > 0:
            parts.append(source.rows[top_rows(source.values, n, rank[source.rows])])
    parts.append(ctx.popular)
    pool = np.concatenate(parts)
    _, first = np.unique(pool, return_index=True)
    pool = pool[np.sort(first)]
    return np.asarray(pool[np.isfinite(sem[pool])], dtype=np.int64)


def _unit_queries(
    requests: Sequence[SignalInputs], horizon: str, dim: int
) -> npt.NDArray[np.float32]:
    """float32[R, dim]: each request's unit interest vector of `horizon` (zeros: none)."""
    q = np.zeros((len(requests), dim), dtype=np.float32)
    for r, req in enumerate(requests):
        u = unit(req.short if horizon == "short" else req.long)
        if u is not None:
            q[r] = u
    return q


def _cosines(
    rows: IntArray, owner: IntArray, requests: Sequence[SignalInputs], catalog: Catalog
) -> FloatArray:
    """float64[len(rows), 2]: cosine of each row's vector with its request's short and long
    interest vector (0 for a missing vector or an empty horizon). Per-row sums (einsum): BLAS
    blocks a product by row position, so the same item would score differently in another
    catalogue order (another worker); einsum sums each row alike wherever it sits (a unit
    test moves rows around). float32: the sums' rounding (~1e-7) is far below any signal's
    resolution, and half the memory traffic of a float64 gather."""
    out = np.zeros((rows.size, 2), dtype=np.float64)
    queries = [_unit_queries(requests, h, catalog.dim) for h in ("short", "long")]
    for a in range(0, rows.size, COSINE_CHUNK):
        b = min(a + COSINE_CHUNK, rows.size)
        vecs = catalog.vectors[rows[a:b]]  # gathered once for both horizons
        for j, q in enumerate(queries):
            out[a:b, j] = np.einsum("ij,ij->i", vecs, q[owner[a:b]])
    return out


def _covisit_column(
    rows: IntArray, owner: IntArray, covisits: Sequence[CoVisits], n_rows: int
) -> FloatArray:
    """float64[len(rows)]: each candidate's co-visitation score for its request (0: none),
    by one sorted lookup of (request, row) keys over the whole batch."""
    out = np.zeros(rows.size, dtype=np.float64)
    have = [(r, c) for r, c in enumerate(covisits) if c]
    if not have or rows.size == 0:
        return out
    width = np.int64(max(n_rows, 1))
    keys = np.concatenate([r * width + c.rows for r, c in have])
    values = np.concatenate([c.values for _, c in have])
    wanted = owner * width + rows
    pos = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    hit = keys[pos] == wanted
    out[hit] = values[pos[hit]]
    return out


def raw_signals(
    rows: IntArray,
    owner: IntArray,
    requests: Sequence[SignalInputs],
    covisits: Sequence[CoVisits],
    ctx: BatchContext,
    catalog: Catalog,
    *,
    pop_rate: float,
    fresh_rate: float,
    sequences: Sequence[CoVisits] = (),
) -> FloatArray:
    """Raw signals float64[len(rows), N_SIGNALS]: row j is catalogue row `rows[j]` as a
    candidate of request `owner[j]` (vectorised over the whole batch; `covisits[r]` and
    `sequences[r]` are request r's; no sequences: that column is 0)."""
    raw = np.zeros((rows.size, N_SIGNALS), dtype=np.float64)
    if rows.size == 0:
        return raw
    raw[:, 0:2] = _cosines(rows, owner, requests, catalog)
    raw[:, 2] = _covisit_column(rows, owner, covisits, catalog.rows)
    at = np.array([q.at_ts for q in requests], dtype=np.float64)[owner]
    lm = ctx.pop_lm[rows]
    with np.errstate(over="ignore"):
        raw[:, 3] = np.where(np.isfinite(lm), np.exp(np.minimum(lm - pop_rate * at, 700.0)), 0.0)
    affinity = category_means(requests, ctx.labels)[owner[:, None], ctx.category_index[rows]]
    raw[:, 4] = affinity.max(axis=1)
    # The Dirichlet posterior's predictive probability of the item: the category affinity
    # alone ranks a category's items alike, trending alone ignores the user; their product is
    # what a user with these category shares picking by popularity within a category picks.
    raw[:, PREDICTIVE] = (affinity * ctx.shares[rows]).sum(axis=1)
    age = np.maximum(at - catalog.item_ts[rows], 0.0)
    raw[:, 5] = np.where(np.isfinite(age), np.exp(-fresh_rate * age), 0.0)
    if sequences:
        raw[:, 6] = _covisit_column(rows, owner, sequences, catalog.rows)
    return raw


def category_means(requests: Sequence[SignalInputs], labels: Sequence[str]) -> FloatArray:
    """float64[R, len(labels) + 1]: each request's posterior mean per category label, and 0
    in the last column (the pad slot of the category index)."""
    return np.array([[q.category_mean.get(c, 0.0) for c in labels] + [0.0] for q in requests])


def segment_bounds(raw: FloatArray, offsets: IntArray) -> tuple[FloatArray, FloatArray]:
    """Per-segment column (min, max) of raw[offsets[s]:offsets[s+1]]: float64[S, k] each;
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

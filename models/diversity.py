"""Diversity: maximal marginal relevance (MMR) re-ranking.

MMR (Carbonell & Goldstein, 1998) picks items greedily by

    λ·rel_i − (1 − λ)·max_{j ∈ selected} cos(v_i, v_j)

so λ = 1 is pure relevance order and λ = 0 pure novelty (after the first, most relevant, pick).
Relevance should be on a scale comparable with cosine, e.g. fused scores in [0, 1].

Vectors are item embeddings, one row per candidate. Rows are re-normalised here (zero rows
stay zero), so cosine is exact even if callers pass slightly non-unit rows; an item without an
embedding (zero row) has similarity 0 with everything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from recstream.models.errors import ValidationError

FloatArray = npt.NDArray[np.float64]
T = TypeVar("T")


def _unit_rows(vectors: npt.ArrayLike, n: int | None = None) -> FloatArray:
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2:
        raise ValidationError(f"vectors must be 2-D [n, dim], got shape {v.shape}")
    if n is not None and v.shape[0] != n:
        raise ValidationError(f"vectors has {v.shape[0]} rows, expected {n}")
    if not np.all(np.isfinite(v)):
        raise ValidationError("vectors contain NaN or infinite entries")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0.0)


def mmr_indices(
    relevance: npt.ArrayLike, vectors: npt.ArrayLike, k: int, trade_off: float
) -> list[int]:
    """Positions (into ``relevance``) of the MMR selection, in pick order.

    ``trade_off`` is λ ∈ [0, 1]. Ties in the MMR objective go to the higher relevance, then the
    lower position, so λ = 1 reproduces the stable relevance order exactly. Cost O(k·n·dim):
    the max-similarity to the selected set is updated incrementally with one matrix-vector
    product per pick. Returns min(k, n) positions without repeats.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.ndim != 1:
        raise ValidationError(f"relevance must be 1-D, got shape {rel.shape}")
    if not np.all(np.isfinite(rel)):
        raise ValidationError("relevance contains NaN or infinite entries")
    if not 0.0 <= trade_off <= 1.0:
        raise ValidationError(f"trade_off must be in [0, 1], got {trade_off}")
    if k < 0:
        raise ValidationError(f"k must be ≥ 0, got {k}")
    v = _unit_rows(vectors, rel.size)
    n = rel.size
    picks: list[int] = []
    available = np.ones(n, dtype=bool)
    max_sim = np.zeros(n, dtype=np.float64)  # max cosine to the selected set (0 while empty)
    for step in range(min(k, n)):
        # At step 0 max_sim is all zeros, so the first pick is the most relevant item (for
        # λ = 0 every objective ties at 0 and the relevance tie-break decides).
        objective = trade_off * rel - (1.0 - trade_off) * max_sim
        objective[~available] = -np.inf
        best = objective.max()
        ties = np.flatnonzero(objective == best)
        pick = int(ties[np.argmax(rel[ties])])  # argmax returns the first (lowest) position
        picks.append(pick)
        available[pick] = False
        sims = v @ v[pick]
        if step == 0:
            max_sim = sims
        else:
            np.maximum(max_sim, sims, out=max_sim)
    return picks


#: Up to this many candidates MMR runs over Python lists: a numpy step costs ~6 array calls of
#: ~1 µs whatever the size, more than a plain loop over a few dozen floats.
MMR_LIST_LIMIT = 40


def mmr_select(
    relevance: npt.ArrayLike, similarity: npt.ArrayLike, k: int, trade_off: float
) -> list[int]:
    """MMR over a precomputed cosine matrix ``similarity`` (n × n), in pick order: the
    objective and tie rules of :func:`mmr_indices`, which it matches wherever no two
    objectives tie to the last bit (BLAS may round a matrix product and a matrix-vector
    product differently). One matrix product up front instead of one per pick: the engine's hot
    path ranks hundreds of lists per batch. Small pools run over lists, larger ones over
    arrays; both give the same picks (the same float operations per candidate)."""
    rel = np.asarray(relevance, dtype=np.float64)
    sims = np.asarray(similarity, dtype=np.float64)
    if rel.size <= MMR_LIST_LIMIT:
        return _mmr_over_lists(rel, sims, k, trade_off)
    return _mmr_over_arrays(rel, sims, k, trade_off)


def _mmr_over_arrays(
    rel: npt.NDArray[np.float64], sims: npt.NDArray[np.float64], k: int, trade_off: float
) -> list[int]:
    n = rel.size
    c = 1.0 - trade_off
    base = trade_off * rel
    objective = base.copy()  # λ·rel − (1 − λ)·max cosine to the picks; −inf once picked
    max_sim = np.zeros(n)
    scaled = np.empty(n)
    picked = np.zeros(n, dtype=bool)
    picks: list[int] = []
    for step in range(min(k, n)):
        pick = int(objective.argmax())
        if np.count_nonzero(objective == objective[pick]) > 1:
            # Ties go to the higher relevance, then the lower position (argmax: first).
            ties = np.flatnonzero(objective == objective[pick])
            pick = int(ties[np.argmax(rel[ties])])
        picks.append(pick)
        picked[pick] = True
        # As mmr_indices: after the first pick its similarities, even < 0.
        if step == 0:
            max_sim[:] = sims[pick]
        else:
            np.maximum(max_sim, sims[pick], out=max_sim)
        np.multiply(max_sim, c, out=scaled)
        np.subtract(base, scaled, out=objective)
        objective[picked] = -np.inf
    return picks


def _mmr_over_lists(
    rel: npt.NDArray[np.float64], sims: npt.NDArray[np.float64], k: int, trade_off: float
) -> list[int]:
    n = rel.size
    relevance = rel.tolist()
    base = (trade_off * rel).tolist()
    c = 1.0 - trade_off
    max_sim = [0.0] * n
    free = list(range(n))  # ascending: the first of equal candidates wins, as argmax
    picks: list[int] = []
    for step in range(min(k, n)):
        best, pick = -math.inf, free[0]
        for j in free:
            o = base[j] - c * max_sim[j]
            if o > best or (o == best and relevance[j] > relevance[pick]):
                best, pick = o, j
        picks.append(pick)
        free.remove(pick)
        row = sims[pick].tolist()
        max_sim = (
            row if step == 0 else [m if m >= r else r for m, r in zip(max_sim, row, strict=True)]
        )
    return picks


def mmr(
    candidate_ids: Sequence[T],
    relevance: npt.ArrayLike,
    vectors: npt.ArrayLike,
    k: int,
    trade_off: float,
) -> list[T]:
    """The ids of the MMR selection of ``k`` candidates, in pick order (see :func:`mmr_indices`).

    ``candidate_ids``, ``relevance`` and the rows of ``vectors`` are aligned.
    """
    rel = np.asarray(relevance, dtype=np.float64)
    if rel.ndim != 1 or rel.size != len(candidate_ids):
        raise ValidationError(f"relevance must have shape ({len(candidate_ids)},), got {rel.shape}")
    return [candidate_ids[i] for i in mmr_indices(rel, vectors, k, trade_off)]


def mmr_select_batch(
    relevance: npt.ArrayLike,
    similarity: npt.ArrayLike,
    sizes: npt.ArrayLike,
    k: int,
    trade_off: float,
) -> npt.NDArray[np.intp]:
    """:func:`mmr_select` for many lists at once, one greedy step for all of them per pick.

    ``relevance``: float64[L, P], list l's candidates in its first ``sizes[l]`` columns;
    ``similarity``: float64[L, P, P], list l's cosine matrix in its top-left corner. Returns
    int[L, min(k, P)]: row l is ``mmr_select(relevance[l, :n], similarity[l, :n, :n], k,
    trade_off)`` (n = sizes[l]) padded with −1: the same objective, float operations and tie
    rules per candidate (ties to the higher relevance, then the lower position)."""
    rel = np.asarray(relevance, dtype=np.float64)
    sims = np.asarray(similarity, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.intp)
    n_lists, width = rel.shape
    steps = max(0, min(k, width))
    picks = np.full((n_lists, steps), -1, dtype=np.intp)
    if n_lists == 0 or steps == 0:
        return picks
    c = 1.0 - trade_off
    base = trade_off * rel
    free = np.arange(width)[None, :] < n[:, None]
    objective = np.where(free, base, -np.inf)
    max_sim = np.zeros_like(rel)
    lists = np.arange(n_lists)
    for step in range(steps):
        best = objective.max(axis=1)
        pick = np.where(objective == best[:, None], rel, -np.inf).argmax(axis=1)
        live = n > step
        picks[live, step] = pick[live]
        free[lists[live], pick[live]] = False
        row = sims[lists, pick]
        max_sim = row if step == 0 else np.maximum(max_sim, row)
        objective = np.where(free, base - c * max_sim, -np.inf)
    return picks

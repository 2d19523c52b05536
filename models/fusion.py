"""Multi-signal score fusion: normalise each signal within a request, weight, rank.

Pipeline for one request (n candidates, k signals in registry order):

1. :func:`exclude` drops items the user already consumed;
2. :func:`normalise_signals` min-max scales each signal column to [0, 1] *within the request*,
   so signals with different units (cosine, counts, ages) become comparable;
3. :func:`fuse` computes ``score_i = Σ_k w_k·s_ik`` with ``w`` on the simplex, keeping the
   per-signal contributions ``w_k·s_ik`` for explanation and for the weight update;
4. :func:`top_k` orders candidates; :func:`rank` does all four and returns :class:`RankedItem`.

Invariants: normalised signals are finite and in [0, 1]; with weights on the simplex every fused
score is in [0, 1]; ``scores[i]`` is the left-to-right sum of ``contributions[i, :]``, bit for
bit, so the explanation adds up to the score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recstream.models.errors import ValidationError
from recstream.models.weights import check_simplex

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

#: Contribution key that marks an item placed by exploration instead of by fusion.
EXPLORATION_KEY = "exploration"


@dataclass(frozen=True, slots=True)
class RankedItem:
    """One served item.

    ``score``: fused score in [0, 1] (for explored items, the sampled category mean instead).
    ``contributions``: signal name → w_k·s_k; ``sum(contributions.values()) == score`` up to
    float rounding. Explored items carry the single key :data:`EXPLORATION_KEY`.
    ``signals``: signal name → normalised score s_k in [0, 1] as served; the weight update
    needs these (``d`` and ``μ``) and they cannot be recovered from contributions where
    w_k = 0. Empty for explored items.
    """

    item_id: str
    score: float
    contributions: dict[str, float]
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def explored(self) -> bool:
        """True when exploration, not fusion, placed this item."""
        return EXPLORATION_KEY in self.contributions


def normalise_signals(raw: npt.ArrayLike) -> FloatArray:
    """Min-max scale each column of float[n_candidates, k] to [0, 1] within this request.

    Non-finite entries (NaN: the source had no score; ±inf: a source bug) are treated as
    missing: they are ignored when finding the column's min and max and map to 0, the same as
    the lowest observed score. A column with fewer than two distinct finite values maps to all
    zeros: a signal that does not discriminate between this request's candidates carries no
    ranking information, and zeros keep it out of both the scores and ``d − μ`` (so it cannot
    gain or lose weight on this request). Returns a new float64 array of the same shape.
    """
    x = np.array(raw, dtype=np.float64)  # a copy: we write into it
    if x.ndim != 2:
        raise ValidationError(f"raw signals must be 2-D [n_candidates, k], got shape {x.shape}")
    out = np.zeros_like(x)
    if x.size == 0:
        return out
    finite = np.isfinite(x)
    # Fill missing entries with +inf/−inf so they never win the min/max of their column.
    lo = np.where(finite, x, np.inf).min(axis=0)
    hi = np.where(finite, x, -np.inf).max(axis=0)
    span = hi - lo  # inf − inf = nan for all-missing columns; treated as constant below
    live = np.isfinite(span) & (span > 0.0)
    if np.any(live):
        scaled = (x[:, live] - lo[live]) / span[live]
        # Clip guards against 1-ulp overshoot from the division; missing entries → 0.
        out[:, live] = np.where(finite[:, live], np.clip(scaled, 0.0, 1.0), 0.0)
    return out


def fuse(normalised: npt.ArrayLike, weights: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Fused scores float64[n] and contributions float64[n, k] with contributions = w_k·s_ik.

    ``weights`` must lie on the simplex (ValidationError otherwise). ``scores`` is computed as
    the left-to-right sum over columns of ``contributions``, so ``scores[i]`` equals
    ``contributions[i, 0] + contributions[i, 1] + ...`` exactly, not just approximately.
    """
    s = np.asarray(normalised, dtype=np.float64)
    if s.ndim != 2:
        raise ValidationError(f"signals must be 2-D [n_candidates, k], got shape {s.shape}")
    w = check_simplex(weights, s.shape[1])
    if not np.all(np.isfinite(s)):
        raise ValidationError("normalised signals contain NaN or infinite entries")
    contributions = s * w  # broadcasts w over rows
    scores = np.zeros(s.shape[0], dtype=np.float64)
    # A loop over the k (few) columns, vectorised over the n candidates: fixes the summation
    # order so the explanation reproduces the score to the last bit.
    for column in range(s.shape[1]):
        scores += contributions[:, column]
    return scores, contributions


def top_k(scores: npt.ArrayLike, k: int) -> IntArray:
    """Indices of the ``k`` highest scores, best first; ties go to the lower index.

    O(n + k log k) via argpartition. NaN scores rank last. Returns fewer than ``k`` indices
    when there are fewer candidates.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValidationError(f"scores must be 1-D, got shape {s.shape}")
    if k < 0:
        raise ValidationError(f"k must be ≥ 0, got {k}")
    n = s.size
    if k == 0 or n == 0:
        return np.zeros(0, dtype=np.intp)
    key = np.where(np.isnan(s), -np.inf, s)
    if k >= n:
        return np.argsort(-key, kind="stable").astype(np.intp)
    # argpartition picks arbitrarily among ties at the k-th value; take every candidate at or
    # above that value (in index order) and stable-sort them so the tie rule is deterministic.
    kth = key[np.argpartition(-key, k - 1)[k - 1]]
    pool = np.flatnonzero(key >= kth)
    return pool[np.argsort(-key[pool], kind="stable")[:k]].astype(np.intp)


def normalise_with(raw: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike) -> FloatArray:
    """Scale raw signals (one row or a matrix, columns = signals) with given per-column
    bounds, clipped to [0, 1]: a list's own bounds (its normalisation), or a served list's
    bounds for an item outside it (feedback). A column without spread (hi == lo) gives 0, as
    :func:`normalise_signals` does."""
    x, lo_, hi_ = (np.asarray(a, dtype=np.float64) for a in (raw, lo, hi))
    span = hi_ - lo_
    live = span > 0
    out = np.zeros_like(x)
    if np.any(live):
        out[..., live] = np.clip((x[..., live] - lo_[live]) / span[live], 0.0, 1.0)
    return out


def normalise_segments(
    raw: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike, owner: npt.ArrayLike
) -> FloatArray:
    """:func:`normalise_with` for many lists at once: row j of ``raw`` scaled with the bounds
    ``lo[owner[j]]``, ``hi[owner[j]]`` (float64[S, k] each). The same float operations per
    entry, so each row is bit for bit what the per-list call gives."""
    x, lo_, hi_ = (np.asarray(a, dtype=np.float64) for a in (raw, lo, hi))
    rows = np.asarray(owner, dtype=np.intp)
    span = hi_ - lo_
    out = np.zeros_like(x)
    np.divide(x - lo_[rows], span[rows], out=out, where=(span > 0)[rows])
    return np.clip(out, 0.0, 1.0, out=out)


def fuse_rows(normalised: npt.ArrayLike, weights: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """:func:`fuse` with one weight vector per row (float64[n, k], each on the simplex: the
    caller's invariant, not checked): the scores of many lists in one pass, each row bit for
    bit what :func:`fuse` gives it with its own weights."""
    s = np.asarray(normalised, dtype=np.float64)
    contributions = s * np.asarray(weights, dtype=np.float64)
    scores = np.zeros(s.shape[0], dtype=np.float64)
    for column in range(s.shape[1]):  # the same summation order as fuse
        scores += contributions[:, column]
    return scores, contributions


def top_per_segment(scores: npt.ArrayLike, sizes: npt.ArrayLike, n: int) -> IntArray:
    """Per segment (consecutive runs of ``sizes[s]`` scores) the positions, into ``scores``,
    of its ``n`` best, best first, ties to the lower position: row s of int[S, n], −1 past
    the segment's size. Segment s alone gives ``argsort(-scores, kind="stable")[:n]``."""
    s = np.asarray(scores, dtype=np.float64)
    counts = np.asarray(sizes, dtype=np.intp)
    out = np.full((counts.size, n), -1, dtype=np.intp)
    if s.size == 0 or n <= 0:
        return out
    seg = np.repeat(np.arange(counts.size), counts)
    order = np.lexsort((-s, seg))  # stable: equal scores keep their position order
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    place = np.arange(s.size) - starts[seg[order]]
    keep = place < n
    out[seg[order][keep], place[keep]] = order[keep]
    return out

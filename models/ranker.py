"""The fused ranker: raw signals per candidate → fused, diversified top-k with explanations.

Signals (columns, in registry order; see signals.DEFAULT_SIGNAL_NAMES):

- ``semantic_short`` / ``semantic_long``: cosine between the item vector and the user's
  short-/long-horizon decayed interest vector (0 when either is missing);
- ``covisit``: decayed co-visitation mass between the item and the user's recent items;
- ``trending``: the item's decayed global popularity at the request's event time;
- ``category``: the user's posterior mean interest in the item's categories (the largest);
- ``freshness``: 2^(−age/half-life) of the item's catalog time at the request's event time.

Each column is min-max normalised within the request (fusion.normalise_signals), fused with
weights on the simplex, the best ``pool`` re-ranked by MMR over item vectors, and the list's
per-column bounds kept so that feedback on an item outside the list can be expressed on the
same scale (``normalise_with``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.models import decay
from recstream.models.diversity import mmr_indices
from recstream.models.errors import ValidationError
from recstream.models.fusion import RankedItem, fuse, normalise_signals

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the ranker knows of one candidate item.

    ``log_popularity``: decay.py log-mass relative to the fixed epoch (−inf: none);
    ``covisit``: decayed co-visitation mass with the user's recent items (≥ 0);
    ``category_affinity``: posterior mean interest in the item's categories, in [0, 1];
    ``item_ts``: catalog time (epoch s) or None.
    """

    item_id: str
    vector: npt.NDArray[np.float32] | None
    log_popularity: float = -math.inf
    covisit: float = 0.0
    category_affinity: float = 0.0
    item_ts: float | None = None


@dataclass(frozen=True, slots=True)
class RankerParams:
    """Hyperparameters of one request. Half-lives in event-time seconds."""

    k: int = 10
    popularity_half_life_s: float = 7 * 86_400.0
    freshness_half_life_s: float = 30 * 86_400.0
    mmr_trade_off: float = 0.8
    mmr_pool: int = 3

    def __post_init__(self) -> None:
        if self.k < 1 or self.mmr_pool < 1:
            raise ValidationError("k and mmr_pool must be >= 1")
        if not 0.0 <= self.mmr_trade_off <= 1.0:
            raise ValidationError("mmr_trade_off must be in [0, 1]")


def _unit(v: npt.ArrayLike | None) -> FloatArray | None:
    if v is None:
        return None
    x = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(x))
    return None if n == 0.0 or not math.isfinite(n) else x / n


def signal_matrix(
    candidates: Sequence[Candidate],
    user_short: npt.ArrayLike | None,
    user_long: npt.ArrayLike | None,
    at_ts: float,
    params: RankerParams,
) -> FloatArray:
    """Raw signals float[n, 6] in the column order of the module docstring."""
    n = len(candidates)
    raw = np.zeros((n, 6), dtype=np.float64)
    if n == 0:
        return raw
    short, long_ = _unit(user_short), _unit(user_long)
    dim = next((c.vector.shape[0] for c in candidates if c.vector is not None), 0)
    if dim and (short is not None or long_ is not None):
        vecs = np.zeros((n, dim), dtype=np.float64)
        has = np.zeros(n, dtype=bool)
        for i, c in enumerate(candidates):
            if c.vector is not None and c.vector.shape[0] == dim:
                vecs[i] = c.vector
                has[i] = True
        norms = np.linalg.norm(vecs, axis=1)
        norms[norms == 0] = 1.0
        vecs /= norms[:, None]
        if short is not None and short.shape[0] == dim:
            raw[:, 0] = np.where(has, vecs @ short, 0.0)
        if long_ is not None and long_.shape[0] == dim:
            raw[:, 1] = np.where(has, vecs @ long_, 0.0)
    pop_rate = decay.decay_rate(params.popularity_half_life_s)
    fresh_rate = decay.decay_rate(params.freshness_half_life_s)
    for i, c in enumerate(candidates):
        raw[i, 2] = c.covisit
        raw[i, 3] = (
            0.0 if c.log_popularity == -math.inf else decay.score(c.log_popularity, at_ts, pop_rate)
        )
        raw[i, 4] = c.category_affinity
        if c.item_ts is not None:
            raw[i, 5] = math.exp(-fresh_rate * max(at_ts - c.item_ts, 0.0))
    return raw


def column_bounds(raw: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Per-column (min, max) over finite values; (0, 0) for an empty or all-NaN column."""
    x = np.asarray(raw, dtype=np.float64)
    if x.shape[0] == 0:
        return np.zeros(x.shape[1]), np.zeros(x.shape[1])
    masked = np.where(np.isfinite(x), x, np.nan)
    with np.errstate(all="ignore"):
        lo = np.nan_to_num(
            np.nanmin(masked, axis=0) if np.isfinite(masked).any() else np.zeros(x.shape[1])
        )
        hi = np.nan_to_num(
            np.nanmax(masked, axis=0) if np.isfinite(masked).any() else np.zeros(x.shape[1])
        )
    return lo, hi


def normalise_with(row: npt.ArrayLike, lo: npt.ArrayLike, hi: npt.ArrayLike) -> FloatArray:
    """Scale one raw signal row with a list's column bounds, clipped to [0, 1].

    A column without spread in the list (hi == lo) gives 0, as fusion.normalise_signals does.
    """
    x, lo_, hi_ = (np.asarray(a, dtype=np.float64) for a in (row, lo, hi))
    span = hi_ - lo_
    out = np.zeros_like(x)
    ok = span > 0
    out[ok] = np.clip((x[ok] - lo_[ok]) / span[ok], 0.0, 1.0)
    return out


def rank_fused(
    candidates: Sequence[Candidate],
    raw: npt.ArrayLike,
    weights: npt.ArrayLike,
    names: Sequence[str],
    params: RankerParams,
) -> list[RankedItem]:
    """Fuse, take the best ``mmr_pool·k``, re-rank them by MMR, return the top ``k``.

    Contributions of every returned item add up to its score (fusion.fuse's invariant).
    """
    x = np.asarray(raw, dtype=np.float64)
    if x.shape != (len(candidates), len(names)):
        raise ValidationError(f"raw must be ({len(candidates)}, {len(names)}), got {x.shape}")
    if not candidates:
        return []
    normalised = normalise_signals(x)
    scores, contributions = fuse(normalised, weights)
    pool = np.argsort(-scores, kind="stable")[: params.k * params.mmr_pool]
    dim = next((c.vector.shape[0] for c in candidates if c.vector is not None), 0)
    if dim and params.mmr_trade_off < 1.0 and len(pool) > 1:
        vecs = np.zeros((len(pool), dim), dtype=np.float64)
        for j, i in enumerate(pool):
            v = candidates[int(i)].vector
            if v is not None and v.shape[0] == dim:
                vecs[j] = v
        order = mmr_indices(scores[pool], vecs, min(params.k, len(pool)), params.mmr_trade_off)
        chosen = [int(pool[j]) for j in order]
    else:
        chosen = [int(i) for i in pool[: params.k]]
    return [
        RankedItem(
            item_id=candidates[i].item_id,
            score=float(scores[i]),
            contributions=dict(zip(names, contributions[i].tolist(), strict=True)),
            signals=dict(zip(names, normalised[i].tolist(), strict=True)),
        )
        for i in chosen
    ]

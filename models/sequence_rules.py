"""Directed, recency-weighted sequential rules: "what users consume next after item i".

Co-visitation (covisitation.py) is symmetric: items consumed near each other in time. A
sequential rule has a direction: when a user consumes item j at event time t, each of their
previous distinct items i, the s-th most recent (s = 1..``max_steps``) and consumed at most
``window_s`` seconds before t, gains ``D[i][j] += 1/s``. The walk stops at the first item
older than the window. A re-consumed item adds no rules (it only moves to the front of the
user's history). A pair with no known order (the later item has the same event time as the
earlier one, or an earlier one: a late event) is learned in both directions.

Scoring a user at time t: their last n distinct items, the p-th most recent (p = 1 the
latest) weighing ``(n − p + 1)/n · 2^(−(t − t_p)/gap_half_life_s)``; a candidate c scores
Σ_p weight_p · P_p(c), where P_i(c) = D[i][c] / Σ_c' D[i][c'] is item i's next-item
distribution (so a popular source item does not drown the others).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recstream.models.errors import ValidationError


@dataclass(frozen=True, slots=True)
class NextPair:
    """``D[source][following] += strength`` (> 0) at event time ``ts`` (s)."""

    source: str
    following: str
    strength: float
    ts: float


def next_pairs(
    history: Sequence[tuple[str, float]],
    item_id: str,
    ts: float,
    *,
    window_s: float,
    max_steps: int,
) -> list[NextPair]:
    """The rules a user teaches by consuming `item_id` at event time `ts` (s).

    history: the user's earlier distinct (item_id, ts) consumptions, oldest first (the
    engine's ``UserRecord.recent``). Returns [] when `item_id` is already in it.
    """
    if not (math.isfinite(window_s) and window_s > 0.0):
        raise ValidationError(f"window_s must be finite and > 0, got {window_s!r}")
    if max_steps < 1:
        raise ValidationError(f"max_steps must be >= 1, got {max_steps}")
    if any(i == item_id for i, _ in history):
        return []
    out: list[NextPair] = []
    for step, (prev, prev_ts) in enumerate(reversed(history), start=1):
        if step > max_steps or ts - prev_ts > window_s:
            break
        out.append(NextPair(prev, item_id, 1.0 / step, max(ts, prev_ts)))
        if ts <= prev_ts:  # no order is known: both directions
            out.append(NextPair(item_id, prev, 1.0 / step, max(ts, prev_ts)))
    return out


def source_weights(
    history: Sequence[tuple[str, float]], at_ts: float, *, n_last: int, gap_half_life_s: float
) -> npt.NDArray[np.float64]:
    """float64[len(history)]: each of the last `n_last` history items' weight at event time
    `at_ts` (s), in history order (oldest first): ``(n_last − p + 1)/n_last`` for the p-th
    most recent, halved every `gap_half_life_s` of its age. Requires len(history) <= n_last."""
    m = len(history)
    if m > n_last:
        raise ValidationError(f"history has {m} items, more than n_last={n_last}")
    if m == 0:
        return np.zeros(0, dtype=np.float64)
    latest_first = np.arange(1, m + 1, dtype=np.float64)  # p, for the oldest first order: m…1
    position = (n_last - latest_first[::-1] + 1) / n_last
    age = np.maximum(at_ts - np.array([t for _, t in history], dtype=np.float64), 0.0)
    return np.asarray(position * np.exp2(-age / gap_half_life_s), dtype=np.float64)

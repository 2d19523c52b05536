"""Time- and order-aware peers of the baselines in ``recstream.evaluation.baselines``.

Both implement the same ``Recommender`` protocol (``learn_one`` / ``predict_one``, positive
events only, ties by ascending item id, no random numbers) and run on the same prequential
protocol as the other baselines:

- ``RecentPopularity``: popularity within a sliding window of event time ending at the
  prediction's time (e.g. the last 7 days), not an all-time decayed count.
- ``SequenceKNN``: a recency-weighted sequential neighbourhood method in the spirit of V-SKNN
  and sequential rules: the candidates are what users consumed *next*, within a short window,
  after the user's last few items, the most recent of those items weighing most.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from recstream.evaluation.baselines import (
    DEFAULT_MIN_RATING,
    _check_k,
    _check_weights,
    _positive,
    _rank,
    _ScoreTable,
)
from recstream.evaluation.ranked_rows import RankedRow
from recstream.models.errors import ValidationError

#: A window count at or below this is treated as zero (guards float residue of add/subtract).
_EPS = 1e-9

#: Position decays of ``SequenceKNN``: weight of the p-th most recent item (p = 1, 2, ...).
POSITION_DECAYS = ("linear", "inverse")


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValidationError(f"{name} must be finite and > 0, got {value}")


class RecentPopularity:
    """Popularity within a sliding window of event time: most consumed in the last W seconds.

    The window count of item i at time t is the sum of the weights of the positive events on i
    with event time in ``[t - window_s, t]``. Every user gets the same list: items by
    descending window count, then, to fill up, items outside the window by descending all-time
    count (sum of event weights); ties by ascending item id.

    Events are kept only while they may still be in a window: those older than ``window_s``
    before the newest event time learned are dropped. A prediction at or after the newest
    learned time (the prequential protocol always predicts at the time of the event just
    learned) is therefore exact; one at an earlier time counts only the retained events up to
    it. An event learned out of order is placed by its time; one already older than the
    window of the newest event is ignored for the window (it still counts all-time).

    Args:
        window_s: window length W in seconds (> 0; default 1 hour, the best of 1 h, 6 h, 1, 3,
            7 and 30 days on MovieLens ml-latest-small, see the README).
        event_weights: weight per positive event type (default ``DEFAULT_EVENT_WEIGHTS``).
        min_rating: ratings below this are ignored.
    """

    def __init__(
        self,
        window_s: float = 3_600.0,
        event_weights: Mapping[str, float] | None = None,
        min_rating: float = DEFAULT_MIN_RATING,
    ):
        _check_positive("window_s", window_s)
        self.window_s = window_s
        self.event_weights = _check_weights(event_weights)
        self.min_rating = min_rating
        self._counts = _ScoreTable(fill=0.0)  # window counts (events in [start, end))
        self._all_time = _ScoreTable(fill=0.0)
        # (ts, arrival number, item slot, weight), sorted by (ts, arrival); [_start:] counted.
        self._entries: list[tuple[float, int, int, float]] = []
        self._start = 0
        self._arrivals = 0
        self._newest = -math.inf

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Count the event in the window at its event time and expire what fell out of it."""
        positive = _positive(event, self.event_weights, self.min_rating)
        if positive is None:
            return
        _, item_id, ts, weight = positive
        self._all_time.add(item_id, weight)
        self._newest = max(self._newest, ts)
        if ts >= self._newest - self.window_s:
            slot = self._counts.slot(item_id)
            bisect.insort(self._entries, (ts, self._arrivals, slot, weight), lo=self._start)
            self._arrivals += 1
            self._counts.values[slot] += weight
        self._expire(self._newest - self.window_s)

    def _expire(self, oldest_ts: float) -> None:
        """Drop the counted events older than ``oldest_ts`` (epoch seconds)."""
        entries, values = self._entries, self._counts.values
        while self._start < len(entries) and entries[self._start][0] < oldest_ts:
            _, _, slot, weight = entries[self._start]
            values[slot] -= weight
            self._start += 1
        if self._start > 1024 and 2 * self._start > len(entries):
            del entries[: self._start]
            self._start = 0

    def window_counts(self, at_ts: float) -> np.ndarray:
        """Window counts at event time ``at_ts`` (seconds), aligned with the counted item ids."""
        entries = self._entries
        lo = bisect.bisect_left(entries, at_ts - self.window_s, self._start, key=lambda e: e[0])
        hi = bisect.bisect_right(entries, at_ts, self._start, key=lambda e: e[0])
        if lo == self._start and hi == len(entries):
            return self._counts.values
        counts = self._counts.values.copy()
        for _, _, slot, weight in [*entries[self._start : lo], *entries[hi:]]:
            counts[slot] -= weight
        return counts

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """The ``k`` items most consumed in the window ending at ``at_ts``; all-time to fill."""
        _check_k(k)
        banned = frozenset(exclude)
        counts = self.window_counts(at_ts)
        live = np.flatnonzero(counts > _EPS)
        ids = [self._counts.ids[i] for i in live.tolist()]
        out = _rank(ids, counts[live], k, banned)
        if len(out) < k:
            out += self._all_time.top(k - len(out), banned | set(out))
        return out


class SequenceKNN:
    """Directed, recency-weighted sequential neighbours (V-SKNN / sequential-rules style).

    Learning (positive events, in replay order): when a user consumes item j at time t, each of
    their previous distinct items i, the s-th most recent (s = 1..``max_steps``) and consumed
    at most ``window_s`` seconds before t, gains ``D[i][j] += 1 / s``: "j came next after i".
    The rule is directed (``D[j][i]`` is untouched) and stops at the first item older than the
    window. Re-consuming an item refreshes its recency but adds no pairs (as in item-kNN).

    Prediction for user u at time t: their last ``n_last`` distinct items, the p-th most
    recent (p = 1 most recent) weighing ``pos(p)`` = ``(n_last - p + 1) / n_last`` (linear) or
    ``1 / p`` (inverse), times ``2^{-(t - t_i) / gap_half_life_s}`` when a half-life is given.
    Candidate c scores ``sum_i pos(p_i) * gap_i * D[i][c] / (sum_c' D[i][c'] if normalise)``
    over the ``max_neighbours`` largest entries of each row ``D[i]`` (ties by item id); with
    ``normalise`` each source item votes with a distribution (its next-item probabilities),
    so popular source items do not drown the others. Lists are filled up from a
    ``RecentPopularity`` of window ``fill_window_s`` learned from the same events.

    Args:
        n_last: the user's most recent distinct items that score candidates (>= 1).
        window_s: longest gap, in seconds, between an item and one consumed next (> 0).
        max_steps: how many of the user's previous items a new item pairs with (>= 1).
        max_neighbours: next-items per source item used at prediction (>= 1).
        position_decay: "linear" or "inverse" (see above).
        gap_half_life_s: half-life in seconds of a source item's weight by its age at the
            prediction, or None for no time decay.
        normalise: divide each source row by its total (see above).
        simultaneous_both_ways: a pair whose later item has the same event time as the
            earlier one (a gap of 0 s, or below 0 out of order, so no order is known; the
            replay order of same-time events is the loader's tie-break, MovieLens' movieId)
            is learned in both directions.
        fill_window_s: window in seconds of the popularity that fills lists up (> 0).
        event_weights: weight per positive event type (decides what is positive, and the fill).
        min_rating: ratings below this are ignored.

    The defaults are the best of a small sweep on MovieLens ml-latest-small (README).
    """

    def __init__(
        self,
        n_last: int = 10,
        window_s: float = 3_600.0,
        max_steps: int = 20,
        max_neighbours: int = 100,
        position_decay: str = "linear",
        gap_half_life_s: float | None = 3_600.0,
        normalise: bool = True,
        simultaneous_both_ways: bool = True,
        fill_window_s: float = 6 * 3_600.0,
        event_weights: Mapping[str, float] | None = None,
        min_rating: float = DEFAULT_MIN_RATING,
    ):
        for name, count in (
            ("n_last", n_last),
            ("max_steps", max_steps),
            ("max_neighbours", max_neighbours),
        ):
            if count < 1:
                raise ValidationError(f"{name} must be >= 1, got {count}")
        if position_decay not in POSITION_DECAYS:
            raise ValidationError(f"position_decay must be one of {POSITION_DECAYS}")
        _check_positive("window_s", window_s)
        if gap_half_life_s is not None:
            _check_positive("gap_half_life_s", gap_half_life_s)
        self.n_last, self.window_s, self.max_steps = n_last, window_s, max_steps
        self.max_neighbours = max_neighbours
        self.position_decay = position_decay
        self.gap_half_life_s = gap_half_life_s
        self.normalise = normalise
        self.simultaneous_both_ways = simultaneous_both_ways
        self.event_weights = _check_weights(event_weights)
        self.min_rating = min_rating
        self._fill = RecentPopularity(fill_window_s, self.event_weights, min_rating)
        self._history: dict[str, deque[tuple[str, float]]] = {}
        self._next: dict[str, RankedRow] = {}
        self._row_total: dict[str, float] = {}

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Add the directed pairs (previous items -> this one) and append it to the history."""
        positive = _positive(event, self.event_weights, self.min_rating)
        if positive is None:
            return
        user_id, item_id, ts, _ = positive
        self._fill.learn_one(event)
        history = self._history.setdefault(user_id, deque(maxlen=max(self.n_last, self.max_steps)))
        repeat = next((h for h in history if h[0] == item_id), None)
        if repeat is not None:
            history.remove(repeat)
        else:
            for step, (prev, prev_ts) in enumerate(reversed(history), start=1):
                if step > self.max_steps or ts - prev_ts > self.window_s:
                    break
                self._add_pair(prev, item_id, 1.0 / step)
                if self.simultaneous_both_ways and ts <= prev_ts:
                    self._add_pair(item_id, prev, 1.0 / step)
        history.append((item_id, ts))

    def _add_pair(self, source: str, following: str, strength: float) -> None:
        """``D[source][following] += strength``, keeping the row total and the memo right."""
        self._next.setdefault(source, RankedRow()).add(following, strength)
        self._row_total[source] = self._row_total.get(source, 0.0) + strength

    def neighbours(self, item_id: str) -> list[tuple[str, float]]:
        """The ``max_neighbours`` strongest next-items of ``item_id`` with their weights ``D``.

        Ties by ascending item id.
        """
        row = self._next.get(item_id)
        return [] if row is None else row.top(self.max_neighbours)

    def source_weights(self, user_id: str, at_ts: float) -> list[tuple[str, float]]:
        """(item, weight) of the user's last ``n_last`` distinct items, most recent first.

        The weight is the position weight times the time-gap decay (``at_ts`` in seconds).
        """
        history = self._history.get(user_id, ())
        out: list[tuple[str, float]] = []
        for p, (item, ts) in enumerate(reversed(history), start=1):
            if p > self.n_last:
                break
            pos = (self.n_last - p + 1) / self.n_last if self.position_decay == "linear" else 1 / p
            if self.gap_half_life_s is not None:
                pos *= 2.0 ** (-max(at_ts - ts, 0.0) / self.gap_half_life_s)
            out.append((item, pos))
        return out

    def scores(self, user_id: str, at_ts: float, exclude: Collection[str] = ()) -> dict[str, float]:
        """Candidate item -> score (see the class docstring), without ``exclude``."""
        out: dict[str, float] = {}
        for source, weight in self.source_weights(user_id, at_ts):
            norm = self._row_total.get(source, 1.0) if self.normalise else 1.0
            for item, strength in self.neighbours(source):
                if item not in exclude:
                    out[item] = out.get(item, 0.0) + weight * strength / norm
        return out

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """Sequential-neighbour scores from the user's recent items, recent popularity to fill."""
        _check_k(k)
        banned = frozenset(exclude)
        scores = self.scores(user_id, at_ts, banned)
        ranked = heapq.nsmallest(k, scores.items(), key=lambda kv: (-kv[1], kv[0]))
        out = [item for item, _ in ranked]
        if len(out) < k:
            out += self._fill.predict_one(user_id, at_ts, k - len(out), banned | set(out))
        return out

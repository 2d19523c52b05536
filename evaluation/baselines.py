"""In-process baseline recommenders with a river-like interface, for offline comparison.

Every baseline implements the ``Recommender`` protocol:

- ``learn_one(event)`` folds one wire-format event into the model (event time ``event["ts"]``,
  epoch seconds). Only *positive* events teach a preference: view, click, add_to_cart, purchase,
  and rate with ``value >= min_rating`` (or no value), each with a weight from ``event_weights``.
  Search, skip, dislike, low ratings and events without an item are ignored.
- ``predict_one(user_id, at_ts, k, exclude)`` returns at most ``k`` distinct item ids, best
  first, none of them in ``exclude``. It only reads state. Ties are broken by ascending item id,
  so results never depend on dict or arrival order.

A baseline whose prediction is one product with the whole catalogue (``StaticEmbeddingSimilarity``)
also implements ``BatchRanking``: ``predict_later`` fixes what the prediction depends on at its
time and returns a ``PendingList``, and ``rank_pending`` ranks many of them in one matrix
product. The scoring loop uses it when present; the lists are ``predict_one``'s.

None of the baselines draws random numbers, so they need no seed: the same events in the same
order always give the same predictions (and ``DecayedPopularity`` gives the same predictions in
any order).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recstream.evaluation.ranked_rows import RankedRow
from recstream.models.errors import ValidationError
from recstream.models.vocabulary import BASELINE_EVENT_WEIGHTS, BASELINE_MIN_RATING

#: Weight of each positive event type; types not listed (search, skip, dislike) weigh 0.
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = BASELINE_EVENT_WEIGHTS

#: Ratings below this (on MovieLens' 0.5..5 scale) are not positive feedback.
DEFAULT_MIN_RATING = BASELINE_MIN_RATING


class Recommender(Protocol):
    """The interface every baseline implements (see the module docstring for the contract)."""

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Fold one wire-format event into the model."""
        ...

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """At most ``k`` distinct item ids for ``user_id`` at event time ``at_ts``, best first."""
        ...


#: The query of a pending list made ranked (its items given).
_NO_QUERY = np.zeros(0, dtype=np.float32)


class PendingList:
    """A prediction whose inputs are fixed at its event time and whose ranking comes later:
    ``items`` is None until ``BatchRanking.rank_pending`` (or the constructor) sets it."""

    __slots__ = ("banned", "items", "k", "query")

    def __init__(
        self,
        items: list[str] | None = None,
        *,
        query: np.ndarray = _NO_QUERY,
        k: int = 0,
        banned: frozenset[str] = frozenset(),
    ) -> None:
        self.items, self.query, self.k, self.banned = items, query, k, banned


@runtime_checkable
class BatchRanking(Protocol):
    """A baseline that ranks many pending predictions at once (see the module docstring)."""

    def predict_later(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> PendingList:
        """``predict_one(user_id, at_ts, k, exclude)`` as of now, ranked by `rank_pending`."""
        ...

    def rank_pending(self, pending: Sequence[PendingList]) -> None:
        """Set ``items`` of every pending list that has none yet."""
        ...


def _check_weights(event_weights: Mapping[str, float] | None) -> dict[str, float]:
    weights = dict(DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights)
    for name, w in weights.items():
        if not (math.isfinite(w) and w >= 0.0):
            raise ValidationError(f"event weight of {name!r} must be finite and >= 0, got {w}")
    return weights


def _parse(event: Mapping[str, Any]) -> tuple[str, str | None, str, float, float | None]:
    """(user_id, item_id, event_type, ts, value) of an event, validated."""
    try:
        user_id = event["user_id"]
        item_id = event["item_id"]
        event_type = event["event_type"]
        ts = float(event["ts"])
        value = event.get("value")
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"malformed event {event!r}: {exc}") from exc
    if not isinstance(user_id, str) or (item_id is not None and not isinstance(item_id, str)):
        raise ValidationError(f"user_id and item_id must be strings in {event!r}")
    if not math.isfinite(ts):
        raise ValidationError(f"event ts must be finite epoch seconds in {event!r}")
    return user_id, item_id, str(event_type), ts, None if value is None else float(value)


def _positive_weight(
    event_type: str, value: float | None, weights: Mapping[str, float], min_rating: float
) -> float:
    """Weight of an event as positive feedback; 0 for anything that is not a preference."""
    if event_type == "rate" and value is not None and value < min_rating:
        return 0.0
    return weights.get(event_type, 0.0)


def _positive(
    event: Mapping[str, Any], weights: Mapping[str, float], min_rating: float
) -> tuple[str, str, float, float] | None:
    """(user_id, item_id, ts, weight) of a validated event that is positive feedback on an
    item; None for any other (valid) event. What every baseline's learn_one starts with."""
    user_id, item_id, event_type, ts, value = _parse(event)
    weight = _positive_weight(event_type, value, weights, min_rating)
    if item_id is None or weight <= 0.0:
        return None
    return user_id, item_id, ts, weight


def _check_k(k: int) -> None:
    if k < 0:
        raise ValidationError(f"k must be >= 0, got {k}")


def _rank(ids: Sequence[str], scores: np.ndarray, k: int, exclude: Collection[str]) -> list[str]:
    """Top ``k`` ids by descending score (NaN as −inf), ties by ascending id, skipping ``exclude``.

    Only candidates at or above the score of the ``k + |exclude|``-th best item are sorted, and
    every item tied with that threshold is among them, so the tie rule holds exactly.
    """
    n = len(scores)
    if k == 0 or n == 0:
        return []
    if np.isnan(scores).any():  # NaN counts as −inf (a partition would take it as largest)
        scores = np.where(np.isnan(scores), -np.inf, scores)
    need = min(n, k + len(exclude))
    if need < n:
        threshold = np.partition(scores, n - need)[n - need]
        cand = np.flatnonzero(scores >= threshold)
    else:
        cand = np.arange(n)
    # Exclusions leave before the sort, so only about k candidates are ordered (by score,
    # then id): this runs for every prediction.
    kept = [
        (-v, ids[i])
        for i, v in zip(cand.tolist(), scores[cand].tolist(), strict=True)
        if ids[i] not in exclude
    ]
    return [str(item) for _, item in heapq.nsmallest(k, kept)]


class _ScoreTable:
    """A growable item -> float table backed by a numpy array, for vectorised top-k."""

    def __init__(self, fill: float):
        self._fill = fill
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self._values = np.full(64, fill)

    def slot(self, item_id: str) -> int:
        """Index of ``item_id``, adding it with the fill value if new."""
        i = self.index.get(item_id)
        if i is None:
            i = len(self.ids)
            if i == len(self._values):
                grown = np.full(2 * len(self._values), self._fill)
                grown[:i] = self._values
                self._values = grown
            self.ids.append(item_id)
            self.index[item_id] = i
        return i

    @property
    def values(self) -> np.ndarray:
        """Scores aligned with ``ids`` (a view: do not keep it across updates)."""
        return self._values[: len(self.ids)]

    def add(self, item_id: str, delta: float) -> None:
        """Add ``delta`` to the score of ``item_id``."""
        i = self.slot(item_id)  # may reallocate: index only after it returns
        self._values[i] += delta

    def top(self, k: int, exclude: Collection[str]) -> list[str]:
        """``_rank`` over the whole table."""
        return _rank(self.ids, self.values, k, exclude)


class DecayedPopularity:
    """Global popularity with exponential time decay: most-consumed-recently items first.

    The decayed count of item i at event time t is ``c_i(t) = sum_j w_j 2^{-(t - t_j) / h}``
    over positive events j on i (weight w_j, event time t_j, half-life h seconds). It is stored
    as ``L_i = log sum_j w_j exp(lambda (t_j - epoch_ts))`` with ``lambda = ln 2 / h`` and a
    fixed ``epoch_ts``, updated by ``numpy.logaddexp``: the log space avoids overflow for times
    far from the epoch, and since the stored sum does not depend on t, learning commutes
    (events may arrive out of order) up to floating-point rounding. ``c_i(t) = exp(L_i -
    lambda (t - epoch_ts))``; the factor is common to all items, so the ranking does not depend
    on ``at_ts``. The model is global: every user gets the same list.

    Args:
        half_life_s: half-life h in seconds (> 0).
        epoch_ts: reference epoch seconds; any fixed value works, nearer the data is more precise.
        event_weights: weight per positive event type (default ``DEFAULT_EVENT_WEIGHTS``).
        min_rating: ratings below this are ignored.
    """

    def __init__(
        self,
        half_life_s: float = 86_400.0,
        epoch_ts: float = 1_700_000_000.0,
        event_weights: Mapping[str, float] | None = None,
        min_rating: float = DEFAULT_MIN_RATING,
    ):
        if not (math.isfinite(half_life_s) and half_life_s > 0.0):
            raise ValidationError(f"half_life_s must be > 0 seconds, got {half_life_s}")
        if not math.isfinite(epoch_ts):
            raise ValidationError(f"epoch_ts must be finite, got {epoch_ts}")
        self.half_life_s = half_life_s
        self.epoch_ts = epoch_ts
        self.event_weights = _check_weights(event_weights)
        self.min_rating = min_rating
        self._rate = math.log(2.0) / half_life_s
        self._log_mass = _ScoreTable(fill=-math.inf)

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Add the event's weight, at its event time, to its item's decayed count."""
        positive = _positive(event, self.event_weights, self.min_rating)
        if positive is None:
            return
        _, item_id, ts, weight = positive
        i = self._log_mass.slot(item_id)
        term = math.log(weight) + self._rate * (ts - self.epoch_ts)
        self._log_mass.values[i] = np.logaddexp(self._log_mass.values[i], term)

    def log_mass(self, item_id: str) -> float:
        """``L_i`` (see the class docstring); -inf for an item never consumed."""
        i = self._log_mass.index.get(item_id)
        return -math.inf if i is None else float(self._log_mass.values[i])

    def decayed_count(self, item_id: str, at_ts: float) -> float:
        """Decayed weighted count ``c_i(at_ts)`` of ``item_id`` at event time ``at_ts`` (seconds).

        Events after ``at_ts`` count with weight > w (negative age); inf if that overflows.
        """
        exponent = self.log_mass(item_id) - self._rate * (at_ts - self.epoch_ts)
        return math.inf if exponent > 709.0 else math.exp(exponent)

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """The ``k`` items with the largest decayed count (same for every user)."""
        _check_k(k)
        return self._log_mass.top(k, frozenset(exclude))


class ItemKNNCoVisit:
    """Item-to-item recommendations from co-visitation counts.

    Two items are co-visited when one user consumes both (positive events) within ``window``
    consecutive distinct items of their history. ``C[i][j]`` counts such pairs over all users
    (symmetric; a repeat of an item in the window does not count again). For a user with recent
    items H (their last ``window`` distinct items), the score of candidate c is
    ``sum_{j in H} C[j][c]``, where only the ``max_neighbours`` largest entries of each row
    ``C[j]`` take part (ties by item id). Lists are filled up with the most popular items
    (sum of event weights) when co-visits give fewer than k, and unknown users get popularity only.

    Args:
        window: number of a user's most recent distinct items that pair with a new one (>= 1).
        max_neighbours: neighbours per history item used at prediction (>= 1).
        event_weights: weight per positive event type, for the popularity fallback.
        min_rating: ratings below this are ignored.
    """

    def __init__(
        self,
        window: int = 20,
        max_neighbours: int = 50,
        event_weights: Mapping[str, float] | None = None,
        min_rating: float = DEFAULT_MIN_RATING,
    ):
        if window < 1:
            raise ValidationError(f"window must be >= 1, got {window}")
        if max_neighbours < 1:
            raise ValidationError(f"max_neighbours must be >= 1, got {max_neighbours}")
        self.window = window
        self.max_neighbours = max_neighbours
        self.event_weights = _check_weights(event_weights)
        self.min_rating = min_rating
        self._recent: dict[str, deque[str]] = {}
        self._co: dict[str, RankedRow] = {}
        self._popularity = _ScoreTable(fill=0.0)

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Pair the event's item with the user's recent items and append it to their history."""
        positive = _positive(event, self.event_weights, self.min_rating)
        if positive is None:
            return
        user_id, item_id, _, weight = positive
        self._popularity.add(item_id, weight)
        recent = self._recent.setdefault(user_id, deque(maxlen=self.window))
        if item_id in recent:
            # Re-consuming an item refreshes its recency but adds no new pairs.
            recent.remove(item_id)
        else:
            row = self._co.setdefault(item_id, RankedRow())
            for other in recent:
                row.add(other, 1)
                self._co.setdefault(other, RankedRow()).add(item_id, 1)
        recent.append(item_id)

    def neighbours(self, item_id: str) -> list[tuple[str, int]]:
        """The ``max_neighbours`` most co-visited items of ``item_id`` with their counts."""
        row = self._co.get(item_id)
        return [] if row is None else [(n, int(c)) for n, c in row.top(self.max_neighbours)]

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """Co-visitation scores from the user's recent items, popularity to fill up."""
        _check_k(k)
        banned = frozenset(exclude)
        scores: dict[str, float] = {}
        for past in self._recent.get(user_id, ()):
            for other, count in self.neighbours(past):
                if other not in banned:
                    scores[other] = scores.get(other, 0.0) + count
        ranked = [item for item, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]
        out = ranked[:k]
        if len(out) < k:
            out += self._popularity.top(k - len(out), banned | set(out))
        return out


#: Pending predictions ranked in one product (rows of the score matrix held at once).
RANK_CHUNK = 256


class StaticEmbeddingSimilarity:
    """Content-based: cosine between a user's mean consumed-item vector and every item vector.

    Item vectors are L2-normalised once, so every item pulls the profile equally hard. The user
    profile is the mean of the normalised vectors of the items in their positive events (one
    term per event, no decay, no weights). Score of item i: ``cos(profile, v_i)``. Users without a
    profile, and slots left when fewer than k vectors remain, get the most popular items (sum of
    event weights). Items consumed but absent from ``item_vectors`` only reach lists through
    that popularity fallback.

    Args:
        item_vectors: item_id -> 1-D vector; all the same length, none all-zero.
        event_weights: weight per positive event type (decides what is positive, and the
            popularity fallback).
        min_rating: ratings below this are ignored.
    """

    def __init__(
        self,
        item_vectors: Mapping[str, np.ndarray],
        event_weights: Mapping[str, float] | None = None,
        min_rating: float = DEFAULT_MIN_RATING,
    ):
        self._ids = sorted(item_vectors)
        if not self._ids:
            raise ValidationError("item_vectors must not be empty")
        matrix = np.asarray([np.asarray(item_vectors[i], dtype=float) for i in self._ids])
        if matrix.ndim != 2:
            raise ValidationError("item vectors must all be 1-D and of the same length")
        norms = np.linalg.norm(matrix, axis=1)
        if np.any(norms == 0.0) or not np.all(np.isfinite(norms)):
            raise ValidationError("item vectors must be finite and non-zero")
        # float32: the catalogue product per prediction is this baseline's whole cost, and
        # it is memory-bound; profiles still add up in float64.
        self._unit = (matrix / norms[:, None]).astype(np.float32)
        self._row = {item: r for r, item in enumerate(self._ids)}
        self.event_weights = _check_weights(event_weights)
        self.min_rating = min_rating
        self._profile_sum: dict[str, np.ndarray] = {}
        self._profile_n: dict[str, int] = {}
        self._popularity = _ScoreTable(fill=0.0)

    def learn_one(self, event: Mapping[str, Any]) -> None:
        """Add the consumed item's unit vector to the user's profile."""
        positive = _positive(event, self.event_weights, self.min_rating)
        if positive is None:
            return
        user_id, item_id, _, weight = positive
        self._popularity.add(item_id, weight)
        r = self._row.get(item_id)
        if r is None:
            return
        if user_id in self._profile_sum:
            self._profile_sum[user_id] += self._unit[r]
        else:
            self._profile_sum[user_id] = self._unit[r].astype(np.float64)
        self._profile_n[user_id] = self._profile_n.get(user_id, 0) + 1

    def profile(self, user_id: str) -> np.ndarray | None:
        """Mean unit vector of the user's consumed items, or None before any."""
        total = self._profile_sum.get(user_id)
        return None if total is None else total / self._profile_n[user_id]

    def predict_one(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> list[str]:
        """Items most cosine-similar to the user's profile; popularity without one."""
        pending = self.predict_later(user_id, at_ts, k, exclude)
        self.rank_pending([pending])
        assert pending.items is not None
        return pending.items

    def predict_later(
        self, user_id: str, at_ts: float, k: int, exclude: Collection[str] = ()
    ) -> PendingList:
        """The user's unit profile and exclusions as of now; popularity without a profile,
        or where the cosine ranking could not fill k (ranked now: it reads the counts)."""
        _check_k(k)
        banned = frozenset(exclude)
        mean = self.profile(user_id)
        if mean is None:
            return PendingList(self._popularity.top(k, banned))
        norm = float(np.linalg.norm(mean))
        # Opposite vectors can cancel to a zero mean: then no direction is preferred.
        query = (mean / norm if norm > 0.0 else np.zeros_like(mean)).astype(np.float32)
        pending = PendingList(query=query, k=k, banned=banned)
        if len(self._ids) - sum(1 for i in banned if i in self._row) < k:
            self.rank_pending([pending])
            assert pending.items is not None
            shown = pending.items
            shown += self._popularity.top(k - len(shown), banned | set(shown))
        return pending

    def rank_pending(self, pending: Sequence[PendingList]) -> None:
        """One (n × d)·(d × items) product per `RANK_CHUNK` pending lists: the catalogue is
        read once per chunk rather than once per prediction (this baseline's whole cost)."""
        todo = [p for p in pending if p.items is None]
        for a in range(0, len(todo), RANK_CHUNK):
            chunk = todo[a : a + RANK_CHUNK]
            scores = np.stack([p.query for p in chunk]) @ self._unit.T
            for p, row in zip(chunk, scores, strict=True):
                p.items = _rank(self._ids, row, p.k, p.banned)

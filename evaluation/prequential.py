"""Prequential (test-then-train) evaluation: which list predicts which event, and how it scored.

Protocol. Events are replayed in order. For the k-th event of a user (k = 0, 1, ... counting
only that user's distinct event ids), the *prediction* is the list that reflects exactly the
user's previous event k−1, i.e. the list whose ``as_of.event_id`` is the event id of event k−1.
It was computed after event k−1 was applied and before event k existed, so a list is never
scored on an event it already reflects. Event k = 0 has no such list: a *cold start*.

Only *targets* are scored: positive consumption events (see :func:`is_target`). A target whose
predicting list never arrived is *missing* and scores as a miss (an empty list) – a lost list is
a failure of the system under test, not a reason to drop the case.

In-process baselines follow the same protocol with :func:`prediction_points`: right after
learning event i, a baseline predicts for the user iff that user's next event is a target, and
the target is scored against that stored prediction.

Everything here is pure: no Kafka, no settings. Times are event time in epoch seconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from recstream.evaluation.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    recall_at_k,
    reciprocal_rank,
)
from recstream.models.errors import ValidationError
from recstream.models.vocabulary import ALWAYS_TARGET_TYPES, RATING_POSITIVE

L = TypeVar("L")

#: A rating counts as a target from this many stars (MovieLens' 0.5..5 scale).
DEFAULT_MIN_TARGET_RATING = RATING_POSITIVE
#: A target is in the long-tail slice when its item had fewer earlier positive events (#13).
LONG_TAIL_BELOW = 5


def is_target(
    event: Mapping[str, Any],
    *,
    views_are_targets: bool = False,
    min_rating: float = DEFAULT_MIN_TARGET_RATING,
) -> bool:
    """Whether ``event`` is a positive consumption to be predicted.

    click, add_to_cart and purchase always are; rate is when ``value >= min_rating``; view is
    only when ``views_are_targets`` (true for the synthetic generator, whose views are drawn from
    the user's interest like clicks; false for MovieLens, where "view" encodes a middling 2.5–3.5
    star rating). Events without an item (search) never are.
    """
    if event.get("item_id") is None:
        return False
    etype = event.get("event_type")
    if etype in ALWAYS_TARGET_TYPES:
        return True
    if etype == "rate":
        value = event.get("value")
        return value is not None and float(value) >= min_rating
    return bool(views_are_targets and etype == "view")


def _wire_key(rec: Any) -> tuple[str, str]:
    """(user_id, as_of.event_id) of a list in the wire format (a dict)."""
    return str(rec["user_id"]), str(rec["as_of"]["event_id"])


@dataclass(frozen=True, slots=True)
class Aligned(Generic[L]):
    """One event of the replay with the list that predicts it.

    Attributes:
        index: position of the event in the replayed sequence.
        event: the event (wire format).
        position: 0-based number of the event in its user's history (distinct event ids).
        previous_event_id: event id of the user's previous event; None when ``position == 0``.
        prediction: the list reflecting ``previous_event_id``; None for a cold start or when that
            list never arrived.
    """

    index: int
    event: Mapping[str, Any]
    position: int
    previous_event_id: str | None
    prediction: L | None

    @property
    def cold_start(self) -> bool:
        """The user's first event: no list can predict it."""
        return self.position == 0

    @property
    def missing(self) -> bool:
        """A list should exist (not a cold start) but none reflecting the previous event arrived."""
        return self.position > 0 and self.prediction is None


def align(
    events: Sequence[Mapping[str, Any]],
    lists: Iterable[L],
    key: Callable[[L], tuple[str, str]] = _wire_key,
) -> list[Aligned[L]]:
    """Pair each event with the list reflecting the same user's previous event.

    Args:
        events: the replayed events in replay order (wire format: user_id, event_id, ...).
            A repeated (user_id, event_id) is a re-delivered duplicate: the worker ignores it,
            so it is left out here too (it neither is scored nor advances the history).
        lists: published lists in arrival order; when several reflect the same event (a
            redelivery), the first one is used.
        key: (user_id, event id the list reflects) of a list; defaults to the wire format.

    Returns:
        One ``Aligned`` per distinct event, in replay order.

    Raises:
        ValidationError: an event without user_id or event_id.
    """
    by_reflected: dict[tuple[str, str], L] = {}
    for rec in lists:
        by_reflected.setdefault(key(rec), rec)

    previous: dict[str, str] = {}
    positions: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    out: list[Aligned[L]] = []
    for index, event in enumerate(events):
        user, event_id = event.get("user_id"), event.get("event_id")
        if not isinstance(user, str) or not isinstance(event_id, str):
            raise ValidationError(f"event {index} needs string user_id and event_id: {event!r}")
        if (user, event_id) in seen:
            continue
        seen.add((user, event_id))
        prev = previous.get(user)
        prediction = None if prev is None else by_reflected.get((user, prev))
        # By construction the prediction reflects prev ≠ event_id: never the event itself.
        out.append(Aligned(index, event, positions.get(user, 0), prev, prediction))
        previous[user] = event_id
        positions[user] = positions.get(user, 0) + 1
    return out


def prediction_points(
    events: Sequence[Mapping[str, Any]], target: Callable[[Mapping[str, Any]], bool]
) -> list[bool]:
    """``points[i]``: whether a baseline must predict for event i's user right after learning it.

    True iff the same user's next distinct event is a target, so one prediction is made per
    scored case (and none is wasted). Duplicates (repeated user_id, event_id) are never points.
    """
    points = [False] * len(events)
    last: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    for i, event in enumerate(events):
        user, event_id = str(event["user_id"]), str(event["event_id"])
        if (user, event_id) in seen:
            continue
        seen.add((user, event_id))
        if user in last and target(event):
            points[last[user]] = True
        last[user] = i
    return points


def long_tail_cases(
    events: Sequence[Mapping[str, Any]],
    target: Callable[[Mapping[str, Any]], bool],
    below: int = LONG_TAIL_BELOW,
) -> frozenset[tuple[str, str]]:
    """(user_id, event_id) of the targets whose item had fewer than ``below`` earlier targets.

    "Earlier" is replay order, over every user, counting only target events (the positive
    events the protocol predicts; a view or a low rating is no evidence that an item is known).
    The target itself is not counted. Duplicates (a repeated user_id, event_id) are skipped as
    `align` skips them: they neither are cases nor add to an item's count.
    """
    earlier: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    out: set[tuple[str, str]] = set()
    for event in events:
        key = (str(event["user_id"]), str(event["event_id"]))
        if key in seen:
            continue
        seen.add(key)
        if not target(event):
            continue
        item = str(event["item_id"])
        if earlier[item] < below:
            out.add(key)
        earlier[item] += 1
    return frozenset(out)


@dataclass
class ScoreCard:
    """Per-target scores of one system, summarised overall and per event-time slice.

    HR@k and NDCG@k use the first ``k`` items; Recall@``recall_k`` the first ``recall_k``; MRR is
    the reciprocal rank of the target within the first ``recall_k`` items (0 beyond). With one
    target per case, Recall@n equals HR@n.

    Args:
        k: cut-off of HR, NDCG, coverage, novelty and diversity (>= 1).
        recall_k: cut-off of recall and MRR (>= k).
    """

    k: int = 10
    recall_k: int = 20
    users: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    hit: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    rr: list[float] = field(default_factory=list)
    novelty_bits: list[float] = field(default_factory=list)
    ild: list[float] = field(default_factory=list)
    tops: list[tuple[str, ...]] = field(default_factory=list)
    #: Per case: 1.0 when the target was in the candidate pool of the scored list, 0.0 when
    #: not (or no list), NaN when the list carried no pool (Kafka lists, baselines).
    in_pool: list[float] = field(default_factory=list)
    n_missing: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.recall_k < self.k:
            raise ValidationError(f"need 1 <= k <= recall_k, got k={self.k}, {self.recall_k}")

    def __len__(self) -> int:
        return len(self.hit)

    def add(
        self,
        user_id: str,
        ts: float,
        ranked: Sequence[str] | None,
        target: str,
        *,
        item_users: Mapping[str, int] | None = None,
        n_users: int = 0,
        vectors: Mapping[str, np.ndarray] | None = None,
        case_id: str = "",
        in_pool: bool | None = None,
    ) -> None:
        """Score one case at event time ``ts``; ``ranked`` None means the list is missing.

        ``item_users`` (distinct users per item) and ``n_users`` enable novelty (bits);
        ``vectors`` (item id → embedding) enables intra-list diversity of the top k;
        ``case_id`` (the target's event id) lets callers group cases afterwards; ``in_pool``
        whether the target was among the scored list's candidates (None: not known).
        """
        if ranked is None:
            self.n_missing += 1
            ranked = ()
        top = tuple(ranked[: self.k])
        longer = ranked[: self.recall_k]
        self.users.append(user_id)
        self.ids.append(case_id)
        self.ts.append(float(ts))
        self.hit.append(hit_rate_at_k(top, target, self.k))
        self.ndcg.append(ndcg_at_k(top, (target,), self.k))
        self.recall.append(recall_at_k(longer, (target,), self.recall_k))
        self.rr.append(reciprocal_rank(longer, target))
        self.tops.append(top)
        self.in_pool.append(math.nan if in_pool is None else float(in_pool))
        if item_users is not None and n_users > 0 and top:
            self.novelty_bits.append(novelty(top, item_users, n_users))
        if vectors is not None:
            vecs = [vectors[i] for i in top if i in vectors]
            if len(vecs) >= 2:
                self.ild.append(intra_list_diversity(np.asarray(vecs)))

    def summary(self, catalog_size: int | None = None) -> dict[str, float | int | None]:
        """``hr@k``, ``ndcg@k``, ``recall@recall_k``, ``mrr``, ``coverage`` (distinct top-k items /
        catalogue), ``novelty`` (mean bits), ``ild`` (mean cosine distance), ``n``, ``missing``,
        ``candidate_recall`` (share of the cases whose target was in the scored list's pool).

        Means are NaN over no cases; coverage, novelty, ild and candidate_recall are None when
        not computable (candidate_recall: some case's list carried no pool).
        """

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else math.nan

        coverage = None
        if catalog_size:
            coverage = catalog_coverage(self.tops, catalog_size)
        return {
            f"hr@{self.k}": mean(self.hit),
            f"ndcg@{self.k}": mean(self.ndcg),
            f"recall@{self.recall_k}": mean(self.recall),
            "mrr": mean(self.rr),
            "coverage": coverage,
            "novelty": mean(self.novelty_bits) if self.novelty_bits else None,
            "ild": mean(self.ild) if self.ild else None,
            "candidate_recall": _known_mean(np.asarray(self.in_pool, dtype=float)),
            "n": len(self.hit),
            "missing": self.n_missing,
        }

    def subset(self, cases: Collection[tuple[str, str]]) -> dict[str, float | int]:
        """HR@k, NDCG@k and ``n`` of the cases whose (user, case_id) is in ``cases`` (NaN: none)."""
        mask = np.fromiter(
            ((u, c) in cases for u, c in zip(self.users, self.ids, strict=True)),
            dtype=bool,
            count=len(self.ids),
        )
        n = int(mask.sum())
        hit, ndcg = np.asarray(self.hit, dtype=float), np.asarray(self.ndcg, dtype=float)
        return {
            f"hr@{self.k}": float(hit[mask].mean()) if n else math.nan,
            f"ndcg@{self.k}": float(ndcg[mask].mean()) if n else math.nan,
            "n": n,
        }

    def slices(self, edges: Sequence[float]) -> list[dict[str, float | int | None]]:
        """HR@k, NDCG@k and candidate recall (None: unknown) of cases with
        ``edges[i] <= ts < edges[i+1]`` (last slice closed)."""
        if len(edges) < 2:
            raise ValidationError("need at least two slice edges")
        ts = np.asarray(self.ts, dtype=float)
        hit = np.asarray(self.hit, dtype=float)
        ndcg = np.asarray(self.ndcg, dtype=float)
        in_pool = np.asarray(self.in_pool, dtype=float)
        which = slice_index(ts, edges)
        out: list[dict[str, float | int | None]] = []
        for i in range(len(edges) - 1):
            mask = which == i
            n = int(mask.sum())
            out.append(
                {
                    "start_ts": float(edges[i]),
                    "end_ts": float(edges[i + 1]),
                    "n": n,
                    f"hr@{self.k}": float(hit[mask].mean()) if n else math.nan,
                    f"ndcg@{self.k}": float(ndcg[mask].mean()) if n else math.nan,
                    "candidate_recall": _known_mean(in_pool[mask]),
                }
            )
        return out


def _known_mean(values: np.ndarray) -> float | None:
    """Mean of per-case 0/1 values; None when any is NaN (unknown), NaN over no cases."""
    if values.size == 0:
        return math.nan
    if np.isnan(values).any():
        return None
    return float(values.mean())


def slice_edges(ts: Iterable[float], n_slices: int) -> list[float]:
    """``n_slices + 1`` equally spaced edges from the earliest to the latest time."""
    if n_slices < 1:
        raise ValidationError(f"n_slices must be >= 1, got {n_slices}")
    values = np.fromiter(ts, dtype=float)
    if values.size == 0:
        return [0.0, 0.0]
    return [float(x) for x in np.linspace(values.min(), values.max(), n_slices + 1)]


def slice_index(ts: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Slice number of each time; times on the last edge go to the last slice, outside → -1."""
    edges_arr = np.asarray(edges, dtype=float)
    n = len(edges_arr) - 1
    which = np.searchsorted(edges_arr, ts, side="right") - 1
    which = np.where(ts == edges_arr[-1], n - 1, which)
    return np.where((which < 0) | (which >= n), -1, which)


def interest_from_top(top: Sequence[tuple[str, float]], topics: Sequence[str]) -> np.ndarray | None:
    """A full distribution over ``topics`` from a list's ``top_interests`` (category, share).

    Lists carry only the strongest few categories; their shares are kept and the remaining mass
    ``1 − Σ shares`` is spread evenly over the unlisted topics (the least informative completion).
    Returns None when ``top`` is empty or names a category outside ``topics``.
    """
    if not top:
        return None
    index = {t: i for i, t in enumerate(topics)}
    p = np.zeros(len(topics))
    for category, share in top:
        if category not in index:
            return None
        p[index[category]] += max(float(share), 0.0)
    total = p.sum()
    if total > 1.0:
        return p / total
    unlisted = p == 0.0
    if unlisted.any():
        p[unlisted] = (1.0 - total) / int(unlisted.sum())
    return p / p.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance ``½ Σ |p_i − q_i|`` in [0, 1] between two distributions."""
    p_arr, q_arr = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p_arr.shape != q_arr.shape:
        raise ValidationError(f"shapes differ: {p_arr.shape} vs {q_arr.shape}")
    return float(0.5 * np.abs(p_arr - q_arr).sum())


@dataclass(frozen=True)
class Recovery:
    """Hit rate around abrupt interest switches, pooled over the users who switch.

    Attributes:
        pre_hr: HR of the pooled cases before each user's switch.
        curve: ``(offset, rolling HR, n)`` for offsets 0, 1, ...: HR of the pooled cases whose
            offset (the user's events since the switch before the case) lies in
            ``[offset, offset + window)``.
        recovery_events: the smallest offset whose rolling HR reaches ``fraction * pre_hr``;
            None if it never does (or there is no pre-switch case).
        dip_hr: rolling HR at offset 0 (the first ``window`` events after the switch).
        window: events per rolling window.
        fraction: the share of ``pre_hr`` that counts as recovered.
    """

    pre_hr: float
    curve: list[tuple[int, float, int]]
    recovery_events: int | None
    dip_hr: float
    window: int
    fraction: float


def recovery_after_switch(
    cases: Iterable[tuple[int | None, float]],
    *,
    window: int = 10,
    fraction: float = 0.8,
    min_cases: int = 5,
) -> Recovery:
    """Events needed after an abrupt switch to regain ``fraction`` of the pre-switch hit rate.

    Args:
        cases: ``(offset, hit)`` per scored case of a switching user: ``offset`` None before the
            switch, else the number of that user's events at or after the switch time that came
            before the case (0 = the first event after the switch is the target); hit in {0, 1}.
        window: rolling window, in events after the switch.
        fraction: recovered when the rolling HR >= fraction × pre-switch HR.
        min_cases: windows with fewer pooled cases are not eligible as the recovery point.
    """
    if window < 1 or not 0.0 < fraction <= 1.0:
        raise ValidationError("window must be >= 1 and fraction in (0, 1]")
    pre: list[float] = []
    post: dict[int, list[float]] = {}
    for offset, hit in cases:
        if offset is None:
            pre.append(float(hit))
        else:
            post.setdefault(int(offset), []).append(float(hit))
    pre_hr = float(np.mean(pre)) if pre else math.nan
    curve: list[tuple[int, float, int]] = []
    recovered: int | None = None
    last = max(post) if post else -1
    for start in range(last + 1):
        pooled = [h for o in range(start, start + window) for h in post.get(o, ())]
        if not pooled:
            continue
        hr = float(np.mean(pooled))
        curve.append((start, hr, len(pooled)))
        if recovered is None and pre and len(pooled) >= min_cases and hr >= fraction * pre_hr:
            recovered = start
    dip = curve[0][1] if curve and curve[0][0] == 0 else math.nan
    return Recovery(pre_hr, curve, recovered, dip, window, fraction)

"""Prequential scoring of an evaluation: the pipeline's published lists, the in-process
baselines on the same event sequence with the same protocol, and the synthetic ground-truth
extras (interest-estimate distance, recovery after abrupt switches)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

from recstream.config.settings import Settings
from recstream.evaluation.baselines import RANK_CHUNK, BatchRanking, PendingList, Recommender
from recstream.evaluation.data import EvalData
from recstream.evaluation.prequential import (
    LONG_TAIL_BELOW,
    ScoreCard,
    align,
    interest_from_top,
    is_target,
    long_tail_cases,
    prediction_points,
    recovery_after_switch,
    slice_index,
    total_variation,
)
from recstream.evaluation.replay import PROBE_PREFIX, CollectedList
from recstream.models.vocabulary import CONSUMED_EVENT_TYPES

K = 10
RECALL_K = 20
N_SLICES = 10
SYSTEM_UNDER_TEST = "recstream"


def _consumed_rule(settings: Settings) -> tuple[frozenset[str], int]:
    """What the worker excludes from a user's lists: items of recent non-search events."""
    return frozenset(CONSUMED_EVENT_TYPES), settings.max_consumed


def run_baselines(
    events: Sequence[Mapping[str, Any]],
    models: Mapping[str, Recommender],
    target: Callable[[Mapping[str, Any]], bool],
    *,
    settings: Settings,
    item_users: Mapping[str, int],
    n_users: int,
    vectors: Mapping[str, np.ndarray] | None,
    console: Console,
) -> tuple[dict[str, ScoreCard], dict[str, ScoreCard]]:
    """Prequential scores (warm, cold start) of in-process baselines on `events`.

    Same protocol as the pipeline: the prediction scored for a target is computed right after
    the user's previous event was learned; items are excluded like the worker excludes them
    (the user's last `max_consumed` non-search items). A user's first event, when a target, is
    scored separately (cold start) with the model's prediction just before learning it.
    """
    consumed_types, max_consumed = _consumed_rule(settings)
    points = prediction_points(events, target)
    warm = {name: ScoreCard(K, RECALL_K) for name in models}
    cold = {name: ScoreCard(K, RECALL_K) for name in models}
    pending: dict[str, dict[str, PendingList]] = {name: {} for name in models}
    consumed: dict[str, dict[str, None]] = defaultdict(dict)
    seen_users: set[str] = set()
    cases = _ScoredInOrder(models, item_users, n_users, vectors)

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("baselines", total=len(events))
        for i, event in enumerate(events):
            user, ts = str(event["user_id"]), float(event["ts"])
            item = event.get("item_id")
            if target(event):
                assert item is not None
                for name, model in models.items():
                    if user in seen_users:
                        cases.add(warm[name], pending[name].pop(user, None), event)
                    else:
                        cold_list = PendingList(model.predict_one(user, ts, RECALL_K, exclude=()))
                        cases.add(cold[name], cold_list, event)
            for model in models.values():
                model.learn_one(event)
            seen_users.add(user)
            if item is not None and event.get("event_type") in consumed_types:
                window = consumed[user]
                window.pop(item, None)  # re-insert: the most recent goes last
                window[item] = None
                if len(window) > max_consumed:
                    del window[next(iter(window))]
            if points[i]:
                exclude = frozenset(consumed[user])
                for name in models:
                    pending[name][user] = cases.predict(name, user, ts, exclude)
            if i % 500 == 499:
                progress.update(task, completed=i + 1)
        cases.flush()
        progress.update(task, completed=len(events))
    return warm, cold


class _ScoredInOrder:
    """Predictions of the baselines and the cases scored against them, in event order.

    A `BatchRanking` baseline's predictions are ranked in batches of `RANK_CHUNK` (one
    catalogue product each), so a case whose prediction is not ranked yet waits in a queue;
    the queue is scored in order as its head's predictions are ranked (a card's cases are
    added in event order, as if every prediction were ranked at once)."""

    def __init__(
        self,
        models: Mapping[str, Recommender],
        item_users: Mapping[str, int],
        n_users: int,
        vectors: Mapping[str, np.ndarray] | None,
    ) -> None:
        self.models = models
        self.batched = {n: m for n, m in models.items() if isinstance(m, BatchRanking)}
        self.unranked: dict[str, list[PendingList]] = {n: [] for n in self.batched}
        self.queue: deque[tuple[ScoreCard, PendingList | None, Mapping[str, Any]]] = deque()
        self.item_users, self.n_users, self.vectors = item_users, n_users, vectors

    def predict(self, name: str, user: str, ts: float, exclude: frozenset[str]) -> PendingList:
        batched = self.batched.get(name)
        if batched is None:
            return PendingList(self.models[name].predict_one(user, ts, RECALL_K, exclude=exclude))
        got = batched.predict_later(user, ts, RECALL_K, exclude=exclude)
        if got.items is None:
            self.unranked[name].append(got)
            if len(self.unranked[name]) >= RANK_CHUNK:
                self._rank(name)
        return got

    def add(self, card: ScoreCard, got: PendingList | None, event: Mapping[str, Any]) -> None:
        """Score `event` (a target) against `got` (None: no prediction) once it is ranked."""
        self.queue.append((card, got, event))
        self._drain()

    def flush(self) -> None:
        for name in self.batched:
            self._rank(name)
        self._drain()

    def _rank(self, name: str) -> None:
        self.batched[name].rank_pending(self.unranked[name])
        self.unranked[name] = []
        self._drain()

    def _drain(self) -> None:
        while self.queue and (self.queue[0][1] is None or self.queue[0][1].items is not None):
            card, got, event = self.queue.popleft()
            card.add(
                str(event["user_id"]), float(event["ts"]), None if got is None else got.items,
                str(event["item_id"]), item_users=self.item_users, n_users=self.n_users,
                vectors=self.vectors, case_id=str(event["event_id"]),
            )  # fmt: skip


def score_pipeline(
    events: Sequence[Mapping[str, Any]],
    lists: Sequence[CollectedList],
    target: Callable[[Mapping[str, Any]], bool],
    *,
    item_users: Mapping[str, int],
    n_users: int,
    vectors: Mapping[str, np.ndarray] | None,
) -> tuple[ScoreCard, int]:
    """(warm-start scores of the published lists, number of cold-start targets).

    Candidate recall per case: whether the target is in the pool of the list it is scored
    against. Known only when the run's lists carry pools (the in-process runner); then a
    missing list, or one without a pool, counts as the target not being a candidate.
    """
    card = ScoreCard(K, RECALL_K)
    cold = 0
    has_pools = any(r.candidates is not None for r in lists)
    for case in align(events, lists, key=lambda r: (r.user_id, r.event_id)):
        event = case.event
        if not target(event):
            continue
        if case.cold_start:
            cold += 1
            continue
        ranked = None if case.prediction is None else list(case.prediction.items)
        pool = None if case.prediction is None else case.prediction.candidates
        card.add(
            str(event["user_id"]),
            float(event["ts"]),
            ranked,
            str(event["item_id"]),
            item_users=item_users,
            n_users=n_users,
            vectors=vectors,
            case_id=str(event["event_id"]),
            in_pool=(pool is not None and str(event["item_id"]) in pool) if has_pools else None,
        )
    return card, cold


# --- slices and ablations ----------------------------------------------------------------------
def long_tail(
    events: Sequence[Mapping[str, Any]],
    target: Callable[[Mapping[str, Any]], bool],
    cards: Mapping[str, ScoreCard],
) -> dict[str, Any]:
    """HR@K / NDCG@K per system on the targets whose item had < LONG_TAIL_BELOW earlier targets.

    Over the warm cases (a user's first event is the cold-start slice), so every system is
    scored on the same cases. ``targets`` counts every target in the slice, ``scored`` the warm
    ones (the cases of each system's row), ``share`` scored / all warm cases.
    """
    cases = long_tail_cases(events, target, LONG_TAIL_BELOW)
    systems = {name: card.subset(cases) for name, card in cards.items()}
    reference = cards[SYSTEM_UNDER_TEST]
    scored = int(systems[SYSTEM_UNDER_TEST]["n"])
    return {
        "below": LONG_TAIL_BELOW,
        "definition": (
            f"targets whose item had fewer than {LONG_TAIL_BELOW} earlier target events (replay "
            "order, any user); warm cases only"
        ),
        "targets": len(cases),
        "scored": scored,
        "share": scored / len(reference) if len(reference) else math.nan,
        "systems": systems,
    }


def candidate_recall(cards: Mapping[str, ScoreCard], edges: Sequence[float]) -> dict[str, Any]:
    """Share of scored targets that were in the scored list's candidate pool, per system whose
    lists carried pools (the engine's runs in-process), overall and per time slice."""
    systems: dict[str, Any] = {}
    for name, card in cards.items():
        overall = card.summary()["candidate_recall"]
        if overall is None or not len(card):
            continue
        systems[name] = {
            "overall": overall,
            "n": len(card),
            "by_slice": [row["candidate_recall"] for row in card.slices(edges)],
        }
    note = None if systems else "n/a: the lists carry no candidate pool (the Kafka wire format)"
    return {"available": bool(systems), "note": note, "systems": systems}


def ablation_summary(
    cards: Mapping[str, ScoreCard], runs: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Per ablation: its overrides, HR@K / NDCG@K and what the ablated part adds to the system
    under test (``*_gain``: recstream − ablation; positive: the part helps)."""
    full = cards[SYSTEM_UNDER_TEST].summary()
    out: dict[str, Any] = {}
    for name, run in runs.items():
        if name not in cards:
            continue
        s = cards[name].summary()
        out[name] = {
            **run,
            f"hr@{K}": s[f"hr@{K}"],
            f"ndcg@{K}": s[f"ndcg@{K}"],
            f"hr@{K}_gain": float(full[f"hr@{K}"] or 0) - float(s[f"hr@{K}"] or 0),
            f"ndcg@{K}_gain": float(full[f"ndcg@{K}"] or 0) - float(s[f"ndcg@{K}"] or 0),
        }
    return out


def best_peer(
    systems: Mapping[str, Mapping[str, Any]],
    slices: Mapping[str, Sequence[Mapping[str, Any]]],
    peers: Sequence[str],
) -> dict[str, Any] | None:
    """The system under test against the best of `peers` (the baselines; never its own
    variants or the oracle): per metric (HR@K, NDCG@K) the best peer, its value and the
    ratio; and the time slices after the first in which the system's HR@K is below the best
    peer's of that slice. None without a scored peer."""
    ours = systems.get(SYSTEM_UNDER_TEST)
    scored = [p for p in peers if p in systems]
    if ours is None or not scored:
        return None
    out: dict[str, Any] = {}
    for metric in (f"hr@{K}", f"ndcg@{K}"):
        name = max(scored, key=lambda p: float(systems[p][metric] or 0.0))
        value = float(systems[name][metric] or 0.0)
        mine = float(ours[metric] or 0.0)
        out[metric] = {"peer": name, "value": value, "ratio": mine / value if value else None}
    behind = []
    rows = slices.get(SYSTEM_UNDER_TEST, [])
    for i in range(1, len(rows)):
        best = max(float(slices[p][i][f"hr@{K}"] or 0.0) for p in scored if p in slices)
        if float(rows[i][f"hr@{K}"] or 0.0) < best:
            behind.append(i)
    out["slices_behind"] = behind
    return out


# --- synthetic extras --------------------------------------------------------------------------
def _switch_offsets(
    events: Sequence[Mapping[str, Any]], switch_times: Mapping[str, float]
) -> dict[str, int | None]:
    """event_id → for users who switch: None before the switch, else the user's events at or
    after the switch time that came before this one (0: the first event after the switch)."""
    out: dict[str, int | None] = {}
    after: Counter[str] = Counter()
    for e in events:
        user = str(e["user_id"])
        tau = switch_times.get(user)
        if tau is None:
            continue
        if float(e["ts"]) < tau:
            out[str(e["event_id"])] = None
        else:
            out[str(e["event_id"])] = after[user]
            after[user] += 1
    return out


#: One list scored against the synthetic truth: (user, as_of ts, TV of the list's estimate, TV
#: of the uniform guess, TV of the counts reference, events since the user's switch or None).
TVRow = tuple[str, float, float, float, float, int | None]


def synthetic_extras(
    data: EvalData,
    lists: Sequence[CollectedList],
    cards: Mapping[str, ScoreCard],
    edges: Sequence[float],
) -> dict[str, Any]:
    """Interest-estimate distance to the truth, and recovery after abrupt switches.

    TV distance: for every list of a dataset user with `top_interests`, the estimate is the
    listed shares with the rest spread evenly over the unlisted topics
    (`interest_from_top`), compared with `true_interest(user, as_of.ts)`. Two references on the
    same lists: `uniform` (no knowledge) and `counts` (shares of topics among the user's positive
    events so far, truncated to the same number of categories as the list).
    Recovery: `recovery_after_switch` over the cases of users with an abrupt switch, for every
    system, with rolling windows of 10 events and an 80% threshold.
    """
    ds = data.synthetic
    offsets = _switch_offsets(data.events, ds.switch_times)
    rows, skipped = _tv_rows(data, lists, offsets)
    return {
        "interest_tv": _interest_tv(rows, skipped, edges, ds.switch_times),
        "switch_users": len(ds.switch_times),
        "recovery": _recovery(cards, offsets),
        "_rows": rows,  # for the plots; dropped before writing metrics.json
    }


def _counts_reference(data: EvalData) -> dict[str, list[tuple[str, float]]]:
    """event_id → topic shares among the user's positive events up to and including it (the
    reference estimator from counts, evaluated at every event; lists are matched by event id)."""
    item_topic = data.synthetic.item_topic
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    counts_at: dict[str, list[tuple[str, float]]] = {}
    for e in data.events:
        user = str(e["user_id"])
        item = e.get("item_id")
        if item is not None and is_target(e, views_are_targets=True):
            counts[user][item_topic[item]] += 1
        c = counts[user]
        total = sum(c.values())
        counts_at[str(e["event_id"])] = (
            [(t, n / total) for t, n in c.most_common()] if total else []
        )
    return counts_at


def _tv_rows(
    data: EvalData, lists: Sequence[CollectedList], offsets: Mapping[str, int | None]
) -> tuple[list[TVRow], int]:
    """(one row per event's first list with interests, lists without interests)."""
    ds = data.synthetic
    topics = list(ds.topics)
    uniform = np.full(len(topics), 1.0 / len(topics))
    counts_at = _counts_reference(data)
    rows: list[TVRow] = []
    seen: set[str] = set()
    skipped = 0
    for rec in lists:
        if rec.event_id in seen or rec.user_id.startswith(PROBE_PREFIX):
            continue
        seen.add(rec.event_id)
        estimate = interest_from_top(rec.top_interests, topics)
        if estimate is None:
            skipped += 1
            continue
        truth = ds.true_interest(rec.user_id, rec.as_of_ts)
        n_top = len(rec.top_interests)
        reference = interest_from_top(counts_at.get(rec.event_id, [])[:n_top], topics)
        rows.append(
            (
                rec.user_id,
                rec.as_of_ts,
                total_variation(estimate, truth),
                total_variation(uniform, truth),
                total_variation(reference, truth) if reference is not None else math.nan,
                offsets.get(rec.event_id),
            )
        )
    return rows, skipped


def _interest_tv(
    rows: Sequence[TVRow],
    skipped: int,
    edges: Sequence[float],
    switch_times: Mapping[str, float],
) -> dict[str, Any]:
    """Mean TV distances overall, per time slice, and for switching users by events since."""
    tv = np.asarray([r[2] for r in rows])
    tv_uniform = np.asarray([r[3] for r in rows])
    tv_counts = np.asarray([r[4] for r in rows])
    ts = np.asarray([r[1] for r in rows])
    which = slice_index(ts, edges) if len(ts) else np.asarray([], dtype=int)
    by_slice = [
        {
            "start_ts": edges[i],
            "end_ts": edges[i + 1],
            "n": int((which == i).sum()),
            "tv": mean_finite(tv[which == i]),
            "tv_counts": mean_finite(tv_counts[which == i]),
        }
        for i in range(len(edges) - 1)
    ]
    switch_rows = [r for r in rows if r[0] in switch_times]
    tv_by_offset: dict[str, list[float]] = defaultdict(list)
    for r in switch_rows:
        key = "pre" if r[5] is None else str(min(int(r[5]) // 10 * 10, 50))
        tv_by_offset[key].append(r[2])
    return {
        "lists": len(rows),
        "lists_without_interests": skipped,
        "mean": mean_finite(tv),
        "mean_uniform_reference": mean_finite(tv_uniform),
        "mean_counts_reference": mean_finite(tv_counts),
        "by_slice": by_slice,
        "switch_users_by_offset": {
            k: {"mean": mean_finite(np.asarray(v)), "n": len(v)}
            for k, v in sorted(tv_by_offset.items(), key=lambda kv: (kv[0] != "pre", kv[0]))
        },
    }


def _recovery(cards: Mapping[str, ScoreCard], offsets: Mapping[str, int | None]) -> dict[str, Any]:
    """Per system: HR before an abrupt switch, the dip after it, and events to recover 80%."""
    recovery: dict[str, Any] = {}
    for name, card in cards.items():
        cases = [
            (offsets[cid], hit)
            for cid, hit in zip(card.ids, card.hit, strict=True)
            if cid in offsets
        ]
        rec_ = recovery_after_switch(cases, window=10, fraction=0.8)
        recovery[name] = {
            "pre_switch_hr@10": rec_.pre_hr,
            "post_switch_dip_hr@10": rec_.dip_hr,
            "events_to_recover_80pct": rec_.recovery_events,
            "pre_switch_cases": sum(1 for o, _ in cases if o is None),
            "post_switch_cases": sum(1 for o, _ in cases if o is not None),
            "curve": [{"offset": o, "hr@10": h, "n": n} for o, h, n in rec_.curve],
        }
    return recovery


def mean_finite(values: np.ndarray) -> float:
    """Mean of the finite values; NaN when there are none."""
    values = values[np.isfinite(values)] if values.size else values
    return float(values.mean()) if values.size else math.nan

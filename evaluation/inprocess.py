"""The in-process runner: the workers' engine over the same event order, without a broker.

Same engine (models/recommender.py), same hyperparameters (config/engine_params.py), same
micro-batches as a worker's (`batch_size` events, shared statistics applied after each batch),
same shard of each user as the Kafka partitioner gives it, so its lists are the Kafka
pipeline's lists up to batch boundaries and the timing of shared statistics. It exists to
iterate on ranking quickly; the Kafka replay stays the truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from kafka.partitioner.default import murmur2
from threadpoolctl import threadpool_limits

from recstream.config.engine_params import engine_params
from recstream.config.settings import Settings
from recstream.evaluation.model_schedule import InProcessTrainer, SnapshotFeed, train_ahead
from recstream.evaluation.replay import CandidatePool, CollectedList
from recstream.models.catalog import Catalog
from recstream.models.item_text import clean_text
from recstream.models.recommender import FUSED, Event, RecList, Recommender
from recstream.models.user_record import UserRecord

#: What a replay is scored into (the caller's score card type).
S = TypeVar("S")


def owner_shard(user_id: str, partitions: int) -> int:
    """The events partition Kafka's default (murmur2) partitioner gives a user id key."""
    return (murmur2(user_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


@dataclass
class InProcessResult:
    """Lists in event order, with the wall time of the replay itself (catalogue loaded)."""

    lists: list[CollectedList]
    n_events: int
    wall_s: float
    batches: int
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: The sequence model's versions, which served which events (evaluation/model_schedule.py).
    models: list[dict[str, Any]] = field(default_factory=list)
    model_note: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.n_events / self.wall_s if self.wall_s > 0 else float("nan")


def build_catalog(
    items: Sequence[Mapping[str, Any]], vectors: Mapping[str, np.ndarray], dim: int
) -> Catalog:
    catalog = Catalog(dim, capacity=max(len(items), 1))
    for item in items:
        item_id = str(item["item_id"])
        catalog.upsert(
            item_id,
            vectors.get(item_id),
            tuple(item.get("categories") or ()),
            item.get("ts"),
            str(item.get("title") or ""),
        )
    return catalog


def to_event(
    raw: Mapping[str, Any], partitions: int, text_vectors: Mapping[str, np.ndarray]
) -> Event:
    value = raw.get("value")
    text = clean_text(raw.get("text")) if raw.get("text") else ""
    return Event(
        user_id=str(raw["user_id"]),
        event_id=str(raw["event_id"]),
        event_type=str(raw["event_type"]),
        ts=float(raw["ts"]),
        item_id=None if raw.get("item_id") is None else str(raw["item_id"]),
        value=None if value is None else float(value),
        rec_id=raw.get("rec_id"),
        text_vec=text_vectors.get(text) if text else None,
        shard=owner_shard(str(raw["user_id"]), partitions),
    )


def collected(lst: RecList, row_of: Mapping[str, int] | None = None) -> CollectedList:
    """The list as the evaluation keeps it; with ``row_of`` (the catalogue's id → row map,
    shared by every list of the run) it keeps the fused ranker's candidate pool too."""
    pool = None
    if row_of is not None and lst.ranker == FUSED:
        pool = CandidatePool(lst.pool, row_of)
    return CollectedList(
        user_id=lst.user_id,
        event_id=str(lst.as_of_event_id),
        as_of_ts=lst.as_of_ts,
        kafka_ts_ms=0,
        ranker=lst.ranker,
        items=tuple(r.item_id for r in lst.items),
        weights=dict(lst.weights),
        top_interests=tuple((str(t["category"]), float(t["share"])) for t in lst.top_interests),
        candidates=pool,
        model_version=lst.model_version,
    )


def replay_inprocess(
    settings: Settings,
    items: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    vectors: Mapping[str, np.ndarray],
    encode: Callable[[list[str]], np.ndarray] | None = None,
    *,
    batch_size: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    feed: SnapshotFeed | None = None,
    **overrides: Any,
) -> InProcessResult:
    """Run the engine over `events` in order, a list after every event (debounce 0), in
    micro-batches of `batch_size` events ranked in chunks of `settings.shared_refresh_events`.

    vectors: item id → vector (the catalogue's); encode: texts → unit vectors, for events with
    text (None: their text is ignored); batch_size: events per micro-batch (default the
    workers' `batch_max_events`); feed: the sequence model's snapshots from a shared
    `train_ahead` job over the same events and batches (None: trained here, on the same
    schedule); overrides: EngineParams fields (e.g. eta=0.0).
    """
    dim = next((v.shape[0] for v in vectors.values()), 384)
    catalog = build_catalog(items, vectors, dim)
    params = engine_params(settings, **overrides).with_dim(dim)
    shared = params.shared_stats()
    engine = Recommender(params, catalog, shared)
    trainer = InProcessTrainer(settings, engine, feed)
    texts = event_texts(events)
    text_vectors = dict(zip(texts, encode(texts), strict=True)) if texts and encode else {}
    size = batch_size or settings.batch_max_events
    parts = settings.events_partitions
    chunk = settings.shared_refresh_events
    # As in a worker (cli/worker.py): one BLAS thread unless configured otherwise. An idle
    # OpenBLAS pool spins, and its threads thrash on the engine's many small products.
    blas = threadpool_limits(limits=settings.blas_threads, user_api="blas")
    # The catalogue is complete before the replay and events add no items, so one snapshot of
    # its id → row map serves every pool of the run.
    row_of = dict(catalog.row_of)
    started = time.perf_counter()
    states: dict[str, Any] = {}
    out: list[CollectedList] = []
    rejected: list[tuple[str, str]] = []
    batches = 0
    for start in range(0, len(events), size):
        trainer.before_batch(start)  # a model of the events before this batch only
        batch = [to_event(e, parts, text_vectors) for e in events[start : start + size]]
        changed: set[str] = set()
        # In chunks, as a worker does (agents/events.py): each chunk's delta is taken in
        # before the next chunk is ranked; the states carry over in memory.
        for a in range(0, len(batch), chunk):
            applied = engine.apply(states, batch[a : a + chunk], "every")
            lists = engine.rank(applied)
            states.update(applied.states)
            changed.update(applied.states)
            for delta in applied.deltas.values():
                shared.apply(delta)
            out.extend(collected(lst, row_of) for lst in lists)
            rejected.extend(applied.rejected)
        # Through bytes, as a worker's table does (the interest state's encoding rounds its
        # evidence to float32): the same inputs for the next batch in both runners.
        states.update(
            (u, UserRecord.from_bytes(states[u].to_bytes(), params.interest)) for u in changed
        )
        trainer.after_batch(events[start : start + size])
        batches += 1
        if on_batch is not None:
            on_batch(start + len(batch))
    wall = time.perf_counter() - started
    blas.restore_original_limits()
    return InProcessResult(
        out, len(events), wall, batches, rejected, trainer.report(), trainer.note(len(events))
    )


def as_replay_result(
    settings: Settings, result: InProcessResult, events: Sequence[Mapping[str, Any]]
) -> Any:
    """The in-process run in the shape the Kafka replay reports (no latencies: no broker)."""
    from recstream.evaluation.replay import ReplayResult

    reflected = {lst.event_id for lst in result.lists}
    return ReplayResult(
        settings=settings,
        lists=result.lists,
        sent_ts_ms={},
        n_events=result.n_events,
        first_sent_ms=0,
        last_sent_ms=0,
        last_list_ms=int(result.wall_s * 1000),
        unreflected=[str(e["event_id"]) for e in events if str(e["event_id"]) not in reflected],
        startup_s=0.0,
        send_s=0.0,
        worker_logs=[],
        notes=[
            f"in-process engine: {result.batches} micro-batches, {result.wall_s:.1f} s wall; "
            "no broker, so no latency",
            *([result.model_note] if result.model_note else []),
        ],
    )


#: The fixed-weights control: the η rule off, everything else as in the run under test.
FIXED_WEIGHTS: dict[str, Any] = {"eta": 0.0, "eta_global": 0.0}

#: The ablations of issue #13 item 4: system name → the EngineParams overrides that turn one
#: part of the ranking off, everything else as in the run under test.
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_exploration": {"exploration_share": 0.0},
    "no_mmr": {"mmr_trade_off": 1.0},
}


def inprocess_variants(
    settings: Settings, under_test: str, *, fixed_weights: bool, ablations: bool
) -> dict[str, dict[str, Any]]:
    """System name → EngineParams overrides of each in-process replay, the run under test
    (no overrides) first. The control and the ablations need the fused ranker."""
    out: dict[str, dict[str, Any]] = {under_test: {}}
    if settings.ranker == FUSED:
        if fixed_weights:
            out["fixed_weights"] = FIXED_WEIGHTS
        if ablations:
            out.update(ABLATIONS)
    return out


def event_texts(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The distinct cleaned texts of `events` (search queries), sorted."""
    return sorted({clean_text(e.get("text")) for e in events if e.get("text")} - {""})


def precomputed(
    events: Sequence[Mapping[str, Any]], encode: Callable[[list[str]], np.ndarray] | None
) -> Callable[[list[str]], np.ndarray] | None:
    """`encode` run once, here, over every text of `events`: a lookup in its place.

    The replays run in forked processes (parallel_jobs.py), where the language model must not
    run: torch's thread pool does not survive a fork, and each job would encode again.
    """
    texts = event_texts(events)
    if encode is None or not texts:
        return None
    table = dict(zip(texts, encode(texts), strict=True))
    return lambda wanted: np.stack([table[t] for t in wanted])


def trained_models(
    settings: Settings, data: Any, vectors: Mapping[str, np.ndarray], folder: Path
) -> int:
    """The sequence model of every in-process replay of `data`, trained once (a job of the
    evaluation, started before the replays it feeds); returns the number of training runs."""
    dim = next((v.shape[0] for v in vectors.values()), 384)
    return train_ahead(settings, build_catalog(data.items, vectors, dim), data.events, folder)


@dataclass(frozen=True)
class ScoredReplay(Generic[S]):
    """One in-process replay, scored: `result` kept only when asked (its lists are large)."""

    result: Any | None
    scores: S
    run: dict[str, Any]


def scored_replay(
    settings: Settings,
    data: Any,
    vectors: Mapping[str, np.ndarray],
    encode: Callable[[list[str]], np.ndarray] | None,
    overrides: Mapping[str, Any],
    score: Callable[[Any], S],
    *,
    keep: bool,
    models: Path | None = None,
) -> ScoredReplay[S]:
    """Replay `data` in-process with `overrides` and score it (`score`: ReplayResult → its
    scores); one job of the evaluation (see parallel_jobs.py). models: the folder a
    `trained_models` job writes the sequence model's snapshots to (None: trained here)."""
    feed = None if models is None else SnapshotFeed(models)
    res = replay_inprocess(
        settings, data.items, data.events, vectors, encode, feed=feed, **overrides
    )
    replayed = as_replay_result(settings, res, data.events)
    run = {
        "overrides": dict(overrides),
        "lists": len(res.lists),
        "wall_s": res.wall_s,
        "events_per_s": res.events_per_s,
        "models": res.models,
    }
    return ScoredReplay(replayed if keep else None, score(replayed), run)

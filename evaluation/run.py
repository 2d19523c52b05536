"""`recstream eval`: prequential evaluation of the live pipeline against in-process baselines.

The data set (MovieLens or the synthetic generator, `recstream.evaluation.data`) is replayed
through real worker processes and the real broker (`recstream.evaluation.replay`); every
published list is collected. Scoring (`recstream.evaluation.scoring`) follows
`recstream.evaluation.prequential`: a target (positive consumption) of a user is scored against
the list reflecting exactly that user's previous event. Baselines
(`recstream.evaluation.baselines`, and the time- and order-aware peers of
`recstream.evaluation.sequence_baselines`) run in this process on the same event sequence with
the same protocol: learn each event, and right after it predict for the user when their next
event is a target.

Outputs in the chosen folder: metrics.json, report.md (`recstream.evaluation.report`) and PNG
plots (`recstream.evaluation.plots`).
"""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from recstream.config.settings import Settings
from recstream.evaluation.baselines import (
    DecayedPopularity,
    ItemKNNCoVisit,
    Recommender,
    StaticEmbeddingSimilarity,
)
from recstream.evaluation.data import EvalData, item_vectors, load_data
from recstream.evaluation.inprocess import (
    ABLATIONS,
    inprocess_variants,
    precomputed,
    scored_replay,
    trained_models,
)
from recstream.evaluation.metrics import percentiles
from recstream.evaluation.oracle import ORACLE, TrueInterestOracle
from recstream.evaluation.parallel_jobs import run_jobs
from recstream.evaluation.plots import write_plots
from recstream.evaluation.prequential import ScoreCard, is_target, slice_edges
from recstream.evaluation.replay import ReplayResult, replay, run_settings
from recstream.evaluation.report import clean_json, machine_info, write_lists, write_report
from recstream.evaluation.scoring import (
    N_SLICES,
    RECALL_K,
    SYSTEM_UNDER_TEST,
    K,
    ablation_summary,
    best_peer,
    candidate_recall,
    long_tail,
    mean_finite,
    run_baselines,
    score_pipeline,
    synthetic_extras,
)
from recstream.evaluation.sequence_baselines import RecentPopularity, SequenceKNN
from recstream.models.cpu_budget import usable_cpus
from recstream.models.errors import (
    DatasetError,
    RecstreamError,
    ReplayCancelled,
    ValidationError,
)

#: Default flow-control window of the replay, per worker (see run_eval): a worker's
#: micro-batch (RECSTREAM_BATCH_MAX_EVENTS, 500), so that batches fill. Lists still reflect
#: exactly each user's events up to theirs; only shared statistics lag by up to a batch.
DEFAULT_IN_FLIGHT_PER_WORKER = 500

#: The baselines that take longest (neighbourhoods, a catalogue product per prediction).
_SLOW_BASELINES = frozenset({"item_knn", "sequence_knn", "static_embedding"})


def run_eval(
    settings: Settings,
    dataset: str,
    out_dir: Path,
    limit: int | None = None,
    workers: int = 1,
    seed: int = 0,
    console: Console | None = None,
    *,
    rate: float | None = None,
    max_in_flight: int | None = None,
    fixed_weights: bool = True,
    encoder_factory: Callable[[Settings], Any],
    engine: str = "kafka",
    ablations: bool = False,
    concurrent_replays: bool = True,
) -> dict[str, Any]:
    """Replay `dataset` through the pipeline, score it and the baselines, write the outputs.

    Args:
        settings: base settings (broker, partitions, ranker knobs); the run uses throwaway
            topics, debounce 0 and top_k >= 20 on top of them.
        dataset: "synthetic" or a MovieLens folder (latest-small or 100K layout).
        out_dir: receives metrics.json, report.md, PNG plots and the worker logs.
        limit: replay only the first `limit` events (time order); None: all.
        workers: worker processes.
        seed: seed of the synthetic generator.
        rate: events per second to send (None: as fast as possible).
        max_in_flight: events sent but not yet reflected by a list, at most (None: 500 per
            worker; 0: unlimited, the whole data set may queue up). Under a backlog lists are
            computed long after their event and shared state (popularity, co-visits) lags, so a
            bounded window measures the pipeline as it behaves live.
        fixed_weights: also replay the same events through a second pipeline whose fusion
            weights never move (η = η_global = 0: every user keeps the uniform start weights),
            scored as the `fixed_weights` system. It isolates what the η rule adds, with
            everything else (candidates, signals, MMR, exploration) identical. Doubles the
            replay time; only with the fused ranker.
        encoder_factory: settings → the text encoder the workers use (item vectors for ILD
            and the static_embedding baseline; the caller passes the live path's factory, which
            this package must not import). Any failure skips that baseline with its reason.
        engine: "kafka" replays through the broker and worker processes (the truth);
            "inprocess" runs the workers' engine in this process over the same event order
            and micro-batches (recstream.evaluation.inprocess): no broker, minutes instead of
            an hour, the same scoring. It needs the item vectors (cached between runs).
        ablations: also replay in-process with exploration off (exploration_share 0) and with
            MMR off (mmr_trade_off 1), scored as `no_exploration` and `no_mmr` (issue #13 item
            4). In-process only (raises ValidationError with the Kafka engine); fused ranker.
        concurrent_replays: through Kafka, run the fixed-weights replay at the same time as
            the replay under test (own topics, worker, trainer and folders) rather than after
            it: one replay leaves about a third of two cores idle (the worker's engine is one
            thread; broker, trainer and producer use little), so both finish in far less than
            twice the time of one. Their latency and throughput figures are then those of a
            shared machine (metrics.json `run.concurrent_replays`); `--serial-replays` or
            `recstream bench pipeline` measure them alone.

    Returns:
        The metrics dict written to metrics.json.
    """
    console = console or Console(stderr=True)
    if ablations and engine != "inprocess":
        raise ValidationError("--ablations needs --engine inprocess (three more Kafka replays)")
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(dataset, limit, seed)
    if not data.events:
        raise DatasetError("no events to replay")
    console.print(
        f"[bold]{data.name}[/bold]: {len(data.items)} items, {len(data.events)} events, "
        f"{len({e['user_id'] for e in data.events})} users"
    )
    in_flight = DEFAULT_IN_FLIGHT_PER_WORKER * workers if max_in_flight is None else max_in_flight
    cache = settings.home / "eval-cache" / "embedding-cache"
    if engine not in ("kafka", "inprocess"):
        raise DatasetError(f"engine must be 'kafka' or 'inprocess', not {engine!r}")
    result: ReplayResult | None = None
    fixed_result: ReplayResult | None = None
    if engine == "inprocess":
        with console.status("item vectors ..."):
            vectors, vector_source = item_vectors(
                settings, data.items, [cache], encoder_factory, write_cache=cache
            )
        if not vectors:
            raise DatasetError(f"the in-process engine needs item vectors: {vector_source}")
        encode = precomputed(data.events, _text_encoder(settings, data, encoder_factory))
        inprocess_cfg = run_settings(settings, out_dir)[0]
    else:
        result, fixed_result = _replays(
            settings, data, out_dir, workers, rate, in_flight, console,
            fixed_weights=fixed_weights, concurrent=concurrent_replays,
        )  # fmt: skip
        rankers = Counter(r.ranker for r in result.lists)
        console.print(f"collected {len(result.lists)} lists (rankers: {dict(rankers)})")
        with console.status("item vectors ..."):
            caches = [p.parent / p.stem / "embedding-cache" for p in result.worker_logs]
            vectors, vector_source = item_vectors(settings, data.items, caches, encoder_factory)
        # The workers' RocksDB folders can be large and are not needed any more; logs stay.
        for log in [*result.worker_logs, *(fixed_result.worker_logs if fixed_result else [])]:
            shutil.rmtree(log.parent / log.stem, ignore_errors=True)
    console.print(f"item vectors: {vector_source}")

    def target(event: Mapping[str, Any]) -> bool:
        return is_target(event, views_are_targets=data.views_are_targets)

    item_users, n_users = _interacting_users(data.events)

    def score(replayed: ReplayResult) -> tuple[ScoreCard, int]:
        return score_pipeline(
            data.events,
            replayed.lists,
            target,
            item_users=item_users,
            n_users=n_users,
            vectors=vectors,
        )

    models, skipped = _baselines(settings, vectors, vector_source, data)
    jobs: dict[str, Callable[[], Any]] = {}
    models_dir: Path | None = None
    if engine == "inprocess":
        variants = inprocess_variants(
            settings, SYSTEM_UNDER_TEST, fixed_weights=fixed_weights, ablations=ablations
        )
        models_dir = _shared_models(inprocess_cfg, variants, out_dir)
        if models_dir is not None:
            # First, so that it is running before any replay waits on it (parallel_jobs.py).
            jobs[SHARED_TRAINER] = partial(
                trained_models, inprocess_cfg, data, vectors or {}, models_dir
            )
        for name, overrides in variants.items():
            jobs[name] = partial(
                scored_replay, inprocess_cfg, data, vectors or {}, encode, overrides, score,
                keep=name in (SYSTEM_UNDER_TEST, "fixed_weights"), models=models_dir,
            )  # fmt: skip
    else:
        assert result is not None  # the Kafka replay above
        jobs[SYSTEM_UNDER_TEST] = partial(score, result)
        if fixed_result is not None and fixed_result.lists:
            jobs["fixed_weights"] = partial(score, fixed_result)
    quiet = Console(quiet=True)
    # Longest first, so that the short ones fill the cores at the end (parallel_jobs.py).
    for name, model in sorted(models.items(), key=lambda m: m[0] not in _SLOW_BASELINES):
        jobs[f"baseline {name}"] = partial(
            run_baselines, data.events, {name: model}, target, settings=settings,
            item_users=item_users, n_users=n_users, vectors=vectors, console=quiet,
        )  # fmt: skip
    n_jobs = settings.eval_jobs or usable_cpus()
    console.print(f"{len(jobs)} jobs in {min(n_jobs, len(jobs))} processes: {', '.join(jobs)}")
    try:
        done = run_jobs(jobs, n_jobs, lambda name, wall: console.print(f"  {name}: {wall:.1f} s"))
    finally:
        if models_dir is not None:
            shutil.rmtree(models_dir, ignore_errors=True)
    ablated: dict[str, ScoreCard] = {}
    ablation_runs: dict[str, dict[str, Any]] = {}
    fixed_card = None
    # Which sequence-model version served which events (through Kafka: read off the lists).
    model_timeline = None
    if engine == "inprocess":
        runs = {name: done[name] for name in variants}
        result = runs[SYSTEM_UNDER_TEST].result
        model_timeline = runs[SYSTEM_UNDER_TEST].run["models"]
        pipeline_card, n_cold = runs[SYSTEM_UNDER_TEST].scores
        if "fixed_weights" in runs:
            fixed_result = runs["fixed_weights"].result
            fixed_card = runs["fixed_weights"].scores[0]
        for name in ABLATIONS.keys() & runs.keys():
            ablated[name], ablation_runs[name] = runs[name].scores[0], runs[name].run
        for name, run in runs.items():
            console.print(
                f"in-process {name}: {run.run['lists']} lists, {run.run['wall_s']:.1f} s "
                f"({run.run['events_per_s']:.0f} events/s)"
            )
    else:
        pipeline_card, n_cold = done[SYSTEM_UNDER_TEST]
        if "fixed_weights" in done:
            fixed_card = done["fixed_weights"][0]
    assert result is not None
    if engine != "inprocess":
        model_timeline = result.model_timeline([str(e["event_id"]) for e in data.events])
    if fixed_card is None and (why := _fixed_weights_skipped(settings, fixed_result)):
        skipped["fixed_weights"] = why
    if ablations and settings.ranker != "fused":
        skipped.update(dict.fromkeys(ABLATIONS, f"the ranker is {settings.ranker!r}, not fused"))
    warm: dict[str, ScoreCard] = {}
    cold: dict[str, ScoreCard] = {}
    for name in models:
        w, c = done[f"baseline {name}"]
        warm.update(w)
        cold.update(c)
    cards = {SYSTEM_UNDER_TEST: pipeline_card, **warm}
    if fixed_card is not None:
        cards["fixed_weights"] = fixed_card
    cards.update(ablated)
    n_targets = sum(1 for e in data.events if target(e))
    metrics = _metrics(
        data, dataset, limit, seed, result, cards, cold, n_cold, n_targets, skipped, workers, rate
    )
    metrics["vectors"] = vector_source
    metrics["run"]["engine"] = engine
    # Whether the fixed-weights replay shared the machine with the Kafka replay under test
    # (in-process replays always run as parallel jobs; they measure no latency).
    shared = engine == "kafka" and fixed_result is not None and concurrent_replays
    metrics["run"]["concurrent_replays"] = shared
    metrics["settings"] = result.settings.model_dump(mode="json")
    metrics["machine"] = machine_info()
    if fixed_result is not None:
        metrics["run"]["fixed_weights"] = _fixed_weights_run(fixed_result)
    metrics["long_tail"] = long_tail(data.events, target, cards)
    metrics["candidate_recall"] = candidate_recall(cards, metrics["slices"]["edges"])
    metrics["ablations"] = ablation_summary(cards, ablation_runs) if ablations else None
    peers = [name for name in models if name != ORACLE]
    metrics["best_peer"] = best_peer(metrics["systems"], metrics["slices"]["systems"], peers)
    metrics["model_timeline"] = model_timeline
    extras = None
    if data.synthetic is not None:
        with console.status("synthetic ground truth ..."):
            extras = synthetic_extras(data, result.lists, cards, metrics["slices"]["edges"])
        metrics["synthetic"] = extras
    write_lists(out_dir / "lists.jsonl.gz", result.lists)
    plots = write_plots(out_dir, metrics, result, extras, data)
    metrics["run"]["eval_wall_s"] = time.monotonic() - started
    clean = clean_json(metrics)
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    write_report(out_dir, clean, plots)
    return clean


def _metrics(
    data: EvalData,
    dataset: str,
    limit: int | None,
    seed: int,
    result: ReplayResult,
    cards: Mapping[str, ScoreCard],
    cold: Mapping[str, ScoreCard],
    n_cold: int,
    n_targets: int,
    skipped: dict[str, str],
    workers: int,
    rate: float | None,
) -> dict[str, Any]:
    """The metrics dict up to "run" (the caller adds vectors, settings, machine, extras)."""
    catalog_size = len(data.items)
    n_users = len({e["user_id"] for e in data.events})
    systems: dict[str, Any] = {name: card.summary(catalog_size) for name, card in cards.items()}
    rankers = Counter(r.ranker for r in result.lists)
    systems[SYSTEM_UNDER_TEST]["ranker"] = rankers.most_common(1)[0][0]
    edges = slice_edges(cards[SYSTEM_UNDER_TEST].ts, N_SLICES)
    return {
        "dataset": {
            "name": data.name,
            "source": dataset,
            "events": len(data.events),
            "users": n_users,
            "items": catalog_size,
            "targets": n_targets,
            "limit": limit,
            "seed": seed if data.synthetic is not None else None,
        },
        "protocol": _protocol(data),
        "systems": systems,
        "skipped_systems": skipped,
        **_timing(result),
        "cold_start": {
            "targets": n_cold,
            "share": n_cold / n_targets if n_targets else math.nan,
            SYSTEM_UNDER_TEST: "not scored: no list exists before a user's first event",
            "systems": {name: c.summary(catalog_size) for name, c in cold.items()},
        },
        "slices": {
            "edges": edges,
            "systems": {name: card.slices(edges) for name, card in cards.items()},
        },
        "run": _run_section(result, workers, rate, rankers),
    }


def _replays(
    settings: Settings,
    data: EvalData,
    out_dir: Path,
    workers: int,
    rate: float | None,
    in_flight: int,
    console: Console,
    *,
    fixed_weights: bool,
    concurrent: bool,
) -> tuple[ReplayResult, ReplayResult | None]:
    """The replay under test and, with `fixed_weights` and the fused ranker, the same replay
    with η = η_global = 0: after it, with its own trainer, or (`concurrent`) at the same time
    in a thread, quietly (one progress display), serving the run under test's snapshots.
    Either failing stops the other. Raises when the replay under test published no list."""
    cancel = threading.Event()
    fixed = fixed_weights and settings.ranker == "fused"
    together = fixed and concurrent
    if together:
        # Two pipelines share the cores: a worker's torch pool (the sequence model's forward
        # passes) as wide as the machine spins on cores the other pipeline needs (on 2 cores
        # the two replays took 103 s with it, 75 s with one thread each, against 50 s alone).
        threads = settings.embed_threads or max(1, usable_cpus() // 2)
        settings = settings.model_copy(update={"embed_threads": threads})

    def run_pipeline(
        work_dir: Path, out: Console, overrides: dict[str, Any] | None = None, trainer: bool = True
    ) -> ReplayResult:
        try:
            return replay(
                settings,
                data.items,
                data.events,
                workers=workers,
                work_dir=work_dir,
                rate=rate,
                max_in_flight=in_flight,
                console=out,
                overrides=overrides,
                embedding_cache=settings.home / "eval-cache" / "embedding-cache",
                trainer=trainer,  # the sequence model, as the in-process replay trains it
                cancel=cancel,
            )
        except BaseException:
            cancel.set()
            raise

    fixed_dir = out_dir / "fixed_weights"
    frozen: dict[str, Any] = {"eta": 0.0, "eta_global": 0.0}
    if together:
        console.print(
            "[bold]fixed_weights[/bold] (the same replay with η = η_global = 0) runs alongside, "
            "on its own topics and worker"
        )
        # One trainer for both: the twin's workers read the η run's snapshot folder (as a
        # second worker of that run would), so the control differs from the run under test
        # in η alone, and the two cores carry one trainer instead of two.
        shared = {**frozen, "snapshot_dir": out_dir / "workers" / "snapshots"}
        with ThreadPoolExecutor(1, thread_name_prefix="fixed-weights") as pool:
            later = pool.submit(run_pipeline, fixed_dir, Console(quiet=True), shared, False)
            try:
                result = run_pipeline(out_dir, console)
            except ReplayCancelled:
                later.result()  # raises the error that stopped this replay
                raise
            console.print("waiting for the fixed_weights replay ...")
            fixed_result: ReplayResult | None = later.result()
        assert fixed_result is not None
        console.print(
            f"fixed_weights: {len(fixed_result.lists)} lists, workers ready after "
            f"{fixed_result.startup_s:.1f} s, {fixed_result.events_per_s:.0f} events/s"
        )
    else:
        result = run_pipeline(out_dir, console)
        fixed_result = None
        if fixed:
            console.print("[bold]fixed_weights[/bold]: the same replay with η = η_global = 0")
            fixed_result = run_pipeline(fixed_dir, console, overrides=frozen)
    if not result.lists:
        raise RecstreamError(f"no list arrived; see {result.worker_logs}")
    return result, fixed_result


#: The job that trains the sequence model once for every in-process replay of a run.
SHARED_TRAINER = "sequence model"


def _shared_models(settings: Settings, variants: Mapping[str, Any], out_dir: Path) -> Path | None:
    """Where one shared job writes the sequence model's snapshots for the in-process replays
    (evaluation/model_schedule.py), or None: one replay only, or no model, so each replay
    trains its own (or none). The folder is new and empty."""
    if len(variants) < 2 or not settings.trainer_every_events:
        return None
    folder = out_dir / ".model-snapshots"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _text_encoder(
    settings: Settings, data: EvalData, encoder_factory: Callable[[Settings], Any]
) -> Callable[[list[str]], Any] | None:
    """texts → unit vectors with the workers' encoder, when some event has text."""
    if not any(e.get("text") for e in data.events):
        return None
    encoder = encoder_factory(settings)
    return lambda texts: encoder.encode(texts)


def _interacting_users(events: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], int]:
    """(item id → distinct users who interacted with it, distinct users) of the replay."""
    item_users_sets: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.get("item_id") is not None:
            item_users_sets[e["item_id"]].add(e["user_id"])
    item_users = {i: len(u) for i, u in item_users_sets.items()}
    n_users = len({e["user_id"] for e in events})
    return item_users, n_users


def _baselines(
    settings: Settings, vectors: Mapping[str, Any] | None, vector_source: str, data: EvalData
) -> tuple[dict[str, Recommender], dict[str, str]]:
    """(the in-process baselines, name → why a baseline is skipped); on synthetic data also
    the ground-truth `oracle` (the protocol's ceiling, not a peer: oracle.py)."""
    models: dict[str, Recommender] = {
        "popularity": DecayedPopularity(half_life_s=settings.popularity_half_life_s),
        "item_knn": ItemKNNCoVisit(),
        "recent_popularity": RecentPopularity(),
        "sequence_knn": SequenceKNN(),
    }
    if data.synthetic is not None:
        models[ORACLE] = TrueInterestOracle(data.synthetic)
    skipped: dict[str, str] = {}
    if vectors:
        models["static_embedding"] = StaticEmbeddingSimilarity(vectors)
    else:
        skipped["static_embedding"] = vector_source
    return models, skipped


def _fixed_weights_skipped(settings: Settings, fixed_result: ReplayResult | None) -> str | None:
    """Why the fixed_weights system has no scores (None: it has them)."""
    if fixed_result is not None:
        if fixed_result.lists:
            return None
        return f"no list arrived; see {fixed_result.worker_logs}"
    if settings.ranker != "fused":
        return f"the ranker under test is {settings.ranker!r}, not fused"
    return "turned off (--no-fixed-weights)"


def _protocol(data: EvalData) -> dict[str, Any]:
    return {
        "targets": (
            "click, add_to_cart, purchase, rate with value >= 4"
            + (
                ", view (synthetic views are drawn from the true interest)"
                if data.views_are_targets
                else "; MovieLens 'view' (2.5-3.5 stars) is not"
            )
        ),
        "k": K,
        "recall_k": RECALL_K,
        "scored_list": "the list reflecting the user's previous event",
    }


def _timing(result: ReplayResult) -> dict[str, Any]:
    """Latency percentiles and throughput of the replay under test."""
    lat = result.latencies_ms()
    pct = percentiles(lat.tolist(), (50, 95, 99))
    return {
        "latency_ms": {
            "p50": pct[50],
            "p95": pct[95],
            "p99": pct[99],
            "mean": mean_finite(lat),
            "n": int(lat.size),
        },
        "throughput_eps": result.events_per_s,
        "lists_per_s": result.lists_per_s,
    }


def _run_section(
    result: ReplayResult, workers: int, rate: float | None, rankers: Counter[str]
) -> dict[str, Any]:
    return {
        "workers": workers,
        "rate": rate,
        "max_in_flight": result.max_in_flight,
        "rankers": dict(rankers),
        "weights_keys": sorted({k for r in result.lists for k in r.weights}),
        "lists": len(result.lists),
        "unreflected": len(result.unreflected),
        "startup_s": result.startup_s,
        "send_s": result.send_s,
        "span_s": result.span_s,
        "notes": result.notes,
        "worker_logs": [str(p) for p in result.worker_logs],
    }


def _fixed_weights_run(fixed_result: ReplayResult) -> dict[str, Any]:
    spreads = [
        max(r.weights.values()) - min(r.weights.values()) for r in fixed_result.lists if r.weights
    ]
    return {
        "lists": len(fixed_result.lists),
        "unreflected": len(fixed_result.unreflected),
        "throughput_eps": fixed_result.events_per_s,
        # 0 when the weights really stayed uniform (the control is what it claims).
        "max_weight_spread": max(spreads, default=0.0),
    }

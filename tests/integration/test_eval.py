"""`recstream eval` end to end: a MovieLens slice through the real broker and a real worker.

The catalogue (9742 movies) is embedded by the worker at start-up; the vectors are kept in
~/.cache/recstream/eval-cache between runs, so only the first run on a machine pays for that.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from recstream.agents.embedding import encoder_from_settings
from recstream.config.settings import Settings
from recstream.evaluation.run import run_eval

pytestmark = pytest.mark.integration

ML_SMALL = Path(os.environ.get("RECSTREAM_ML_SMALL", "/work/shared/data/ml-latest-small"))
# Small enough for the test tier's ~3 minute budget on a 2-core machine (the fused ranker ran
# about 10 events/s on this catalogue when this was written), large enough that most targets
# have a previous event. Override with RECSTREAM_EVAL_TEST_LIMIT.
LIMIT = int(os.environ.get("RECSTREAM_EVAL_TEST_LIMIT", "600"))
METRICS = ("hr@10", "ndcg@10", "recall@20", "mrr", "coverage")
#: Every system the eval scores besides the engine runs (static_embedding needs the encoder).
BASELINES = ("popularity", "item_knn", "recent_popularity", "sequence_knn", "static_embedding")
SECTIONS = ("## Accuracy", "## Cold start", "## Long tail", "## Candidate recall", "## Per time")


def _settings(broker: Settings | None = None) -> Settings:
    return Settings(
        **({"bootstrap": broker.bootstrap_servers} if broker is not None else {}),
        events_partitions=4,
        recommendations_partitions=4,
        items_partitions=2,
        log_level="info",
    )


def _check_systems(metrics: dict[str, Any], expected: tuple[str, ...]) -> None:
    """Every expected system is scored on the same cases with every metric in range, in every
    table of metrics.json: overall, per slice, cold start (baselines) and long tail."""
    systems = metrics["systems"]
    for name in BASELINES:
        assert name in systems or name in metrics["skipped_systems"], name
    present = [n for n in (*expected, *BASELINES) if n in systems]
    assert {"recstream", "popularity", "item_knn", "recent_popularity", "sequence_knn"} <= set(
        present
    )
    assert set(systems) == set(present), "a system the test does not know of"
    for name in present:
        assert systems[name]["n"] == systems["recstream"]["n"] > 0, name
        for metric in METRICS:
            assert systems[name][metric] is not None, (name, metric)
            assert 0.0 <= systems[name][metric] <= 1.0, (name, metric)
        assert len(metrics["slices"]["systems"][name]) == 10, name
    assert set(metrics["cold_start"]["systems"]) == set(present) & set(BASELINES)
    tail = metrics["long_tail"]
    assert tail["below"] == 5 and 0 < tail["scored"] <= tail["targets"]
    assert tail["scored"] <= systems["recstream"]["n"]
    assert set(tail["systems"]) == set(present)
    for name, row in tail["systems"].items():
        assert row["n"] == tail["scored"] and 0.0 <= row["hr@10"] <= 1.0, name


def test_eval_on_a_movielens_slice_writes_every_metric(broker: Settings, tmp_path: Path) -> None:
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found at {ML_SMALL} (set RECSTREAM_ML_SMALL)")
    settings = _settings(broker)
    out = tmp_path / "eval"
    run_eval(
        settings,
        str(ML_SMALL),
        out,
        limit=LIMIT,
        workers=1,
        console=Console(stderr=True),
        encoder_factory=encoder_from_settings,
    )

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == ML_SMALL.name
    assert metrics["dataset"]["events"] == LIMIT
    assert metrics["dataset"]["items"] == 9742
    assert metrics["dataset"]["users"] > 1
    systems = metrics["systems"]
    ranker = systems["recstream"]["ranker"]
    # The fused ranker with frozen weights is a second replay of the same events (η = 0).
    assert "fixed_weights" in systems or ranker == "popularity", metrics["skipped_systems"]
    _check_systems(metrics, ("recstream", "fixed_weights"))
    # Kafka lists carry no candidate pool, and ablations are in-process only (not asked for).
    assert metrics["candidate_recall"]["available"] is False
    assert metrics["candidate_recall"]["note"].startswith("n/a")
    assert all(s["candidate_recall"] is None for s in systems.values())
    assert metrics["ablations"] is None
    if "fixed_weights" in systems:
        assert systems["fixed_weights"]["n"] == systems["recstream"]["n"]
        assert systems["fixed_weights"]["missing"] == 0
        assert metrics["run"]["fixed_weights"]["max_weight_spread"] < 1e-9
        # The control ran beside the run under test (the default), each worker's torch
        # pool narrowed to its share of the cores.
        assert metrics["run"]["concurrent_replays"] is True
        assert "ran at the same time" in (out / "report.md").read_text()
        assert 1 <= metrics["settings"]["embed_threads"] <= max(1, (os.cpu_count() or 2) // 2)
        # One trainer for both replays: the twin's workers read the η run's snapshot folder.
        assert (out / "workers" / "trainer.log").is_file()
        assert not (out / "fixed_weights" / "workers" / "trainer.log").exists()
    assert systems["recstream"]["missing"] == 0, "a list reflecting a previous event was lost"
    assert set(metrics["latency_ms"]) >= {"p50", "p95", "p99"}
    assert 0 < metrics["latency_ms"]["p50"] <= metrics["latency_ms"]["p99"]
    assert metrics["throughput_eps"] > 0
    assert metrics["settings"]["debounce_s"] == 0.0 and metrics["settings"]["top_k"] >= 20
    assert metrics["cold_start"]["targets"] > 0
    assert len(metrics["slices"]["systems"]["recstream"]) == 10
    assert metrics["run"]["unreflected"] == 0
    for name in ("report.md", "hr_over_time.png", "latency_hist.png", "weights.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "| recstream |" in report and "| sequence_knn |" in report
    assert all(section in report for section in SECTIONS)
    assert "recstream`: n/a" in report and "## Ablations" not in report

    if ranker == "popularity":
        pytest.xfail("the pipeline runs the popularity baseline: needs the fused ranker")
    assert systems["recstream"]["hr@10"] > systems["popularity"]["hr@10"], (
        f"{ranker} HR@10 {systems['recstream']['hr@10']:.4f} <= popularity "
        f"{systems['popularity']['hr@10']:.4f}"
    )


def test_a_cancelled_replay_stops_its_worker_and_deletes_its_topics(
    broker: Settings, tmp_path: Path
) -> None:
    """What the eval does to the replay under test when its fixed-weights twin fails (and
    the other way round): the replay stops at its next check and leaves nothing behind."""
    from kafka import KafkaAdminClient

    from recstream.evaluation.replay import replay
    from recstream.models.errors import ReplayCancelled

    def eval_topics() -> set[str]:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            return {t for t in admin.list_topics() if t.startswith("eval")}
        finally:
            admin.close()

    before = eval_topics()
    cancel = threading.Event()
    cancel.set()
    items = [{"item_id": "m1", "title": "A film", "categories": ["Drama"], "ts": 1.7e9}]
    events = [
        {"user_id": "u1", "event_type": "click", "item_id": "m1", "ts": 1.7e9 + 1, "event_id": "e1"}
    ]
    started = time.monotonic()
    with pytest.raises(ReplayCancelled, match="beside this one failed"):
        replay(
            _settings(broker), items, events, workers=1, work_dir=tmp_path, cancel=cancel,
            console=Console(quiet=True),
        )  # fmt: skip
    assert time.monotonic() - started < 60
    assert eval_topics() <= before  # the run's throwaway topics are gone
    log = (tmp_path / "workers" / "w0.log").read_text()
    assert "Traceback" not in log, log[-2000:]


def test_eval_inprocess_with_ablations_reports_candidate_recall(tmp_path: Path) -> None:
    """No broker: the in-process engine, its fixed-weights control and both ablations."""
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found at {ML_SMALL} (set RECSTREAM_ML_SMALL)")
    out = tmp_path / "eval"
    # A sequence model trained once, before the second micro-batch (500 events each).
    settings = _settings().model_copy(
        update={"trainer_every_events": 250, "trainer_min_events": 200}
    )
    metrics = run_eval(
        settings,
        str(ML_SMALL),
        out,
        limit=LIMIT,
        console=Console(stderr=True),
        encoder_factory=encoder_from_settings,
        engine="inprocess",
        ablations=True,
    )
    assert metrics == json.loads((out / "metrics.json").read_text())
    engine_runs = ("recstream", "fixed_weights", "no_exploration", "no_mmr")
    _check_systems(metrics, engine_runs)
    recall = metrics["candidate_recall"]
    assert recall["available"] is True and set(recall["systems"]) == set(engine_runs)
    for name, row in recall["systems"].items():
        assert 0.0 < row["overall"] <= 1.0, name
        assert metrics["systems"][name]["candidate_recall"] == row["overall"]
        assert len(row["by_slice"]) == 10 and row["n"] == metrics["systems"][name]["n"]
    # Without exploration (whose picks may lie outside the pool) every list is cut from its
    # pool, so a hit needs the target among the candidates: recall bounds HR@10 exactly.
    bounded = "no_exploration"
    assert recall["systems"][bounded]["overall"] >= metrics["systems"][bounded]["hr@10"]
    for name, override in (("no_exploration", "exploration_share"), ("no_mmr", "mmr_trade_off")):
        ablation = metrics["ablations"][name]
        assert set(ablation["overrides"]) == {override}
        assert ablation["lists"] == LIMIT
        assert ablation["hr@10"] == metrics["systems"][name]["hr@10"]
        gain = metrics["systems"]["recstream"]["hr@10"] - ablation["hr@10"]
        assert ablation["hr@10_gain"] == pytest.approx(gain)
    report = (out / "report.md").read_text()
    assert all(section in report for section in (*SECTIONS, "## Ablations"))
    assert "| no_exploration | exploration_share=0.0 |" in report
    (served,) = metrics["model_timeline"]  # prequential: trained on the first batch only
    # The four replays were fed by one shared trainer, whose snapshot folder is gone.
    assert not (out / ".model-snapshots").exists()
    assert served["first_event"] == served["trained_events"] == 500
    assert "## Sequence model versions" in report


def test_recstream_beats_item_knn_and_is_level_with_sequence_knn_on_a_slice(
    tmp_path: Path,
) -> None:
    """The in-process engine on the first 10,000 MovieLens events (the first time slice, where
    users' first sessions are long bursts), with the default sequence-model schedule.

    Measured at f186fac: recstream HR@10 / NDCG@10 0.3581 / 0.2168, sequence_knn 0.3569 /
    0.2091, item_knn 0.2416 / 0.1183. recstream must beat item_knn by a wide margin and
    sequence_knn on NDCG@10; on HR@10 the two tie on this slice (the lead, 1.065x through
    Kafka, builds over the later slices of the full replay, too long for this tier), so HR@10
    may not fall more than 2% below sequence_knn's: the trained model's floats differ from one
    CPU to another."""
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found at {ML_SMALL} (set RECSTREAM_ML_SMALL)")
    metrics = run_eval(
        _settings(),
        str(ML_SMALL),
        tmp_path / "eval",
        limit=10_000,
        console=Console(stderr=True),
        encoder_factory=encoder_from_settings,
        engine="inprocess",
    )
    s = metrics["systems"]
    ours, knn, seq = s["recstream"], s["item_knn"], s["sequence_knn"]
    for metric in ("hr@10", "ndcg@10"):
        assert ours[metric] > 1.2 * knn[metric], (metric, ours[metric], knn[metric])
    assert ours["ndcg@10"] > seq["ndcg@10"], (ours["ndcg@10"], seq["ndcg@10"])
    assert ours["hr@10"] >= 0.98 * seq["hr@10"], (ours["hr@10"], seq["hr@10"])


def test_recstream_beats_every_peer_on_the_synthetic_generator(tmp_path: Path) -> None:
    """The in-process engine on the eval's generated data (seed 0, 10,000 events), where the
    ground truth is known: ahead of the best peer (item_knn) by a wide margin, below the
    oracle, and ahead of every ID-only method on the long tail.

    Measured at b6beb5d: recstream HR@10 / NDCG@10 0.1233 / 0.0723, item_knn 0.0993 / 0.0509
    (1.242x / 1.420x), oracle 0.1788 / 0.1031; long tail 0.0469 against item_knn's 0.0160 and
    sequence_knn's 0.0190. The margins asserted leave room for the trained model's floats,
    which differ from one CPU to another."""
    metrics = run_eval(
        _settings(),
        "synthetic",
        tmp_path / "eval",
        console=Console(stderr=True),
        encoder_factory=encoder_from_settings,
        engine="inprocess",
    )
    s = metrics["systems"]
    peers = [n for n in s if n not in ("recstream", "fixed_weights", "oracle")]
    assert {"item_knn", "sequence_knn", "popularity", "recent_popularity"} <= set(peers)
    for metric, margin in (("hr@10", 1.15), ("ndcg@10", 1.3)):
        best = max(s[n][metric] for n in peers)
        assert s["recstream"][metric] > margin * best, (metric, s["recstream"][metric], best)
        assert s["oracle"][metric] > s["recstream"][metric], metric
        stated = metrics["best_peer"][metric]  # what the report and the command print
        assert stated["value"] == best and stated["peer"] in peers
        assert stated["ratio"] == pytest.approx(s["recstream"][metric] / best)
    tail = metrics["long_tail"]["systems"]
    id_only = ("item_knn", "sequence_knn", "popularity", "recent_popularity")
    assert tail["recstream"]["hr@10"] > max(tail[n]["hr@10"] for n in id_only), tail

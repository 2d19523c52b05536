"""`recstream eval` end to end: a MovieLens slice through the real broker and a real worker.

The catalogue (9742 movies) is embedded by the worker at start-up; the vectors are kept in
~/.cache/recstream/eval-cache between runs, so only the first run on a machine pays for that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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


def test_eval_on_a_movielens_slice_writes_every_metric(broker: Settings, tmp_path: Path) -> None:
    if not (ML_SMALL / "ratings.csv").is_file():
        pytest.skip(f"MovieLens latest-small not found at {ML_SMALL} (set RECSTREAM_ML_SMALL)")
    settings = Settings(
        bootstrap=broker.bootstrap_servers,
        events_partitions=4,
        recommendations_partitions=4,
        items_partitions=2,
        log_level="info",
    )
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
    for name in ("recstream", "popularity", "item_knn", "fixed_weights"):
        if name not in systems:
            continue
        assert set(METRICS) <= set(systems[name]), name
        for metric in METRICS:
            assert systems[name][metric] is not None, (name, metric)
            assert 0.0 <= systems[name][metric] <= 1.0, (name, metric)
    # The content baseline needs the text encoder; without it the report must say why.
    assert "static_embedding" in systems or "static_embedding" in metrics["skipped_systems"]
    assert systems["recstream"]["n"] == systems["popularity"]["n"] > 0
    if "fixed_weights" in systems:
        assert systems["fixed_weights"]["n"] == systems["recstream"]["n"]
        assert systems["fixed_weights"]["missing"] == 0
        assert metrics["run"]["fixed_weights"]["max_weight_spread"] < 1e-9
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
    assert "| recstream |" in (out / "report.md").read_text()

    if ranker == "popularity":
        pytest.xfail("the pipeline runs the popularity baseline: needs the fused ranker")
    assert systems["recstream"]["hr@10"] > systems["popularity"]["hr@10"], (
        f"{ranker} HR@10 {systems['recstream']['hr@10']:.4f} <= popularity "
        f"{systems['popularity']['hr@10']:.4f}"
    )

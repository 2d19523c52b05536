"""`recstream bench pipeline` without a broker: records-per-event arithmetic, settings overrides,
targets, and the shape of the JSON object (replays and the passthrough replaced by fakes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import recstream.bench_passthrough as bench_passthrough
import recstream.bench_pipeline as bench
import recstream.evaluation.replay as replay_mod
from recstream.config.settings import Settings
from recstream.evaluation.replay import CollectedList, ReplayResult
from recstream.models.errors import ValidationError


def test_records_per_event_counts_the_replay_only_and_leaves_the_inputs_out() -> None:
    before = {"events": 8, "items": 500, "recommendations": 8, "item-vectors": 500}
    after = {
        "events": 1008,
        "items": 500,
        "recommendations": 1008,
        "item-vectors": 500,
        "item-hits": 900,
        "user-state-changelog": 1100,
    }
    out = bench.records_per_event(before, after, applied_events=1000)
    assert out["records"] == 1000 + 900 + 1100
    assert out["records_per_event"] == 3.0
    assert out["startup_records"] == 8 + 500
    assert out["records_per_event_total"] == pytest.approx((3000 + 508) / 1000, abs=1e-3)
    assert out["applied_events"] == 1000
    assert "events" not in out["by_topic"] and "items" not in out["by_topic"]
    # Most expensive first; a topic created during the replay counts from 0.
    assert list(out["by_topic"]) == [
        "user-state-changelog",
        "recommendations",
        "item-hits",
        "item-vectors",
    ]
    assert out["by_topic"]["item-hits"] == {"records": 900, "per_event": 0.9, "startup": 0}
    assert out["by_topic"]["item-vectors"] == {"records": 0, "per_event": 0.0, "startup": 500}


def test_records_per_event_without_applied_events_has_no_ratio() -> None:
    out = bench.records_per_event({}, {"recommendations": 3}, applied_events=0)
    assert out["records_per_event"] is None and out["records_per_event_total"] is None
    assert out["records"] == 3


def test_records_per_event_custom_input_names_and_shrinking_offsets() -> None:
    # A topic deleted and re-created (end offset went down) never counts negative.
    out = bench.records_per_event(
        {"ev": 5, "x": 10}, {"ev": 50, "x": 4}, applied_events=2, exclude=("ev",)
    )
    assert out["records"] == 0 and out["by_topic"]["x"]["records"] == 0


def test_short_topic_strips_the_run_prefix_and_the_app_id() -> None:
    s = Settings(app_id="evalab12", topic_prefix="evalab12-")
    assert bench.short_topic("evalab12-evalab12-item-hits", s) == "item-hits"
    assert bench.short_topic("evalab12-recommendations", s) == "recommendations"
    assert bench.short_topic("evalab12-user-state-changelog", s) == "user-state-changelog"
    assert bench.short_topic("other", s) == "other"


def test_parse_overrides_accepts_env_names_and_field_names() -> None:
    out = bench.parse_overrides(
        ["RECSTREAM_RANKER=popularity", "top_k=15", 'item_text_attributes=["brand"]']
    )
    assert out == {"ranker": "popularity", "top_k": "15", "item_text_attributes": ["brand"]}
    applied = bench.apply_overrides(Settings(), out)
    assert applied.ranker == "popularity" and applied.top_k == 15
    with pytest.raises(ValidationError, match="RECSTREAM_NO_SUCH"):
        bench.parse_overrides(["RECSTREAM_NO_SUCH=1"])
    with pytest.raises(ValidationError, match="NAME=VALUE"):
        bench.parse_overrides(["ranker"])
    with pytest.raises(ValidationError, match="invalid --set"):
        bench.apply_overrides(Settings(), {"top_k": "many"})


def test_targets_say_whether_met_and_whether_the_ceiling_is_below() -> None:
    paced = {"rate": 1000.0, "latency_ms": {"p99": 200.0}, "all_reflected": True}
    t = bench.targets(2, 2400.0, 0, paced, 2.5, 900.0)
    assert t["events_per_s_per_worker"]["measured"] == 1200.0
    assert t["events_per_s_per_worker"]["met"] is True
    assert t["events_per_s_per_worker"]["ceiling_below_target"] is True
    assert t["p99_ms_at_1000_events_per_s"]["met"] is True
    assert t["records_per_event"]["met"] is True
    assert t["state_only_events_per_s"]["measured"] is None
    slow = bench.targets(1, 50.0, 3, {**paced, "rate": 500.0}, 4.0, None)
    assert slow["events_per_s_per_worker"]["met"] is False
    assert slow["events_per_s_per_worker"]["ceiling_below_target"] is None
    assert slow["p99_ms_at_1000_events_per_s"]["met"] is False  # offered below 1000/s
    assert slow["records_per_event"]["met"] is False
    assert bench.targets(1, None, 0, None, None, None)["p99_ms_at_1000_events_per_s"]["met"] is None


def test_synthetic_list_is_list_shaped_and_at_least_the_target_size() -> None:
    rec = bench_passthrough.synthetic_list(top_k=10)
    assert len(rec["items"]) == 10 and {"user_id", "as_of", "weights"} <= set(rec)
    assert len(json.dumps(rec).encode()) >= bench_passthrough.SYNTHETIC_LIST_BYTES
    assert len(json.dumps(bench_passthrough.synthetic_list(top_k=1)).encode()) >= 2000


def _fake_result(settings: Settings, evs: list[dict[str, Any]], rate: float | None) -> Any:
    lists = [
        CollectedList(
            user_id=str(e["user_id"]),
            event_id=str(e["event_id"]),
            as_of_ts=float(e["ts"]),
            kafka_ts_ms=1_000_000 + 20 * n + 15,
            ranker="fused",
            items=("i1",),
            weights={},
            top_interests=(),
        )
        for n, e in enumerate(evs[:-1])  # the last event never gets a list
    ]
    return ReplayResult(
        settings=settings,
        lists=lists,
        sent_ts_ms={str(e["event_id"]): 1_000_000 + 20 * n for n, e in enumerate(evs)},
        n_events=len(evs),
        first_sent_ms=1_000_000,
        last_sent_ms=1_000_000 + 20 * (len(evs) - 1),
        last_list_ms=lists[-1].kafka_ts_ms,
        unreflected=[str(evs[-1]["event_id"])],
        startup_s=12.0,
        send_s=2.0,
        worker_logs=[],
        rate=rate,
        max_in_flight=64 if rate is None else None,
    )


def test_json_shape_without_a_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    evs = [
        {"user_id": f"u{n % 3}", "event_type": "view", "item_id": "i1", "ts": 1.7e9 + n,
         "event_id": f"e{n}"}
        for n in range(11)
    ]  # fmt: skip
    calls: list[dict[str, Any]] = []
    offsets = iter(
        [
            {"events": 8, "items": 5, "recommendations": 8},  # unpaced, ready
            {"events": 19, "items": 5, "recommendations": 18, "item-hits": 10},  # stopped
            {"events": 8, "items": 5, "recommendations": 8},  # paced, ready
            {"events": 19, "items": 5, "recommendations": 18, "item-hits": 20},
        ]
    )

    def fake_replay(base: Settings, items: Any, events: Any, **kw: Any) -> Any:
        calls.append(kw)
        run = Settings(app_id="evalfake", topic_prefix="evalfake-", **kw["overrides"])
        kw["on_phase"]("ready", run)
        kw["on_phase"]("stopped", run)
        return _fake_result(run, list(events), kw["rate"])

    passthroughs: list[dict[str, Any]] = []

    def fake_passthrough(settings: Settings, events: Any, **kw: Any) -> dict[str, Any]:
        passthroughs.append(kw)
        return {
            "events_per_s": 500.0,
            "events": len(events),
            "read": len(events),
            "written": len(events),
            "seconds": 0.02,
            "record_bytes": 40,
            "template": "list",
            "partitions": {"in": 8, "out": 8},
            "producer": {"acks": "all", **(kw.get("producer_overrides") or {})},
        }

    monkeypatch.setattr(bench, "bench_events", lambda n: ([{"item_id": "i1"}], evs[:n]))
    monkeypatch.setattr(replay_mod, "replay", fake_replay)
    monkeypatch.setattr(bench, "run_topic_end_offsets", lambda s: next(offsets))
    monkeypatch.setattr(
        bench, "sample_lists", lambda s: [b'{"user_id": "u1", "items": []}', b'{"a": 1}']
    )
    monkeypatch.setattr(bench_passthrough, "run_passthrough_bench", fake_passthrough)

    out = bench.run_pipeline_bench(
        Settings(), 11, 1, rate=1000.0, overrides={"ranker": "popularity"}, work_dir=tmp_path
    )
    json.dumps(out)  # one JSON-able object
    assert [c["rate"] for c in calls] == [None, 1000.0]
    assert [c["max_in_flight"] for c in calls] == [bench.DEFAULT_IN_FLIGHT_PER_WORKER, 0]
    assert all(c["overrides"] == {"ranker": "popularity"} for c in calls)
    for key in (
        "events_per_s",
        "lists_per_s",
        "latency_ms",
        "records_per_event",
        "records_by_topic",
        "paced",
        "passthrough_events_per_s",
        "ratio",
        "targets",
        "machine",
    ):
        assert key in out, key
    assert set(out["latency_ms"]) == {"p50", "p95", "p99"}
    assert out["latency_ms"]["p50"] == 15.0
    assert out["events"] == 11 and out["lists"] == 10 and out["unreflected"] == 1
    # 10 applied events; 10 lists + 10 item hits produced during the replay.
    assert out["applied_events"] == 10
    assert out["records_per_event"] == 2.0
    assert out["records_by_topic"]["item-hits"] == {"records": 10, "per_event": 1.0, "startup": 0}
    assert out["list_record_bytes"] == 30
    paced = out["paced"]
    assert paced["rate"] == 1000.0 and paced["all_reflected"] is False
    assert paced["offered_events_per_s"] == 5.5 and paced["records_per_event"] == 3.0
    assert set(paced["latency_ms"]) == {"p50", "p95", "p99"}
    assert out["passthrough_events_per_s"] == 500.0
    assert out["ratio"] == round(out["events_per_s"] / 500.0, 4)
    assert out["passthrough"]["large_batches"]["producer"]["max_batch_size"] == 262_144
    # The median-sized real list is the passthrough's template.
    assert passthroughs[0]["list_record"] == {"user_id": "u1", "items": []}
    assert out["overrides"] == {"ranker": "popularity"}
    assert out["targets"]["events_per_s_per_worker"]["every_event_reflected"] is False
    assert any("worker logs kept under" in n for n in out["notes"])  # an event was never reflected


def test_rate_zero_and_no_passthrough_give_nulls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    evs = [
        {"user_id": "u1", "event_type": "view", "item_id": "i1", "ts": 1.7e9 + n,
         "event_id": f"e{n}"}
        for n in range(3)
    ]  # fmt: skip
    rates: list[float | None] = []

    def fake_replay(base: Settings, items: Any, events: Any, **kw: Any) -> Any:
        rates.append(kw["rate"])
        return _fake_result(base, list(events), kw["rate"])  # no on_phase calls: no offsets

    monkeypatch.setattr(bench, "bench_events", lambda n: ([], evs[:n]))
    monkeypatch.setattr(replay_mod, "replay", fake_replay)
    out = bench.run_pipeline_bench(
        Settings(), 3, 1, rate=None, passthrough=False, work_dir=tmp_path
    )
    assert rates == [None]
    assert out["paced"] is None and out["passthrough_events_per_s"] is None
    assert out["ratio"] is None and out["records_per_event"] is None
    assert any("end offsets" in n for n in out["notes"])

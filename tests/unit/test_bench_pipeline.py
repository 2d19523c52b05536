"""`recstream bench pipeline` without a broker: records-per-event arithmetic, settings overrides,
targets, the state-only run's completion arithmetic, and the shape of the JSON object (replays
and the passthrough replaced by fakes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

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


def _fake_state_only(
    settings: Settings, evs: list[dict[str, Any]], committed_after_ms: int | None = 2_200
) -> Any:
    return ReplayResult(
        settings=settings,
        lists=[],
        sent_ts_ms={str(e["event_id"]): 1_000_000 + 20 * n for n, e in enumerate(evs)},
        n_events=len(evs),
        first_sent_ms=1_000_000,
        last_sent_ms=1_000_000 + 20 * (len(evs) - 1),
        last_list_ms=0,
        unreflected=[str(e["event_id"]) for e in evs],
        startup_s=10.0,
        send_s=0.5,
        worker_logs=[],
        completion="offsets",
        committed_ms=None if committed_after_ms is None else 1_000_000 + committed_after_ms,
        uncommitted=0 if committed_after_ms is not None else 4,
    )


def test_uncommitted_counts_each_partition_against_its_end_offset() -> None:
    t0, t1, t2, t3 = (TopicPartition("ev", p) for p in range(4))
    ends = {t0: 10, t1: 5, t2: 7, t3: 0}
    committed = {
        t0: OffsetAndMetadata(10, "", -1),  # done
        t1: OffsetAndMetadata(-1, "", -1),  # nothing committed yet
        t2: 3,  # a bare offset
        # t3 missing: no record, nothing to commit
    }
    assert replay_mod.uncommitted(ends, committed) == (5 + 4, 10 + 3)
    assert replay_mod.uncommitted({t0: 4}, {t0: OffsetAndMetadata(6, "", -1)}) == (0, 4)
    assert replay_mod.uncommitted({}, {}) == (0, 0)


def test_offsets_mode_spans_to_the_commit_and_is_nan_when_it_never_came() -> None:
    evs = [{"event_id": f"e{n}"} for n in range(11)]
    done = _fake_state_only(Settings(), evs)
    assert done.span_s == pytest.approx(2.2) and done.events_per_s == pytest.approx(5.0)
    never = _fake_state_only(Settings(), evs, committed_after_ms=None)
    assert math.isnan(never.span_s)
    # The lists mode still spans to the last list (the 10th: the 11th event has none).
    lists_mode = _fake_result(Settings(), [dict(e, user_id="u", ts=0.0) for e in evs], None)
    assert lists_mode.span_s == pytest.approx(0.195)


def test_summarize_state_only_reports_nothing_timed_when_not_all_committed() -> None:
    evs = [{"event_id": f"e{n}"} for n in range(10)]
    records = {"records_per_event": 1.5, "by_topic": {"user-state-changelog": {}}}
    out = bench.summarize_state_only(_fake_state_only(Settings(), evs, None), records, 1_000_500)
    assert out["all_committed"] is False and out["uncommitted"] == 4
    assert out["events_per_s"] is None and out["wall_s"] is None
    assert out["last_write_s"] is None and out["events_per_s_to_last_write"] is None
    assert out["records_per_event"] == 1.5
    ok = bench.summarize_state_only(_fake_state_only(Settings(), evs, 1_000), None, 999_000)
    assert ok["events_per_s"] == 10.0 and ok["wall_s"] == 1.0
    # A last write before the first event (no state written by the replay) times nothing.
    assert ok["last_write_s"] is None and ok["records_per_event"] is None
    no_write = bench.summarize_state_only(_fake_state_only(Settings(), evs), None, None)
    assert no_write["events_per_s"] == 4.5 and no_write["events_per_s_to_last_write"] is None


def test_state_only_target_needs_every_event_committed() -> None:
    fast = {"events_per_s": 6000.0, "all_committed": True, "events_per_s_to_last_write": 8000.0}
    t = bench.targets(1, None, 0, None, None, None, fast)["state_only_events_per_s"]
    assert t["measured"] == 6000.0 and t["met"] is True and t["to_last_write"] == 8000.0
    assert "lower bound" in t["note"] and f"{bench.COMMIT_INTERVAL_S:g} s" in t["note"]
    lost = bench.targets(1, None, 0, None, None, None, {**fast, "all_committed": False})
    assert lost["state_only_events_per_s"]["met"] is False
    slow = bench.targets(1, None, 0, None, None, None, {**fast, "events_per_s": 4000.0})
    assert slow["state_only_events_per_s"]["met"] is False


def test_commit_interval_is_the_workers_faust_setting(tmp_path: Path) -> None:
    from recstream.streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path))
    assert app.conf.broker_commit_interval == bench.COMMIT_INTERVAL_S


def test_offsets_completion_refuses_flow_control(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="max_in_flight"):
        replay_mod.replay(
            Settings(), [], [], workers=1, work_dir=tmp_path, max_in_flight=5, completion="offsets"
        )
    with pytest.raises(ValidationError, match="completion"):
        replay_mod.replay(
            Settings(),
            [],
            [],
            workers=1,
            work_dir=tmp_path,
            completion="maybe",  # type: ignore[arg-type]
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
            {"events": 8, "items": 5, "user-state-changelog": 4},  # state-only, ready
            {"events": 19, "items": 5, "user-state-changelog": 15, "shared-deltas-changelog": 11},
        ]
    )
    last_writes: list[tuple[str, ...]] = []

    def fake_last_record(s: Settings, names: Any) -> int:
        last_writes.append(tuple(names))
        return 1_000_000 + 1_500

    def fake_replay(base: Settings, items: Any, events: Any, **kw: Any) -> Any:
        calls.append(kw)
        run = Settings(app_id="evalfake", topic_prefix="evalfake-", **kw["overrides"])
        kw["on_phase"]("ready", run)
        kw["on_phase"]("completed", run)
        kw["on_phase"]("stopped", run)
        if kw["completion"] == "offsets":
            return _fake_state_only(run, list(events))
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
    monkeypatch.setattr(bench, "last_record_ms", fake_last_record)
    monkeypatch.setattr(
        bench, "sample_lists", lambda s: [b'{"user_id": "u1", "items": []}', b'{"a": 1}']
    )
    monkeypatch.setattr(bench_passthrough, "run_passthrough_bench", fake_passthrough)

    out = bench.run_pipeline_bench(
        Settings(), 11, 1, rate=1000.0, overrides={"ranker": "popularity"}, work_dir=tmp_path
    )
    json.dumps(out)  # one JSON-able object
    assert [c["rate"] for c in calls] == [None, 1000.0, None]
    assert [c["max_in_flight"] for c in calls] == [bench.DEFAULT_IN_FLIGHT_PER_WORKER, 0, 0]
    assert [c["completion"] for c in calls] == ["lists", "lists", "offsets"]
    assert all(c["overrides"] == {"ranker": "popularity"} for c in calls[:2])
    # Lists off on top of the user's overrides, for the state-only run only.
    assert calls[2]["overrides"] == {"ranker": "popularity", "publish_lists": False}
    for key in (
        "events_per_s",
        "lists_per_s",
        "latency_ms",
        "records_per_event",
        "records_by_topic",
        "paced",
        "state_only",
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
    so = out["state_only"]
    # 11 events committed 2.2 s after the first was sent; the last state write at 1.5 s.
    assert so["events"] == 11 and so["all_committed"] is True and so["uncommitted"] == 0
    assert so["wall_s"] == 2.2 and so["events_per_s"] == 5.0
    assert so["last_write_s"] == 1.5 and so["events_per_s_to_last_write"] == 7.3
    assert so["commit_interval_s"] == bench.COMMIT_INTERVAL_S and so["lists"] == 0
    # (4 + 11 + 11 changelog records - 4 at start-up) / 11 committed events.
    assert so["records_per_event"] == 2.0
    assert set(so["records_by_topic"]) == {"user-state-changelog", "shared-deltas-changelog"}
    assert last_writes == [bench.STATE_CHANGELOGS]  # read only for the state-only run
    assert out["targets"]["state_only_events_per_s"]["measured"] == 5.0
    assert out["targets"]["state_only_events_per_s"]["met"] is False
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
        Settings(), 3, 1, rate=None, passthrough=False, state_only=False, work_dir=tmp_path
    )
    assert rates == [None]
    assert out["paced"] is None and out["passthrough_events_per_s"] is None
    assert out["state_only"] is None
    assert out["targets"]["state_only_events_per_s"]["met"] is None
    assert out["ratio"] is None and out["records_per_event"] is None
    assert any("end offsets" in n for n in out["notes"])

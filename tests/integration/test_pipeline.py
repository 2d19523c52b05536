"""End to end on the real broker: events in → lists out; bad records → dead letters;
a worker restart (clean and crash) loses no event and counts none twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from rs_harness import Topic, event, get_json, item

from recstream.config.settings import Settings
from recstream.evaluation.workers import WorkerProcess

T0 = 1_700_000_000.0


def lists_reflecting(event_ids: set[str]) -> Callable[[list[Any]], bool]:
    return lambda recs: event_ids <= {r["as_of"]["event_id"] for r in recs}


def test_events_in_lists_out_with_as_of_and_explanations(
    start_worker: Callable[..., WorkerProcess], topics: dict[str, Topic]
) -> None:
    topics["items"].send(
        [item(f"i{n}", f"Item {n}", ["jazz" if n % 2 else "space"]) for n in range(6)]
    )
    worker = start_worker()
    # Popular items first (other users), then u1 consumes i1.
    warm = [
        event(f"p{n}", f"p{n}-0", T0 + n, item=f"i{n % 3 + 1}", etype="purchase") for n in range(9)
    ]
    topics["events"].send(warm)
    topics["recommendations"].read_until(lists_reflecting({"p8-0"}), 120, worker=worker)
    # Popularity reaches every worker through a broadcast: wait until a probe list shows it.
    topics["events"].send([event("probe", "probe-0", T0 + 50, item="i5")])
    topics["recommendations"].read_until(
        lambda recs: any(r["user_id"] == "probe" and len(r["items"]) >= 3 for r in recs),
        60,
        worker=worker,
    )
    topics["events"].send(
        [
            event("u1", "u1-0", T0 + 100, item="i1"),
            event("u1", "u1-1", T0 + 101, item="i2", etype="view"),
        ]
    )
    recs = topics["recommendations"].read_until(lists_reflecting({"u1-1"}), 60, worker=worker)
    last = next(r for r in recs if r["user_id"] == "u1" and r["as_of"]["event_id"] == "u1-1")
    assert last["as_of"]["ts"] == T0 + 101
    ids = [i["item_id"] for i in last["items"]]
    assert ids, "the list is empty"
    assert "i1" not in ids and "i2" not in ids, "consumed items must be excluded"
    for entry in last["items"]:
        assert abs(sum(entry["contributions"].values()) - entry["score"]) < 1e-9
    assert last["ranker"] == "fused"
    assert set(last["weights"]) == {
        "semantic_short",
        "semantic_long",
        "covisit",
        "trending",
        "category",
        "freshness",
        "sequence",
        "sasrec",
        "predictive",
    }
    assert last["model_version"] is None  # no trainer runs: the sequence model is absent
    assert abs(sum(last["weights"].values()) - 1.0) < 1e-9
    # The web endpoint serves the latest list for the user.
    served = get_json(f"{worker.url}/recommendations/u1/")
    assert served["user_id"] == "u1" and served["as_of"]["event_id"] == "u1-1"


def test_popularity_baseline_ranks_by_decayed_popularity(
    run_settings: Settings, tmp_path: Any, topics: dict[str, Topic]
) -> None:
    settings = run_settings.model_copy(update={"ranker": "popularity"})
    worker = WorkerProcess(
        settings, data_dir=tmp_path / "pop", log_file=tmp_path / "pop.log"
    ).start()
    try:
        topics["items"].send([item(f"i{n}", f"Item {n}", ["x"]) for n in range(6)])
        # i3: three recent purchases; i1: one old purchase (decayed by 2^-4 over 4 weeks).
        warm = [event("p0", "p0-0", T0 - 28 * 86_400, item="i1", etype="purchase")]
        warm += [
            event(f"p{n}", f"p{n}-0", T0 + n, item="i3", etype="purchase") for n in range(1, 4)
        ]
        warm += [event("p4", "p4-0", T0 + 5, item="i2", etype="click")]
        topics["events"].send(warm)
        topics["recommendations"].read_until(lists_reflecting({"p4-0"}), 120, worker=worker)
        # The probe views i2, which u1 then consumes (excluded): the order i3, i1 stays.
        topics["events"].send([event("probe", "probe-0", T0 + 50, item="i2", etype="view")])
        topics["recommendations"].read_until(
            lambda recs: any(r["user_id"] == "probe" and len(r["items"]) >= 2 for r in recs),
            60,
            worker=worker,
        )
        topics["events"].send([event("u1", "u1-0", T0 + 100, item="i2")])
        recs = topics["recommendations"].read_until(lists_reflecting({"u1-0"}), 60, worker=worker)
        last = next(r for r in recs if r["as_of"]["event_id"] == "u1-0")
        assert last["ranker"] == "popularity" and last["weights"] == {"popularity": 1.0}
        ids = [i["item_id"] for i in last["items"]]
        assert ids[:2] == ["i3", "i1"] and "i2" not in ids  # consumed i2 excluded
    finally:
        worker.stop()


BAD: list[tuple[bytes | None, bytes, str]] = [
    (b"u9", b"{not json", "malformed JSON"),
    (
        b"u9",
        json.dumps({"user_id": 7, "event_type": "click", "item_id": "i1", "ts": T0}).encode(),
        "user_id",
    ),
    (
        b"u9",
        json.dumps({"event_type": "click", "item_id": "i1", "ts": T0}).encode(),
        "user_id: Field required",
    ),
    (
        b"u9",
        json.dumps({"user_id": "u9", "event_type": "teleport", "item_id": "i1", "ts": T0}).encode(),
        "event_type",
    ),
    (
        b"u9",
        json.dumps(
            {"user_id": "u9", "event_type": "click", "item_id": "i1", "ts": 500_000_000}
        ).encode(),
        "before the earliest",
    ),
    (
        b"u9",
        json.dumps(
            {
                "user_id": "u9",
                "event_type": "click",
                "item_id": "i1",
                "ts": time.time() + 10 * 86_400,
            }
        ).encode(),
        "in the future",
    ),
    (
        b"u9",
        json.dumps(
            {"user_id": "u9", "event_type": "search", "ts": T0, "text": "x" * 5000}
        ).encode(),
        "exceeds the limit",
    ),
    (b"u9", b"\xff\xfe\xfa not utf-8", "not valid UTF-8"),
]


def test_bad_records_go_to_dead_letters_and_good_ones_are_all_processed(
    start_worker: Callable[..., WorkerProcess], topics: dict[str, Topic]
) -> None:
    good = [event(f"g{n % 3}", f"good-{n}", T0 + n, item=f"i{n % 4}") for n in range(12)]
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for n, rec in enumerate(good):
        mixed.append(rec)
        if n < len(BAD):
            key, value, _ = BAD[n]
            mixed.append((key, value))
    topics["events"].send(mixed)
    worker = start_worker()
    dead = topics["dead_letters"].read_until(lambda r: len(r) >= len(BAD), 120, worker=worker)
    recs = topics["recommendations"].read_until(
        lists_reflecting({f"good-{n}" for n in range(12)}), 60, worker=worker
    )
    assert len(dead) == len(BAD)
    import base64

    by_value = {base64.b64decode(d["value_b64"]): d for d in dead}
    for _key, value, reason in BAD:
        letter = by_value[value]  # the original bytes are kept
        assert reason in letter["reason"], (reason, letter["reason"])
        assert letter["source_topic"].endswith("events")
        assert letter["offset"] >= 0 and letter["partition"] >= 0
    # One list per good event (debouncing off), none for a bad one.
    reflected = [r["as_of"]["event_id"] for r in recs if r["user_id"].startswith("g")]
    assert sorted(reflected) == sorted(f"good-{n}" for n in range(12))
    assert not any(r["user_id"] == "u9" for r in recs)


def _states(worker: WorkerProcess, users: list[str]) -> dict[str, Any]:
    return {u: get_json(f"{worker.url}/users/{u}/", timeout_s=60) for u in users}


def test_debouncing_bounds_output_and_the_last_list_reflects_the_burst(
    run_settings: Settings, tmp_path: Any, topics: dict[str, Topic]
) -> None:
    settings = run_settings.model_copy(update={"debounce_s": 2.0})
    worker = WorkerProcess(
        settings, data_dir=tmp_path / "deb", log_file=tmp_path / "deb.log"
    ).start()
    try:
        topics["events"].send([event("warm", "warm-0", T0, item="i0")])
        topics["recommendations"].read_until(lists_reflecting({"warm-0"}), 120, worker=worker)
        burst = [event("b", f"b-{n}", T0 + n, item=f"i{n % 5}") for n in range(40)]
        started = time.monotonic()
        topics["events"].send(burst)
        recs = topics["recommendations"].read_until(lists_reflecting({"b-39"}), 60, worker=worker)
        elapsed = time.monotonic() - started
        mine = [r for r in recs if r["user_id"] == "b"]
        # 40 events within a few seconds: at most one list per 2 s, plus the first one.
        assert len(mine) <= 2 + elapsed / 2.0, (len(mine), elapsed)
        assert len(mine) < 40
        assert mine[-1]["as_of"]["event_id"] == "b-39"  # the burst's last event is reflected
    finally:
        worker.stop()


def test_restart_keeps_state_and_neither_loses_nor_double_counts(
    run_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    topics: dict[str, Topic],
    tmp_path: Any,
) -> None:
    users = [f"r{n}" for n in range(4)]
    first = [event(users[n % 4], f"a-{n}", T0 + n, item=f"i{n % 7}") for n in range(40)]
    worker = start_worker(data_dir=tmp_path / "d1")
    topics["events"].send(first)
    topics["recommendations"].read_until(
        lists_reflecting({f"a-{n}" for n in range(36, 40)}), 120, worker=worker
    )
    before = _states(worker, users)
    assert {u: s["event_count"] for u, s in before.items()} == dict.fromkeys(users, 10)
    assert worker.stop() == 0

    # A clean restart on an empty data dir: state is rebuilt from the changelog, unchanged.
    worker = start_worker(data_dir=tmp_path / "d2")
    after = _states(worker, users)
    assert after == before

    # Mid-stream crash: events flow while the worker is killed (SIGKILL) and restarted on the
    # same data dir; some events are re-sent (same event_id) as an at-least-once producer would.
    second = [event(users[n % 4], f"b-{n}", T0 + 100 + n, item=f"i{n % 7}") for n in range(120)]

    def feed() -> None:
        for n in range(0, 120, 10):
            topics["events"].send(second[n : n + 10])
            time.sleep(0.15)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.6)
    worker.kill()
    feeder.join()
    topics["events"].send(second[:30])  # duplicates
    worker = start_worker(data_dir=tmp_path / "d2")
    topics["recommendations"].read_until(
        lists_reflecting({f"b-{n}" for n in range(116, 120)}), 180, worker=worker
    )
    final = _states(worker, users)
    assert {u: s["event_count"] for u, s in final.items()} == dict.fromkeys(users, 40)
    assert {u: s["last_event_id"] for u, s in final.items()} == {
        u: f"b-{116 + n}" for n, u in enumerate(users)
    }


def test_a_worker_joining_loses_no_event_sent_while_it_recovers(
    start_worker: Callable[..., WorkerProcess], topics: dict[str, Topic]
) -> None:
    """Scaling out: events that reach a joining worker while it recovers its tables are
    processed, not dropped. faust-streaming fetches them when it resumes the flow, drops them,
    and on partitions never committed does not seek back (agents/offsets.py). Clicks and
    searches with text (embedded inside the events agent's micro-batch) both go through the
    batched events agent. With two workers, the web endpoints must answer for every user from
    the worker that owns it."""
    topics["items"].send([item(f"i{n}", f"Item {n}", ["jazz"]) for n in range(7)])
    first = start_worker(name="a")
    topics["events"].send([event("warm", "warm-0", T0, item="i0")])
    topics["recommendations"].read_until(lists_reflecting({"warm-0"}), 120, worker=first)

    second = start_worker(name="b")
    deadline = time.monotonic() + 120
    while "Executing _on_partitions_assigned" not in second.log_file.read_text(errors="replace"):
        assert second.alive(), second.log_tail()
        assert time.monotonic() < deadline, "the second worker never got partitions"
        time.sleep(0.1)
    # The second worker is recovering now: every events partition gets records it has never
    # had, so none has a committed offset yet.
    users = [f"j{n}" for n in range(12)]
    burst = []
    for n in range(36):
        user = users[n % 12]
        if n % 3 == 2:
            burst.append(event(user, f"{user}-{n}", T0 + n, item=None, etype="search", text="jazz"))
        else:
            burst.append(event(user, f"{user}-{n}", T0 + n, item=f"i{n % 7}"))
    topics["events"].send(burst)
    last = {user: f"{user}-{24 + n}" for n, user in enumerate(users)}
    topics["recommendations"].read_until(lists_reflecting(set(last.values())), 180, worker=second)
    assert first.alive() and second.alive()
    # Asked of either worker, each answer comes from the worker that owns the user.
    for worker in (first, second):
        states = _states(worker, users)
        assert {u: s["event_count"] for u, s in states.items()} == dict.fromkeys(users, 3)
        assert {u: s["last_event_id"] for u, s in states.items()} == last

"""On the real broker: one user's events sent through two partitioners make one state; hostile
records (a lone surrogate in a search text among them) become dead letters, never a crash.

The second producer is librdkafka itself (confluent-kafka, the library under `kcat`), with its
default partitioner `consistent_random`: CRC32 of the key, where Faust and kafka-python use
murmur2.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer
from rs_harness import Topic, event, get_json

from recstream.agents.routing import owner_partition
from recstream.config.settings import Settings
from recstream.evaluation.workers import WorkerProcess

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def lists_reflecting(event_ids: set[str]) -> Callable[[list[Any]], bool]:
    return lambda recs: event_ids <= {r["as_of"]["event_id"] for r in recs}


def send_with_librdkafka(
    settings: Settings, topic: str, records: list[tuple[bytes, bytes]]
) -> list[int]:
    """Produce with librdkafka's default partitioner; the partitions the records went to."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    partitions: list[int] = []
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            partitions.append(msg.partition())

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0, "librdkafka did not deliver every record"
    assert not errors, errors
    return partitions


def test_one_users_events_through_two_partitioners_make_one_state(
    run_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    topics: dict[str, Topic],
) -> None:
    n = run_settings.events_partitions
    users = [f"user-{k}" for k in range(8)]
    # The test can only fail if the two hashes disagree for some users (for most, by chance).
    split = [u for u in users if zlib.crc32(u.encode()) % n != owner_partition(u.encode(), n)]
    assert len(split) >= 4, split

    worker = start_worker()
    # Three events per user from kafka-python (murmur2, like Faust) ...
    topics["events"].send(
        [event(u, f"{u}-py-{k}", T0 + k, item=f"i{k}") for u in users for k in range(3)]
    )
    # ... and three from librdkafka (CRC32).
    rd_records = [
        event(u, f"{u}-rd-{k}", T0 + 10 + k, item=f"i{k}") for u in users for k in range(3)
    ]
    partitions = send_with_librdkafka(run_settings, topics["events"].name, rd_records)
    assert sorted(partitions) == sorted(zlib.crc32(key) % n for key, _ in rd_records)

    every = {f"{u}-{src}-{k}" for u in users for src in ("py", "rd") for k in range(3)}
    topics["recommendations"].read_until(lists_reflecting(every), 180, worker=worker)
    states = {u: get_json(f"{worker.url}/users/{u}/", timeout_s=60) for u in users}
    assert {u: s["event_count"] for u, s in states.items()} == dict.fromkeys(users, 6)
    assert "Crashed" not in worker.log_file.read_text(errors="replace")


SEARCH = b'{"user_id":"s1","event_type":"search","ts":1700000005,"event_id":"s1-bad",'
HOSTILE: list[tuple[bytes, str]] = [
    (SEARCH + b'"text":"\\ud800 jazz"}', "lone UTF-16 surrogate"),
    (SEARCH.replace(b"s1-bad", b"s1-bad2") + b'"text":"\\udfff"}', "lone UTF-16 surrogate"),
    (b'{"user_id":"s1","user_id":"s2","event_type":"click","item_id":"i1","ts":1700000006}',
     "duplicate key"),
    (b'{"user_id":"s1","event_type":"rate","item_id":"i1","ts":1700000007,"value":NaN}', "NaN"),
    (json.dumps({"user_id": "s\x1f1", "event_type": "click", "item_id": "i1", "ts": T0}).encode(),
     "control characters"),
    (b'{"user_id":"s1","event_type":"click","item_id":"i1","ts":1700000008,"x":'
     + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),
]  # fmt: skip


def test_hostile_records_become_dead_letters_without_a_crash_and_good_ones_are_applied(
    start_worker: Callable[..., WorkerProcess], topics: dict[str, Topic]
) -> None:
    good = [event("s1", f"s1-{k}", T0 + k, item=f"i{k}") for k in range(4)]
    # A valid surrogate pair (an emoji, escaped as JSON allows) is one character: applied.
    good.append(
        (b"s1", b'{"user_id":"s1","event_type":"search","ts":1700000010,"event_id":"s1-emoji",'
                b'"text":"\\ud83c\\udfb7 jazz"}')
    )  # fmt: skip
    mixed: list[tuple[bytes | None, bytes | None]] = []
    for k, rec in enumerate(good):
        mixed.append(rec)
        mixed.extend((b"s1", value) for value, _ in HOSTILE[k * 2 : k * 2 + 2])
    worker = start_worker()
    topics["events"].send(mixed)

    dead = topics["dead_letters"].read_until(lambda r: len(r) >= len(HOSTILE), 180, worker=worker)
    good_ids = {json.loads(value)["event_id"] for _, value in good}
    topics["recommendations"].read_until(lists_reflecting(good_ids), 180, worker=worker)
    state = get_json(f"{worker.url}/users/s1/", timeout_s=60)
    assert state["event_count"] == len(good)

    assert len(dead) == len(HOSTILE)
    by_value = {base64.b64decode(d["value_b64"]): d for d in dead}
    for value, reason in HOSTILE:
        assert reason in by_value[value]["reason"], (reason, by_value[value]["reason"])
    log = worker.log_file.read_text(errors="replace")
    assert "Crashed" not in log, log[-4000:]
    assert worker.alive()

"""The passthrough ceiling of `recstream bench pipeline`: Kafka in → Kafka out, no recommender.

What it measures: how many events per second one Python process on this machine moves through
the same broker when it does nothing but the Kafka work the pipeline cannot avoid. No Faust, no
tables, no model. The same events the pipeline bench replays are first put on a throwaway
topic (as many partitions as the events topic; loading is not timed), then one asyncio process
with an aiokafka consumer in a consumer group reads them in batches (`getmany`), JSON-decodes
each event, and for each one JSON-encodes and produces one record the size of a list (a real
list record of the pipeline run used as the template, its user and `as_of` replaced; without
one, a README-shaped list of `top_k` items, at least 2 KB) to an output topic with as many
partitions as the recommendations topic, keyed by user. The producer uses the pipeline
producer's settings (acks, linger, batch size and compression of the Faust app,
`streams/app.py`); offsets are committed every second as the workers do. Delivery of every
record is awaited at the end.

Reported (`run_passthrough_bench`):

- ``events_per_s``: events / (first batch fetched → last record acknowledged), wall seconds;
  consumer-group start-up is excluded, as the pipeline bench excludes worker start-up;
- ``events``: events put on the input topic; ``read``: events the consumer got;
  ``written``: records on the output topic afterwards (sum of its end offsets); a run that
  reads or writes fewer than ``events`` raises;
- ``record_bytes``: size of each output record; ``template``: ``"list"`` (a real list) or
  ``"synthetic"``;
- ``seconds``, ``partitions`` and ``topics`` (input, output; deleted afterwards), ``producer``
  (the producer settings used).

The producer batch size matters here: with the app's 16 KiB batches only about four list
records fit in a batch, and the loop is bound by produce round trips (the pipeline bench also
reports the loop with 256 KiB batches for comparison).

It is a ceiling, not a model of the pipeline: the input is a backlog (fetches are full), and
the pipeline's agents also write changelogs and repartition topics (see ``records_per_event``
of the pipeline bench); this loop writes exactly one record per event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from recstream.config.settings import Settings
from recstream.models.errors import RecstreamError

#: Size (bytes) the synthetic template aims at when no real list is at hand.
SYNTHETIC_LIST_BYTES = 2048
SIGNALS = ("semantic_short", "semantic_long", "covisit", "trending", "category", "freshness")


def synthetic_list(top_k: int = 10, target_bytes: int = SYNTHETIC_LIST_BYTES) -> dict[str, Any]:
    """A list-shaped record (README's `recommendations` schema) of about `target_bytes`."""
    items = [
        {
            "item_id": f"item-{n:05d}",
            "score": 0.5,
            "title": "",
            "contributions": dict.fromkeys(SIGNALS, 0.083),
            "signals": dict.fromkeys(SIGNALS, 0.5),
        }
        for n in range(top_k)
    ]
    rec: dict[str, Any] = {
        "user_id": "",
        "rec_id": uuid.uuid4().hex,
        "ts": time.time(),
        "ranker": "fused",
        "as_of": {"event_id": "", "ts": 0.0},
        "items": items,
        "weights": dict.fromkeys(SIGNALS, 1 / len(SIGNALS)),
        "top_interests": [{"category": "c", "share": 1.0}],
        "signal_bounds": {"lo": [0.0] * len(SIGNALS), "hi": [1.0] * len(SIGNALS)},
    }
    # Pad the titles (strings cost JSON encoding like any other field) up to the target size.
    short = target_bytes - len(json.dumps(rec).encode())
    if short > 0 and items:
        per_item = short // len(items)
        for it in items:
            it["title"] = "x" * per_item
    return rec


def pipeline_producer_config(settings: Settings) -> dict[str, Any]:
    """aiokafka producer settings matching the Faust app's producer (streams/app.py)."""
    import tempfile

    config: dict[str, Any] = {"acks": "all", "linger_ms": 5, "max_batch_size": 16384}
    try:
        from recstream.streams.app import create_app

        with tempfile.TemporaryDirectory(prefix="recstream-passthrough-") as tmp:
            conf = create_app(settings.model_copy(update={"data_dir": tmp})).conf
            acks = int(conf.producer_acks)
            config = {
                "acks": "all" if acks == -1 else acks,
                "linger_ms": round(float(conf.producer_linger or 0.0) * 1000),
                "max_batch_size": int(conf.producer_max_batch_size),
            }
            if conf.producer_compression_type:
                config["compression_type"] = conf.producer_compression_type
    except Exception:  # the defaults above are the app's as of writing
        pass
    return config


def _create_topics(settings: Settings, specs: dict[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.create_topics(
            [
                NewTopic(name, num_partitions=n, replication_factor=settings.replication_factor)
                for name, n in specs.items()
            ],
            timeout_ms=15_000,
        )
    finally:
        admin.close()


def _delete_topics(settings: Settings, names: Sequence[str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        present = [t for t in admin.list_topics() if t in set(names)]
        if present:
            admin.delete_topics(present)
    finally:
        admin.close()


def end_offset_sum(settings: Settings, topic: str) -> int:
    """Records ever written to `topic`: the sum of its partitions' end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return int(sum(consumer.end_offsets(parts).values())) if parts else 0
    finally:
        consumer.close()


def _load(settings: Settings, topic: str, events: Sequence[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=20)
    try:
        failures: list[BaseException] = []
        for ev in events:
            producer.send(
                topic, key=str(ev["user_id"]).encode(), value=json.dumps(ev).encode()
            ).add_errback(failures.append)
        producer.flush()
        if failures:
            raise RecstreamError(f"{len(failures)} events failed to load: {failures[0]!r}")
    finally:
        producer.close()


async def _loop(
    settings: Settings,
    group: str,
    in_topic: str,
    out_topic: str,
    n: int,
    template: dict[str, Any],
    producer_config: dict[str, Any],
    timeout_s: float,
) -> tuple[int, float]:
    """Consume `n` events, produce one list-sized record each; (events read, seconds)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        in_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=1000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **producer_config)
    await producer.start()
    await consumer.start()
    read = 0
    started: float | None = None
    deadline = time.monotonic() + timeout_s
    futures: list[asyncio.Future[Any]] = []
    try:
        while read < n:
            if time.monotonic() > deadline:
                raise RecstreamError(
                    f"passthrough read {read} of {n} events within {timeout_s:.0f} s"
                )
            batch = await consumer.getmany(timeout_ms=200)
            if batch and started is None:
                started = time.monotonic()
            for messages in batch.values():
                for msg in messages:
                    event = json.loads(msg.value)
                    out = dict(template)
                    out["user_id"] = event["user_id"]
                    out["as_of"] = {"event_id": event.get("event_id"), "ts": event.get("ts")}
                    out["ts"] = time.time()
                    futures.append(
                        await producer.send(out_topic, json.dumps(out).encode(), key=msg.key)
                    )
                    read += 1
        await producer.flush()
        results = await asyncio.gather(*futures, return_exceptions=True)
        seconds = time.monotonic() - (started or time.monotonic())
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RecstreamError(f"{len(errors)} passthrough records failed: {errors[0]!r}")
        await consumer.commit()
        return read, max(seconds, 1e-9)
    finally:
        await consumer.stop()
        await producer.stop()


def run_passthrough_bench(
    settings: Settings,
    events: Sequence[dict[str, Any]],
    *,
    list_record: dict[str, Any] | None = None,
    producer_overrides: dict[str, Any] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Run the passthrough loop over `events` (wire dicts with user_id); see the module docstring.

    `list_record` is a real published list used as the output template (None: a synthetic
    list of `top_k` items). `producer_overrides` replace the app's producer settings (a
    diagnostic variant; the reported ceiling uses the app's). Topics are throwaway
    (``pt<hex>-in`` / ``-out``) and deleted afterwards.
    """
    if not events:
        raise RecstreamError("the passthrough needs at least one event")
    tag = f"pt{uuid.uuid4().hex[:8]}"
    in_topic, out_topic = f"{tag}-in", f"{tag}-out"
    template = dict(list_record) if list_record else synthetic_list(settings.top_k)
    record_bytes = len(json.dumps(template).encode())
    producer_config = {**pipeline_producer_config(settings), **(producer_overrides or {})}
    _create_topics(
        settings,
        {in_topic: settings.events_partitions, out_topic: settings.recommendations_partitions},
    )
    try:
        _load(settings, in_topic, events)
        read, seconds = asyncio.run(
            _loop(
                settings,
                tag,
                in_topic,
                out_topic,
                len(events),
                template,
                producer_config,
                timeout_s,
            )
        )
        written = end_offset_sum(settings, out_topic)
    finally:
        _delete_topics(settings, [in_topic, out_topic])
    if read != len(events) or written != len(events):
        raise RecstreamError(f"passthrough read {read} and wrote {written} of {len(events)} events")
    return {
        "events_per_s": round(read / seconds, 1),
        "events": len(events),
        "read": read,
        "written": written,
        "seconds": round(seconds, 3),
        "record_bytes": record_bytes,
        "template": "list" if list_record else "synthetic",
        "partitions": {
            "in": settings.events_partitions,
            "out": settings.recommendations_partitions,
        },
        "topics": {"in": in_topic, "out": out_topic},
        "producer": producer_config,
    }

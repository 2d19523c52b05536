"""Integration tier: a real Kafka broker (started by `make test`, or RECSTREAM_BOOTSTRAP) and
real worker processes. Each test gets throwaway topic names and app id, deleted afterwards."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from recstream.admin import delete_topics_with_prefix, ensure_topics
from recstream.config.settings import Settings
from recstream.workers import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker() -> Settings:
    settings = Settings()
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000
        )
        admin.list_topics()
        admin.close()
    except (KafkaError, OSError, ValueError) as exc:
        pytest.fail(
            f"no Kafka broker answers at {settings.bootstrap_servers} ({exc}); integration "
            "tests need one: run them with `make test`, or start one with "
            "`recstream kafka start`, or set RECSTREAM_BOOTSTRAP"
        )
    return settings


@pytest.fixture
def run_settings(broker: Settings, tmp_path: Path) -> Iterator[Settings]:
    tag = f"it{uuid.uuid4().hex[:8]}"
    settings = Settings(
        bootstrap=broker.bootstrap_servers,
        app_id=tag,
        topic_prefix=f"{tag}-",
        events_partitions=4,
        items_partitions=2,
        recommendations_partitions=4,
        data_dir=tmp_path / "worker",
        debounce_s=0.0,
        popular_snapshot_interval_s=0.05,
        max_payload_bytes=4096,
        log_level="info",
    )
    ensure_topics(settings)
    yield settings
    delete_topics_with_prefix(settings, tag)


@pytest.fixture
def start_worker(run_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(data_dir: Path | None = None, name: str = "w") -> WorkerProcess:
        worker = WorkerProcess(
            run_settings,
            data_dir=data_dir or tmp_path / f"data-{name}-{len(started)}",
            log_file=tmp_path / f"{name}-{len(started)}.log",
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.alive():
            worker.stop()


class Topic:
    """Produce to and read from one topic of a test run."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.settings = settings
        self.name = name

    def send(self, records: list[tuple[bytes | None, bytes | None]]) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all")
        for key, value in records:
            producer.send(self.name, key=key, value=value)
        producer.flush()
        producer.close()

    def read_until(
        self,
        done: Callable[[list[Any]], bool],
        timeout_s: float,
        decode: Callable[[bytes], Any] = json.loads,
        worker: WorkerProcess | None = None,
    ) -> list[Any]:
        """Every record from the start, until `done(records)` or the timeout."""
        consumer = KafkaConsumer(
            self.name,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=500,
        )
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                for msg in consumer:
                    out.append(decode(msg.value))
                if done(out):
                    return out
                if worker is not None and not worker.alive():
                    raise AssertionError(f"worker died:\n{worker.log_tail()}")
        finally:
            consumer.close()
        log = f"\nworker log:\n{worker.log_tail()}" if worker is not None else ""
        raise AssertionError(f"timed out after {timeout_s:.0f} s with {len(out)} records{log}")


@pytest.fixture
def topics(run_settings: Settings) -> dict[str, Topic]:
    s = run_settings
    return {
        "events": Topic(s, s.topic(s.events_topic)),
        "items": Topic(s, s.topic(s.items_topic)),
        "recommendations": Topic(s, s.topic(s.recommendations_topic)),
        "dead_letters": Topic(s, s.topic(s.dead_letter_topic)),
    }


def get_json(url: str, timeout_s: float = 30.0) -> Any:
    """GET a worker endpoint, retrying while the worker starts up or recovers."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"GET {url} failed: {last}")


def event(
    user: str, eid: str, ts: float, item: str | None = "i1", etype: str = "click", **extra: Any
) -> tuple[bytes, bytes]:
    body: dict[str, Any] = {"user_id": user, "event_type": etype, "ts": ts, "event_id": eid}
    if item is not None:
        body["item_id"] = item
    body.update(extra)
    return user.encode(), json.dumps(body).encode()


def item(item_id: str, title: str, categories: list[str]) -> tuple[bytes, bytes]:
    body = {
        "item_id": item_id,
        "title": title,
        "text": f"{title} description",
        "categories": categories,
        "ts": 1_700_000_000,
    }
    return item_id.encode(), json.dumps(body).encode()

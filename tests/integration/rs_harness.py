"""Helpers of the integration tier: produce to and read from a real topic, call a worker."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from recstream.config.settings import Settings
from recstream.evaluation.workers import WorkerProcess


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

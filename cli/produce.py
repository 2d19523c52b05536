"""Pushing events and catalog items to Kafka (kafka-python), validated before sending.

Each JSON line is checked with the same validation the worker applies; a bad line is reported
with its line number and reason and is not sent (unless `send_invalid`, used to exercise the
dead-letter path). Events are keyed by user_id, items by item_id; an item line
`{"item_id": "x", "deleted": true}` sends a tombstone (null value) that deletes the item.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.streams.codecs import Limits, encode_json, load_record
from recstream.streams.producer import Kind, check_record, make_producer


@dataclass
class ProduceReport:
    sent: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0


def read_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                yield lineno, line


def produce(
    settings: Settings,
    kind: Kind,
    records: Iterable[tuple[int, Any]],
    *,
    rate: float | None = None,
    send_invalid: bool = False,
    progress: Any = None,
    limits: Limits | None = None,
) -> ProduceReport:
    """Send `(line number, record)` pairs (a dict, or a raw JSON line) to the kind's topic.

    `rate`: at most this many records per second (None: as fast as possible).
    `progress`: an object with `advance()` (a rich progress task wrapper), or None.
    """
    limits = limits or Limits.from_settings(settings)
    topic = settings.topic(settings.events_topic if kind == "events" else settings.items_topic)
    producer = make_producer(settings)
    report = ProduceReport()
    started = time.monotonic()
    try:
        for i, (lineno, record) in enumerate(records):
            raw: bytes | None
            try:
                data = load_record(record, limits) if isinstance(record, str | bytes) else record
                key, raw = check_record(kind, data, limits)
            except (ValidationError, UnicodeError) as exc:
                reason = str(exc) if isinstance(exc, ValidationError) else f"malformed JSON: {exc}"
                report.invalid.append((lineno, reason))
                if not send_invalid:
                    continue
                key = ""
                raw = (
                    record.encode("utf-8", "surrogateescape")
                    if isinstance(record, str)
                    else (record if isinstance(record, bytes) else encode_json(record))
                )
            producer.send(topic, key=key.encode("utf-8") if key else None, value=raw)
            report.sent += 1
            if progress is not None:
                progress.advance()
            if rate:
                # Pace against the schedule, not per record, so bursts average out.
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()
    report.elapsed_s = time.monotonic() - started
    return report

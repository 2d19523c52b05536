"""Decoding raw Kafka bytes into validated records, and dead letters for those that fail.

The worker consumes `events` and `items` as raw bytes and calls these functions, so that
every failure (size, encoding, JSON syntax, schema, time range) becomes a
`models.errors.ValidationError` with a human-readable reason, never an exception that stops
the stream.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import pydantic

from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.streams.records import DeadLetter
from recstream.streams.schemas import EventIn, ItemIn

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Limits:
    """Validation limits (from Settings): bytes, epoch seconds, seconds, characters."""

    max_payload_bytes: int = 65_536
    min_event_ts: float = 631_152_000.0
    max_future_s: float = 86_400.0
    max_text_chars: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_payload_bytes=settings.max_payload_bytes,
            min_event_ts=settings.min_event_ts,
            max_future_s=settings.max_future_s,
            max_text_chars=settings.max_text_chars,
        )


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err.get("loc", ())) or "record"
        msg = err.get("msg", "invalid")
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def _load_json(raw: bytes | None, limits: Limits) -> dict[str, Any]:
    if raw is None or len(raw) == 0:
        raise ValidationError("empty payload")
    if len(raw) > limits.max_payload_bytes:
        raise ValidationError(
            f"payload of {len(raw)} bytes exceeds the limit of {limits.max_payload_bytes} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"payload is not valid UTF-8 (byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ValidationError("malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ValidationError(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
    return data


def clean_text(text: str, max_chars: int) -> str:
    """Control characters replaced by spaces, whitespace collapsed, cut at max_chars."""
    return " ".join(_CONTROL.sub(" ", text).split())[:max_chars]


def validate_event(data: dict[str, Any], limits: Limits, now: float | None = None) -> EventIn:
    """Schema and time-range checks for one event (a decoded JSON object)."""
    try:
        event = EventIn.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(_describe(exc)) from exc
    except (OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise ValidationError(f"invalid event: {exc}") from exc
    now = time.time() if now is None else now
    if event.ts < limits.min_event_ts:
        raise ValidationError(
            f"ts {event.ts:.0f} is before the earliest accepted event time "
            f"{limits.min_event_ts:.0f} (1990-01-01)"
        )
    if event.ts > now + limits.max_future_s:
        raise ValidationError(
            f"ts {event.ts:.0f} is {(event.ts - now) / 86_400:.1f} days in the future "
            f"(limit {limits.max_future_s / 86_400:.1f} days; epoch seconds, not milliseconds)"
        )
    if event.text is not None:
        event = event.model_copy(update={"text": clean_text(event.text, limits.max_text_chars)})
    return event


def decode_event(raw: bytes | None, limits: Limits, now: float | None = None) -> EventIn:
    """Raw bytes of an `events` record → a validated event; raises ValidationError."""
    return validate_event(_load_json(raw, limits), limits, now)


def decode_item(raw: bytes, limits: Limits) -> ItemIn:
    """Raw bytes of an `items` record → a validated item; raises ValidationError.

    A null value (tombstone) is handled by the caller before decoding.
    """
    data = _load_json(raw, limits)
    try:
        item = ItemIn.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(_describe(exc)) from exc
    except (OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise ValidationError(f"invalid item: {exc}") from exc
    return item.model_copy(
        update={
            "title": clean_text(item.title, limits.max_text_chars),
            "text": clean_text(item.text, limits.max_text_chars),
        }
    )


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: Exception,
) -> DeadLetter:
    """The dead-letter record for a failed input record, keeping its original bytes."""
    value_text: str | None = None
    if value is not None:
        try:
            value_text = value.decode("utf-8")[:2048]
        except UnicodeDecodeError:
            value_text = None
    return DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        reason=str(error),
        error=type(error).__name__,
        key_b64=_b64(key),
        value_b64=_b64(value),
        value_text=value_text,
        size=0 if value is None else len(value),
        ts=time.time(),
    )


def encode_json(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the project's wire format."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

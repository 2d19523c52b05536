"""The kafka-python producer the tools and the replay send with, and the check a record passes
before it is sent (the same validation the worker applies)."""

from __future__ import annotations

from typing import Any, Literal

from kafka import KafkaProducer

from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.streams.codecs import Limits, encode_json, validate_event
from recstream.streams.schemas import ItemIn

Kind = Literal["events", "items"]


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "linger_ms": 5,
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,  # keeps per-key order under retries
    }
    config.update(overrides)
    return KafkaProducer(**config)


def check_record(kind: Kind, data: Any, limits: Limits) -> tuple[str, bytes | None]:
    """(key, value bytes or None for a tombstone) for a valid record; raises ValidationError."""
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
    if kind == "events":
        event = validate_event(data, limits)
        return event.user_id, encode_json(data)
    item_id = data.get("item_id")
    if data.get("deleted") is True:
        if not isinstance(item_id, str) or not item_id:
            raise ValidationError("a deletion needs a string item_id")
        return item_id, None
    import pydantic

    try:
        item = ItemIn.model_validate(data)
    except pydantic.ValidationError as exc:
        from recstream.streams.codecs import _describe

        raise ValidationError(_describe(exc)) from exc
    return item.item_id, encode_json(data)

"""Decoding and validation of raw event/item bytes: every failure has a readable reason."""

from __future__ import annotations

import base64
import json

import pytest

from recstream.models.errors import ValidationError
from recstream.streams.codecs import Limits, dead_letter, decode_event, decode_item

NOW = 1_700_000_000.0
LIMITS = Limits(max_payload_bytes=2048)


def raw(**fields: object) -> bytes:
    base: dict[str, object] = {"user_id": "u1", "event_type": "click", "item_id": "i1", "ts": NOW}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_valid_event_decodes() -> None:
    ev = decode_event(raw(value=None, event_id="e1", rec_id="r1"), LIMITS, now=NOW)
    assert (ev.user_id, ev.event_type, ev.item_id, ev.ts, ev.event_id) == (
        "u1",
        "click",
        "i1",
        NOW,
        "e1",
    )


def test_iso_timestamp_is_event_time_in_seconds() -> None:
    ev = decode_event(raw(ts="2023-11-14T22:13:20Z"), LIMITS, now=NOW)
    assert ev.ts == NOW
    naive = decode_event(raw(ts="2023-11-14T22:13:20"), LIMITS, now=NOW)
    assert naive.ts == NOW  # a naive time is UTC


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe\x00garbage", "not valid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b"", "empty payload"),
        (raw(user_id=...), "user_id: Field required"),
        (raw(user_id=42), "user_id: Input should be a valid string"),
        (raw(event_type="teleport"), "event_type"),
        (raw(ts=100.0), "before the earliest accepted event time"),
        (raw(ts=NOW + 5 * 86_400), "days in the future"),
        (raw(ts=NOW * 1000), "days in the future"),
        (raw(ts=True), "not a boolean"),
        (raw(ts="yesterday"), "neither epoch seconds nor ISO-8601"),
        (raw(item_id=...), "needs an item_id"),
        (raw(event_type="rate"), "needs a value"),
        (raw(event_type="search", item_id=..., text="   "), "non-empty text"),
        (raw(value="high"), "value"),
        (raw(user_id=" padded "), "whitespace or control"),
        (raw(text="x" * 4000), "exceeds the limit of 2048 bytes"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason.replace("(", r"\(")):
        decode_event(payload, LIMITS, now=NOW)


def test_search_needs_no_item_and_text_is_cleaned() -> None:
    ev = decode_event(
        raw(event_type="search", item_id=..., text="jazz\x00  piano\n\tbars"), LIMITS, now=NOW
    )
    assert ev.item_id is None
    assert ev.text == "jazz piano bars"


def test_items_decode_with_description_alias_and_defaults() -> None:
    item = decode_item(
        json.dumps({"item_id": "m1", "title": "Alien", "description": "space\x07horror"}).encode(),
        LIMITS,
    )
    assert (item.item_id, item.title, item.text, item.categories) == (
        "m1",
        "Alien",
        "space horror",
        [],
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"title": "x"}', "item_id: Field required"),
        (b'{"item_id": "x", "title": ""}', "title"),
        (b'{"item_id": "x", "title": "t", "categories": "drama"}', "categories"),
    ],
)
def test_bad_items_are_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        decode_item(payload, LIMITS)


def test_dead_letter_keeps_original_bytes_and_position() -> None:
    value = b"\xff{bad"
    record = dead_letter(
        source_topic="events", partition=3, offset=42, key=b"u1", value=value,
        error=ValidationError("payload is not valid UTF-8 (byte 0)"),
    )  # fmt: skip
    assert base64.b64decode(record.value_b64 or "") == value
    assert base64.b64decode(record.key_b64 or "") == b"u1"
    assert (record.source_topic, record.partition, record.offset) == ("events", 3, 42)
    assert record.value_text is None and record.size == len(value)
    assert "UTF-8" in record.reason and record.error == "ValidationError"
    # The record is plain JSON for any consumer, without Faust metadata.
    assert "__faust" not in json.loads(record.dumps())

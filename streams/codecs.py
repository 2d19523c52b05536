"""Decoding raw Kafka bytes into validated records, and dead letters for those that fail.

The worker consumes `events` and `items` as raw bytes and calls these functions, so that
every failure (size, encoding, JSON syntax, schema, time range) becomes a
`models.errors.ValidationError` with a human-readable reason, never an exception that stops
the stream. Producers are untrusted: whatever bytes arrive, `decode_event` and `decode_item`
return a valid record or raise ValidationError, and `dead_letter` returns a record that
serializes (a hypothesis test holds both to that).

Beyond the schema, the JSON itself is held to RFC 8259 and to what the rest of the pipeline
can carry:

* **Lone UTF-16 surrogates are rejected**, not replaced. JSON text may spell one as an escape
  (``"\\ud800"``) although it is no Unicode character; Python decodes it into a string that
  cannot be encoded as UTF-8 again, so it used to crash the events agent in
  `model_dump_json` (the record vanished with no dead letter). Sanitising (U+FFFD) was
  rejected: in an id it would alias distinct ids (``"u\\ud800"`` and ``"u\\udbff"`` would become
  one user), and in a text it would store a query the producer never sent. A rejected
  record keeps its original bytes in the dead letter, so the producer's bug can be fixed.
  A valid surrogate *pair* (``"\\ud83d\\ude00"``, an emoji) is one character and passes.
* ``NaN``, ``Infinity`` and ``-Infinity`` literals (Python's json accepts them, JSON does
  not), numbers that overflow a float, and integers outside 64 bits are rejected: they have
  no place in a time, a rating or an attribute, and other consumers' parsers refuse them.
* Duplicate keys in an object are rejected: parsers disagree on which one wins, so a
  producer-side filter and this worker could read different user ids from the same bytes.
* Nesting deeper than `MAX_JSON_DEPTH` is rejected, whatever the interpreter's recursion
  limit (our schemas need two levels).
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import pydantic

from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.models.item_text import clean_text as item_clean_text
from recstream.streams.records import DeadLetter
from recstream.streams.schemas import EventIn, ItemIn, escape_unprintable

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted (an event is 1 level, an item 2)."""

_INT64 = 2**63
# A \u escape of a surrogate code point (D800-DFFF). Only a payload holding one can decode
# to a string with a surrogate (strict UTF-8 decoding never yields one), so the tree walk
# that finds lone ones is skipped for every other payload.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")

_TOO_DEEP = f"malformed JSON: nested too deeply (more than {MAX_JSON_DEPTH} levels)"

DEAD_LETTER_VALUE_BYTES = 256 * 1024
"""Original value bytes a dead letter keeps; `size` is always the full size. Base64 and the
rest of the record must stay under the producer's and broker's 1 MB message limit, or the
dead letter itself would fail to send."""
DEAD_LETTER_KEY_BYTES = 4096
"""Original key bytes a dead letter keeps (keys are ids; a hostile key can be ~1 MB)."""
DEAD_LETTER_TEXT_CHARS = 2048
"""Characters of `value_text` (the value repeated for people, when it is valid UTF-8)."""
DEAD_LETTER_REASON_CHARS = 2048


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
    # Locations can hold the producer's own keys (extra fields of a nested object).
    return escape_unprintable("; ".join(parts))


def _show(text: str, limit: int = 64) -> str:
    """A producer's string for a reason: unprintable characters escaped, cut at `limit`."""
    shown = escape_unprintable(text[:limit])
    return shown + "…" if len(text) > limit else shown


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValidationError(f"malformed JSON: duplicate key {_show(key)!r}")
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise ValidationError(f"malformed JSON: {name} is not a JSON value (RFC 8259)")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError(f"number {_show(text, 24)} is out of range of a 64-bit float")
    return value


def _int(text: str) -> int:
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValidationError(
            f"integer of {len(text.lstrip('-'))} digits is out of the 64-bit range"
        )
    return value


def _check_tree(data: Any, find_surrogates: bool) -> None:
    """Depth limit and lone surrogates, walked with an explicit stack (no recursion)."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(data, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            if find_surrogates and isinstance(node, str):
                _no_surrogate(node, path)
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(_TOO_DEEP)
        for key, value in items:
            if find_surrogates and isinstance(key, str):
                _no_surrogate(key, (*path, key), is_key=True)
            if isinstance(value, dict | list | str):
                stack.append((value, depth + 1, (*path, key)))


def _no_surrogate(text: str, path: tuple[str | int, ...], is_key: bool = False) -> None:
    match = _SURROGATE.search(text)
    if match is None:
        return
    where = ".".join(_show(str(p)) for p in path) or "record"
    what = "key" if is_key else "string"
    raise ValidationError(
        f"{where}: {what} contains a lone UTF-16 surrogate \\u{ord(match.group()):04x} at "
        f"character {match.start()} (not Unicode; send UTF-8 or a surrogate pair)"
    )


def load_record(raw: bytes | str, limits: Limits) -> dict[str, Any]:
    """A raw JSON record (bytes, or text read with errors="surrogateescape") → its object,
    with the checks a worker applies before it dead-letters a record: size, UTF-8, duplicate
    keys, NaN/Infinity, depth, lone surrogates. The producer CLI refuses what a worker would
    refuse, with the same reason."""
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    return _load_json(data, limits)


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
        data = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except ValidationError:
        raise  # raised by one of the hooks above, with its own reason
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise ValidationError(_TOO_DEEP) from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ValidationError(f"malformed JSON: {_show(str(exc), 200)}") from exc
    _check_tree(data, find_surrogates=_SURROGATE_ESCAPE.search(text) is not None)
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
    return data


def clean_text(text: str | None, max_chars: int) -> str:
    """models/item_text.py's clean_text (the one definition: control characters as spaces,
    invisible ones dropped, NFC, whitespace collapsed), cut at max_chars."""
    return item_clean_text(text)[:max_chars]


def validate_event(data: dict[str, Any], limits: Limits, now: float | None = None) -> EventIn:
    """Schema and time-range checks for one event (a decoded JSON object)."""
    try:
        event = EventIn.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(_describe(exc)) from exc
    except (OverflowError, ValueError, TypeError, RecursionError) as exc:
        raise ValidationError(f"invalid event: {_show(str(exc), 200)}") from exc
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
    """Raw bytes of an `events` record → a validated event; raises ValidationError.

    Every string of a returned event encodes as UTF-8 (no lone surrogate), so
    `model_dump_json()` and Faust's JSON serializer cannot fail on it.
    """
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
        raise ValidationError(f"invalid item: {_show(str(exc), 200)}") from exc
    return item.model_copy(
        update={
            "title": clean_text(item.title, limits.max_text_chars),
            "text": clean_text(item.text, limits.max_text_chars),
        }
    )


def _b64(raw: bytes | None, limit: int) -> str | None:
    return None if raw is None else base64.b64encode(raw[:limit]).decode("ascii")


def _reason(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # an exception whose __str__ fails must not lose the record
        text = f"{type(error).__name__} (its message could not be rendered)"
    return _show(text, DEAD_LETTER_REASON_CHARS)


def dead_letter(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
) -> DeadLetter:
    """The dead-letter record for a failed input record, keeping its original bytes.

    Never raises, whatever the bytes, and the record always serializes: `value_text` is set
    only for valid UTF-8 (strict decoding yields no surrogates), the reason has unprintable
    characters escaped, and the kept bytes are bounded (`DEAD_LETTER_VALUE_BYTES`,
    `DEAD_LETTER_KEY_BYTES`) so that the dead letter fits in a Kafka message; `size` is the
    full value size, so a truncated value shows as fewer bytes than `size`.
    """
    value_text: str | None = None
    if value is not None:
        try:
            value_text = value.decode("utf-8")[:DEAD_LETTER_TEXT_CHARS]
        except UnicodeDecodeError:
            value_text = None
    return DeadLetter(
        source_topic=escape_unprintable(source_topic),
        partition=partition,
        offset=offset,
        reason=_reason(error),
        error=type(error).__name__,
        key_b64=_b64(key, DEAD_LETTER_KEY_BYTES),
        value_b64=_b64(value, DEAD_LETTER_VALUE_BYTES),
        value_text=value_text,
        size=0 if value is None else len(value),
        ts=time.time(),
    )


def encode_json(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the project's wire format.

    A lone surrogate (from a JSON line that escaped one, or from bytes read with
    `errors="surrogateescape"`) cannot be UTF-8: such a record is written with ASCII escapes
    instead, so that the worker rejects it with its reason rather than this call raising.
    """
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":")).encode("ascii")

"""Decoding and validation of raw event/item bytes: every failure has a readable reason."""

from __future__ import annotations

import base64
import json

import pytest
from faust.serializers import codecs as faust_codecs
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import ValidationError
from recstream.streams.codecs import (
    DEAD_LETTER_KEY_BYTES,
    DEAD_LETTER_VALUE_BYTES,
    Limits,
    dead_letter,
    decode_event,
    decode_item,
    encode_json,
)
from recstream.streams.schemas import EventIn

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


# --- Hostile producers -------------------------------------------------------------------
# What a producer in any language, buggy or malicious, can put on the wire. Each must come
# out as a ValidationError with a reason, never as another exception (which would crash the
# agent) and never as an event that a later serializer cannot write.

BASE_SEARCH = b'{"user_id":"u1","event_type":"search","ts":1700000000,"text":'
SURROGATE_SEARCH = BASE_SEARCH + b'"\\ud800 jazz"}'
WIDE = Limits(max_payload_bytes=32_768)  # room for 5000 brackets or 4400 digits


def extra(fragment: bytes, **fields: object) -> bytes:
    """A valid event's bytes with `fragment` (raw JSON: `"key": value`) added at the end."""
    return raw(**fields)[:-1] + b", " + fragment + b"}"


HOSTILE = {
    # invalid Unicode
    "lone-high-surrogate": (
        SURROGATE_SEARCH,
        r"text: string contains a lone UTF-16 surrogate \\ud800",
    ),
    "lone-low-surrogate": (
        BASE_SEARCH + b'"jazz \\udfff"}',
        r"lone UTF-16 surrogate \\udfff at character 5",
    ),
    "reversed-pair": (BASE_SEARCH + b'"\\ude00\\ud83d"}', "lone UTF-16 surrogate"),
    "surrogate-in-id": (
        raw(user_id="u\ud800"),
        r"user_id: string contains a lone UTF-16 surrogate",
    ),
    "surrogate-in-ignored-field": (raw(note="\udc80"), r"note: string contains a lone"),
    "surrogate-in-key": (b'{"\\ud800":1,' + raw()[1:], "key contains a lone UTF-16 surrogate"),
    "cesu8-surrogate-bytes": (BASE_SEARCH + b'"\xed\xa0\x80"}', "not valid UTF-8"),
    "overlong-utf8": (BASE_SEARCH + b'"\xc0\xaf"}', "not valid UTF-8"),
    "truncated-utf8": (BASE_SEARCH + b'"\xe6\x97"}', "not valid UTF-8"),
    "latin1": (raw(text="x").replace(b'"x"', b'"caf\xe9"'), "not valid UTF-8"),
    "utf16-bom": ('{"user_id": "u1"}'.encode("utf-16"), "not valid UTF-8"),
    "utf8-bom": (b"\xef\xbb\xbf" + raw(), "BOM"),
    # JSON that Python's json accepts but JSON does not, or that is ambiguous
    "nan-literal": (extra(b'"value": NaN', event_type="rate"), "NaN is not a JSON value"),
    "infinity-literal": (extra(b'"x": -Infinity'), "-Infinity is not a JSON value"),
    "float-overflow": (
        extra(b'"value": 1e400', event_type="rate"),
        "out of range of a 64-bit float",
    ),
    "int-over-64-bits": (raw(x=2**64), "out of the 64-bit range"),
    "int-over-4300-digits": (extra(b'"x": ' + b"9" * 4400), "malformed JSON"),
    "duplicate-user-id": (b'{"user_id":"u1",' + raw(user_id="u2")[1:], "duplicate key 'user_id'"),
    "duplicate-nested": (extra(b'"x": {"a": 1, "a": 2}'), "duplicate key 'a'"),
    "nested-33-levels": (extra(b'"x": ' + b"[" * 32 + b"]" * 32), "nested too deeply"),
    "nested-5000-levels": (extra(b'"x": ' + b"[" * 5000 + b"]" * 5000), "nested too deeply"),
    "trailing-data": (raw() + b" {}", "Extra data"),
    "two-documents": (raw() + b"\n" + raw(), "Extra data"),
    "only-whitespace": (b" \n\t ", "malformed JSON"),
    "json-null": (b"null", "expected a JSON object, got NoneType"),
    "json-string": (b'"u1"', "expected a JSON object, got str"),
    "json-number": (b"1700000000", "expected a JSON object, got int"),
    # ids: control characters, the composite-id separator, invisible characters, sizes
    "nul-in-id": (raw(user_id="u\x001"), r"user_id: .*control characters \(\\x00 at character 1\)"),
    "sep-in-id": (raw(item_id="i\x1f1"), r"item_id: .*\(\\x1f at character 1\)"),
    "newline-in-id": (raw(event_id="e\n1"), r"event_id: .*\(\\n at character 1\)"),
    "tab-in-id": (raw(user_id="u\t1"), r"\\t at character 1"),
    "c1-control-in-id": (raw(user_id="u\x851"), r"\\x85 at character 1"),
    "zero-width-space-in-id": (raw(user_id="u\u200b1"), r"\\u200b at character 1"),
    "bidi-override-in-id": (raw(rec_id="r\u202e1"), r"rec_id: .*\\u202e"),
    "line-separator-in-id": (raw(user_id="u\u20281"), r"\\u2028"),
    "empty-id": (raw(user_id=""), "user_id: String should have at least 1 character"),
    "oversized-id": (raw(user_id="u" * 257), "user_id: String should have at most 256 characters"),
    "oversized-text": (
        raw(event_type="search", item_id=..., text="é" * 17_000),
        "exceeds the limit of 32768 bytes",
    ),
    "oversized-padding": (raw(pad=" " * 33_000), "exceeds the limit"),
    # wrong types
    "id-as-list": (raw(user_id=["u1"]), "user_id: Input should be a valid string"),
    "id-as-object": (raw(item_id={"id": "i1"}), "item_id: Input should be a valid string"),
    "type-as-number": (raw(event_type=3), "event_type"),
    "text-as-number": (
        raw(event_type="search", item_id=..., text=5),
        "text: Input should be a valid string",
    ),
    "value-as-bool": (raw(event_type="rate", value=True), "not a boolean"),
    "value-nan-string": (
        raw(event_type="rate", value="nan"),
        "value: Input should be a finite number",
    ),
    "value-inf-string": (raw(event_type="rate", value="-inf"), "finite"),
    "ts-nan-string": (raw(ts="NaN"), "ts must be finite"),
    "ts-as-list": (raw(ts=[NOW]), "ts must be epoch seconds or an ISO-8601 string"),
    "ts-iso-out-of-range": (raw(ts="2023-13-45T99:00:00Z"), "neither epoch seconds nor ISO-8601"),
    "ts-year-9999": (raw(ts="9999-12-31T23:59:59Z"), "days in the future"),
    "ts-ns": (raw(ts=int(NOW * 1e9)), "days in the future"),
}


@pytest.mark.parametrize(("payload", "reason"), HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_events_are_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason) as caught:
        decode_event(payload, WIDE, now=NOW)
    # The reason itself is printable and UTF-8 (it goes into a dead letter and the log).
    str(caught.value).encode("utf-8")
    assert str(caught.value).isprintable()


@pytest.mark.parametrize(
    "text",
    ["\U0001f600 jazz", "caf\u00e9", "\u65e5\u672c", "a\u200db"],
    ids=["surrogate-pair", "latin", "cjk", "zwj-in-text"],
)
def test_valid_unicode_in_text_is_kept(text: str) -> None:
    payload = BASE_SEARCH + json.dumps(text).encode() + b"}"  # ASCII escapes, pairs for emoji
    ev = decode_event(payload, LIMITS, now=NOW)
    assert ev.text == text
    assert json.loads(ev.model_dump_json())["text"] == text


def test_an_escaped_backslash_before_u_is_no_surrogate() -> None:
    ev = decode_event(BASE_SEARCH + b'"\\\\ud800"}', LIMITS, now=NOW)
    assert ev.text == "\\ud800"  # six printable characters, not a surrogate


def test_a_deep_but_allowed_nesting_is_accepted() -> None:
    ev = decode_event(extra(b'"x": ' + b"[" * 31 + b"]" * 31), LIMITS, now=NOW)
    assert ev.user_id == "u1"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"item_id": "i1", "title": "\\ud800"}', "title: string contains a lone UTF-16"),
        (b'{"item_id": "i1", "title": "t", "categories": ["\\udc00"]}', "categories.0: string"),
        (b'{"item_id": "i1", "title": "t", "attributes": {"k": "\\ud800"}}', "attributes.k"),
        (json.dumps({"item_id": "i1", "title": "t", "categories": ["c" * 257]}).encode(), "256"),
        (
            json.dumps(
                {"item_id": "i1", "title": "t", "attributes": {f"k{n}": n for n in range(65)}}
            ).encode(),
            "attributes: Dictionary should have at most 64 items",
        ),
        (b'{"item_id": "i1", "title": "t", "ts": NaN}', "NaN"),
        (b'{"item_id": "i\\u0000", "title": "t"}', "item_id: .*control characters"),
        (b'{"item_id": "i1", "item_id": "i2", "title": "t"}', "duplicate key 'item_id'"),
    ],
)
def test_hostile_items_are_rejected(payload: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        decode_item(payload, LIMITS)


# --- Properties: whatever the bytes, a valid event or a ValidationError ---------------------

# Half of the characters are lone surrogates (category Cs), which st.characters() leaves out.
ANY_CHAR = st.characters(categories=["Cs"]) | st.characters()
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    # Any code point, lone surrogates often (json.dumps writes them as \u escapes).
    | st.text(ANY_CHAR, max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


VALID_EVENTS = [
    {"user_id": "u1", "event_type": "click", "item_id": "i1", "ts": NOW, "event_id": "e1"},
    {"user_id": "Zoë 日本", "event_type": "search", "ts": "2023-11-14T22:13:20Z", "text": "jazz"},
    {"user_id": "u2", "event_type": "rate", "item_id": "i2", "ts": NOW, "value": "4"},
]
ANY_VALUE = (
    st.sampled_from(["u1", "i1", "click", "search", NOW, "\U0001f600 sax", "a\x00b", None])
    | st.sampled_from(["\ud800 jazz", "\udfff", "u\x1f1", "e\x00", " u1", "nan", "-inf", True])
    | JSON_VALUES
)
# A valid event with up to three fields replaced (or added) by anything: many decode, so that
# writing them is tested, and many are hostile in one field only.
EVENT_FIELDS = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from(VALID_EVENTS),
    st.dictionaries(
        st.sampled_from(
            ["user_id", "event_type", "item_id", "ts", "value", "text", "event_id", "x"]
        ),
        ANY_VALUE,
        max_size=3,
    ),
)


def _assert_writable(ev: EventIn) -> None:
    """What the agents do with a decoded event must not raise: pydantic's JSON, Faust's JSON
    serializer (of records carrying the event or its fields), and strict UTF-8 of every
    string (what orjson, the tokenizer and sha256 cache keys need)."""
    dumped = ev.model_dump_json()
    faust_codecs.dumps("json", {"event": dumped, **ev.model_dump()})
    for value in ev.model_dump().values():
        if isinstance(value, str):
            value.encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(payload=st.binary(max_size=300))
def test_decode_event_on_arbitrary_bytes_returns_an_event_or_raises_validation_error(
    payload: bytes,
) -> None:
    try:
        ev = decode_event(payload, LIMITS, now=NOW)
    except ValidationError as exc:
        str(exc).encode("utf-8")
        return
    _assert_writable(ev)


@settings(max_examples=400, deadline=None)
@given(fields=EVENT_FIELDS, ascii_only=st.booleans())
def test_decode_event_on_arbitrary_json_returns_a_writable_event_or_raises_validation_error(
    fields: dict[str, object], ascii_only: bool
) -> None:
    payload = json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        ev = decode_event(payload, LIMITS, now=NOW)
    except ValidationError as exc:
        str(exc).encode("utf-8")
        return
    _assert_writable(ev)


ITEM_FIELDS = st.builds(
    lambda base, changes: {**base, **changes},
    st.just({"item_id": "m1", "title": "Alien", "categories": ["sf"], "attributes": {"y": 1979}}),
    st.dictionaries(
        st.sampled_from(["item_id", "title", "description", "categories", "attributes", "ts"]),
        ANY_VALUE
        | st.lists(ANY_VALUE, max_size=3)
        | st.dictionaries(st.text(max_size=4), ANY_VALUE),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(fields=ITEM_FIELDS)
def test_decode_item_on_arbitrary_json_returns_a_writable_item_or_raises_validation_error(
    fields: dict[str, object],
) -> None:
    payload = json.dumps(fields).encode("ascii")  # lone surrogates as \u escapes
    try:
        item = decode_item(payload, LIMITS)
    except ValidationError as exc:
        str(exc).encode("utf-8")
        return
    json.loads(item.model_dump_json())  # what the catalog agent stores and sends
    for text in (item.item_id, item.title, item.text, *item.categories, *item.attributes):
        text.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    key=st.none() | st.binary(max_size=64),
    value=st.none()
    | st.binary(max_size=300)
    | st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    message=st.text(ANY_CHAR, max_size=40),
)
def test_a_dead_letter_of_any_bytes_and_any_reason_serializes(
    key: bytes | None, value: bytes | None, message: str
) -> None:
    record = dead_letter(
        source_topic="events", partition=0, offset=7, key=key, value=value,
        error=ValidationError(message),
    )  # fmt: skip
    wire = record.dumps()  # Faust's JSON serializer, as the dead-letter topic writes it
    letter = json.loads(wire)
    for field in ("reason", "value_text", "key_b64", "value_b64"):
        if letter[field] is not None:
            letter[field].encode("utf-8")  # strict: no surrogate reached the record
    assert base64.b64decode(letter["value_b64"] or "") == (value or b"")
    assert letter["size"] == (0 if value is None else len(value))


def test_a_dead_letter_of_the_surrogate_search_keeps_its_bytes_and_text() -> None:
    try:
        decode_event(SURROGATE_SEARCH, LIMITS, now=NOW)
    except ValidationError as exc:
        error = exc
    record = dead_letter(
        source_topic="events", partition=1, offset=3, key=b"u1", value=SURROGATE_SEARCH, error=error
    )  # fmt: skip
    letter = json.loads(record.dumps())
    assert "lone UTF-16 surrogate" in letter["reason"]
    assert base64.b64decode(letter["value_b64"]) == SURROGATE_SEARCH
    assert letter["value_text"] == SURROGATE_SEARCH.decode("ascii")  # the escape, as sent


def test_a_dead_letter_of_an_oversized_record_stays_under_a_kafka_message() -> None:
    key, value = b"k" * 900_000, b"\xff" * 2_000_000
    record = dead_letter(
        source_topic="events", partition=0, offset=0, key=key, value=value,
        error=ValidationError("payload of 2000000 bytes exceeds the limit"),
    )  # fmt: skip
    assert len(record.dumps()) < 1_000_000  # Faust's producer_max_request_size default
    assert base64.b64decode(record.value_b64 or "") == value[:DEAD_LETTER_VALUE_BYTES]
    assert base64.b64decode(record.key_b64 or "") == key[:DEAD_LETTER_KEY_BYTES]
    assert record.size == len(value) and record.value_text is None


def test_a_dead_letter_survives_an_exception_whose_message_fails() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    record = dead_letter(
        source_topic="events", partition=0, offset=0, key=None, value=b"x", error=Broken()
    )
    assert record.error == "Broken" and "could not be rendered" in record.reason


@pytest.mark.parametrize("record", [{"text": "\ud800"}, {"\udcff": 1}, {"ok": "é"}])
def test_encode_json_writes_any_record(record: dict[str, object]) -> None:
    wire = encode_json(record)
    assert json.loads(wire) == record  # a lone surrogate travels as its escape


@pytest.mark.parametrize(
    "line",
    [
        '{"user_id": "u", "event_id": "e", "event_type": "rate", "ts": 1.7e9, "value": NaN}',
        '{"user_id": "u", "user_id": "v", "event_id": "e", "event_type": "view", "ts": 1.7e9}',
        '{"user_id": "u\\ud800", "event_id": "e", "event_type": "view", "ts": 1.7e9}',
        "[" * 40 + "]" * 40,
        '{"user_id": "u", "event_id": "e", "event_type": "view", "ts": 1.7e9, "x": "\udcff"}',
    ],
)
def test_the_producer_refuses_what_a_worker_dead_letters_with_the_same_reason(line: str) -> None:
    """`recstream produce` reads lines with errors="surrogateescape"; load_record applies the
    worker's checks, so the CLI names the reason the dead letter would carry."""
    from recstream.streams.codecs import load_record

    with pytest.raises(ValidationError) as cli:
        load_record(line, LIMITS)
    with pytest.raises(ValidationError) as worker:
        decode_event(line.encode("utf-8", "surrogateescape"), LIMITS, now=NOW)
    assert str(cli.value) == str(worker.value)

"""Inbound wire schemas (JSON on the `events` and `items` topics), validated with pydantic.

Producers write plain JSON; the worker decodes raw bytes itself (see codecs.py) so that a
record that fails here is routed to the dead-letter topic with a readable reason instead of
crashing the stream. Outbound records (what Faust serializes) are in records.py.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

from recstream.models.vocabulary import EventType

# Unicode categories no id may contain: controls (Cc: NUL, tab, newline, and SEP "\x1f",
# which joins the parts of composite ids), format characters (Cf: zero-width and bidi
# controls, which make two different ids look the same), lone surrogates (Cs: not
# encodable as UTF-8) and line/paragraph separators.
_FORBIDDEN_IN_IDS = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_unprintable(text: str) -> str:
    """`text` with every unprintable character (controls, format characters, lone surrogates,
    separators) written as a backslash escape: safe to log, and to encode as UTF-8."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def _check_identifier(value: str, field: str) -> str:
    if value != value.strip():
        raise ValueError(f"{field} must not contain surrounding whitespace or control characters")
    if not value.isprintable():  # the fast path: printable excludes every forbidden category
        for n, ch in enumerate(value):
            if unicodedata.category(ch) in _FORBIDDEN_IN_IDS:
                raise ValueError(
                    f"{field} must not contain surrounding whitespace or control characters "
                    f"({escape_unprintable(ch)} at character {n})"
                )
    return value


def _no_surrogates(value: str) -> str:
    # json.loads turns an escaped lone surrogate ("\ud800") into a str that cannot be
    # encoded as UTF-8; such a str would fail later in every serializer (see codecs.py).
    match = _SURROGATE.search(value)
    if match is not None:
        raise ValueError(
            f"contains a lone UTF-16 surrogate {escape_unprintable(match.group())} at "
            f"character {match.start()} (not Unicode)"
        )
    return value


Identifier = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Text = Annotated[StrictStr, AfterValidator(_no_surrogates)]
"""A free-text string: any Unicode, but encodable as UTF-8 (no lone surrogate)."""
Label = Annotated[StrictStr, Field(max_length=256), AfterValidator(_no_surrogates)]
"""A category or attribute name: short, encodable as UTF-8."""


def parse_timestamp(value: Any) -> float:
    """Event time as epoch seconds (float) from a number or an ISO-8601 string.

    Booleans are rejected (JSON `true` is not a time). A naive ISO string is read as UTC.
    """
    if isinstance(value, bool):
        raise ValueError("ts must be epoch seconds or an ISO-8601 string, not a boolean")
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError as exc:
            raise ValueError("ts is too large to be a time") from exc
    elif isinstance(value, str):
        text = value.strip()
        try:
            ts = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError(f"ts {value!r} is neither epoch seconds nor ISO-8601") from exc
            if parsed.tzinfo is None:
                from datetime import UTC

                parsed = parsed.replace(tzinfo=UTC)
            ts = parsed.timestamp()
    else:
        raise ValueError(
            f"ts must be epoch seconds or an ISO-8601 string, got {type(value).__name__}"
        )
    if not math.isfinite(ts):
        raise ValueError("ts must be finite")
    return ts


class EventIn(BaseModel):
    """A user event as producers send it on the `events` topic (key: user_id).

    `ts` is event time in epoch seconds (an ISO-8601 string is accepted and converted).
    `item_id` is required except for `search`, which requires `text` instead.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    user_id: Identifier
    event_type: EventType
    ts: float
    item_id: Identifier | None = None
    # allow_inf_nan=False: pydantic would otherwise read the strings "nan" and "inf" as floats.
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    text: Text | None = None
    event_id: Identifier | None = None
    rec_id: Identifier | None = None

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> float:
        return parse_timestamp(value)

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("value must be a number, not a boolean")
        if isinstance(value, int | float):
            try:
                finite = math.isfinite(float(value))
            except OverflowError:
                finite = False
            if not finite:
                raise ValueError("value must be finite")
        return value

    @field_validator("user_id", "item_id", "event_id", "rec_id")
    @classmethod
    def _ids(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _check_identifier(value, info.field_name)

    @model_validator(mode="after")
    def _consistency(self) -> EventIn:
        if self.event_type == "search":
            if not (self.text and self.text.strip()):
                raise ValueError("a search event needs a non-empty text")
        elif self.item_id is None:
            raise ValueError(f"a {self.event_type} event needs an item_id")
        if self.event_type == "rate" and self.value is None:
            raise ValueError("a rate event needs a value (the rating)")
        return self


class ItemIn(BaseModel):
    """A catalog item on the `items` topic (key: item_id; a null value deletes the item)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    item_id: Identifier
    title: Text = Field(min_length=1, max_length=1024)
    text: Text = ""
    categories: list[Label] = Field(default_factory=list, max_length=64)
    attributes: dict[Label, Text | int | float | bool] = Field(default_factory=dict, max_length=64)
    ts: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _description_alias(cls, data: Any) -> Any:
        # `description` is accepted as a synonym of `text`: catalogs use either name.
        if isinstance(data, dict) and "text" not in data and "description" in data:
            data = {**data, "text": data["description"]}
        return data

    @field_validator("ts", mode="before")
    @classmethod
    def _ts(cls, value: Any) -> float | None:
        return None if value is None else parse_timestamp(value)

    @field_validator("item_id")
    @classmethod
    def _id(cls, value: str) -> str:
        return _check_identifier(value, "item_id")

"""An event in the wire format, for the baselines' unit tests (one definition for both files)."""

from __future__ import annotations


def event(user: str, item: str | None, ts: float, etype: str = "view") -> dict[str, object]:
    return {
        "user_id": user,
        "item_id": item,
        "event_type": etype,
        "ts": ts,
        "value": 5.0 if etype == "rate" else None,
        "text": None,
        "event_id": f"{user}-{item}-{ts}",
        "rec_id": None,
    }

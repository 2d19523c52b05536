"""Windowed tables (Faust hopping windows) in event time.

- per-user category counts over a short and a long hopping window (`user-categories-*`): one
  key per user whose value maps category → count, so an event writes one changelog record per
  window it falls in, whatever its number of categories;
- global trending items per window (`item-trending`, fed by the item-hits repartition), whose
  current-window top items each partition broadcasts through the `trending-top` GlobalTable.

Faust positions windows by the Kafka record timestamp unless told otherwise; an `EventClock`
set to the event's own time before each update makes them event-time windows, so replays and
late events land in the windows they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from recstream.config.settings import Settings

SEP = "\x1f"  # joins parts of a composite id: no id may contain control characters


class EventClock:
    """The event time (epoch s) of the record being processed, for windowed tables."""

    def __init__(self) -> None:
        self.ts = 0.0

    def __call__(self, event: Any = None) -> float:
        return self.ts


@dataclass(frozen=True)
class WindowTables:
    clock: EventClock
    user_categories_short: Any
    user_categories_long: Any
    item_trending: Any
    trending_top: faust.types.tables.GlobalTableT


class CountsIncrement(dict[str, float]):
    """category → count to add to a user's windowed counts.

    Faust applies ``table[user] += increment`` to every window containing the event time as
    ``stored + increment``, where ``stored`` is the window's plain dict (read back from JSON;
    ``{}`` for a new window). Plain dicts have no ``+``, so Python calls ``__radd__`` here,
    which returns the merged plain dict that is stored.
    """

    def __radd__(self, other: Any) -> dict[str, float]:
        out = {str(k): float(v) for k, v in (other or {}).items()}
        for category, n in self.items():
            out[category] = out.get(category, 0.0) + n
        return out


def declare_windows(app: faust.App, settings: Settings) -> WindowTables:
    clock = EventClock()
    s = settings

    def hopping(name: str, size: float, step: float, partitions: int, default: type = float) -> Any:
        table = app.Table(name, key_type=str, default=default, partitions=partitions)
        # relative_to() exists on faust's WindowWrapper but is missing from its type stub.
        return table.hopping(size, step, expires=size * 2).relative_to(clock)  # type: ignore[attr-defined]

    return WindowTables(
        clock=clock,
        user_categories_short=hopping(
            "user-categories-short",
            s.window_short_s,
            s.window_short_step_s,
            s.events_partitions,
            default=dict,
        ),
        user_categories_long=hopping(
            "user-categories-long",
            s.window_long_s,
            s.window_long_step_s,
            s.events_partitions,
            default=dict,
        ),
        item_trending=hopping(
            "item-trending", s.window_short_s, s.window_short_step_s, s.events_partitions
        ),
        trending_top=app.GlobalTable(
            "trending-top", key_type=str, partitions=s.events_partitions, default=None
        ),
    )


def add_user_categories(
    windows: WindowTables, user_id: str, categories: list[str], at_ts: float
) -> None:
    """Count one event of `user_id` at event time `at_ts` once per distinct category (the
    increment is a dict: a repeated category counts once) in every short and long window
    containing it. Call inside stream iteration."""
    windows.clock.ts = at_ts
    inc = CountsIncrement.fromkeys(categories, 1.0)
    windows.user_categories_short[user_id] += inc
    windows.user_categories_long[user_id] += inc


def user_window_counts(windows: WindowTables, user_id: str, at_ts: float) -> dict[str, Any]:
    """The user's counts per category in the latest short and long windows containing `at_ts`
    (event time). Call inside stream iteration: the store finds the partition from the event."""
    windows.clock.ts = at_ts
    out: dict[str, Any] = {"at_ts": at_ts, "short": {}, "long": {}}
    for name, table in (
        ("short", windows.user_categories_short),
        ("long", windows.user_categories_long),
    ):
        counts = table[user_id].value() or {}
        out[name] = {str(c): float(n) for c, n in sorted(counts.items()) if n}
    return out

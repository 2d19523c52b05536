"""Reading the recommendations topic and printing lists for people (rich)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import KafkaConsumer
from rich.console import Console
from rich.table import Table

from recstream.config.settings import Settings


def iter_lists(
    settings: Settings,
    *,
    from_beginning: bool = False,
    timeout_s: float | None = None,
    topic: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield decoded lists until `timeout_s` wall seconds pass (None: forever)."""
    consumer = KafkaConsumer(
        topic or settings.topic(settings.recommendations_topic),
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while deadline is None or time.monotonic() < deadline:
            for msg in consumer:
                try:
                    yield json.loads(msg.value)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    return
    finally:
        consumer.close()


def render_list(rec: dict[str, Any], max_items: int = 5) -> Table:
    as_of = rec.get("as_of") or {}
    model = rec.get("model_version")
    weights = ", ".join(f"{k}={v:.2f}" for k, v in (rec.get("weights") or {}).items())
    interests = ", ".join(
        f"{i.get('category')} {float(i.get('share', 0)):.0%}"
        for i in rec.get("top_interests") or []
    )
    table = Table(
        title=f"user {rec.get('user_id')}  list {str(rec.get('rec_id'))[:8]}  "
        f"as of {as_of.get('event_id')} (event ts {as_of.get('ts', 0):.0f})",
        caption=f"ranker {rec.get('ranker')}; weights {weights}; interests {interests or '-'}; "
        f"sequence model {f'v{model}' if model else '-'}",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("title")
    table.add_column("score", justify="right")
    table.add_column("contributions")
    for rank, item in enumerate((rec.get("items") or [])[:max_items], start=1):
        contrib = ", ".join(f"{k} {v:.3f}" for k, v in (item.get("contributions") or {}).items())
        table.add_row(
            str(rank),
            str(item.get("item_id")),
            str(item.get("title") or "")[:40],
            f"{item.get('score', 0):.4f}",
            contrib,
        )
    return table


def tail(
    settings: Settings,
    *,
    from_beginning: bool = False,
    timeout_s: float | None = None,
    max_lists: int | None = None,
    console: Console | None = None,
    on_list: Callable[[dict[str, Any]], None] | None = None,
    max_items: int = 5,
) -> int:
    """Pretty-print lists as they arrive; return how many were shown."""
    console = console or Console()
    shown = 0
    for rec in iter_lists(settings, from_beginning=from_beginning, timeout_s=timeout_s):
        console.print(render_list(rec, max_items))
        if on_list is not None:
            on_list(rec)
        shown += 1
        if max_lists is not None and shown >= max_lists:
            break
    return shown

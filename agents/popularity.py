"""The popularity agent: item hits (repartitioned by item_id) → decayed item popularity.

Each partition's most popular items are broadcast to every worker through the
`popular_top` GlobalTable, so that any worker can rank for any user. The broadcast happens
inside the stream (RocksDB-backed tables accept writes only within an event's context), at
most once per `popular_snapshot_interval_s` per partition.
"""

from __future__ import annotations

import heapq
import math
import time

import faust

from recstream.agents.offsets import OffsetGapGuard
from recstream.agents.tables import Tables
from recstream.agents.windows import WindowTables
from recstream.config.settings import Settings
from recstream.models import decay
from recstream.models.popularity import ItemPopularity, merge_top
from recstream.streams.records import ItemHit
from recstream.streams.topics import Topics


def register_popularity(
    app: faust.App, settings: Settings, topics: Topics, tables: Tables, windows: WindowTables
) -> faust.types.AgentT:
    rate = decay.decay_rate(settings.popularity_half_life_s)
    top_n = settings.popular_top_n
    interval = settings.popular_snapshot_interval_s
    # partition → {item_id: log_mass} changed since the last broadcast
    pending: dict[int, dict[str, float]] = {}
    last_broadcast: dict[int, float] = {}
    # partition → (window start, {item_id: count in that window}) for the trending broadcast
    trending: dict[int, tuple[float, dict[str, float]]] = {}

    def broadcast(partition: int) -> None:
        updates = pending.pop(partition, None)
        if not updates:
            return
        key = f"p{partition}"
        merged = merge_top(tables.popular_top.get(key) or {}, updates, top_n)
        tables.popular_top[key] = {k: v for k, v in merged.items() if math.isfinite(v)}
        last_broadcast[partition] = time.monotonic()
        if partition in trending:
            start, counts = trending[partition]
            best = heapq.nlargest(settings.trending_top_n, counts.items(), key=lambda kv: kv[1])
            windows.trending_top[key] = {"window_start": start, "items": dict(best)}

    guard_item_hits = OffsetGapGuard(app, [topics.item_hits.get_topic_name()])

    @app.agent(topics.item_hits, name=f"{settings.app_id}.popularity", concurrency=1)
    async def popularity(stream: faust.StreamT) -> None:
        async for event in guard_item_hits.events(stream):
            hit = event.value
            if hit.flush:
                broadcast(event.message.partition)
                continue
            raw = tables.item_popularity.get(hit.item_id)
            state = ItemPopularity.from_bytes(raw) if raw else ItemPopularity()
            if not state.update(hit.event_id, hit.weight, hit.ts, rate, settings.dedupe_capacity):
                continue
            tables.item_popularity[hit.item_id] = state.to_bytes()
            partition = event.message.partition
            windows.clock.ts = hit.ts
            windows.item_trending[hit.item_id] += hit.weight
            count = windows.item_trending[hit.item_id].value()
            start = hit.ts - hit.ts % settings.window_short_step_s
            window_start, counts = trending.get(partition, (start, {}))
            if start > window_start:  # a newer window: its counts start afresh
                window_start, counts = start, {}
            if start == window_start:
                counts[hit.item_id] = float(count)
                trending[partition] = (window_start, counts)
            pending.setdefault(partition, {})[hit.item_id] = state.log_mass
            if time.monotonic() - last_broadcast.get(partition, 0.0) >= interval:
                broadcast(partition)

    @app.timer(interval=interval)
    async def flush_popular() -> None:
        # Tables backed by RocksDB accept writes only inside a stream event, so a quiet
        # partition's pending changes are flushed by a control record sent to it.
        now = time.monotonic()
        for partition in list(pending):
            if now - last_broadcast.get(partition, 0.0) >= interval:
                await topics.item_hits.send(
                    value=ItemHit(item_id="", event_id="", ts=0.0, weight=0.0, flush=True),
                    partition=partition,
                )

    return popularity

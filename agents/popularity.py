"""The popularity agent: item hits (repartitioned by item_id) → decayed item popularity.

Each partition's most popular items are broadcast to every worker through the
`popular_top` GlobalTable, so that any worker can rank for any user. The broadcast happens
inside the stream (RocksDB-backed tables accept writes only within an event's context), at
most once per `popular_snapshot_interval_s` per partition.
"""

from __future__ import annotations

import math
import time

import faust

from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models import decay
from recstream.models.popularity import ItemPopularity, merge_top
from recstream.streams.topics import Topics


def register_popularity(
    app: faust.App, settings: Settings, topics: Topics, tables: Tables
) -> faust.types.AgentT:
    rate = decay.decay_rate(settings.popularity_half_life_s)
    top_n = settings.popular_top_n
    interval = settings.popular_snapshot_interval_s
    # partition → {item_id: log_mass} changed since the last broadcast
    pending: dict[int, dict[str, float]] = {}
    last_broadcast: dict[int, float] = {}

    def broadcast(partition: int) -> None:
        updates = pending.pop(partition, None)
        if not updates:
            return
        key = f"p{partition}"
        merged = merge_top(tables.popular_top.get(key) or {}, updates, top_n)
        tables.popular_top[key] = {k: v for k, v in merged.items() if math.isfinite(v)}
        last_broadcast[partition] = time.monotonic()

    @app.agent(topics.item_hits, name=f"{settings.app_id}.popularity", concurrency=1)
    async def popularity(stream: faust.StreamT) -> None:
        async for event in stream.events():
            hit = event.value
            raw = tables.item_popularity.get(hit.item_id)
            state = ItemPopularity.from_bytes(raw) if raw else ItemPopularity()
            if not state.update(hit.event_id, hit.weight, hit.ts, rate, settings.dedupe_capacity):
                continue
            tables.item_popularity[hit.item_id] = state.to_bytes()
            partition = event.message.partition
            pending.setdefault(partition, {})[hit.item_id] = state.log_mass
            if time.monotonic() - last_broadcast.get(partition, 0.0) >= interval:
                broadcast(partition)

    return popularity

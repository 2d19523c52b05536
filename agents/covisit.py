"""The co-visitation agent: pair increments (repartitioned by item_id) → top-M neighbours.

The neighbour lists live in the `covisit` GlobalTable so that the ranker on any worker can
look up the neighbours of a user's recent items. Each value also remembers the hashes of the
last pair ids applied, so a pair redelivered after a crash is not counted twice.
"""

from __future__ import annotations

import faust

from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.covisitation import CoVisitNeighbours
from recstream.models.popularity import event_hash
from recstream.streams.topics import Topics


def register_covisit(
    app: faust.App, settings: Settings, topics: Topics, tables: Tables
) -> faust.types.AgentT:
    @app.agent(topics.covisit_pairs, name=f"{settings.app_id}.covisit", concurrency=1)
    async def covisit(stream: faust.StreamT) -> None:
        async for pair in stream:
            raw = tables.covisit.get(pair.item_id)
            neighbours = (
                CoVisitNeighbours.from_dict(raw)
                if raw
                else CoVisitNeighbours(settings.covisit_neighbours, settings.covisit_half_life_s)
            )
            recent: list[int] = list((raw or {}).get("applied") or [])
            key = event_hash(pair.pair_id) if pair.pair_id else None
            if key is not None and key in recent:
                continue
            neighbours.update(pair.neighbour_id, pair.weight, pair.ts)
            if key is not None:
                recent = [*recent, key][-settings.covisit_dedupe_capacity :]
            tables.covisit[pair.item_id] = {**neighbours.to_dict(), "applied": recent}

    return covisit

"""The co-visitation agent: increments (repartitioned by item_id) → top-M neighbours.

The neighbour lists live in the `covisit` GlobalTable so that the ranker on any worker can
look up the neighbours of a user's recent items. Each value also remembers the hashes of the
last increment records applied, so a record redelivered after a crash is not counted twice.
"""

from __future__ import annotations

import faust

from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.covisitation import CoVisitNeighbours
from recstream.models.errors import RecstreamError, ValidationError
from recstream.models.popularity import event_hash
from recstream.streams.topics import Topics


def register_covisit(
    app: faust.App, settings: Settings, topics: Topics, tables: Tables
) -> faust.types.AgentT:
    @app.agent(topics.covisit_pairs, name=f"{settings.app_id}.covisit", concurrency=1)
    async def covisit(stream: faust.StreamT) -> None:
        async for rec in stream:
            raw = tables.covisit.get(rec.item_id)
            neighbours = (
                CoVisitNeighbours.from_dict(raw)
                if raw
                else CoVisitNeighbours(settings.covisit_neighbours, settings.covisit_half_life_s)
            )
            recent: list[int] = list((raw or {}).get("applied") or [])
            key = event_hash(rec.increments_id) if rec.increments_id else None
            if key is not None and key in recent:
                continue
            try:
                for neighbour_id, weight, ts in zip(
                    rec.neighbours, rec.weights, rec.ts, strict=True
                ):
                    neighbours.update(neighbour_id, weight, ts)
            except (ValueError, TypeError, RecstreamError) as exc:
                # Nothing is written: a corrupt record changes no neighbour list.
                event = stream.current_event
                if event is not None:
                    await send_dead_letter(
                        topics, event, ValidationError(f"corrupt co-visit record: {exc}")
                    )
                continue
            if key is not None:
                recent = [*recent, key][-settings.covisit_dedupe_capacity :]
            # One write per record, whatever its number of neighbours.
            tables.covisit[rec.item_id] = {**neighbours.to_dict(), "applied": recent}

    return covisit

"""The catalog agent: items topic → the `catalog` GlobalTable on every worker.

A null value (tombstone) deletes the item. Invalid items go to the dead letters.
"""

from __future__ import annotations

import faust

from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.events import limits_from
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.streams.codecs import decode_item
from recstream.streams.topics import Topics


def register_catalog(
    app: faust.App, settings: Settings, topics: Topics, tables: Tables
) -> faust.types.AgentT:
    limits = limits_from(settings)

    @app.agent(topics.items, name=f"{settings.app_id}.items", concurrency=1)
    async def items(stream: faust.StreamT) -> None:
        async for event in stream.events():
            if event.value is None or event.value == b"":
                key = event.key.decode("utf-8", "replace") if isinstance(event.key, bytes) else None
                if not key:
                    await send_dead_letter(
                        topics, event, ValidationError("tombstone without an item_id key")
                    )
                elif key in tables.catalog:
                    del tables.catalog[key]
                continue
            try:
                item = decode_item(event.value, limits)
            except ValidationError as exc:
                await send_dead_letter(topics, event, exc)
                continue
            tables.catalog[item.item_id] = {
                "title": item.title,
                "categories": list(item.categories),
                "ts": item.ts,
            }

    return items

"""Catalog agents: items topic → embeddings → the `catalog` GlobalTable on every worker.

A null value (tombstone) deletes the item. Invalid items go to the dead letters. An item whose
text is already in the vector cache gets its vector at once; the others wait for the batched
item embedder (see embedding.py for the whole flow).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.embedding import EmbeddingRuntime, encode_vector
from recstream.agents.offsets import OffsetGapGuard
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.models.item_text import item_text, text_key
from recstream.streams.codecs import Limits, decode_item
from recstream.streams.records import EmbedRequest, ItemVector
from recstream.streams.topics import Topics


def register_catalog(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    runtime: EmbeddingRuntime,
) -> dict[str, faust.types.AgentT]:
    """The catalogue agents: items → catalog table (+ embed requests), embed requests →
    vectors (micro-batches), vectors → the catalog entry whose text they embed."""

    def write(item_id: str, entry: dict[str, Any] | None) -> None:
        # Local writes are not read back from the changelog on this worker: mirror them here.
        if entry is None:
            if item_id in tables.catalog:
                del tables.catalog[item_id]
        else:
            tables.catalog[item_id] = entry
        runtime.apply_catalog(item_id, entry)

    return {
        "items": _items_agent(app, settings, topics, tables, runtime, write),
        "item_embedder": _embedder_agent(app, settings, topics, runtime),
        "item_vectors": _vectors_agent(app, settings, topics, tables, write),
    }


def catalog_entry(
    item: Any, model_id: str, runtime: EmbeddingRuntime, previous: Any, settings: Settings
) -> tuple[dict[str, Any], str, str]:
    """(catalog entry, item text, text key) of a decoded item; the entry's `vec` is the
    cached vector of that text, the previous entry's when its text is unchanged, else None
    (the text still has to be embedded)."""
    text = item_text(
        item.title, item.categories, item.text, item.attributes, settings.item_text_attributes
    )
    tkey = text_key(model_id, text)
    vec = runtime.cached(tkey)
    if vec is None and previous and previous.get("text_key") == tkey:
        vec_text = previous.get("vec")  # unchanged text re-sent: keep its vector
    else:
        vec_text = None if vec is None else encode_vector(vec)
    entry = {
        "title": item.title,
        "categories": list(item.categories),
        "ts": item.ts,
        "text_key": tkey,
        "vec": vec_text,
    }
    return entry, text, tkey


def _items_agent(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    runtime: EmbeddingRuntime,
    write: Callable[[str, dict[str, Any] | None], None],
) -> faust.types.AgentT:
    limits = Limits.from_settings(settings)
    guard = OffsetGapGuard(app, [topics.items.get_topic_name()])

    @app.agent(topics.items, name=f"{settings.app_id}.items", concurrency=1)
    async def items(stream: faust.StreamT) -> None:
        encoder = await runtime.encoder()
        async for event in guard.events(stream):
            key = event.key.decode("utf-8", "replace") if isinstance(event.key, bytes) else None
            if event.value is None or event.value == b"":
                if not key:
                    await send_dead_letter(
                        topics, event, ValidationError("tombstone without an item_id key")
                    )
                else:
                    write(key, None)
                continue
            try:
                item = decode_item(event.value, limits)
            except ValidationError as exc:
                await send_dead_letter(topics, event, exc)
                continue
            except Exception as exc:
                await send_dead_letter(topics, event, ValidationError(f"undecodable: {exc!r}"))
                continue
            previous = tables.catalog.get(item.item_id)
            entry, text, tkey = catalog_entry(item, encoder.model_id, runtime, previous, settings)
            write(item.item_id, entry)
            if entry["vec"] is None:
                await topics.item_embed.send(
                    key=item.item_id,
                    value=EmbedRequest(item_id=item.item_id, text=text, text_key=tkey),
                )

    return items


def _embedder_agent(
    app: faust.App, settings: Settings, topics: Topics, runtime: EmbeddingRuntime
) -> faust.types.AgentT:
    guard = OffsetGapGuard(app, [topics.item_embed.get_topic_name()])

    @app.agent(topics.item_embed, name=f"{settings.app_id}.item-embedder", concurrency=1)
    async def item_embedder(stream: faust.StreamT) -> None:
        async for events in guard.batches(stream, settings.embed_batch_size, settings.embed_wait_s):
            batch = [event.value for event in events]
            vectors = await runtime.embed([r.text_key for r in batch], [r.text for r in batch])
            for req, vec in zip(batch, vectors, strict=True):
                await topics.item_vectors.send(
                    key=req.item_id,
                    value=ItemVector(
                        item_id=req.item_id,
                        text_key=req.text_key,
                        vec=None if vec is None else encode_vector(vec),
                    ),
                )

    return item_embedder


def _vectors_agent(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    write: Callable[[str, dict[str, Any] | None], None],
) -> faust.types.AgentT:
    @app.agent(topics.item_vectors, name=f"{settings.app_id}.item-vectors", concurrency=1)
    async def item_vectors(stream: faust.StreamT) -> None:
        async for result in stream:
            entry = tables.catalog.get(result.item_id)
            # Only the text that is still current gets the vector: the item may have been
            # updated (another text_key) or deleted (no entry) while it was being embedded.
            if entry is None or entry.get("text_key") != result.text_key:
                continue
            entry = dict(entry, vec=result.vec)
            write(result.item_id, entry)

    return item_vectors

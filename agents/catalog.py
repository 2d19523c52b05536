"""Catalog agents: items topic → embeddings → the `catalog` GlobalTable on every worker.

A null value (tombstone) deletes the item. Invalid items go to the dead letters. An item whose
text is already in the vector cache gets its vector at once; the others wait for the batched
item embedder (see embedding.py for the whole flow).
"""

from __future__ import annotations

from typing import Any, Protocol

import faust
import numpy as np

from recstream.agents.current_event import as_current_event
from recstream.agents.dead_letters import send_dead_letter
from recstream.agents.embedding import EmbeddingRuntime, encode_vector
from recstream.agents.offsets import OffsetGapGuard
from recstream.agents.tables import Tables
from recstream.config.settings import Settings
from recstream.models.errors import ValidationError
from recstream.models.item_text import item_text, text_key
from recstream.streams.codecs import Limits, decode_item
from recstream.streams.records import EmbedRequest
from recstream.streams.topics import Topics


class Write(Protocol):
    """Writes (or with None deletes) a catalog entry and mirrors it into the runtime; the
    vector as an array when the caller has it, and whether to run the cluster refit check."""

    def __call__(
        self,
        item_id: str,
        entry: dict[str, Any] | None,
        vector: np.ndarray | None = None,
        refresh: bool = True,
    ) -> None: ...


def register_catalog(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    runtime: EmbeddingRuntime,
) -> dict[str, faust.types.AgentT]:
    """The catalogue agents: items → catalog table (+ embed requests), embed requests →
    vectors (micro-batches), vectors → the catalog entry whose text they embed."""

    def write(
        item_id: str,
        entry: dict[str, Any] | None,
        vector: np.ndarray | None = None,
        refresh: bool = True,
    ) -> None:
        # Local writes are not read back from the changelog on this worker: mirror them here.
        if entry is None:
            if item_id in tables.catalog:
                del tables.catalog[item_id]
        else:
            tables.catalog[item_id] = entry
        runtime.apply_catalog(item_id, entry, vector, refresh=refresh)

    return {
        "items": _items_agent(app, settings, topics, tables, runtime, write),
        "item_embedder": _embedder_agent(app, settings, topics, tables, runtime, write),
        "item_vectors": _vectors_agent(app, settings, topics, tables, write),
    }


def attach_vector(
    tables: Tables,
    write: Write,
    item_id: str,
    text_key: str,
    vec_text: str | None,
    vector: np.ndarray | None = None,
    refresh: bool = True,
) -> bool:
    """Give the catalog entry of ``item_id`` the vector of ``text_key``; False (nothing
    written) when that text is no longer the entry's.

    Only the text that is still current gets the vector: the item may have been updated
    (another text_key) or deleted (no entry) while it was being embedded.
    """
    entry = tables.catalog.get(item_id)
    if entry is None or entry.get("text_key") != text_key:
        return False
    write(item_id, dict(entry, vec=vec_text), vector, refresh)
    return True


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
    write: Write,
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
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    runtime: EmbeddingRuntime,
    write: Write,
) -> faust.types.AgentT:
    guard = OffsetGapGuard(app, [topics.item_embed.get_topic_name()])

    @app.agent(topics.item_embed, name=f"{settings.app_id}.item-embedder", concurrency=1)
    async def item_embedder(stream: faust.StreamT) -> None:
        # Read ahead while a batch is encoded (take_events would stop the stream meanwhile,
        # then wait embed_wait_s to fill the next batch): the encoder never waits for records
        # that have already arrived.
        batches = guard.prefetched_batches(stream, settings.embed_batch_size, settings.embed_wait_s)
        async for events in batches:
            batch = [event.value for event in events]
            vectors = await runtime.embed([r.text_key for r in batch], [r.text for r in batch])
            # Written into the catalog here, not sent on through item-vectors: this worker
            # owns the item's partition either way, and that hop cost a 2 KB record out and
            # back in, its JSON and a second base64 decode per item. The cluster refit check
            # runs once for the batch.
            for event, req, vec in zip(events, batch, vectors, strict=True):
                if vec is None:  # empty text: the entry keeps vec None
                    continue
                # The request's event is the table write's context: its partition is the
                # item's (item-embed is keyed and partitioned like items and the catalog).
                with as_current_event(event):
                    text = encode_vector(vec)
                    attach_vector(tables, write, req.item_id, req.text_key, text, vec, False)
            runtime.maybe_refresh_clusters()

    return item_embedder


def _vectors_agent(
    app: faust.App,
    settings: Settings,
    topics: Topics,
    tables: Tables,
    write: Write,
) -> faust.types.AgentT:
    # Vectors made elsewhere (another embedding service, a backfill): the item embedder above
    # writes its own vectors into the catalog directly.
    @app.agent(topics.item_vectors, name=f"{settings.app_id}.item-vectors", concurrency=1)
    async def item_vectors(stream: faust.StreamT) -> None:
        async for result in stream:
            attach_vector(tables, write, result.item_id, result.text_key, result.vec)

    return item_vectors

"""Catalog agents: items topic → embeddings → the `catalog` GlobalTable on every worker.

A null value (tombstone) deletes the item. Invalid items go to the dead letters. An item whose
text is already in the vector cache (or unchanged) gets its entry at once; the others are
encoded together, one call per micro-batch, and their entries written with the vector: one
catalog record per item (see embedding.py for the whole flow).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
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
from recstream.streams.topics import Topics

log = logging.getLogger(__name__)


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
    """The catalogue agents: items → catalog table (embedded in micro-batches), vectors
    made elsewhere → the catalog entry whose text they embed."""

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


@dataclass
class Staged:
    """A batch of items read: the misses to embed (item → its event, entry and text, in
    arrival order; fixed once their encoding starts) and the batch's events (acked once the
    misses are written)."""

    events: list[Any]
    misses: dict[str, tuple[Any, dict[str, Any], str]] = field(default_factory=dict)


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

    async def stage(events: list[Any], model_id: str, waiting: dict[str, Staged]) -> Staged:
        """Decode a batch in order: dead letters and deletions now, entries whose vector is
        known (cache, unchanged text) written now, the rest held for one encode call. A later
        record of an item supersedes its earlier one still waiting (`waiting`: item → the
        batch holding its miss)."""
        staged = Staged(events)
        for event in events:
            item_id, entry, text = await _decoded(event, topics, tables, runtime, model_id, limits)
            if item_id is None:
                continue
            if waiting.pop(item_id, None) is staged:
                del staged.misses[item_id]  # this batch's earlier record: not encoded yet
            if entry is None or entry["vec"] is not None or not text:
                with as_current_event(event):
                    write(item_id, entry)
            else:
                staged.misses[item_id] = (event, entry, text)
                waiting[item_id] = staged
        return staged

    async def complete(staged: Staged, stream: faust.StreamT, waiting: dict[str, Staged]) -> None:
        """Encode the batch's misses in one call, write the entries no later record
        superseded meanwhile, then ack the batch."""
        keys = [e["text_key"] for _, e, _ in staged.misses.values()]
        texts = [t for _, _, t in staged.misses.values()]
        vectors: list[np.ndarray | None] = [None] * len(keys)
        try:
            vectors = await runtime.embed(keys, texts) if keys else []
        except Exception:
            # The entries are written without a vector (not lost, nor left unacked): a
            # re-send of the item embeds it again.
            log.exception("embedding %d items failed; their entries get no vector", len(keys))
        assigned = _assigned(app)
        for (item_id, (event, entry, _)), vec in zip(staged.misses.items(), vectors, strict=True):
            if waiting.get(item_id) is not staged:
                continue  # a later record of the item was handled meanwhile
            del waiting[item_id]
            if assigned is not None and event.message.tp not in assigned:
                continue  # revoked while encoding: its new owner writes the item
            with as_current_event(event):
                text = None if vec is None else encode_vector(vec)
                write(item_id, dict(entry, vec=text), vec, False)
        runtime.maybe_refresh_clusters()
        for event in staged.events:
            await stream.ack(event)

    @app.agent(topics.items, name=f"{settings.app_id}.items", concurrency=1)
    async def items(stream: faust.StreamT) -> None:
        # One hop: the agent embeds its own batches. Batch N+1 is read and decoded while N is
        # encoded (in a thread) and written, so the encoder waits neither for records that
        # have arrived nor for their decoding; each batch is acked after its entries.
        model_id = (await runtime.encoder()).model_id
        waiting: dict[str, Staged] = {}
        inflight: asyncio.Future[None] | None = None
        batches = guard.prefetched_batches(
            stream, settings.embed_batch_size, settings.embed_wait_s, ack=False
        )
        try:
            async for events in batches:
                staged = await stage(events, model_id, waiting)
                if inflight is not None:
                    await inflight  # one batch in the encoder at a time, acked in order
                inflight = asyncio.ensure_future(complete(staged, stream, waiting))
            if inflight is not None:
                await inflight
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()  # its records are not acked: they are read again

    return items


def _assigned(app: faust.App) -> set[Any] | None:
    """The partitions this worker's consumer holds now (None when it cannot tell)."""
    try:
        return set(app.consumer.assignment())
    except Exception:
        return None


async def _decoded(
    event: Any,
    topics: Topics,
    tables: Tables,
    runtime: EmbeddingRuntime,
    model_id: str,
    limits: Limits,
) -> tuple[str | None, dict[str, Any] | None, str]:
    """(item id, catalog entry or None for a deletion, item text) of an items record; item id
    None when the record went to the dead letters."""
    key = event.key.decode("utf-8", "replace") if isinstance(event.key, bytes) else None
    if event.value is None or event.value == b"":
        if key:
            return key, None, ""
        await send_dead_letter(topics, event, ValidationError("tombstone without an item_id key"))
        return None, None, ""
    try:
        item = decode_item(event.value, limits)
    except ValidationError as exc:
        await send_dead_letter(topics, event, exc)
        return None, None, ""
    except Exception as exc:
        await send_dead_letter(topics, event, ValidationError(f"undecodable: {exc!r}"))
        return None, None, ""
    with as_current_event(event):
        previous = tables.catalog.get(item.item_id)
    entry, text, _ = catalog_entry(item, model_id, runtime, previous, runtime.settings)
    return item.item_id, entry, text


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

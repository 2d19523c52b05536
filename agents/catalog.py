"""Catalog agents: items topic → embeddings → the `catalog` GlobalTable on every worker.

A null value (tombstone) deletes the item. Invalid items go to the dead letters. An item whose
text is already in the vector cache (or unchanged) gets its entry at once; the others are
encoded together, one call per micro-batch, and their entries written with the vector: one
catalog record per item (see embedding.py for the whole flow).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
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

    def store(item_id: str, entry: dict[str, Any] | None) -> None:
        if entry is None:
            if item_id in tables.catalog:
                del tables.catalog[item_id]
        else:
            tables.catalog[item_id] = entry

    def write(
        item_id: str,
        entry: dict[str, Any] | None,
        vector: np.ndarray | None = None,
        refresh: bool = True,
    ) -> None:
        # Local writes are not read back from the changelog on this worker: mirror them here.
        store(item_id, entry)
        runtime.apply_catalog(item_id, entry, vector, refresh=refresh)

    return {
        "items": _items_agent(app, settings, topics, tables, runtime, write, store),
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
    store: Callable[[str, dict[str, Any] | None], None],
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

    async def encode(staged: Staged) -> list[np.ndarray | None]:
        """The batch's misses encoded in one call; all None when encoding failed (the entries
        are then written without a vector, not lost nor left unacked: a re-send of the item
        embeds it again)."""
        keys = [e["text_key"] for _, e, _ in staged.misses.values()]
        texts = [t for _, _, t in staged.misses.values()]
        try:
            return await runtime.embed(keys, texts) if keys else []
        except Exception:
            log.exception("embedding %d items failed; their entries get no vector", len(keys))
            return [None] * len(keys)

    async def complete(
        staged: Staged,
        vectors: list[np.ndarray | None],
        stream: faust.StreamT,
        waiting: dict[str, Staged],
        backlog: bool,
    ) -> None:
        """Write the encoded entries no later record superseded meanwhile (the in-memory
        mirror in one call), then ack the batch. ``backlog``: more batches wait behind it."""
        assigned = _assigned(app)
        changes: list[tuple[str, dict[str, Any] | None, np.ndarray | None]] = []
        for (item_id, (event, entry, _)), vec in zip(staged.misses.items(), vectors, strict=True):
            if waiting.get(item_id) is not staged:
                continue  # a later record of the item was handled meanwhile
            del waiting[item_id]
            if assigned is not None and event.message.tp not in assigned:
                continue  # revoked while encoding: its new owner writes the item
            written = dict(entry, vec=None if vec is None else encode_vector(vec))
            with as_current_event(event):
                store(item_id, written)
            changes.append((item_id, written, vec))
        runtime.apply_catalog_many(changes, backlog=backlog)
        for event in staged.events:
            await stream.ack(event)

    @app.agent(topics.items, name=f"{settings.app_id}.items", concurrency=1)
    async def items(stream: faust.StreamT) -> None:
        # One hop: the agent embeds its own batches, in three steps that overlap: this loop
        # reads and decodes batch N+2 while the encoder task encodes N+1 (in a thread) and
        # the writer task writes and acks N. The encoder starts N+1 the moment N is encoded,
        # so it waits neither for records that have arrived, nor for their decoding, nor for
        # the previous batch's writes (~0.1 s per 256 items, measured in the bench).
        model_id = (await runtime.encoder()).model_id
        waiting: dict[str, Staged] = {}
        to_encode: asyncio.Queue[Staged | None] = asyncio.Queue(maxsize=1)
        to_write: asyncio.Queue[tuple[Staged, list[np.ndarray | None]] | None] = asyncio.Queue()

        async def encoder() -> None:
            while (staged := await to_encode.get()) is not None:
                to_write.put_nowait((staged, await encode(staged)))
            to_write.put_nowait(None)

        unwritten = 0  # batches staged and not yet written

        async def writer() -> None:
            # One writer: batches are written and acked in the order they were read.
            nonlocal unwritten
            while (done := await to_write.get()) is not None:
                await complete(*done, stream, waiting, backlog=unwritten > 1)
                unwritten -= 1

        batches = guard.prefetched_batches(
            stream, settings.embed_batch_size, settings.embed_wait_s, ack=False
        )
        # A failure in any step cancels the others; records not acked are read again.
        async with asyncio.TaskGroup() as steps:
            steps.create_task(encoder())
            steps.create_task(writer())
            async for events in batches:
                staged = await stage(events, model_id, waiting)
                unwritten += 1
                await to_encode.put(staged)
            await to_encode.put(None)

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

"""The catalog agents: items → the `catalog` GlobalTable (+ the worker's category map and
vector index), texts not in the vector cache embedded by the items agent in micro-batches.

Each test runs on the memory:// and the rocksdb:// table store (see conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
from agent_harness import T0, AgentHarness, RunScenario, Sent, item_bytes

from recstream.agents.embedding import decode_vector, encode_vector
from recstream.models.item_text import item_text, text_key
from recstream.streams.records import ItemVector


def entry(h: AgentHarness, item_id: str) -> dict | None:
    return h.tables.catalog.get(item_id)


def dead_letters(h: AgentHarness) -> list[Sent]:
    return h.sent(h.topics.dead_letters)


def has_vec(h: AgentHarness, item_id: str) -> bool:
    return (entry(h, item_id) or {}).get("vec") is not None


def catalog_records(h: AgentHarness, item_id: str) -> list[Sent]:
    key = f'"{item_id}"'.encode()
    return [
        s for s in h.producer.changelog if s.topic.endswith("catalog-changelog") and s.key == key
    ]


def expected_text_key(h: AgentHarness, title: str, categories: tuple[str, ...]) -> str:
    text = item_text(title, categories, f"{title}: a record", {}, h.settings.item_text_attributes)
    return text_key(h.runtime.model_id, text)


def unit(dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_valid_item_lands_in_the_catalog_with_its_categories(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as agent:
            await agent.put(item_bytes("i1", "Blue Train", ("jazz", "hard bop")), key=b"i1")
            await h.eventually(lambda: has_vec(h, "i1"), "the catalog entry", agent)

        tkey = expected_text_key(h, "Blue Train", ("jazz", "hard bop"))
        stored = entry(h, "i1")
        assert stored is not None and {k: v for k, v in stored.items() if k != "vec"} == {
            "title": "Blue Train",
            "categories": ["jazz", "hard bop"],
            "ts": T0,
            "text_key": tkey,
        }
        # Embedded by the items agent itself and written once, with its vector.
        vec = decode_vector(stored["vec"])
        assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3
        assert np.array_equal(h.runtime.cached(tkey), vec)
        assert len(catalog_records(h, "i1")) == 1
        assert h.runtime.item_categories["i1"] == ("jazz", "hard bop")
        assert h.runtime.category_items["jazz"] == {"i1"}
        assert h.runtime.index is not None and len(h.runtime.index) == 1
        assert not h.sent(h.topics.item_vectors)
        assert not dead_letters(h)

    run_scenario(scenario)


@pytest.mark.parametrize("tombstone", [None, b""], ids=["null", "empty"])
def test_tombstone_deletes_the_item(run_scenario: RunScenario, tombstone: bytes | None) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as agent:
            await agent.put(item_bytes("i1", categories=("jazz",)), key=b"i1")
            await agent.put(item_bytes("i2", categories=("jazz",)), key=b"i2")
            await h.eventually(lambda: entry(h, "i2") is not None, "both entries", agent)
            await agent.put(tombstone, key=b"i1")
            await h.eventually(lambda: entry(h, "i1") is None, "the deletion", agent)
            # Deleting an unknown item is harmless.
            await agent.put(tombstone, key=b"never-seen")
            await agent.put(item_bytes("i3", categories=("soul",)), key=b"i3")
            await h.eventually(lambda: entry(h, "i3") is not None, "the next item", agent)

        assert "i1" not in h.tables.catalog and "never-seen" not in h.tables.catalog
        assert entry(h, "i2") is not None
        assert "i1" not in h.runtime.item_categories
        assert h.runtime.category_items["jazz"] == {"i2"}
        assert not dead_letters(h)
        # The deletion reaches the changelog (a tombstone: value None).
        catalog_log = [s for s in h.producer.changelog if s.topic.endswith("catalog-changelog")]
        assert [(s.key, s.value) for s in catalog_log if s.value is None] == [(b'"i1"', None)]

    run_scenario(scenario)


def test_tombstone_without_a_key_is_a_dead_letter(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as agent:
            await agent.put(None, key=None)
            await h.eventually(lambda: bool(dead_letters(h)), "a dead letter", agent)

        [dl] = dead_letters(h)
        letter = dl.json()
        assert letter["reason"] == "tombstone without an item_id key"
        assert letter["source_topic"] == "items" and letter["value_b64"] is None

    run_scenario(scenario)


BAD_ITEMS = {
    "not-json": (b'{"item_id": "i1"', "malformed JSON"),
    "no-title": (b'{"item_id": "i1"}', "title: Field required"),
    "empty-title": (item_bytes(title=""), "title"),
    "categories-not-strings": (item_bytes(categories=(1, 2)), "categories.0"),  # type: ignore[arg-type]
    "padded-id": (item_bytes(item_id=" i1"), "surrounding whitespace"),
    "bad-ts": (item_bytes(ts="yesterday"), "neither epoch seconds nor ISO-8601"),
    "too-large": (item_bytes(text="x" * 5000), "exceeds the limit of 4096 bytes"),
}


@pytest.mark.parametrize("payload,reason", BAD_ITEMS.values(), ids=list(BAD_ITEMS))
def test_bad_item_becomes_a_dead_letter_and_the_agent_goes_on(
    run_scenario: RunScenario, payload: bytes, reason: str
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as agent:
            await agent.put(payload, key=b"i1", partition=1)
            await h.eventually(lambda: bool(dead_letters(h)), "a dead letter", agent)
            await agent.put(item_bytes("i2"), key=b"i2", partition=1)
            await h.eventually(lambda: entry(h, "i2") is not None, "the next item", agent)

        [dl] = dead_letters(h)
        assert dl.key_text == "items:1:0"
        letter = dl.json()
        assert reason in letter["reason"], letter["reason"]
        assert letter["error"] == "ValidationError"
        assert base64.b64decode(letter["value_b64"]) == payload
        assert entry(h, "i1") is None

    run_scenario(scenario)


def test_cached_text_gets_its_vector_at_once(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        tkey = expected_text_key(h, "Blue Train", ("jazz",))
        text = item_text("Blue Train", ("jazz",), "Blue Train: a record", {})
        [vec] = await h.runtime.embed([tkey], [text])  # fills the vector cache
        async with h.agent("items") as agent:
            await agent.put(item_bytes("i1", "Blue Train", ("jazz",)), key=b"i1")
            await h.eventually(lambda: entry(h, "i1") is not None, "the catalog entry", agent)

        stored = entry(h, "i1")
        assert stored is not None and stored["vec"] == encode_vector(vec)
        assert h.runtime.stats.encoded == 1  # the call above only: nothing left to embed
        got = h.runtime.item_vector("i1")
        assert got is not None and np.allclose(got, vec)

    run_scenario(scenario)


def test_a_later_record_of_an_item_wins_and_external_vectors_attach_to_the_current_text(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "Old title"), key=b"i1")
            await items.put(item_bytes("i2", "Gone"), key=b"i2")
            await items.put(None, key=b"i2")
            await items.put(item_bytes("i1", "New title"), key=b"i1")
            await items.put(item_bytes("i4", "Last"), key=b"i4")
            await h.eventually(lambda: has_vec(h, "i4"), "the last item", items)
        current = entry(h, "i1")
        assert current is not None and current["title"] == "New title"
        assert current["text_key"] == expected_text_key(h, "New title", ("jazz",))
        assert entry(h, "i2") is None  # the deletion wins over the item embedded before it
        assert h.runtime.index is not None and len(h.runtime.index) == 2

        old_key = expected_text_key(h, "Old title", ("jazz",))
        v_old, v_new = unit(384, 1), unit(384, 3)
        async with h.agent("item_vectors") as vectors:
            for tkey, v, item_id in (
                (old_key, v_old, "i1"),
                (expected_text_key(h, "Gone", ("jazz",)), unit(384, 2), "i2"),
                (current["text_key"], v_new, "i1"),
            ):
                await vectors.put(
                    ItemVector(item_id=item_id, text_key=tkey, vec=encode_vector(v)), key=item_id
                )
            await h.eventually(
                lambda: np.allclose(h.runtime.item_vector("i1"), v_new), "the vec", vectors
            )
        assert np.allclose(decode_vector((entry(h, "i1") or {})["vec"]), v_new)
        assert entry(h, "i2") is None  # a vector for a deleted item does not revive it

        # The same item re-sent unchanged keeps its vector and is not embedded again.
        encoded = h.runtime.stats.encoded
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "New title"), key=b"i1")
            await items.put(item_bytes("i3"), key=b"i3")
            await h.eventually(lambda: has_vec(h, "i3"), "the next item", items)
        assert has_vec(h, "i1")  # the vector of its text, from the cache
        assert h.runtime.stats.encoded == encoded + 1  # i3 only

    run_scenario(scenario)


def test_changed_categories_move_the_item_in_the_category_map(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as agent:
            await agent.put(item_bytes("i1", categories=("jazz",)), key=b"i1")
            await agent.put(item_bytes("i1", categories=("soul", "funk")), key=b"i1")
            await h.eventually(
                lambda: (entry(h, "i1") or {}).get("categories") == ["soul", "funk"],
                "the update",
                agent,
            )

        assert h.runtime.item_categories["i1"] == ("soul", "funk")
        assert "i1" not in h.runtime.category_items.get("jazz", set())
        assert h.runtime.category_items["funk"] == {"i1"}

    run_scenario(scenario)


def test_a_batch_of_misses_is_encoded_in_one_call(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            for i in range(5):
                await items.put(item_bytes(f"i{i}", f"Title {i}"), key=f"i{i}".encode())
            await h.eventually(lambda: all(has_vec(h, f"i{i}") for i in range(5)), "5", items)
        assert h.runtime.stats.encoded == 5
        assert sum(h.runtime.stats.sizes) == 5 and len(h.runtime.stats.sizes) < 5
        assert all(len(catalog_records(h, f"i{i}")) == 1 for i in range(5))

    run_scenario(scenario)


@pytest.mark.parametrize(
    "payload",
    [
        item_bytes(ts=10**400),
        b'{"item_id":"i1","title":"t","x":' + b"[" * 1500 + b"]" * 1500 + b"}",
    ],
    ids=["ts-overflows-float", "nested-too-deep"],
)
def test_unparseable_item_becomes_a_dead_letter(run_scenario: RunScenario, payload: bytes) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as agent:
            await agent.put(payload, key=b"i1")
            await h.eventually(lambda: bool(dead_letters(h)), "a dead letter", agent)

    run_scenario(scenario)


def test_a_failed_encode_writes_the_entries_without_a_vector(run_scenario: RunScenario) -> None:
    """An encoder error is not a crash and loses no item: the batch's entries are written
    without a vector, and the next batch is embedded as usual."""

    async def scenario(h: AgentHarness) -> None:
        real = h.runtime.embed
        calls = 0

        async def flaky(keys: list[str], texts: list[str]) -> list[np.ndarray | None]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("encoder down")
            return await real(keys, texts)

        h.runtime.embed = flaky  # type: ignore[method-assign]
        async with h.agent("items") as agent:
            await agent.put(item_bytes("i1", "Blue Train"), key=b"i1")
            await h.eventually(lambda: entry(h, "i1") is not None, "the entry", agent)
            await agent.put(item_bytes("i2", "Giant Steps"), key=b"i2")
            await h.eventually(lambda: has_vec(h, "i2"), "the next item", agent)
        assert (entry(h, "i1") or {}).get("vec") is None
        assert not dead_letters(h)

    run_scenario(scenario)


def test_the_next_batch_is_encoded_while_the_last_one_is_written(
    run_scenario: RunScenario,
) -> None:
    """The encoder starts batch N+1 the moment N is encoded: N's writes wait for it, not it
    for N's writes (they took ~0.1 s per 256 items, the encoder idle meanwhile)."""

    async def scenario(h: AgentHarness) -> None:
        real_embed, real_apply = h.runtime.embed, h.runtime.apply_catalog_many
        log: list[str] = []
        gate = asyncio.Event()

        async def embed(keys: list[str], texts: list[str]) -> list[np.ndarray | None]:
            log.append(f"encode {len(keys)}")
            if len(log) == 1:
                await gate.wait()  # batch 1 stays in the encoder until batch 2 is read
            return await real_embed(keys, texts)

        def apply(changes: list[tuple[str, Any, Any]], **kw: Any) -> None:
            log.append("write " + ",".join(i for i, _, _ in changes))
            real_apply(changes, **kw)

        h.runtime.embed = embed  # type: ignore[method-assign]
        h.runtime.apply_catalog_many = apply  # type: ignore[method-assign]
        async with h.agent("items") as agent:
            await agent.put(item_bytes("i1", "Blue Train"), key=b"i1")
            await h.eventually(lambda: log == ["encode 1"], "batch 1 in the encoder", agent)
            await agent.put(item_bytes("i2", "Giant Steps"), key=b"i2")
            await asyncio.sleep(0.3)  # batch 2 read and decoded (it waits 50 ms at most)
            gate.set()
            await h.eventually(lambda: has_vec(h, "i1") and has_vec(h, "i2"), "both", agent)
        assert log == ["encode 1", "encode 1", "write i1", "write i2"]

    run_scenario(scenario)

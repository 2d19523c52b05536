"""The catalog agents: items → the `catalog` GlobalTable (+ the worker's category map and
vector index), with embedding requests for texts not in the vector cache.

Each test runs on the memory:// and the rocksdb:// table store (see conftest.py).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from agent_harness import T0, AgentHarness, RunScenario, Sent, item_bytes

from recstream.agents.embedding import decode_vector, encode_vector
from recstream.models.item_text import item_text, text_key
from recstream.streams.records import EmbedRequest, ItemVector


def entry(h: AgentHarness, item_id: str) -> dict | None:
    return h.tables.catalog.get(item_id)


def dead_letters(h: AgentHarness) -> list[Sent]:
    return h.sent(h.topics.dead_letters)


def embed_requests(h: AgentHarness) -> list[EmbedRequest]:
    return [EmbedRequest.from_data(s.json()) for s in h.sent(h.topics.item_embed)]


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
            await h.eventually(lambda: entry(h, "i1") is not None, "the catalog entry", agent)
            await h.eventually(lambda: bool(embed_requests(h)), "an embed request", agent)

        tkey = expected_text_key(h, "Blue Train", ("jazz", "hard bop"))
        assert entry(h, "i1") == {
            "title": "Blue Train",
            "categories": ["jazz", "hard bop"],
            "ts": T0,
            "text_key": tkey,
            "vec": None,  # not in the vector cache: embedded later by the item embedder
        }
        assert "i1" in h.tables.catalog
        assert h.runtime.item_categories["i1"] == ("jazz", "hard bop")
        assert h.runtime.category_items["jazz"] == {"i1"}
        [req] = embed_requests(h)
        assert (req.item_id, req.text_key) == ("i1", tkey)
        assert "Blue Train" in req.text
        assert h.sent(h.topics.item_embed)[0].key_text == "i1"
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
        assert not h.sent(h.topics.item_embed)  # nothing left to embed
        got = h.runtime.item_vector("i1")
        assert got is not None and np.allclose(got, vec)

    run_scenario(scenario)


def test_item_vector_attaches_to_the_current_text_only(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "Old title"), key=b"i1")
            await items.put(item_bytes("i2", "Gone"), key=b"i2")
            await items.put(None, key=b"i2")
            await items.put(item_bytes("i1", "New title"), key=b"i1")
            await h.eventually(lambda: len(embed_requests(h)) == 3, "three requests", items)
            await h.eventually(
                lambda: (entry(h, "i1") or {}).get("title") == "New title", "the update", items
            )
        old, gone, new = embed_requests(h)
        v_old, v_gone, v_new = unit(384, 1), unit(384, 2), unit(384, 3)

        async with h.agent("item_vectors") as vectors:
            for req, v in ((old, v_old), (gone, v_gone), (new, v_new)):
                await vectors.put(
                    ItemVector(item_id=req.item_id, text_key=req.text_key, vec=encode_vector(v)),
                    key=req.item_id,
                )
            await h.eventually(
                lambda: (entry(h, "i1") or {}).get("vec") is not None, "the vec", vectors
            )

        current = entry(h, "i1")
        assert current is not None and current["text_key"] == new.text_key
        assert np.allclose(decode_vector(current["vec"]), v_new)  # not the stale one
        assert entry(h, "i2") is None  # a vector for a deleted item does not revive it
        assert h.runtime.index is not None and len(h.runtime.index) == 1
        assert np.allclose(h.runtime.item_vector("i1"), v_new)

        # The same item re-sent unchanged keeps its vector and is not embedded again.
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "New title"), key=b"i1")
            await items.put(item_bytes("i3"), key=b"i3")
            await h.eventually(lambda: entry(h, "i3") is not None, "the next item", items)
        assert (entry(h, "i1") or {}).get("vec") == current["vec"]
        assert [r.item_id for r in embed_requests(h)] == ["i1", "i2", "i1", "i3"]

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


def test_item_embedder_completes_the_entry(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "Blue Train", ("jazz",)), key=b"i1")
            await items.put(item_bytes("i2", "Gone"), key=b"i2")
            await h.eventually(lambda: len(embed_requests(h)) == 2, "two embed requests", items)
            await items.put(None, key=b"i2")
            await h.eventually(lambda: entry(h, "i2") is None, "the deletion", items)
        first, gone = embed_requests(h)

        async with h.agent("item_embedder") as embedder:
            await embedder.put(first, key="i1")
            await embedder.put(gone, key="i2")
            await h.eventually(
                lambda: (entry(h, "i1") or {}).get("vec") is not None, "the vec", embedder
            )
        # Straight into the catalog, not through the item-vectors topic.
        assert not h.sent(h.topics.item_vectors)
        current = entry(h, "i1")
        assert current is not None and current["text_key"] == first.text_key
        vec = decode_vector(current["vec"])
        assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3
        assert h.runtime.cached(first.text_key) is not None
        got = h.runtime.item_vector("i1")
        assert got is not None and np.allclose(got, vec, atol=1e-6)
        assert entry(h, "i2") is None  # a vector for a deleted item does not revive it
        assert h.runtime.index is not None and len(h.runtime.index) == 1

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

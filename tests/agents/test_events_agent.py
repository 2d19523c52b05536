"""The user-events agent as a micro-batch shell: read a batch → engine → write each changed
key once → send. Each test runs on the memory:// and the rocksdb:// table store (conftest.py).

`events_partitions` is 2 (conftest.py): murmur2 puts u1 and u4 on partition 0, u5 on 1.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from agent_harness import T0, AgentHarness, RunScenario, Sent, event_bytes, item_bytes

from recstream.agents.embedding import encode_vector
from recstream.config.engine_params import interest_params
from recstream.models.recommender import Applied, RecList, Recommender
from recstream.models.shared_stats import SharedDelta
from recstream.models.user_record import UserRecord
from recstream.streams.records import ItemVector


def record(h: AgentHarness, user_id: str) -> UserRecord | None:
    raw = h.tables.user_state.get(user_id)
    return None if raw is None else UserRecord.from_bytes(raw, interest_params(h.settings))


def lists(h: AgentHarness, user_id: str | None = None) -> list[dict]:
    """Published recommendation lists (decoded), optionally only those of one user."""
    recs = [s.json() for s in h.sent(h.topics.recommendations)]
    return [r for r in recs if user_id is None or r["user_id"] == user_id]


def changelog(h: AgentHarness, table: str) -> list[Sent]:
    name = f"{h.settings.app_id}-{table}-changelog"
    return [s for s in h.producer.changelog if s.topic == name]


def dead_letters(h: AgentHarness) -> list[Sent]:
    return h.sent(h.topics.dead_letters)


async def publish_catalog(h: AgentHarness, n: int = 6) -> None:
    """Items i0..i{n-1} in two categories, with seeded unit vectors, in this worker's catalog
    (the items agent's own vectors are replaced through item-vectors: the embedding stage
    has its own tests)."""
    rng = np.random.default_rng(0)
    seeded = []
    async with h.agent("items") as items:
        for i in range(n):
            await items.put(item_bytes(f"i{i}", f"Title {i}", ("jazz" if i % 2 else "soul",)))
        await h.eventually(lambda: len(h.runtime.index or ()) == n, "embedded items", items)
    async with h.agent("item_vectors") as vectors:
        for i in range(n):
            v = rng.standard_normal(384).astype(np.float32)
            seeded.append(v / np.linalg.norm(v))
            await vectors.put(
                ItemVector(
                    item_id=f"i{i}",
                    text_key=h.tables.catalog[f"i{i}"]["text_key"],
                    vec=encode_vector(seeded[-1]),
                ),
                key=f"i{i}",
            )

        def replaced() -> bool:
            got = [h.runtime.item_vector(f"i{i}") for i in range(n)]
            return all(
                g is not None and np.allclose(g, v) for g, v in zip(got, seeded, strict=True)
            )

        await h.eventually(replaced, "the seeded vectors indexed", vectors)


def test_valid_event_updates_the_user_record_and_publishes_a_list(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "a list for u1", agent)

        rec = record(h, "u1")
        assert rec is not None
        state = rec.interest
        assert state.event_count == 1 and state.last_event_id == "e1" and state.last_ts == T0
        assert state.has_seen("e1") and state.has_consumed("i1")
        assert rec.recent == [("i1", T0)]
        [out] = lists(h)
        assert out["ranker"] == "fused" and out["as_of"] == {"event_id": "e1", "ts": T0}
        assert abs(sum(out["weights"].values()) - 1.0) < 1e-9
        assert out["items"] and "i1" not in {i["item_id"] for i in out["items"]}
        for item in out["items"]:
            assert abs(sum(item["contributions"].values()) - item["score"]) < 1e-9
        assert rec.last_list is not None and rec.last_list["rec_id"] == out["rec_id"]
        assert len(rec.served) == 1 and rec.served[0].rec_id == out["rec_id"]
        # The click taught the shared statistics: one delta record, applied on this worker.
        [delta] = changelog(h, "shared-deltas")
        assert "i1" in SharedDelta.from_dict(json.loads(delta.value or b"")).popularity
        assert "i1" in h.pipeline.engine.shared.popularity
        assert not dead_letters(h)

    run_scenario(scenario)


def test_a_batch_writes_each_changed_user_once_and_lists_every_event(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            for j in range(5):
                await agent.put(event_bytes("u1", f"a{j}", T0 + j, item=f"i{j}"), key=b"u1")
                await agent.put(event_bytes("u4", f"b{j}", T0 + j, item=f"i{j}"), key=b"u4")
            await h.eventually(lambda: len(lists(h)) == 10, "ten lists", agent)

        assert [r["as_of"]["event_id"] for r in lists(h, "u1")] == [f"a{j}" for j in range(5)]
        writes = [s.key for s in changelog(h, "user-state")]
        # One batch (wait 1 s): one changelog record per user, however many events it had.
        assert sorted(writes) == [b"u1", b"u4"]
        # A list never offers what the user consumed up to its event.
        for r in lists(h, "u1"):
            j = int(r["as_of"]["event_id"][1:])
            assert not {f"i{x}" for x in range(j + 1)} & {i["item_id"] for i in r["items"]}
        state = record(h, "u1")
        assert state is not None and state.interest.event_count == 5

    run_scenario(scenario, batch_wait_s=1.0)


def test_keys_of_a_batch_spanning_partitions_land_in_their_own_partitions(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u5", "e5", T0, item="i2"), key=b"u5", partition=1)
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1", partition=0)
            await h.eventually(lambda: len(lists(h)) == 2, "two lists", agent)
        parts = {s.key: s.partition for s in changelog(h, "user-state")}
        assert parts == {b"u5": 1, b"u1": 0}
        deltas = {s.partition for s in changelog(h, "shared-deltas")}
        assert deltas == {0, 1}

    run_scenario(scenario, batch_wait_s=1.0)


def test_a_redelivered_event_changes_nothing_and_publishes_nothing(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "the first list", agent)
            before = h.tables.user_state.get("u1")
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 1, item="i2"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 2, "the list of e2", agent)
        assert [r["as_of"]["event_id"] for r in lists(h)] == ["e1", "e2"]
        rec = record(h, "u1")
        assert before is not None and rec is not None and rec.interest.event_count == 2

    run_scenario(scenario)


def test_a_search_text_is_embedded_in_the_batch_and_applied(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            body = event_bytes("u1", "s1", T0, item=None, event_type="search", text="soul jazz")
            await agent.put(body, key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "a list for the search", agent)
        rec = record(h, "u1")
        assert rec is not None and rec.interest.event_count == 1
        assert float(abs(rec.interest.score_vector("short", T0)).sum()) > 0
        assert h.runtime.stats.encoded >= 1

    run_scenario(scenario)


def test_with_debounce_one_list_per_user_per_batch_reflects_its_last_event(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            for j in range(4):
                await agent.put(event_bytes("u1", f"e{j}", T0 + j, item=f"i{j}"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) >= 1, "a list", agent)
            await asyncio.sleep(1.5)  # any further batch would have published by now
        [only] = lists(h)
        assert only["as_of"]["event_id"] == "e3"
        rec = record(h, "u1")
        assert rec is not None and rec.interest.event_count == 4

    run_scenario(scenario, batch_wait_s=1.0, debounce_s=1.0)


def test_popularity_ranker_publishes_popularity_lists(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(event_bytes("u4", "e2", T0 + 1, item="i2"), key=b"u4")
            await h.eventually(lambda: len(lists(h)) == 2, "two lists", agent)
        last = lists(h, "u4")[-1]
        assert last["ranker"] == "popularity" and last["weights"] == {"popularity": 1.0}
        # Shared statistics move between batches: u4's batch saw u1's click on i1.
        assert [i["item_id"] for i in last["items"]][:1] in (["i1"], [])

    run_scenario(scenario, ranker="popularity")


@pytest.mark.parametrize("value", [b"{", b"[]", b'{"user_id": "u1"}', b"\xff\xfe"])
def test_bad_records_in_a_batch_are_dead_lettered_and_the_rest_applied(
    run_scenario: RunScenario, value: bytes
) -> None:
    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(value, key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 1, item="i2"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 2, "two lists", agent)
            assert not agent.crashed
        assert len(dead_letters(h)) == 1
        assert json.loads(dead_letters(h)[0].value or b"")["offset"] == 1

    run_scenario(scenario, batch_wait_s=1.0)


@pytest.mark.parametrize("refresh", [1, 500])
def test_later_chunks_of_a_batch_rank_with_what_earlier_chunks_taught(
    run_scenario: RunScenario, refresh: int
) -> None:
    """u4 goes i1 → i2, then u1 clicks i1, all in one batch: u1's list sees the co-visit and
    the rule "i2 after i1" only when u4's events were a chunk of their own before."""

    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u4", "b1", T0, item="i1"), key=b"u4")
            await agent.put(event_bytes("u4", "b2", T0 + 1, item="i2"), key=b"u4")
            await agent.put(event_bytes("u1", "a1", T0 + 2, item="i1"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 3, "three lists", agent)

        [out] = lists(h, "u1")
        i2 = next(i for i in out["items"] if i["item_id"] == "i2")
        fresh = refresh == 1
        assert (i2["signals"]["covisit"] > 0) is fresh
        assert (i2["signals"]["sequence"] > 0) is fresh
        # One delta record per partition and chunk that taught something (all on partition 0).
        assert len(changelog(h, "shared-deltas")) == (3 if fresh else 1)
        assert sorted(s.key for s in changelog(h, "user-state")) == [b"u1", b"u4"]

    run_scenario(scenario, batch_wait_s=1.0, shared_refresh_events=refresh)


def test_a_chunk_the_engine_fails_on_is_retried_event_by_event_from_its_users_records(
    run_scenario: RunScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of two: (e1, e2) pass; (e3, e4) fails as a whole because of e3, so u1's record
    goes back to what (e1, e2) left, e3 alone fails again (a dead letter) and e4 is applied:
    three events counted, each once, and a list for each of them."""
    rank = Recommender.rank

    def failing_rank(self: Recommender, applied: Applied) -> list[RecList]:
        if any(r.event_id == "e3" for r in applied.requests):
            raise RuntimeError("engine bug")
        return rank(self, applied)

    monkeypatch.setattr(Recommender, "rank", failing_rank)

    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            for j in range(1, 5):
                await agent.put(event_bytes("u1", f"e{j}", T0 + j, item=f"i{j}"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 3, "three lists", agent)
            assert not agent.crashed

        assert [r["as_of"]["event_id"] for r in lists(h)] == ["e1", "e2", "e4"]
        [dead] = dead_letters(h)
        assert json.loads(dead.value or b"")["offset"] == 2
        assert "engine bug" in json.loads(dead.value or b"")["reason"]
        rec = record(h, "u1")
        assert rec is not None and rec.interest.event_count == 3
        assert not rec.interest.has_seen("e3") and rec.interest.has_seen("e4")
        assert [s.key for s in changelog(h, "user-state")] == [b"u1"]
        taught = [
            SharedDelta.from_dict(json.loads(s.value or b"")) for s in changelog(h, "shared-deltas")
        ]
        assert [sorted(d.popularity) for d in taught] == [["i1", "i2"], ["i4"]]

    run_scenario(scenario, batch_wait_s=1.0, shared_refresh_events=2)


def test_a_record_that_cannot_be_stored_dead_letters_its_users_events_only(
    run_scenario: RunScenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    to_bytes = UserRecord.to_bytes

    def refusing(self: UserRecord) -> bytes:
        if self.recent and self.recent[-1][0] == "i3":
            raise ValueError("a user record holds a non-finite number")
        return to_bytes(self)

    monkeypatch.setattr(UserRecord, "to_bytes", refusing)

    async def scenario(h: AgentHarness) -> None:
        await publish_catalog(h)
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(event_bytes("u4", "b1", T0, item="i2"), key=b"u4")
            await agent.put(event_bytes("u4", "b2", T0 + 1, item="i3"), key=b"u4")
            await h.eventually(lambda: len(dead_letters(h)) == 2, "u4's dead letters", agent)
            assert not agent.crashed
        assert [json.loads(d.value or b"")["offset"] for d in dead_letters(h)] == [1, 2]
        assert record(h, "u4") is None
        rec = record(h, "u1")
        assert rec is not None and rec.interest.event_count == 1

    run_scenario(scenario, batch_wait_s=1.0)

"""The popularity agent: item hits (repartitioned by item_id) → decayed item popularity, and
each partition's top items broadcast through the `popular_top` GlobalTable.

Each test runs on the memory:// and the rocksdb:// table store (see conftest.py).
"""

from __future__ import annotations

import math

from agent_harness import T0, AgentHarness, RunScenario

from recstream.models import decay
from recstream.models.popularity import ItemPopularity
from recstream.streams.records import ItemHit

DAY = 86_400.0


def popularity(h: AgentHarness, item_id: str) -> ItemPopularity | None:
    raw = h.tables.item_popularity.get(item_id)
    return None if raw is None else ItemPopularity.from_bytes(raw)


def score(h: AgentHarness, item_id: str, at_ts: float) -> float:
    state = popularity(h, item_id)
    assert state is not None, f"no popularity for {item_id}"
    return state.score(at_ts, decay.decay_rate(h.settings.popularity_half_life_s))


def hit(item_id: str, event_id: str, weight: float = 1.0, ts: float = T0) -> ItemHit:
    return ItemHit(item_id=item_id, event_id=event_id, ts=ts, weight=weight)


FLUSH = ItemHit(item_id="", event_id="", ts=0.0, weight=0.0, flush=True)


def test_item_hits_update_the_decayed_popularity(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("popularity") as agent:
            await agent.put(hit("i1", "e1", 2.0, T0), key="i1")
            await agent.put(hit("i1", "e2", 8.0, T0 + 7 * DAY), key="i1")  # one half-life on
            await agent.put(hit("i2", "e3", 1.0, T0), key="i2")
            await h.eventually(lambda: popularity(h, "i2") is not None, "i2's popularity", agent)

        assert math.isclose(score(h, "i1", T0 + 7 * DAY), 2.0 / 2 + 8.0, rel_tol=1e-9)
        assert math.isclose(score(h, "i2", T0), 1.0, rel_tol=1e-9)
        assert len(popularity(h, "i1").recent) == 2  # type: ignore[union-attr]
        changelog = {s.key for s in h.producer.changelog if "item-popularity" in s.topic}
        # Raw keys on the changelog: the bytes the router hashes to find the owning worker.
        assert changelog == {b"i1", b"i2"}

    run_scenario(scenario)


def test_duplicate_hits_are_ignored(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("popularity") as agent:
            await agent.put(hit("i1", "e1", 2.0), key="i1")
            # Redelivered hits (same event_id): the first weight counts once.
            await agent.put(hit("i1", "e1", 2.0), key="i1")
            await agent.put(hit("i1", "e1", 5.0, T0 + 60), key="i1")
            await agent.put(hit("i2", "e9"), key="i2")
            await h.eventually(lambda: popularity(h, "i2") is not None, "i2's popularity", agent)

        assert math.isclose(score(h, "i1", T0), 2.0, rel_tol=1e-9)
        assert len(popularity(h, "i1").recent) == 1  # type: ignore[union-attr]
        # The same event id on another item is another interaction.
        async with h.agent("popularity") as agent:
            await agent.put(hit("i3", "e1", 4.0), key="i3")
            await h.eventually(lambda: popularity(h, "i3") is not None, "i3's popularity", agent)
        assert math.isclose(score(h, "i3", T0), 4.0, rel_tol=1e-9)

    run_scenario(scenario)


def test_top_items_are_broadcast_per_partition_on_flush(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        def top(partition: int) -> dict[str, float]:
            return h.tables.popular_top.get(f"p{partition}") or {}

        async with h.agent("popularity") as agent:
            await agent.put(hit("i1", "e1", 1.0), key="i1", partition=1)
            await agent.put(hit("i2", "e2", 3.0), key="i2", partition=1)
            # A hit on another partition proves the two above were handled.
            await agent.put(hit("i3", "e3", 2.0), key="i3", partition=0)
            await h.eventually(lambda: popularity(h, "i3") is not None, "i3's popularity", agent)
            # Broadcasts are rate-limited (interval 1 h here): i2 waits for the flush record.
            assert "i2" not in top(1)
            await agent.put(FLUSH, partition=1)
            await h.eventually(lambda: set(top(1)) == {"i1", "i2"}, "p1's broadcast", agent)
            # A flush with nothing pending changes nothing.
            await agent.put(FLUSH, partition=1)
            await agent.put(FLUSH, partition=0)
            await h.eventually(lambda: "i3" in top(0), "p0's broadcast", agent)

        for item_id, partition in (("i1", 1), ("i2", 1), ("i3", 0)):
            state = popularity(h, item_id)
            assert state is not None
            assert top(partition)[item_id] == state.log_mass
        assert "i3" not in top(1) and "i1" not in top(0)
        assert popularity(h, "") is None  # flush records are not interactions

    run_scenario(scenario, popular_snapshot_interval_s=3600.0)


def test_broadcast_keeps_only_the_top_n(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("popularity") as agent:
            for n, weight in enumerate([1.0, 5.0, 3.0, 4.0, 2.0]):
                await agent.put(hit(f"i{n}", f"e{n}", weight), key=f"i{n}")
            await agent.put(FLUSH)
            await h.eventually(
                lambda: len(h.tables.popular_top.get("p0") or {}) == 3, "the broadcast", agent
            )

        assert set(h.tables.popular_top.get("p0")) == {"i1", "i3", "i2"}

    run_scenario(scenario, popular_top_n=3, popular_snapshot_interval_s=3600.0)

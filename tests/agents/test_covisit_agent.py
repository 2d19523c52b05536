"""The co-visitation agent: pair increments (repartitioned by item_id) → each item's top-M
decayed neighbours in the `covisit` GlobalTable.

Each test runs on the memory:// and the rocksdb:// table store (see conftest.py).
"""

from __future__ import annotations

import math

from agent_harness import T0, AgentHarness, RunScenario

from recstream.models.covisitation import CoVisitNeighbours
from recstream.streams.records import CoVisitIncrements


def neighbours(h: AgentHarness, item_id: str) -> CoVisitNeighbours | None:
    raw = h.tables.covisit.get(item_id)
    return None if raw is None else CoVisitNeighbours.from_dict(raw)


def scores(h: AgentHarness, item_id: str, at_ts: float = T0) -> dict[str, float]:
    nb = neighbours(h, item_id)
    return {} if nb is None else dict(nb.score(at_ts))


def pair(item_id: str, neighbour_id: str, weight: float, ts: float = T0) -> CoVisitIncrements:
    return CoVisitIncrements(item_id=item_id, neighbours=[neighbour_id], weights=[weight], ts=[ts])


def test_pairs_update_the_neighbour_table(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("covisit") as agent:
            await agent.put(pair("i1", "i2", 0.5), key="i1")
            await agent.put(pair("i1", "i2", 0.25), key="i1")
            await agent.put(pair("i1", "i3", 1.0), key="i1")
            await agent.put(pair("i2", "i1", 0.5), key="i2")
            await h.eventually(lambda: "i1" in scores(h, "i2"), "i2's neighbours", agent)

        s1 = scores(h, "i1")
        assert set(s1) == {"i2", "i3"}
        assert math.isclose(s1["i2"], 0.75, rel_tol=1e-9)
        assert math.isclose(s1["i3"], 1.0, rel_tol=1e-9)
        assert [n for n, _ in neighbours(h, "i1").score(T0)] == ["i3", "i2"]  # type: ignore[union-attr]
        assert set(scores(h, "i2")) == {"i1"}
        nb = neighbours(h, "i1")
        assert nb is not None
        assert nb.capacity == h.settings.covisit_neighbours
        assert nb.half_life_s == h.settings.covisit_half_life_s

    run_scenario(scenario)


def test_only_the_top_m_neighbours_are_kept(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("covisit") as agent:
            for n, weight in enumerate([0.3, 0.9, 0.1, 0.6]):
                await agent.put(pair("i0", f"n{n}", weight), key="i0")
            await agent.put(pair("i9", "i0", 1.0), key="i9")
            await h.eventually(lambda: bool(scores(h, "i9")), "every pair", agent)

        assert set(scores(h, "i0")) == {"n1", "n3"}

    run_scenario(scenario, covisit_neighbours=2)


def test_neighbour_scores_decay_with_event_time(run_scenario: RunScenario) -> None:
    half_life = 30 * 86_400.0

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("covisit") as agent:
            await agent.put(pair("i1", "old", 1.0, T0), key="i1")
            await agent.put(pair("i1", "new", 1.0, T0 + half_life), key="i1")
            await h.eventually(lambda: "new" in scores(h, "i1"), "both pairs", agent)

        s = scores(h, "i1", at_ts=T0 + half_life)
        assert math.isclose(s["new"], 1.0, rel_tol=1e-9)
        assert math.isclose(s["old"], 0.5, rel_tol=1e-9)

    run_scenario(scenario, covisit_half_life_s=half_life)


def test_one_record_applies_all_its_increments_once(run_scenario: RunScenario) -> None:
    rec = CoVisitIncrements(
        item_id="i1",
        neighbours=["i2", "i3", "i4"],
        weights=[0.5, 0.25, 1.0],
        ts=[T0, T0, T0],
        increments_id="e1\x1fi1",
    )

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("covisit") as agent:
            await agent.put(rec, key="i1")
            await agent.put(rec, key="i1")  # redelivered: skipped whole
            await agent.put(pair("i9", "i0", 1.0), key="i9")
            await h.eventually(lambda: bool(scores(h, "i9")), "every record", agent)

        s1 = scores(h, "i1")
        assert s1.keys() == {"i2", "i3", "i4"}
        assert math.isclose(s1["i2"], 0.5, rel_tol=1e-9)
        assert math.isclose(s1["i3"], 0.25, rel_tol=1e-9)
        assert math.isclose(s1["i4"], 1.0, rel_tol=1e-9)

    run_scenario(scenario)


def test_a_corrupt_record_is_dead_lettered_and_changes_nothing(
    run_scenario: RunScenario,
) -> None:
    bad = CoVisitIncrements(item_id="i1", neighbours=["i2", "i3"], weights=[0.5], ts=[T0, T0])
    negative = CoVisitIncrements(item_id="i1", neighbours=["i2"], weights=[-1.0], ts=[T0])

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("covisit") as agent:
            await agent.put(pair("i1", "i5", 1.0), key="i1")
            await agent.put(bad, key="i1")
            await agent.put(negative, key="i1")
            await agent.put(pair("i9", "i0", 1.0), key="i9")
            await h.eventually(lambda: bool(scores(h, "i9")), "every record", agent)

        assert scores(h, "i1") == {"i5": 1.0}
        letters = [s.json() for s in h.sent(h.topics.dead_letters)]
        assert [d["error"] for d in letters] == ["ValidationError", "ValidationError"]
        assert all("corrupt co-visit record" in d["reason"] for d in letters)

    run_scenario(scenario)

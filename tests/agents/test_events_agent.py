"""The user-events agents: validate → de-duplicate → update the user's state → fan out → publish.

Each test runs on the memory:// and the rocksdb:// table store (see conftest.py).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from agent_harness import T0, AgentHarness, RunScenario, Sent, event_bytes, item_bytes

from recstream.agents.embedding import decode_vector, encode_vector
from recstream.agents.routing import owner_partition
from recstream.agents.state import interest_params
from recstream.models.interest_state import InterestState
from recstream.streams.records import EmbeddedText, ItemHit, UserText


def user_state(h: AgentHarness, user_id: str) -> InterestState | None:
    raw = h.tables.user_state.get(user_id)
    return None if raw is None else InterestState.from_bytes(raw, interest_params(h.settings))


def lists(h: AgentHarness, user_id: str | None = None) -> list[dict]:
    """Published recommendation lists (decoded), optionally only those of one user."""
    recs = [s.json() for s in h.sent(h.topics.recommendations)]
    return [r for r in recs if user_id is None or r["user_id"] == user_id]


def dead_letters(h: AgentHarness) -> list[Sent]:
    return h.sent(h.topics.dead_letters)


def test_valid_event_updates_the_user_state_and_publishes_a_list(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "a list for u1", agent)

        state = user_state(h, "u1")
        assert state is not None
        assert state.event_count == 1
        assert state.last_event_id == "e1" and state.last_ts == T0
        assert state.has_seen("e1") and state.has_consumed("i1")

        [sent] = h.sent(h.topics.recommendations)
        assert sent.key_text == "u1"
        rec = sent.json()
        assert rec["user_id"] == "u1" and rec["ranker"] == "fused"
        assert rec["as_of"] == {"event_id": "e1", "ts": T0}
        assert abs(sum(rec["weights"].values()) - 1.0) < 1e-9

        # The click is repartitioned by item for the popularity agent.
        [hit] = h.sent(h.topics.item_hits)
        assert hit.key_text == "i1"
        assert hit.json() == {
            "item_id": "i1",
            "event_id": "e1",
            "ts": T0,
            "weight": 2.0,
            "flush": False,
        }
        assert h.tables.user_ranking.get("u1")["recent"] == [["i1", T0]]
        assert not h.sent(h.topics.covisit_pairs)  # a first consumption has no partner yet
        assert not dead_letters(h)
        # Changed state is assigned back, so it reaches the changelog.
        changelogs = {s.topic for s in h.producer.changelog}
        assert {"agents-test-user-state-changelog", "agents-test-user-ranking-changelog"} <= (
            changelogs
        )

    run_scenario(scenario)


BAD_RECORDS = {
    "not-json": (b'{"user_id": "u1", ', "malformed JSON"),
    "not-utf8": (b'{"user_id": "\xff"}', "not valid UTF-8"),
    "empty": (b"", "empty payload"),
    "json-array": (b"[1, 2]", "expected a JSON object, got list"),
    "no-item": (event_bytes(item=None), "a click event needs an item_id"),
    "unknown-type": (event_bytes(event_type="teleport"), "event_type"),
    "ts-in-ms": (event_bytes(ts=T0 * 1000), "days in the future"),
    "before-1990": (event_bytes(ts=0), "before the earliest accepted event time"),
    "too-large": (event_bytes(pad="x" * 5000), "exceeds the limit of 4096 bytes"),
}


@pytest.mark.parametrize("payload,reason", BAD_RECORDS.values(), ids=list(BAD_RECORDS))
def test_malformed_record_becomes_a_dead_letter_and_the_agent_goes_on(
    run_scenario: RunScenario, payload: bytes, reason: str
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(payload, key=b"u1", partition=1)
            await h.eventually(lambda: len(dead_letters(h)) == 1, "a dead letter", agent)
            # On u1's own partition, so that it is applied here and not re-routed.
            await agent.put(event_bytes("u1", "e1"), key=b"u1", partition=owner_partition(b"u1", 2))
            await h.eventually(lambda: len(lists(h, "u1")) == 1, "a list after it", agent)

        [dl] = dead_letters(h)
        assert dl.key_text == "events:1:0"
        letter = dl.json()
        assert reason in letter["reason"]
        assert letter["error"] == "ValidationError"
        assert (letter["source_topic"], letter["partition"], letter["offset"]) == ("events", 1, 0)
        assert base64.b64decode(letter["key_b64"]) == b"u1"
        assert base64.b64decode(letter["value_b64"]) == payload
        assert letter["size"] == len(payload)
        state = user_state(h, "u1")
        assert state is not None and state.event_count == 1

    run_scenario(scenario)


def test_duplicate_event_id_is_ignored(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            # Redelivered (same event_id), even with other content: nothing may change.
            await agent.put(event_bytes("u1", "e1", T0 + 5, item="i9"), key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 10, item="i2"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 2, "lists for e1 and e2", agent)

        state = user_state(h, "u1")
        assert state is not None
        assert state.event_count == 2 and state.last_event_id == "e2"
        assert not state.has_consumed("i9")
        assert [r["as_of"]["event_id"] for r in lists(h)] == ["e1", "e2"]
        assert [s.json()["event_id"] for s in h.sent(h.topics.item_hits)] == ["e1", "e2"]
        assert h.tables.user_ranking.get("u1")["recent"] == [["i1", T0], ["i2", T0 + 10]]

    run_scenario(scenario)


@pytest.mark.parametrize("key", [b"someone-else", None], ids=["other-key", "no-key"])
def test_record_keyed_otherwise_is_resent_keyed_by_its_user_id(
    run_scenario: RunScenario, key: bytes | None
) -> None:
    raw = event_bytes("u1", "e1")

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(raw, key=key)
            await h.eventually(lambda: bool(h.sent(h.topics.events)), "the re-sent record", agent)
            # The agent does not apply it on this (wrong) partition ...
            assert user_state(h, "u1") is None and not lists(h)
            # ... but once the re-sent record comes back, keyed right, it is applied.
            [resent] = h.sent(h.topics.events)
            await agent.put(resent.value, key=resent.key, partition=resent.partition)
            await h.eventually(lambda: len(lists(h)) == 1, "a list for u1", agent)

        assert resent.key == b"u1" and resent.value == raw
        assert resent.partition == owner_partition(b"u1", h.settings.events_partitions)
        assert len(h.sent(h.topics.events)) == 1  # re-sent once, not again
        state = user_state(h, "u1")
        assert state is not None and state.event_count == 1
        assert not dead_letters(h)

    run_scenario(scenario)


def test_event_without_id_is_deduplicated_by_its_source_position(
    run_scenario: RunScenario,
) -> None:
    assert owner_partition(b"u5", 2) == 1  # u5's events are applied on partition 1

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u5", None, T0), key=b"u5", partition=1)
            await h.eventually(lambda: len(lists(h)) == 1, "a list for u5", agent)

        state = user_state(h, "u5")
        assert state is not None and state.last_event_id == "events:1:0"
        assert lists(h)[0]["as_of"]["event_id"] == "events:1:0"

    run_scenario(scenario)


def test_consecutive_consumptions_send_covisit_pairs_both_ways(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 60, item="i2"), key=b"u1")
            # Outside the co-visitation window (6 h): no pair with i1 or i2.
            await agent.put(event_bytes("u1", "e3", T0 + 86_400, item="i3"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 3, "three lists", agent)

        recs = [(s.key_text, s.json()) for s in h.sent(h.topics.covisit_pairs)]
        assert [(k, r["item_id"], r["neighbours"]) for k, r in recs] == [
            ("i1", "i1", ["i2"]),
            ("i2", "i2", ["i1"]),
        ]
        for _, r in recs:
            assert all(0 < w <= 1 for w in r["weights"]) and r["ts"] == [T0 + 60]
            assert r["increments_id"].startswith("e2")

    run_scenario(scenario)


def test_one_covisit_record_per_item_carries_all_of_an_events_increments(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 60, item="i2"), key=b"u1")
            await agent.put(event_bytes("u1", "e3", T0 + 120, item="i3"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 3, "three lists", agent)

        third = [s.json() for s in h.sent(h.topics.covisit_pairs)][2:]
        # e3 pairs i3 with i1 and i2: i3 gets one record with both neighbours, each of
        # i1 and i2 one record with i3.
        assert [(r["item_id"], r["neighbours"]) for r in third] == [
            ("i1", ["i3"]),
            ("i2", ["i3"]),
            ("i3", ["i1", "i2"]),
        ]
        i3 = third[2]
        assert i3["weights"][1] > i3["weights"][0]  # i2 is closer in time than i1
        assert len({r["increments_id"] for r in third}) == 3

    run_scenario(scenario)


def test_windowed_category_counts_per_user(run_scenario: RunScenario) -> None:
    hour = 3600.0

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "A", ("jazz", "blues")), key=b"i1")
            await items.put(item_bytes("i2", "B", ("jazz",)), key=b"i2")
            await items.put(item_bytes("i3", "C", ("rock",)), key=b"i3")
            await h.eventually(lambda: len(h.runtime.item_categories) == 3, "the catalog", items)
        async with h.agent("events") as events:
            await events.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await events.put(event_bytes("u1", "e2", T0 + 60, item="i2"), key=b"u1")
            # Two days later: the 1 h and 24 h windows of e1 and e2 are behind.
            await events.put(event_bytes("u1", "e3", T0 + 48 * hour, item="i3"), key=b"u1")
            await events.put(event_bytes("u2", "e4", T0 + 60, item="i2"), key=b"u2")
            await h.eventually(lambda: len(lists(h)) == 4, "four lists", events)

        counts = h.tables.user_ranking.get("u1")["window_counts"]
        assert counts["at_ts"] == T0 + 48 * hour
        assert counts["short"] == {"rock": 1.0} and counts["long"] == {"rock": 1.0}
        assert h.tables.user_ranking.get("u2")["window_counts"]["long"] == {"jazz": 1.0}

    run_scenario(scenario)


def test_windowed_counts_add_up_within_a_window(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            await items.put(item_bytes("i1", "A", ("jazz", "blues")), key=b"i1")
            await items.put(item_bytes("i2", "B", ("jazz",)), key=b"i2")
            await h.eventually(lambda: len(h.runtime.item_categories) == 2, "the catalog", items)
        async with h.agent("events") as events:
            await events.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await events.put(event_bytes("u1", "e2", T0 + 60, item="i2"), key=b"u1")
            # A skip (negative weight) is not counted.
            await events.put(
                event_bytes("u1", "e3", T0 + 90, item="i1", event_type="skip"), key=b"u1"
            )
            await h.eventually(lambda: len(lists(h)) == 3, "three lists", events)

        counts = h.tables.user_ranking.get("u1")["window_counts"]
        assert counts["at_ts"] == T0 + 60
        assert counts["long"] == {"blues": 1.0, "jazz": 2.0}

    run_scenario(scenario)


def test_negative_feedback_updates_state_but_sends_no_hit_or_pair(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e1", T0, item="i1"), key=b"u1")
            await agent.put(
                event_bytes("u1", "e2", T0 + 1, item="i2", event_type="skip"), key=b"u1"
            )
            await h.eventually(lambda: len(lists(h)) == 2, "two lists", agent)

        state = user_state(h, "u1")
        assert state is not None and state.event_count == 2
        assert [s.key_text for s in h.sent(h.topics.item_hits)] == ["i1"]
        assert not h.sent(h.topics.covisit_pairs)
        assert h.tables.user_ranking.get("u1")["recent"] == [["i1", T0]]

    run_scenario(scenario)


def test_search_event_waits_for_its_embedding(run_scenario: RunScenario) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            raw = event_bytes("u1", "s1", T0, item=None, event_type="search", text=" jazz\x01 ")
            await agent.put(raw, key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 1), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "the list for e2", agent)

        [req] = h.sent(h.topics.user_texts)
        assert req.key_text == "u1"
        body = req.json()
        assert body["event_id"] == "s1"
        assert body["text_key"].startswith(h.runtime.model_id + ":")
        assert json.loads(body["event"])["text"] == "jazz"
        # The search is applied only when its vector comes back (user-text agent).
        state = user_state(h, "u1")
        assert state is not None and state.event_count == 1 and not state.has_seen("s1")
        assert lists(h)[0]["as_of"]["event_id"] == "e2"

    run_scenario(scenario)


def test_text_embedder_and_user_text_apply_a_search_with_its_vector(
    run_scenario: RunScenario,
) -> None:
    search = event_bytes("u1", "s1", T0, item=None, event_type="search", text="cool jazz")

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("text_embedder") as embedder:
            await embedder.put(
                UserText(event=search.decode(), event_id="s1", text_key="test:cool-jazz"),
                key="u1",
            )
            await h.eventually(
                lambda: bool(h.sent(h.topics.user_text_vectors)), "an embedded text", embedder
            )
        [out] = h.sent(h.topics.user_text_vectors)
        assert out.key_text == "u1"
        embedded = EmbeddedText.from_data(out.json())
        assert embedded.event_id == "s1" and embedded.vec is not None
        vec = decode_vector(embedded.vec)
        assert vec.shape == (384,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-3
        assert h.runtime.cached("test:cool-jazz") is not None  # cached for the next time

        async with h.agent("user_text") as user_text:
            await user_text.put(embedded, key="u1")
            await h.eventually(lambda: len(lists(h)) == 1, "a list for u1", user_text)
        state = user_state(h, "u1")
        assert state is not None and state.event_count == 1 and state.last_event_id == "s1"
        assert float(np.linalg.norm(state.score_vector("short", T0))) > 0

    run_scenario(scenario)


def test_processing_error_becomes_a_dead_letter(run_scenario: RunScenario) -> None:
    """A failure inside `apply_event` (here: text vectors of two dimensions for one user) is
    routed to the dead letters by `guarded`; the agent keeps going."""
    search = event_bytes("u1", "s1", T0, item=None, event_type="search", text="jazz").decode()
    vec384 = encode_vector(np.full(384, 1 / np.sqrt(384), dtype=np.float32))
    vec8 = encode_vector(np.full(8, 1 / np.sqrt(8), dtype=np.float32))

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("user_text") as agent:
            await agent.put(EmbeddedText(event=search, event_id="s1", vec=vec384), key="u1")
            await agent.put(EmbeddedText(event=search, event_id="s2", vec=vec8), key="u1")
            await h.eventually(lambda: len(dead_letters(h)) == 1, "a dead letter", agent)
            await agent.put(EmbeddedText(event=search, event_id="s3", vec=vec384), key="u1")
            await h.eventually(lambda: len(lists(h)) == 2, "lists for s1 and s3", agent)

        letter = dead_letters(h)[0].json()
        assert letter["source_topic"] == "agents-test-user-text-vectors"
        assert letter["offset"] == 1
        state = user_state(h, "u1")
        assert state is not None and state.event_count == 2 and not state.has_seen("s2")

    run_scenario(scenario)


def test_popularity_ranker_lists_popular_items_but_not_consumed_ones(
    run_scenario: RunScenario,
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("items") as items:
            for n in (1, 2, 3):
                await items.put(item_bytes(f"i{n}", f"Item {n}"), key=f"i{n}".encode())
            await h.eventually(lambda: len(h.runtime.item_categories) == 3, "the catalog", items)
        async with h.agent("popularity") as popularity:
            hits = [("i3", 8.0), ("i3", 8.0), ("i2", 2.0), ("i1", 1.0)]
            for n, (item_id, weight) in enumerate(hits):
                hit = ItemHit(item_id=item_id, event_id=f"p{n}", ts=T0, weight=weight)
                await popularity.put(hit, key=item_id)
            await popularity.put(ItemHit(item_id="", event_id="", ts=0, weight=0, flush=True))
            await h.eventually(
                lambda: len(h.tables.popular_top.get("p0") or {}) == 3, "the broadcast", popularity
            )
        async with h.agent("events") as events:
            await events.put(event_bytes("u1", "e1", T0 + 10, item="i3"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "a list for u1", events)

        rec = lists(h)[0]
        assert rec["ranker"] == "popularity" and rec["weights"] == {"popularity": 1.0}
        assert [i["item_id"] for i in rec["items"]] == ["i2", "i1"]  # i3 consumed
        assert [i["title"] for i in rec["items"]] == ["Item 2", "Item 1"]

    run_scenario(scenario, ranker="popularity")


OUT_OF_RANGE = {
    "ts-overflows-float": event_bytes(ts=10**400),
    "value-overflows-float": event_bytes(event_type="rate", value=10**400),
    "int-over-4300-digits": event_bytes(ts=0).replace(b'"ts":0', b'"ts":' + b"1" * 4400),
    "nested-too-deep": b'{"user_id":"u1","x":' + b"[" * 1500 + b"]" * 1500 + b"}",
}


@pytest.mark.parametrize("payload", OUT_OF_RANGE.values(), ids=list(OUT_OF_RANGE))
def test_unparseable_numbers_and_nesting_become_dead_letters(
    run_scenario: RunScenario, payload: bytes
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(payload, key=b"u1")
            await h.eventually(lambda: len(dead_letters(h)) == 1, "a dead letter", agent)
            await agent.put(event_bytes("u1", "e1"), key=b"u1")
            await h.eventually(lambda: len(lists(h)) == 1, "a list after it", agent)

    run_scenario(scenario, max_payload_bytes=65_536)

"""The events agent against hostile producers: records placed by another partitioner move to
the owner's partition once, and hostile bytes become dead letters, never an agent crash.

`events_partitions` is 2 here (conftest.py): murmur2 puts u1 and u4 on partition 0, u5 on 1.
Each test runs on the memory:// and the rocksdb:// table store.
"""

from __future__ import annotations

import base64
import json
import re
import zlib

import pytest
from agent_harness import T0, AgentHarness, RunScenario, Sent, event_bytes

from recstream.agents.routing import owner_partition
from recstream.streams.codecs import DEAD_LETTER_VALUE_BYTES


def lists(h: AgentHarness, user_id: str) -> list[dict]:
    return [s.json() for s in h.sent(h.topics.recommendations) if s.json()["user_id"] == user_id]


def dead_letters(h: AgentHarness) -> list[Sent]:
    return h.sent(h.topics.dead_letters)


def test_owners_of_the_test_users() -> None:
    assert [owner_partition(u, 2) for u in (b"u1", b"u4", b"u5")] == [0, 0, 1]


def test_record_on_another_partition_is_resent_to_the_owner_once_and_applied_there(
    run_scenario: RunScenario,
) -> None:
    raw = event_bytes("u4", "e1")
    # librdkafka's default partitioner (CRC32) puts u4 on partition 1; murmur2 owns it on 0.
    assert zlib.crc32(b"u4") % 2 == 1

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(raw, key=b"u4", partition=1)
            await h.eventually(lambda: bool(h.sent(h.topics.events)), "the re-sent record", agent)
            # Not applied on the partition that does not own u4 ...
            assert h.tables.user_state.get("u4") is None and not lists(h, "u4")
            [resent] = h.sent(h.topics.events)
            assert (resent.key, resent.value, resent.partition) == (b"u4", raw, 0)
            # ... but applied when the copy is read from the owner's partition.
            await agent.put(resent.value, key=resent.key, partition=resent.partition)
            await h.eventually(lambda: len(lists(h, "u4")) == 1, "a list for u4", agent)
            # A record already on its owner's partition is applied at once.
            await agent.put(event_bytes("u5", "e5"), key=b"u5", partition=1)
            await h.eventually(lambda: len(lists(h, "u5")) == 1, "a list for u5", agent)

        assert len(h.sent(h.topics.events)) == 1  # one hop, for the one misplaced record
        assert lists(h, "u4")[0]["as_of"]["event_id"] == "e1"
        assert not dead_letters(h)

    run_scenario(scenario)


def test_record_keyed_otherwise_and_misplaced_moves_in_one_hop(run_scenario: RunScenario) -> None:
    raw = event_bytes("u1", "e1")

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(raw, key=b"someone-else", partition=1)
            await h.eventually(lambda: bool(h.sent(h.topics.events)), "the re-sent record", agent)
        [resent] = h.sent(h.topics.events)
        assert (resent.key, resent.partition) == (b"u1", 0)

    run_scenario(scenario)


SEARCH = b'{"user_id":"u1","event_type":"search","ts":1700000000,"event_id":"s1","text":'
HOSTILE_EVENTS = {
    "surrogate-in-search-text": (SEARCH + b'"\\ud800 jazz"}', "lone UTF-16 surrogate"),
    # json.dumps writes the lone surrogate as the escape \ud800, as a producer would.
    "surrogate-in-user-id": (event_bytes("u\ud800"), "user_id: string contains a lone UTF-16"),
    "cesu8-surrogate-bytes": (SEARCH + b'"\xed\xa0\x80"}', "not valid UTF-8"),
    "duplicate-user-id": (b'{"user_id":"u9",' + event_bytes()[1:], "duplicate key 'user_id'"),
    "nan-rating": (
        event_bytes(event_type="rate")[:-1] + b',"value":NaN}',
        "NaN is not a JSON value",
    ),
    "nan-string-rating": (event_bytes(event_type="rate", value="nan"), "finite number"),
    "int-over-64-bits": (event_bytes(x=2**64), "out of the 64-bit range"),
    "nested-40-levels": (event_bytes()[:-1] + b',"x":' + b"[" * 40 + b"]" * 40 + b"}", "deeply"),
    "sep-in-user-id": (event_bytes("u\x1f1"), r"\x1f at character 1"),
    "nul-in-event-id": (event_bytes(event_id="e\x00"), r"\x00 at character 1"),
    "json-null": (b"null", "expected a JSON object"),
}


@pytest.mark.parametrize(("payload", "reason"), HOSTILE_EVENTS.values(), ids=list(HOSTILE_EVENTS))
def test_hostile_event_becomes_a_dead_letter_and_the_agent_goes_on(
    run_scenario: RunScenario, payload: bytes, reason: str
) -> None:
    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(event_bytes("u1", "e0", T0), key=b"u1")
            await agent.put(payload, key=b"u1")
            await agent.put(event_bytes("u1", "e2", T0 + 1), key=b"u1")
            # `eventually` re-raises what the agent crashed with, should it crash.
            await h.eventually(lambda: len(lists(h, "u1")) == 2, "lists for e0 and e2", agent)
            assert not agent.crashed

        [dl] = dead_letters(h)
        letter = json.loads(dl.value or b"")
        assert re.search(re.escape(reason), letter["reason"]), letter["reason"]
        assert letter["error"] == "ValidationError" and letter["offset"] == 1
        assert base64.b64decode(letter["value_b64"]) == payload
        assert [r["as_of"]["event_id"] for r in lists(h, "u1")] == ["e0", "e2"]

    run_scenario(scenario)


def test_oversized_record_with_a_huge_key_becomes_a_bounded_dead_letter(
    run_scenario: RunScenario,
) -> None:
    key, value = b"k" * 500_000, b"\xff" * 1_500_000

    async def scenario(h: AgentHarness) -> None:
        async with h.agent("events") as agent:
            await agent.put(value, key=key)
            await agent.put(event_bytes("u1", "e1"), key=b"u1")
            await h.eventually(lambda: len(lists(h, "u1")) == 1, "a list after it", agent)

        [dl] = dead_letters(h)
        assert dl.value is not None and len(dl.value) < 1_000_000  # fits a Kafka message
        letter = json.loads(dl.value)
        assert "exceeds the limit" in letter["reason"] and letter["size"] == len(value)
        assert base64.b64decode(letter["value_b64"]) == value[:DEAD_LETTER_VALUE_BYTES]

    run_scenario(scenario)

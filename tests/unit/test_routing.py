"""Which partition owns a user, and when a record must move there (agents/routing.py)."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from recstream.agents.routing import Reroute, owner_partition, reroute, user_key
from recstream.models.errors import ConfigError

# Kafka's own test vectors for its Java murmur2 (clients UtilsTest.testMurmur2), as signed
# 32-bit ints. The Java client partitions a keyed record to (murmur2 & 0x7fffffff) % n.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", list(JAVA_MURMUR2))
@pytest.mark.parametrize("partitions", [1, 2, 3, 8, 12, 100])
def test_owner_is_the_java_clients_default_partition(key: bytes, partitions: int) -> None:
    assert owner_partition(key, partitions) == (JAVA_MURMUR2[key] & 0x7FFFFFFF) % partitions


@given(key=st.binary(max_size=64), partitions=st.integers(1, 64))
def test_owner_agrees_with_kafka_python_default_partitioner(key: bytes, partitions: int) -> None:
    # kafka-python (the project's own producer, `recstream produce`) needs no extra hop: its
    # DefaultPartitioner.partition is (murmur2(key) & 0x7fffffff) % len(partitions).
    expected = (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions
    assert owner_partition(key, partitions) == expected


def test_user_key_is_the_utf8_user_id() -> None:
    assert user_key("u1") == b"u1"
    assert user_key("Zoë-日本") == "Zoë-日本".encode()


def test_a_record_keyed_right_on_the_owners_partition_stays() -> None:
    owner = owner_partition(b"u1", 8)
    assert reroute("u1", b"u1", owner, 8) is None


def test_a_record_on_another_partition_moves_to_the_owner() -> None:
    owner = owner_partition(b"u1", 8)
    for partition in set(range(8)) - {owner}:
        assert reroute("u1", b"u1", partition, 8) == Reroute(key=b"u1", partition=owner)


@pytest.mark.parametrize("key", [None, b"", b"someone-else", b"u1 ", "u1".encode("utf-16")])
def test_a_record_keyed_otherwise_moves_keyed_by_its_user_even_on_the_owners_partition(
    key: bytes | None,
) -> None:
    owner = owner_partition(b"u1", 8)
    assert reroute("u1", key, owner, 8) == Reroute(key=b"u1", partition=owner)


@given(
    user_id=st.text(min_size=1, max_size=40),
    key=st.none() | st.binary(max_size=16),
    partitions=st.integers(1, 32),
    data=st.data(),
)
def test_a_record_moves_at_most_once(
    user_id: str, key: bytes | None, partitions: int, data: st.DataObject
) -> None:
    user_id = user_id.encode("utf-8", "replace").decode("utf-8")  # ids are valid Unicode
    partition = data.draw(st.integers(0, partitions - 1))
    move = reroute(user_id, key, partition, partitions)
    if move is not None:
        assert move.key == user_id.encode("utf-8") and 0 <= move.partition < partitions
        # The copy, read back from where it was sent, is in place.
        assert reroute(user_id, move.key, move.partition, partitions) is None


def test_producers_hashing_by_crc32_need_the_hop() -> None:
    """librdkafka's default partitioner (`consistent_random`: CRC32 of the key) puts most users
    on another partition than murmur2: this is why records are re-routed at all."""
    users = [f"user-{n}" for n in range(200)]
    crc_partition = {u: zlib.crc32(u.encode()) % 8 for u in users}
    moved = [u for u in users if reroute(u, u.encode(), crc_partition[u], 8) is not None]
    assert len(moved) > 100  # about 7 in 8 by chance


def test_no_partitions_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        owner_partition(b"u1", 0)

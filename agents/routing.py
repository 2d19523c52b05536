"""Which `events` partition owns a user, and whether a record read elsewhere must move there.

User state lives in tables co-partitioned with `events`: Faust writes a table key to the
changelog partition of the event being processed, and its web router (`table_route`) finds
the worker owning a key by hashing the serialized key with the producer's partitioner,
aiokafka's `DefaultPartitioner` (murmur2, as the Java client). A user's events therefore
have to be processed on partition ``murmur2(user_id) % partitions``. Producers that partition
by another hash (librdkafka's default CRC32 `consistent_random`, sarama's FNV-1a) put a
user's events on other partitions: applied where they land, one user would get two separate
states and the web routes would find only one of them. Such a record is re-sent once, with
an explicit partition, to the owner's partition, and applied only there.

Pure functions (no Faust, no I/O), so that the events agent and its replacements share one
rule; the hash is the library's own, not a copy.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import DefaultPartitioner

from recstream.models.errors import ConfigError

_PARTITIONER = DefaultPartitioner()


def user_key(user_id: str) -> bytes:
    """The `events` record key of a user: the user_id as UTF-8 (the raw key serializer)."""
    return user_id.encode("utf-8")


def owner_partition(key: bytes, partitions: int) -> int:
    """The partition that owns `key` among `partitions`: the one Faust's keyed sends, its
    tables' changelogs and its web router all use (aiokafka's murmur2 `DefaultPartitioner`).
    """
    if partitions < 1:
        raise ConfigError(f"a topic needs at least one partition, not {partitions}")
    every = list(range(partitions))
    # `available` is consulted only for records without a key; passing every partition keeps
    # the answer a function of the key and the partition count alone.
    return int(_PARTITIONER(key, every, every))


@dataclass(frozen=True)
class Reroute:
    """Where a misrouted record must be re-sent: the user's key and its owner partition."""

    key: bytes
    partition: int


def reroute(user_id: str, key: bytes | None, partition: int, partitions: int) -> Reroute | None:
    """None when a record of `user_id` read with `key` from `partition` is where it belongs;
    otherwise where to re-send it.

    A record belongs where it is when it is keyed by its user_id and read from the owner's
    partition. A record keyed otherwise (no key, another id) or placed by another hash than
    murmur2 must move. The re-sent copy carries the right key and an explicit partition, so
    it is in place when read again: a record moves at most once.
    """
    right_key = user_key(user_id)
    owner = owner_partition(right_key, partitions)
    if key == right_key and partition == owner:
        return None
    return Reroute(key=right_key, partition=owner)

"""The popularity baseline: time-decayed global item popularity, in event time.

An item's popularity at time t is Σ_k w_k·e^(−λ(t − t_k)) over its interactions k. It is kept
as a log-mass relative to a fixed epoch (see decay.py), so updates commute (replays and
out-of-order events give the same value) and ranking items at one time is ranking their
log-masses: the decay factor e^(−λt) is common to all of them.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from recstream.models import decay
from recstream.models.errors import StateError

_HEADER = struct.Struct("<Bd H")  # version, log_mass, number of remembered event hashes
_VERSION = 1


def event_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id (FNV-1a), for bounded de-duplication memory."""
    h = 0xCBF29CE484222325
    for byte in event_id.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass
class ItemPopularity:
    """Decayed interaction mass of one item, with the hashes of recently applied events.

    Invariant: applying an event whose id is among the `dedupe_capacity` most recent ones
    changes nothing (at-least-once delivery re-sends events after a crash).
    """

    log_mass: float = -np.inf
    recent: list[int] = field(default_factory=list)

    def update(self, event_id: str, weight: float, ts: float, rate: float, capacity: int) -> bool:
        """Add an interaction of `weight` (> 0) at event time `ts` (s). False if a duplicate."""
        h = event_hash(event_id)
        if h in self.recent:
            return False
        self.log_mass = decay.update(self.log_mass, weight, ts, rate)
        self.recent.append(h)
        if len(self.recent) > capacity:
            del self.recent[: len(self.recent) - capacity]
        return True

    def score(self, at_ts: float, rate: float) -> float:
        """Decayed popularity at event time `at_ts` (s)."""
        return decay.score(self.log_mass, at_ts, rate)

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(_VERSION, self.log_mass, len(self.recent))
        return head + np.asarray(self.recent, dtype=np.uint64).tobytes()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ItemPopularity:
        try:
            version, log_mass, n = _HEADER.unpack_from(raw)
            if version != _VERSION:
                raise StateError(f"unknown popularity state version {version}")
            recent = np.frombuffer(raw, dtype=np.uint64, count=n, offset=_HEADER.size)
        except (struct.error, ValueError) as exc:
            raise StateError(f"corrupt popularity state: {exc}") from exc
        return cls(log_mass=float(log_mass), recent=[int(x) for x in recent])


def merge_top(
    current: Mapping[str, float], updates: Mapping[str, float], n: int
) -> dict[str, float]:
    """The `n` items with the largest log-mass from both maps (max per item).

    Log-masses only grow, so the larger value of an item is the more recent one.
    """
    merged = dict(current)
    for item, lm in updates.items():
        if lm > merged.get(item, -np.inf):
            merged[item] = lm
    if len(merged) <= n:
        return merged
    return dict(heapq.nlargest(n, merged.items(), key=lambda kv: kv[1]))


def rank_popular(
    snapshots: Iterable[Mapping[str, float]],
    at_ts: float,
    rate: float,
    k: int,
    exclude: Iterable[str] | Callable[[str], bool] = (),
    allowed: Mapping[str, object] | None = None,
) -> list[tuple[str, float]]:
    """Top-k (item_id, decayed popularity at `at_ts`) from per-partition top-N snapshots.

    `exclude` (ids, or a predicate such as "the user consumed it") removes items; when
    `allowed` is given only its keys (the live catalog) may be recommended.
    """
    if callable(exclude):
        banned: Callable[[str], bool] = exclude
    else:
        banned_ids = set(exclude)
        banned = banned_ids.__contains__
    pool: dict[str, float] = {}
    for snap in snapshots:
        for item, lm in snap.items():
            if banned(item) or (allowed is not None and item not in allowed):
                continue
            if lm > pool.get(item, -np.inf):
                pool[item] = lm
    best = heapq.nlargest(k, pool.items(), key=lambda kv: (kv[1], kv[0]))
    return [(item, decay.score(lm, at_ts, rate)) for item, lm in best]

"""Item-to-item co-visitation: "users who consumed A around the same time consumed B".

Two pieces, both in event time (seconds):

- `pair_increments`: when a user consumes an item, pair it with the user's recent items. A
  pair counts weight·2^(−|gap| / gap_half_life_s) if the two consumptions are at most
  `window_s` apart (items consumed together in a session are stronger evidence than items a
  day apart), and is stamped with the later of the two times, so the same two events produce
  the same increment whichever arrives first.
- `CoVisitNeighbours`: the bounded neighbour list of ONE item. Each neighbour's score is a
  decayed sum Σ w_k·e^(−λ(t − t_k)) kept as a log-mass relative to epoch 0 (decay.py), so
  updates commute, and since all neighbours decay at the same rate, ranking by log-mass is
  ranking by score at any time. Only the top `capacity` are kept: while at most `capacity`
  distinct neighbours have been seen the map is exact and order independent; beyond that, a
  neighbour evicted as the weakest forgets its mass if it comes back (a heavy-hitter
  approximation: keep capacity a few times the number of neighbours served).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from recstream.models import decay
from recstream.models.errors import StateError, ValidationError

_DICT_VERSION = 1


@dataclass(frozen=True, slots=True)
class PairIncrement:
    """Add `weight` (> 0) to neighbour `neighbour_id` of item `item_id` at event time `ts` (s)."""

    item_id: str
    neighbour_id: str
    weight: float
    ts: float


def pair_increments(
    recent: Iterable[tuple[str, float]],
    item_id: str,
    ts: float,
    *,
    window_s: float,
    gap_half_life_s: float,
    weight: float = 1.0,
    symmetric: bool = True,
) -> list[PairIncrement]:
    """Co-visitation increments for a user consuming `item_id` at event time `ts` (s).

    recent: the user's earlier (item_id, ts) consumptions, any order, may include times after
    `ts` (late events) and repeats (the closest in time counts once; the item itself is
    skipped). Each recent item within |gap| <= window_s gives weight·2^(−|gap|/gap_half_life_s)
    stamped max(ts, t_recent); symmetric=True emits both directions (A→B and B→A).
    Sorted by (item_id, neighbour_id).
    """
    if not (math.isfinite(window_s) and window_s >= 0.0):
        raise ValidationError(f"window_s must be finite and >= 0, got {window_s!r}")
    rate = decay.decay_rate(gap_half_life_s)
    if not (math.isfinite(weight) and weight > 0.0):
        raise ValidationError(f"weight must be finite and > 0, got {weight!r}")
    if not math.isfinite(ts):
        raise ValidationError(f"ts must be finite (s), got {ts!r}")
    if not item_id:
        raise ValidationError("item_id must be a non-empty str")
    closest: dict[str, float] = {}  # neighbour -> its consumption time closest to ts
    for other, t_other in recent:
        if not math.isfinite(t_other):
            raise ValidationError(f"recent item {other!r} has a non-finite ts {t_other!r}")
        if other == item_id or abs(ts - t_other) > window_s:
            continue
        best = closest.get(other)
        # Ties in |gap| go to the later time, so the choice does not depend on input order.
        if best is None or (abs(ts - t_other), -t_other) < (abs(ts - best), -best):
            closest[other] = t_other
    out: list[PairIncrement] = []
    for other, t_other in closest.items():
        w = weight * math.exp(-rate * abs(ts - t_other))
        if w <= 0.0:  # underflow for gaps of thousands of half-lives: nothing to add
            continue
        stamp = max(ts, t_other)
        out.append(PairIncrement(item_id, other, w, stamp))
        if symmetric:
            out.append(PairIncrement(other, item_id, w, stamp))
    out.sort(key=lambda inc: (inc.item_id, inc.neighbour_id))
    return out


class CoVisitNeighbours:
    """The top-`capacity` co-visited neighbours of one item, scores decaying with `half_life_s`.

    Invariant: at most `capacity` entries; every entry has a finite log-mass (> −inf);
    ``_order`` holds (−log-mass, id) of every entry, ascending: serving order, the weakest
    last. Kept beside the map so that an eviction pops the last entry instead of scanning
    every neighbour (this runs for every pair of every consumption).
    """

    __slots__ = ("_capacity", "_half_life_s", "_masses", "_order", "_rate")

    def __init__(self, capacity: int, half_life_s: float) -> None:
        if not (isinstance(capacity, int) and capacity >= 1):
            raise ValidationError(f"capacity must be an int >= 1, got {capacity!r}")
        self._rate = decay.decay_rate(half_life_s)
        self._capacity = capacity
        self._half_life_s = float(half_life_s)
        self._masses: dict[str, float] = {}
        self._order: list[tuple[float, str]] = []

    @property
    def capacity(self) -> int:
        """Maximum number of neighbours kept."""
        return self._capacity

    @property
    def half_life_s(self) -> float:
        """Half-life (s) of neighbour scores."""
        return self._half_life_s

    def __len__(self) -> int:
        return len(self._masses)

    def __contains__(self, neighbour_id: object) -> bool:
        return neighbour_id in self._masses

    def log_masses(self) -> dict[str, float]:
        """neighbour -> log-mass relative to epoch 0 (a copy)."""
        return dict(self._masses)

    def update(self, neighbour_id: str, weight: float, ts: float) -> None:
        """Add `weight` (> 0) at event time `ts` (s); then drop the weakest beyond capacity.

        The new neighbour itself is dropped if it is the weakest (ties: larger id dropped
        first, so the outcome does not depend on dict order).
        """
        if not isinstance(neighbour_id, str) or not neighbour_id:
            raise ValidationError(f"neighbour_id must be a non-empty str: {neighbour_id!r}")
        self.add_log_mass(neighbour_id, decay.log_term(weight, ts, self._rate))

    def add_log_mass(self, neighbour_id: str, term: float) -> None:
        """Add a pre-aggregated log-term (decay.log_term, or a log-sum of several) to a
        neighbour, then drop the weakest beyond capacity (as `update`)."""
        if not isinstance(neighbour_id, str) or not neighbour_id:
            raise ValidationError(f"neighbour_id must be a non-empty str: {neighbour_id!r}")
        masses, order = self._masses, self._order
        old = masses.get(neighbour_id)
        new = decay.logaddexp(decay.EMPTY if old is None else old, term)
        masses[neighbour_id] = new
        if old is not None:
            del order[bisect_left(order, (-old, neighbour_id))]
        insort(order, (-new, neighbour_id))
        if len(masses) > self._capacity:
            # The last in serving order goes: smallest mass, and among equals the largest id.
            del masses[order.pop()[1]]

    def apply(self, increments: Iterable[PairIncrement], item_id: str) -> int:
        """Apply the increments addressed to `item_id`; returns how many were applied."""
        n = 0
        for inc in increments:
            if inc.item_id == item_id:
                self.update(inc.neighbour_id, inc.weight, inc.ts)
                n += 1
        return n

    def score(self, at_ts: float, top: int | None = None) -> list[tuple[str, float]]:
        """(neighbour, decayed score at event time `at_ts`), best first (ties by id); the first
        `top` only if given."""
        if top is not None and top < 0:
            raise ValidationError(f"top must be >= 0, got {top}")
        ranked = self._order if top is None else self._order[:top]
        return [(n, decay.score(-neg, at_ts, self._rate)) for neg, n in ranked]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; floats round-trip exactly through json (repr precision)."""
        return {
            "version": _DICT_VERSION,
            "capacity": self._capacity,
            "half_life_s": self._half_life_s,
            "log_masses": dict(sorted(self._masses.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoVisitNeighbours:
        """Inverse of to_dict; StateError when `data` is not one."""
        try:
            if data["version"] != _DICT_VERSION:
                raise StateError(f"unsupported co-visitation version {data['version']!r}")
            out = cls(int(data["capacity"]), float(data["half_life_s"]))
            raw = data["log_masses"]
            masses = {str(k): float(v) for k, v in raw.items()}
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"malformed co-visitation state: {exc!r}") from None
        if len(masses) > out._capacity:
            raise StateError(f"{len(masses)} neighbours exceed capacity {out._capacity}")
        if any(not k for k in masses) or not all(math.isfinite(v) for v in masses.values()):
            raise StateError("co-visitation neighbours need non-empty ids and finite log-masses")
        out._masses = masses
        out._order = sorted((-lm, n) for n, lm in masses.items())
        return out

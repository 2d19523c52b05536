"""Everything the engine keeps for one user, as one compact record (one table value).

A record holds the decayed interest state (interest_state.py), the user's fusion weights
(weights.py), the recent distinct positively consumed items (for co-visitation and sequential
rules), the last few lists as served (their signal rows, per-signal bounds and pool mean, for
the η rule), event-time hopping-window category counts, and the latest published list.
Keeping them in one value means one changelog record per changed user per micro-batch,
whatever the number of that user's events in it.

Layout of to_bytes(): magic b"RU", version (uint8), len(interest) (uint32), interest bytes,
len(weights) (uint16), weights bytes, then UTF-8 JSON of the rest.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from recstream.models.errors import StateError
from recstream.models.interest_state import InterestParams, InterestState
from recstream.models.weights import WeightState
from recstream.models.windows import window_starts

_MAGIC = b"RU"
_VERSION = 1
_HEAD = struct.Struct("<2sBI")
_WLEN = struct.Struct("<H")


@dataclass
class ServedList:
    """A list as served: item → normalised signal row, the raw per-signal bounds and, when
    the engine keeps it, the mean normalised signal row of the whole candidate pool."""

    rec_id: str
    items: dict[str, list[float]]
    lo: list[float]
    hi: list[float]
    pool_mean: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rec_id": self.rec_id, "items": self.items, "lo": self.lo}
        out["hi"] = self.hi
        if self.pool_mean is not None:
            out["mean"] = self.pool_mean
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ServedList:
        return cls(
            rec_id=str(raw["rec_id"]),
            items={str(i): [float(x) for x in row] for i, row in dict(raw["items"]).items()},
            lo=[float(x) for x in raw["lo"]],
            hi=[float(x) for x in raw["hi"]],
            pool_mean=None if raw.get("mean") is None else [float(x) for x in raw["mean"]],
        )


@dataclass
class WindowCounts:
    """Per-category counts in event-time hopping windows of `size_s` advancing by `step_s`.

    Kept as counts per hop bucket (start = ⌊ts/step⌋·step) for the buckets that can still
    belong to the latest window; a window's count is the sum of its size/step buckets.
    """

    buckets: dict[float, dict[str, float]] = field(default_factory=dict)

    def add(self, ts: float, categories: tuple[str, ...], size_s: float, step_s: float) -> None:
        start = math.floor(ts / step_s) * step_s
        bucket = self.buckets.setdefault(start, {})
        for c in dict.fromkeys(categories):
            bucket[c] = bucket.get(c, 0.0) + 1.0
        newest = max(self.buckets)
        for b in [b for b in self.buckets if b <= newest - size_s]:
            del self.buckets[b]

    def counts(self, at_ts: float, size_s: float, step_s: float) -> dict[str, float]:
        """Counts in the window containing `at_ts` that started earliest, i.e. the one
        covering the most time up to `at_ts` (size − step of history; models/windows.py)."""
        first = window_starts(at_ts, size_s, step_s)[0]
        out: dict[str, float] = {}
        for start, bucket in self.buckets.items():
            if first <= start < first + size_s:
                for c, n in bucket.items():
                    out[c] = out.get(c, 0.0) + n
        return dict(sorted(out.items()))


@dataclass
class UserRecord:
    """One user's state. `recent`: last positively consumed (item_id, ts), oldest first."""

    interest: InterestState
    weights: WeightState
    recent: list[tuple[str, float]] = field(default_factory=list)
    served: list[ServedList] = field(default_factory=list)
    window_short: WindowCounts = field(default_factory=WindowCounts)
    window_long: WindowCounts = field(default_factory=WindowCounts)
    last_list: dict[str, Any] | None = None

    @classmethod
    def new(cls, params: InterestParams, k_signals: int) -> UserRecord:
        return cls(InterestState(params), WeightState.uniform(k_signals))

    def served_list(self, rec_id: str | None) -> ServedList | None:
        """The served list named by `rec_id`, else the latest (None when none was served)."""
        if not self.served:
            return None
        return next((s for s in self.served if s.rec_id == rec_id), self.served[-1])

    def to_bytes(self) -> bytes:
        interest = self.interest.to_bytes()
        weights = self.weights.to_bytes()
        rest = {
            "recent": [[i, t] for i, t in self.recent],
            "served": [s.to_json() for s in self.served],
            "ws": _buckets_json(self.window_short),
            "wl": _buckets_json(self.window_long),
            "last": self.last_list,
        }
        self._check_finite()
        # orjson: the standard library's float formatting dominated a worker's table writes.
        body = orjson.dumps(rest, option=orjson.OPT_SERIALIZE_NUMPY)
        head = _HEAD.pack(_MAGIC, _VERSION, len(interest))
        return head + interest + _WLEN.pack(len(weights)) + weights + body

    def _check_finite(self) -> None:
        """ValueError for a non-finite number: orjson would write it as null, and a record is
        never written that could not be read back."""
        values = [t for _, t in self.recent]
        for s in self.served:
            values.extend(x for row in s.items.values() for x in row)
            values.extend(s.lo)
            values.extend(s.hi)
            values.extend(s.pool_mean or ())
        for w in (self.window_short, self.window_long):
            values.extend(w.buckets)
            values.extend(c for counts in w.buckets.values() for c in counts.values())
        if not all(map(math.isfinite, values)):
            raise ValueError("a user record holds a non-finite number")

    @classmethod
    def from_bytes(cls, data: bytes, params: InterestParams) -> UserRecord:
        """Inverse of to_bytes; StateError for anything else."""
        try:
            magic, version, n_interest = _HEAD.unpack_from(data)
            if magic != _MAGIC or version != _VERSION:
                raise StateError(f"not a user record (magic {magic!r}, version {version})")
            off = _HEAD.size
            interest = InterestState.from_bytes(data[off : off + n_interest], params)
            off += n_interest
            (n_weights,) = _WLEN.unpack_from(data, off)
            off += _WLEN.size
            weights = WeightState.from_bytes(data[off : off + n_weights])
            rest = orjson.loads(data[off + n_weights :])
            return cls(
                interest=interest,
                weights=weights,
                recent=[(str(i), float(t)) for i, t in rest["recent"]],
                served=[ServedList.from_json(s) for s in rest["served"]],
                window_short=_buckets_from(rest["ws"]),
                window_long=_buckets_from(rest["wl"]),
                last_list=rest.get("last"),
            )
        except StateError:
            raise
        except (struct.error, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"corrupt user record: {exc!r}") from None


def _buckets_json(w: WindowCounts) -> list[list[Any]]:
    return [[start, counts] for start, counts in sorted(w.buckets.items())]


def _buckets_from(raw: list[list[Any]]) -> WindowCounts:
    return WindowCounts({float(s): {str(c): float(n) for c, n in d.items()} for s, d in raw})

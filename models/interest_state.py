"""One user's dynamic interest state: decayed interest vectors, category evidence, bookkeeping.

Everything is in event time (epoch seconds, the events' own timestamps), never wall-clock time.

Interest vectors
    Each horizon h ∈ {short, long} with decay rate λ_h = ln2 / half-life keeps the signed sum

        u_h(t) = Σ_k w_k·e^(−λ_h(t − t_k))·v_k

    over applied events k (weight w_k, event time t_k, embedding v_k ∈ R^dim). It is stored as a
    log-scale L (float64) and a float32 vector `vec` with u_h(t) = e^(L − λ_h·t)·vec, where L is
    relative to the fixed epoch t = 0 (as in decay.py). Adding a term of magnitude
    m = ln|w| + λ_h·t_k sets L' = max(L, m) and vec' = vec·e^(L − L') + sign(w)·e^(m − L')·v, so
    every coefficient applied to vec is ≤ 1: nothing overflows however large λ·t grows, one
    update costs O(dim), and since L is a max and vec a sum, any arrival order gives the same
    state up to float32 rounding. Embeddings should be L2-normalised so weights are comparable.

Category evidence
    Per category c two decayed masses (log-masses as in decay.py, rate λ_e = ln2 / evidence
    half-life, by default the long half-life): P_c from positive-weight events and N_c from
    negative ones. An event with weight w and n categories adds |w|/n to each (so an event
    counts |w| in total whatever its number of categories) to P if w > 0, to N if w < 0. The
    evidence at time t is max(0, P_c(t) − N_c(t)): both masses are commutative sums, so the
    rule is order independent, and a dislike cancels earlier positive evidence without ever
    driving the posterior's pseudo-counts negative. (P − N is evaluated at the same t, so both
    decay alike; the floor is applied only when reading.)

Event weights (InterestParams.event_weights, overridable)
    view 1, click 2, add_to_cart 4, purchase 8, search 1.5 (applies to the query's text
    vector), skip −1, dislike −4; rate uses `rating_weight(value)`: rating >= 4 → +4 (like an
    add-to-cart), rating <= 2 → −4 (like a dislike), strictly between → +0.5 (a lukewarm rating
    still shows interest in the topic). Text attached to other events (a review) counts with
    review_text_weight·sign(w).

Bookkeeping
    event_count (applied events), last_ts (max event time seen), last_event_id (id of the event
    with the greatest (ts, event_id); canonical under reordering), the 64-bit hashes of the last
    `dedupe_capacity` applied event ids (duplicates are ignored: at-least-once delivery), and
    the 32-bit hashes of the last `max_consumed` distinct consumed item ids (for excluding
    items). Both id windows are in processing order, which for a Kafka partition keyed by user
    is the producer's order; they are order independent as sets while below capacity.
    Consumed ids are kept as 32-bit hashes to fit the byte budget: a collision can only hide
    one candidate item (probability ≈ max_consumed / 2³² per candidate), never corrupt state.

Serialized size (to_bytes): 50 + len(last_event_id) + 8·dim + 8·n_dedupe + 4·n_consumed
+ Σ_categories (9 + len(label)) bytes. For dim = 384 and 50 events ≈ 4.0 KB (36-character
event ids, ~18 categories: cli/bench_state.py); at full default capacity (256 event ids, 500
items) ≈ 7.2 KB plus categories. Evidence is stored as float32 relative to λ_e·last_ts, so a
round trip changes each evidence mass by a relative ≈ 6e-8·|ln(mass at last_ts)|.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
import struct
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

from recstream.models import decay
from recstream.models.errors import StateError, ValidationError
from recstream.models.vocabulary import (
    CONSUMED_EVENT_TYPES,
    DEFAULT_EVENT_WEIGHTS,
    RATING_NEGATIVE,
    RATING_POSITIVE,
    RATING_WEIGHT_NEGATIVE,
    RATING_WEIGHT_NEUTRAL,
    RATING_WEIGHT_POSITIVE,
    TEXT_EVENT_TYPES,
)

Horizon = Literal["short", "long"]
FloatVec = npt.NDArray[np.float32]

_NEG_INF = -math.inf

#: Events whose item counts as consumed (excluded from recommendations): all but search.
DEFAULT_CONSUMED_EVENT_TYPES: frozenset[str] = CONSUMED_EVENT_TYPES


def rating_weight(
    value: float,
    *,
    high: float = RATING_POSITIVE,
    low: float = RATING_NEGATIVE,
    positive: float = RATING_WEIGHT_POSITIVE,
    negative: float = RATING_WEIGHT_NEGATIVE,
    neutral: float = RATING_WEIGHT_NEUTRAL,
) -> float:
    """The signed weight of a rating `value` (1–5 scale by default).

    value >= high → positive; value <= low → negative; strictly between → neutral (a small
    positive weight: a middling rating still says the user engaged with the topic).
    """
    if not math.isfinite(value):
        raise ValidationError(f"rating value must be finite, got {value!r}")
    if value >= high:
        return positive
    if value <= low:
        return negative
    return neutral


def event_key(event_id: str) -> int:
    """Stable 64-bit hash of an event id (BLAKE2b), as kept in the de-duplication window."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@functools.lru_cache(maxsize=1 << 17)
def item_key(item_id: str) -> int:
    """Stable 32-bit hash of an item id (BLAKE2b), as kept in the consumed-items window.

    Hash catalogue ids with this to test them against `InterestState.consumed_keys()`.
    Memoised (pure; a catalogue's ids repeat in every list): ranking tests the same
    candidates against each user's window on every event.
    """
    return int.from_bytes(hashlib.blake2b(item_id.encode(), digest_size=4).digest(), "little")


def _frozen_weights(weights: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType({str(k): float(v) for k, v in weights.items()})


@dataclass(frozen=True)
class InterestParams:
    """Hyperparameters of InterestState; all times in seconds of event time.

    evidence_half_life_s=None uses long_half_life_s. dedupe_capacity and max_consumed bound
    the id windows (0 disables one). Half-lives and dim are part of the serialized state's
    fingerprint: bytes written under other values are refused by from_bytes.
    """

    short_half_life_s: float = 86_400.0
    long_half_life_s: float = 60 * 86_400.0
    evidence_half_life_s: float | None = None
    dim: int = 384
    dedupe_capacity: int = 256
    max_consumed: int = 500
    # hash=False: a mapping is unhashable, and params should still work as a dict key.
    event_weights: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_EVENT_WEIGHTS, hash=False
    )
    rating_high: float = RATING_POSITIVE
    rating_low: float = RATING_NEGATIVE
    rating_positive: float = RATING_WEIGHT_POSITIVE
    rating_negative: float = RATING_WEIGHT_NEGATIVE
    rating_neutral: float = RATING_WEIGHT_NEUTRAL
    text_event_types: frozenset[str] = TEXT_EVENT_TYPES
    review_text_weight: float = 1.0
    consumed_event_types: frozenset[str] = DEFAULT_CONSUMED_EVENT_TYPES

    def __post_init__(self) -> None:
        decay.decay_rate(self.short_half_life_s)
        decay.decay_rate(self.long_half_life_s)
        if self.evidence_half_life_s is not None:
            decay.decay_rate(self.evidence_half_life_s)
        if not 1 <= self.dim <= 0xFFFF:
            raise ValidationError(f"dim must be in [1, 65535], got {self.dim}")
        for name in ("dedupe_capacity", "max_consumed"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ValidationError(f"{name} must be in [0, 65535], got {getattr(self, name)}")
        weights = _frozen_weights(self.event_weights)
        if "rate" in weights:
            raise ValidationError("event_weights must not name 'rate': ratings use rating_weight")
        bad = [k for k, v in weights.items() if not math.isfinite(v)]
        if bad:
            raise ValidationError(f"event_weights must be finite; bad: {sorted(bad)}")
        object.__setattr__(self, "event_weights", weights)
        object.__setattr__(self, "text_event_types", frozenset(self.text_event_types))
        object.__setattr__(self, "consumed_event_types", frozenset(self.consumed_event_types))
        ratings = (self.rating_positive, self.rating_negative, self.rating_neutral)
        if not all(math.isfinite(x) for x in (*ratings, self.rating_high, self.rating_low)):
            raise ValidationError("rating thresholds and weights must be finite")
        if not self.rating_low < self.rating_high:
            raise ValidationError("rating_low must be < rating_high")
        if not math.isfinite(self.review_text_weight):
            raise ValidationError("review_text_weight must be finite")

    @property
    def evidence_half_life(self) -> float:
        """The half-life (s) of the category evidence."""
        if self.evidence_half_life_s is None:
            return self.long_half_life_s
        return self.evidence_half_life_s

    def weight_of(self, event_type: str, value: float | None = None) -> float:
        """The signed weight of an event type (exact, case-sensitive match); "rate" needs
        `value`. Unknown types raise ValidationError rather than silently weighing nothing."""
        w = self.event_weights.get(event_type)
        if w is not None:
            return w
        if event_type == "rate":
            if value is None:
                raise ValidationError("a 'rate' event needs a value (the rating)")
            return rating_weight(
                value,
                high=self.rating_high,
                low=self.rating_low,
                positive=self.rating_positive,
                negative=self.rating_negative,
                neutral=self.rating_neutral,
            )
        known = sorted([*self.event_weights, "rate"])
        raise ValidationError(f"unknown event type {event_type!r}; known: {known}")

    def fingerprint(self) -> int:
        """CRC-32 of (dim, short and long half-lives): the values a serialized state is only
        valid under. The evidence half-life is not among them: the evidence is stored as its
        mass at the state's last event, which any half-life reads alike (it then decays at the
        reader's rate). Its slot holds the long half-life, as it did when the evidence always
        decayed at that rate, so states written then keep their fingerprint."""
        packed = struct.pack(
            "<Hddd",
            self.dim,
            self.short_half_life_s,
            self.long_half_life_s,
            self.long_half_life_s,
        )
        return zlib.crc32(packed)


@dataclass(frozen=True, slots=True)
class InterestEvent:
    """One user event as the interest state needs it.

    event_id: unique id for de-duplication, or None (never de-duplicated); ts: event time in
    epoch seconds (finite); item_id: the item acted on, None for a search; value: the rating of
    a "rate" event.
    """

    event_id: str | None
    event_type: str
    ts: float
    item_id: str | None = None
    value: float | None = None

    def __post_init__(self) -> None:
        if self.event_id is not None and (not isinstance(self.event_id, str) or not self.event_id):
            raise ValidationError(f"event_id must be a non-empty str or None: {self.event_id!r}")
        if not isinstance(self.event_type, str) or not self.event_type:
            raise ValidationError(f"event_type must be a non-empty str: {self.event_type!r}")
        if isinstance(self.ts, bool) or not isinstance(self.ts, numbers.Real):
            raise ValidationError(f"event time ts must be a number (s), got {self.ts!r}")
        if not math.isfinite(self.ts):
            raise ValidationError(f"event time ts must be finite (s), got {self.ts!r}")
        if self.item_id is not None and (not isinstance(self.item_id, str) or not self.item_id):
            raise ValidationError(f"item_id must be a non-empty str or None: {self.item_id!r}")
        if self.value is not None and (
            isinstance(self.value, bool)
            or not isinstance(self.value, numbers.Real)
            or not math.isfinite(self.value)
        ):
            raise ValidationError(f"value must be finite or None, got {self.value!r}")
        # Canonical Python floats (numpy scalars are accepted): cheaper arithmetic downstream.
        object.__setattr__(self, "ts", float(self.ts))
        if self.value is not None:
            object.__setattr__(self, "value", float(self.value))


# magic, version, flags, dim, n_dedupe, n_consumed, n_categories, fingerprint, event_count,
# last_ts, L_short, L_long, len(last_event_id)
_HEADER = struct.Struct("<2sBBHHHHIIdddH")
_MAGIC = b"RI"
_VERSION = 1
_CRC = struct.Struct("<I")


class InterestState:
    """The interest state of ONE user (see the module docstring for the math and invariants).

    `update` is the only mutator; `score_vector`, `blended`, `evidence` only read;
    to_bytes/from_bytes persist it compactly.
    """

    __slots__ = (
        "_consumed",
        "_count",
        "_dim",
        "_last_id",
        "_last_ts",
        "_ll",
        "_ls",
        "_neg",
        "_params",
        "_pos",
        "_rate_e",
        "_rate_l",
        "_rate_s",
        "_recent",
        "_seen",
        "_vl",
        "_vs",
    )

    def __init__(self, params: InterestParams | None = None) -> None:
        """An empty state: no events, zero vectors, no evidence."""
        p = params if params is not None else InterestParams()
        self._params = p
        self._dim = p.dim
        # Rates cached: update() is the hot path and decay_rate() validates on every call.
        self._rate_s = decay.decay_rate(p.short_half_life_s)
        self._rate_l = decay.decay_rate(p.long_half_life_s)
        self._rate_e = decay.decay_rate(p.evidence_half_life)
        self._ls = _NEG_INF
        self._ll = _NEG_INF
        self._vs: FloatVec = np.zeros(p.dim, dtype=np.float32)
        self._vl: FloatVec = np.zeros(p.dim, dtype=np.float32)
        self._pos: dict[str, float] = {}
        self._neg: dict[str, float] = {}
        self._count = 0
        self._last_ts = _NEG_INF
        self._last_id: str | None = None
        self._recent: deque[int] = deque()
        self._seen: set[int] = set()
        # dict as an ordered set: insertion order is recency, O(1) move-to-end and evict-oldest.
        self._consumed: dict[int, None] = {}

    # ------------------------------------------------------------------ read-only views

    @property
    def params(self) -> InterestParams:
        """The hyperparameters this state was built with."""
        return self._params

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def event_count(self) -> int:
        """Number of applied (non-duplicate) events."""
        return self._count

    @property
    def last_ts(self) -> float:
        """Greatest event time (s) applied; −inf while empty."""
        return self._last_ts

    @property
    def last_event_id(self) -> str | None:
        """Id of the applied event with the greatest (ts, event_id); None if it had none."""
        return self._last_id

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category with evidence (positive or negative), sorted."""
        return tuple(sorted(self._pos.keys() | self._neg.keys()))

    def log_scale(self, horizon: Horizon) -> float:
        """L of a horizon (relative to epoch 0; −inf while the horizon is empty)."""
        return self._ls if _horizon_is_short(horizon) else self._ll

    def recent_event_keys(self) -> npt.NDArray[np.uint64]:
        """64-bit hashes of the de-duplication window, oldest first (see event_key)."""
        return np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))

    def consumed_keys(self) -> npt.NDArray[np.uint32]:
        """32-bit hashes of consumed items, least recent first (see item_key).

        Exclude candidates with np.isin(candidate_keys, state.consumed_keys()).
        """
        return np.fromiter(self._consumed, dtype=np.uint32, count=len(self._consumed))

    def has_consumed(self, item_id: str) -> bool:
        """Whether `item_id` is in the consumed window (hash match; see module docstring)."""
        return item_key(item_id) in self._consumed

    def has_seen(self, event_id: str) -> bool:
        """Whether `event_id` is in the de-duplication window."""
        return event_key(event_id) in self._seen

    def evidence_log_masses(self) -> dict[str, tuple[float, float]]:
        """category -> (log P, log N): positive and negative log-masses relative to epoch 0."""
        return {
            c: (self._pos.get(c, _NEG_INF), self._neg.get(c, _NEG_INF)) for c in self.categories
        }

    def evidence(self, at_ts: float) -> dict[str, float]:
        """category -> max(0, P_c(at_ts) − N_c(at_ts)): decayed evidence at event time `at_ts`.

        These are the pseudo-counts the Dirichlet posterior adds to its prior (sorted by label).
        """
        rate = self._rate_e
        out: dict[str, float] = {}
        for c in self.categories:
            pos = decay.score(self._pos.get(c, _NEG_INF), at_ts, rate)
            neg = decay.score(self._neg.get(c, _NEG_INF), at_ts, rate)
            out[c] = max(0.0, pos - neg)
        return out

    def score_vector(self, horizon: Horizon, at_ts: float) -> FloatVec:
        """u_h(at_ts) = Σ_k w_k·e^(−λ_h(at_ts − t_k))·v_k, a new float32 array (zeros if empty).

        Meant for at_ts >= last_ts; raises ValidationError if at_ts is so far before the
        events that the amplified vector would overflow float32.
        """
        if not math.isfinite(at_ts):
            raise ValidationError(f"at_ts must be finite (s), got {at_ts!r}")
        if _horizon_is_short(horizon):
            log_scale, vec, rate = self._ls, self._vs, self._rate_s
        else:
            log_scale, vec, rate = self._ll, self._vl, self._rate_l
        if log_scale == _NEG_INF:
            return np.zeros(self._dim, dtype=np.float32)
        exponent = log_scale - rate * at_ts
        if exponent > 80.0:  # e^80 ≈ 5.5e34: near float32's max once multiplied by vec
            raise ValidationError(f"at_ts={at_ts} is too far before the events to score")
        return vec * np.float32(math.exp(exponent))

    def blended(self, at_ts: float, short_weight: float = 0.5) -> FloatVec:
        """A unit-norm query vector mixing both horizons' directions at event time `at_ts`.

        Each horizon is L2-normalised first (the long horizon holds ~60× more mass, so raw
        vectors would drown the short one), then mixed as s·short + (1 − s)·long with
        s = short_weight ∈ [0, 1], and the mix is normalised. Empty horizons contribute
        nothing; returns zeros when nothing is left.
        """
        if not (math.isfinite(short_weight) and 0.0 <= short_weight <= 1.0):
            raise ValidationError(f"short_weight must be in [0, 1], got {short_weight!r}")
        out = np.zeros(self._dim, dtype=np.float32)
        mix: tuple[tuple[Horizon, float], ...] = (
            ("short", short_weight),
            ("long", 1.0 - short_weight),
        )
        for horizon, share in mix:
            if share == 0.0:
                continue
            u = self.score_vector(horizon, at_ts)
            norm = float(np.linalg.norm(u))
            if norm > 0.0 and math.isfinite(norm):
                out += u * np.float32(share / norm)
        norm = float(np.linalg.norm(out))
        if norm > 0.0:
            out /= np.float32(norm)
        return out

    # ------------------------------------------------------------------ update

    def _as_vec(self, x: npt.ArrayLike, name: str) -> FloatVec:
        v = np.asarray(x, dtype=np.float32)
        if v.shape != (self._dim,):
            raise ValidationError(f"{name} must have shape ({self._dim},), got {v.shape}")
        # One dot product checks for NaN/inf (and for values whose square overflows float32).
        if not math.isfinite(float(np.dot(v, v))):
            raise ValidationError(f"{name} must be finite with a float32-representable norm")
        return v

    def _add_vector(self, v: FloatVec, weight: float, ts: float) -> None:
        """Fold w·v at event time ts into both horizons (O(dim), see module docstring)."""
        log_w = math.log(abs(weight))
        sign = 1.0 if weight > 0.0 else -1.0
        # Short horizon.
        m = log_w + self._rate_s * ts
        if m > self._ls:
            if self._ls != _NEG_INF:
                self._vs *= np.float32(math.exp(self._ls - m))
            self._ls = m
            coef = sign
        else:
            coef = sign * math.exp(m - self._ls)
        self._vs += v * np.float32(coef)
        # Long horizon (same steps; written out rather than looped to keep update cheap).
        m = log_w + self._rate_l * ts
        if m > self._ll:
            if self._ll != _NEG_INF:
                self._vl *= np.float32(math.exp(self._ll - m))
            self._ll = m
            coef = sign
        else:
            coef = sign * math.exp(m - self._ll)
        self._vl += v * np.float32(coef)

    def _add_evidence(self, category: str, weight: float, ts: float) -> None:
        if weight == 0.0:  # a tiny share times a weight can underflow; log(0) would raise
            return
        masses = self._pos if weight > 0.0 else self._neg
        term = math.log(abs(weight)) + self._rate_e * ts
        masses[category] = decay.logaddexp(masses.get(category, _NEG_INF), term)

    def update(
        self,
        event: InterestEvent,
        item_vec: npt.ArrayLike | None = None,
        categories: Sequence[str] = (),
        text_vec: npt.ArrayLike | None = None,
        *,
        text_categories: Mapping[str, float] | None = None,
    ) -> bool:
        """Apply one event; False (and nothing changes) if its event_id was already applied.

        item_vec: the item's embedding (dim,), weighted by the event weight w. categories: the
        item's categories, sharing |w| as evidence. text_vec: an embedded query/review (dim,),
        weighted by w for text_event_types (search) and by review_text_weight·sign(w)
        otherwise. text_categories: category -> share in [0, 1] of the text's evidence (need
        not sum to 1), scaled by the text weight; e.g.
        dict(zip(labels, category_evidence_from_text(text_vec, centroids))).
        All inputs are validated before anything changes (ValidationError): the update is
        all-or-nothing.
        """
        event_id = event.event_id
        key = -1
        if event_id is not None:
            key = event_key(event_id)
            if key in self._seen:
                return False
        p = self._params
        weight = p.weight_of(event.event_type, event.value)
        ts = event.ts
        item = None if item_vec is None else self._as_vec(item_vec, "item_vec")
        text = None if text_vec is None else self._as_vec(text_vec, "text_vec")
        if event.event_type in p.text_event_types:
            text_weight = weight
        else:
            text_weight = p.review_text_weight * ((weight > 0.0) - (weight < 0.0))
        cats, shares = _checked_categories(categories, text_categories)

        # Validated: from here on nothing raises, so the update is atomic.
        if weight != 0.0:
            if item is not None:
                self._add_vector(item, weight, ts)
            if cats:
                each = weight / len(cats)
                for c in cats:
                    self._add_evidence(c, each, ts)
        if text_weight != 0.0:
            if text is not None:
                self._add_vector(text, text_weight, ts)
            for c, share in shares.items():
                self._add_evidence(c, text_weight * share, ts)

        self._record(event, key)
        return True

    def _record(self, event: InterestEvent, key: int) -> None:
        """The bookkeeping of an applied event: count, latest event, the de-duplication
        window (`key`: its event key) and the consumed items."""
        p = self._params
        event_id, ts = event.event_id, event.ts
        self._count += 1
        if (ts, event_id or "") > (self._last_ts, self._last_id or ""):
            self._last_ts = ts
            self._last_id = event_id
        if event_id is not None and p.dedupe_capacity > 0:
            if len(self._recent) >= p.dedupe_capacity:
                self._seen.discard(self._recent.popleft())
            self._recent.append(key)
            self._seen.add(key)
        item_id = event.item_id
        if (
            item_id is not None
            and p.max_consumed > 0
            and event.event_type in p.consumed_event_types
        ):
            ikey = item_key(item_id)
            consumed = self._consumed
            if ikey in consumed:
                del consumed[ikey]  # re-insert below: most recent goes last
            consumed[ikey] = None
            if len(consumed) > p.max_consumed:
                del consumed[next(iter(consumed))]

    def isclose(self, other: InterestState, *, rtol: float = 1e-5) -> bool:
        """Whether two states agree up to float rounding (e.g. the same events reordered).

        Bookkeeping must match exactly (id windows as sets); log-scales and evidence
        log-masses within `rtol` (absolute in log space = relative in mass); vectors within
        rtol·max(1, event_count)·max(1, max|vec|), the worst-case rounding of that many terms.
        """
        if (
            self._params.fingerprint() != other._params.fingerprint()
            or self._count != other._count
            or self._last_ts != other._last_ts
            or self._last_id != other._last_id
            or self._seen != other._seen
            or set(self._consumed) != set(other._consumed)
            or self.categories != other.categories
        ):
            return False
        for a, b in ((self._pos, other._pos), (self._neg, other._neg)):
            for c in a.keys() | b.keys():
                if not _log_close(a.get(c, _NEG_INF), b.get(c, _NEG_INF), rtol):
                    return False
        tol_terms = rtol * max(1, self._count)
        horizons = (
            (self._ls, self._vs, other._ls, other._vs),
            (self._ll, self._vl, other._ll, other._vl),
        )
        for la, va, lb, vb in horizons:
            if not _log_close(la, lb, rtol):
                return False
            if la == _NEG_INF:
                continue
            # Bring b onto a's scale (they differ at most by rtol in log space).
            vb_on_a = vb * np.float32(math.exp(lb - la))
            scale = max(1.0, float(np.max(np.abs(va))), float(np.max(np.abs(vb_on_a))))
            if not np.allclose(va, vb_on_a, rtol=0.0, atol=tol_terms * scale):
                return False
        return True

    def __repr__(self) -> str:
        return (
            f"InterestState(dim={self._dim}, events={self._count}, last_ts={self._last_ts}, "
            f"categories={len(self.categories)}, consumed={len(self._consumed)})"
        )

    # ------------------------------------------------------------------ serialization

    def to_bytes(self) -> bytes:
        """Compact versioned binary form (little-endian; see the module docstring for size).

        Layout: header (magic b"RI", version, flags, dim, counts, params fingerprint,
        event_count, last_ts, L_short, L_long, id length), last_event_id (UTF-8), both
        vectors (float32), event-id hashes (uint64), item hashes (uint32), category labels
        (u8 length + UTF-8, sorted), P and N log-masses as float32 relative to λ_e·last_ts
        (so they stay small numbers float32 holds well), then a CRC-32 of all of it.
        """
        labels = self.categories
        if self._count > 0xFFFFFFFF or len(labels) > 0xFFFF:
            raise StateError("state too large to serialize (event_count or categories)")
        last_id = (self._last_id or "").encode()
        if len(last_id) > 0xFFFF:
            raise StateError("last_event_id is longer than 65535 UTF-8 bytes")
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            0,
            self._dim,
            len(self._recent),
            len(self._consumed),
            len(labels),
            self._params.fingerprint(),
            self._count,
            self._last_ts,
            self._ls,
            self._ll,
            len(last_id),
        )
        parts = [
            header,
            last_id,
            self._vs.tobytes(),
            self._vl.tobytes(),
            self.recent_event_keys().astype("<u8").tobytes(),
            self.consumed_keys().astype("<u4").tobytes(),
        ]
        for label in labels:
            raw = label.encode()
            parts.append(bytes((len(raw),)))
            parts.append(raw)
        if labels:
            ref = self._rate_e * self._last_ts
            pos = np.array([self._pos.get(c, _NEG_INF) - ref for c in labels], dtype="<f4")
            neg = np.array([self._neg.get(c, _NEG_INF) - ref for c in labels], dtype="<f4")
            parts.append(pos.tobytes())
            parts.append(neg.tobytes())
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, params: InterestParams | None = None) -> InterestState:
        """Decode to_bytes output under `params`; StateError on any inconsistency.

        Windows longer than params' capacities are cut to their newest entries, so capacities
        may change between writes; dim and the short and long half-lives may not (fingerprint
        check). The evidence keeps its mass at the last event under any evidence half-life.
        """
        p = params if params is not None else InterestParams()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StateError(f"expected bytes, got {type(data).__name__}")
        buf = bytes(data)
        if len(buf) < _HEADER.size + _CRC.size:
            raise StateError(f"interest state too short: {len(buf)} bytes")
        body, (crc,) = buf[: -_CRC.size], _CRC.unpack(buf[-_CRC.size :])
        if zlib.crc32(body) != crc:
            raise StateError("interest state checksum mismatch (corrupt or not an InterestState)")
        (
            magic,
            version,
            flags,
            dim,
            n_recent,
            n_consumed,
            n_labels,
            fingerprint,
            count,
            last_ts,
            l_short,
            l_long,
            id_len,
        ) = _HEADER.unpack_from(body)
        if magic != _MAGIC or version != _VERSION or flags != 0:
            raise StateError(f"unsupported interest state header: {magic!r} v{version} f{flags}")
        if dim != p.dim or fingerprint != p.fingerprint():
            raise StateError("interest state was written under a different dim or half-lives")
        off = _HEADER.size
        try:
            last_id = body[off : off + id_len].decode() if id_len else None
            off += id_len
            vs = _take(body, off, dim, "<f4").astype(np.float32)
            off += 4 * dim
            vl = _take(body, off, dim, "<f4").astype(np.float32)
            off += 4 * dim
            recent = [int(k) for k in _take(body, off, n_recent, "<u8")]
            off += 8 * n_recent
            consumed = [int(k) for k in _take(body, off, n_consumed, "<u4")]
            off += 4 * n_consumed
            labels = []
            for _ in range(n_labels):
                n = body[off]
                labels.append(body[off + 1 : off + 1 + n].decode())
                off += 1 + n
            pos = _take(body, off, n_labels, "<f4").astype(np.float64)
            off += 4 * n_labels
            neg = _take(body, off, n_labels, "<f4").astype(np.float64)
            off += 4 * n_labels
        except (IndexError, UnicodeDecodeError, ValueError) as exc:
            raise StateError(f"truncated or malformed interest state: {exc}") from None
        if off != len(body):
            raise StateError(f"interest state has {len(body) - off} trailing bytes")
        _check_state_values(
            count, last_ts, l_short, vs, l_long, vl, recent, consumed, labels, pos, neg
        )
        state = cls(p)
        state._count = count
        state._last_ts = last_ts
        state._last_id = last_id
        state._ls, state._vs = l_short, vs
        state._ll, state._vl = l_long, vl
        ref = state._rate_e * last_ts if labels else 0.0
        for label, lp, ln in zip(labels, pos.tolist(), neg.tolist(), strict=True):
            if lp != _NEG_INF:
                state._pos[label] = lp + ref
            if ln != _NEG_INF:
                state._neg[label] = ln + ref
        if p.dedupe_capacity < len(recent):
            recent = recent[len(recent) - p.dedupe_capacity :]
        state._recent = deque(recent)
        state._seen = set(recent)
        state._consumed = _trim_oldest(dict.fromkeys(consumed), p.max_consumed)
        return state


def _horizon_is_short(horizon: str) -> bool:
    if horizon == "short":
        return True
    if horizon == "long":
        return False
    raise ValidationError(f"horizon must be 'short' or 'long', got {horizon!r}")


def _trim_oldest(ordered: dict[int, None], capacity: int) -> dict[int, None]:
    if len(ordered) <= capacity:
        return ordered
    keys = list(ordered)[len(ordered) - capacity :]
    return dict.fromkeys(keys)


def _log_close(a: float, b: float, tol: float) -> bool:
    if a == b:  # covers both −inf
        return True
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol


def _take(body: bytes, off: int, n: int, dtype: str) -> npt.NDArray[np.generic]:
    size = np.dtype(dtype).itemsize * n
    if off + size > len(body):
        raise ValueError(f"needs {size} bytes at offset {off}, has {len(body) - off}")
    return np.frombuffer(body, dtype=dtype, count=n, offset=off)


def _check_state_values(
    count: int,
    last_ts: float,
    l_short: float,
    vs: FloatVec,
    l_long: float,
    vl: FloatVec,
    recent: list[int],
    consumed: list[int],
    labels: list[str],
    pos: npt.NDArray[np.float64],
    neg: npt.NDArray[np.float64],
) -> None:
    """Semantic checks on decoded fields: StateError if they cannot come from to_bytes."""
    if (count == 0) != (last_ts == _NEG_INF) or math.isnan(last_ts) or last_ts == math.inf:
        raise StateError("interest state has inconsistent event_count and last_ts")
    for log_scale, vec in ((l_short, vs), (l_long, vl)):
        if math.isnan(log_scale) or log_scale == math.inf:
            raise StateError("interest state log-scale is NaN or +inf")
        if not np.all(np.isfinite(vec)):
            raise StateError("interest state vector holds NaN or inf")
        if log_scale == _NEG_INF and np.any(vec):
            raise StateError("interest state has a non-zero vector for an empty horizon")
    if len(set(recent)) != len(recent) or len(set(consumed)) != len(consumed):
        raise StateError("interest state id windows hold duplicates")
    if len(set(labels)) != len(labels) or not all(labels):
        raise StateError("interest state category labels are empty or duplicated")
    if np.any((pos == -np.inf) & (neg == -np.inf)):
        raise StateError("interest state lists a category without evidence")
    if labels and count == 0:
        raise StateError("interest state has evidence but no events")
    if not (np.all(pos < np.inf) and np.all(neg < np.inf)):  # also false for NaN
        raise StateError("interest state evidence holds NaN or +inf")


def _checked_categories(
    categories: Sequence[str], text_categories: Mapping[str, float] | None
) -> tuple[dict[str, None], dict[str, float]]:
    """(the item's categories de-duplicated in order, the text's positive category shares);
    ValidationError for a bad label or a share outside [0, 1]."""
    if isinstance(categories, str):
        # A bare str is a Sequence[str] of characters: always a caller bug.
        raise ValidationError("categories must be a sequence of labels, not one str")
    cats = dict.fromkeys(categories)  # de-duplicated, order kept
    for c in cats:
        if not isinstance(c, str) or not c or len(c.encode()) > 255:
            raise ValidationError(f"category labels must be 1–255 UTF-8 bytes: {c!r}")
    shares: dict[str, float] = {}
    for c, share in (text_categories or {}).items():
        if not isinstance(c, str) or not c or len(c.encode()) > 255:
            raise ValidationError(f"category labels must be 1–255 UTF-8 bytes: {c!r}")
        if not 0.0 <= share <= 1.0:  # also refuses NaN
            raise ValidationError(f"text_categories shares must be in [0, 1]: {c!r}={share}")
        if share > 0.0:
            shares[c] = share
    return cats, shares

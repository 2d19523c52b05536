"""Signal weights on the probability simplex and their online, feedback-driven update.

Fusion scores a candidate as ``Σ_k w_k·s_k`` with ``w`` on the probability simplex
``Δ = {w ∈ R^k : w ≥ 0, Σ w = 1}``. On feedback the weights move by

    w ← Π_Δ(w + sign·η·Δw),   Δw = (d − μ) / ‖d − μ‖₂

where ``d`` is the normalised signal vector of the consumed item *as it was served*, ``μ`` a
baseline signal vector of the list it answers (:func:`pool_baseline`), ``sign`` +1 for
positive and −1 for negative feedback, and ``Π_Δ`` the exact Euclidean projection onto the
simplex. ``Δw`` is a unit direction, so η is the step length in weight space (unitless, per
feedback event) whatever the magnitude of the signal gap. When ``‖d − μ‖ < eps`` the consumed
item is indistinguishable from the list average and carries no information: no update.

Per-user weights are shrunk toward the global weights (see :meth:`WeightState.effective`):

    w_eff = n/(n+κ)·w_user_raw + κ/(n+κ)·w_global

with ``n`` the user's count of applied feedback events. κ is in units of feedback events: it is
the count at which the user's own weights and the global weights have equal say.

Invariant of everything returned here: weight vectors are float64, finite, non-negative and sum
to 1 up to floating-point rounding (|Σw − 1| ≤ 1e-9).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recstream.models.errors import StateError, ValidationError
from recstream.models.vocabulary import FEEDBACK_SIGNS, RATING_NEGATIVE, RATING_POSITIVE

FloatArray = npt.NDArray[np.float64]

#: Tolerance on |Σw − 1| and on negative entries when checking that a vector lies on the simplex.
SIMPLEX_TOL = 1e-9

# to_bytes layout, little-endian: magic, format version, k (uint16), n (uint64),
# then k float64 weights. 13 header bytes + 8·k.
_MAGIC = b"RW"
_VERSION = 1
_HEADER = struct.Struct("<2sBHQ")


def project_to_simplex(v: npt.ArrayLike) -> FloatArray:
    """Exact Euclidean projection of ``v`` onto the probability simplex.

    Sort-based algorithm of Duchi, Shalev-Shwartz, Singer & Chandra (ICML 2008), O(k log k):
    the projection is ``max(v − θ, 0)`` with θ chosen so the result sums to 1. Returns a new
    float64 array; ``v`` is not modified. Raises ValidationError for an empty, non-1-D or
    non-finite input.
    """
    x = np.asarray(v, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValidationError(f"expected a non-empty 1-D vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValidationError("cannot project a vector with NaN or infinite entries")
    u = np.sort(x)[::-1]
    css = np.cumsum(u)
    j = np.arange(1, x.size + 1, dtype=np.float64)
    # rho = the largest j with u_j − (css_j − 1)/j > 0; j = 1 always qualifies, so rho ≥ 1.
    rho = int(np.flatnonzero(u - (css - 1.0) / j > 0.0)[-1]) + 1
    theta = (css[rho - 1] - 1.0) / rho
    return np.maximum(x - theta, 0.0)


def pool_baseline(
    rows: npt.ArrayLike, weights: npt.ArrayLike | None, temperature: float
) -> FloatArray:
    """μ of the η rule over a candidate pool: float64[k], a convex combination of `rows`.

    rows: the pool's normalised signal rows, float[n, k] with n ≥ 1; weights: the weights the
    list was fused with (scores ``rows @ weights``, in [0, 1]). With `temperature` τ > 0, μ is
    the mean of the rows under softmax(score/τ): then (d − μ)/τ is the gradient in w of the
    log-probability of d's item under that softmax over the pool, so the η rule takes normalised
    steps up that log-likelihood. τ = ∞ (or no weights) gives the plain mean; τ → 0 the
    top-scored row.
    """
    r = np.asarray(rows, dtype=np.float64)
    if r.ndim != 2 or not r.shape[0]:
        raise ValidationError(f"a pool baseline needs rows of shape (n >= 1, k), got {r.shape}")
    if weights is None or math.isinf(temperature):
        return np.asarray(r.mean(axis=0), dtype=np.float64)
    s = r @ np.asarray(weights, dtype=np.float64)
    e = np.exp((s - s.max()) / temperature)
    return np.asarray((e / e.sum()) @ r, dtype=np.float64)


def check_simplex(w: npt.ArrayLike, k: int | None = None, *, name: str = "weights") -> FloatArray:
    """Return ``w`` as float64 after checking it lies on the simplex (and has length ``k``).

    Raises ValidationError otherwise; the tolerance is :data:`SIMPLEX_TOL`.
    """
    x = np.asarray(w, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValidationError(f"{name} must be a non-empty 1-D vector, got shape {x.shape}")
    if k is not None and x.size != k:
        raise ValidationError(f"{name} has {x.size} entries, expected {k}")
    if not np.all(np.isfinite(x)):
        raise ValidationError(f"{name} contains NaN or infinite entries")
    if x.min() < -SIMPLEX_TOL or abs(float(x.sum()) - 1.0) > SIMPLEX_TOL:
        raise ValidationError(f"{name} is not on the probability simplex: {x.tolist()}")
    return x


@dataclass(frozen=True, slots=True)
class EtaSchedule:
    """Step length η_t for the t-th applied update (t = 0, 1, ...; unitless).

    ``tau=None`` gives the constant η_t = eta0. Otherwise η_t = eta0 / (1 + t/τ): the step
    halves after τ updates, so weights settle while still tracking slow drift (the decay is
    harmonic, not geometric, so the total movement Σ η_t stays unbounded).
    """

    eta0: float
    tau: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eta0) and self.eta0 >= 0.0):
            raise ValidationError(f"eta0 must be finite and ≥ 0, got {self.eta0}")
        if self.tau is not None and not (math.isfinite(self.tau) and self.tau > 0.0):
            raise ValidationError(f"tau must be finite and > 0, got {self.tau}")

    @classmethod
    def constant(cls, eta0: float) -> EtaSchedule:
        """η_t = eta0 for every t."""
        return cls(eta0)

    @classmethod
    def decaying(cls, eta0: float, tau: float) -> EtaSchedule:
        """η_t = eta0 / (1 + t/tau)."""
        return cls(eta0, tau)

    def eta(self, t: int) -> float:
        """η for step ``t`` (the number of updates already applied)."""
        if t < 0:
            raise ValidationError(f"step must be ≥ 0, got {t}")
        if self.tau is None:
            return self.eta0
        return self.eta0 / (1.0 + t / self.tau)


class WeightState:
    """One weight vector on the simplex plus its count of applied feedback events.

    Used both per user (raw weights, shrunk with :meth:`effective` before serving) and for the
    global weights. ``n`` counts updates that actually moved the weights; it is also the clock
    of an :class:`EtaSchedule`, so no further schedule state needs storing.
    """

    __slots__ = ("_n", "_weights")

    def __init__(self, weights: npt.ArrayLike, n: int = 0) -> None:
        """Take ``weights`` (must already be on the simplex) and feedback count ``n`` ≥ 0."""
        if n < 0:
            raise ValidationError(f"feedback count must be ≥ 0, got {n}")
        self._weights = check_simplex(weights).copy()
        self._n = int(n)

    @classmethod
    def uniform(cls, k: int) -> WeightState:
        """Equal weights 1/k over ``k`` signals, n = 0."""
        if k < 1:
            raise ValidationError(f"need at least one signal, got k={k}")
        return cls(np.full(k, 1.0 / k), 0)

    @classmethod
    def starting_from(cls, global_weights: npt.ArrayLike) -> WeightState:
        """A new user's state seeded from the current global weights, n = 0.

        Seeding from global rather than uniform matters: the user's raw weights gain influence
        as n grows, and a uniform start would drag the effective weights back toward uniform.
        """
        return cls(global_weights, 0)

    @property
    def weights(self) -> FloatArray:
        """A copy of the raw weights (on the simplex)."""
        return self._weights.copy()

    @property
    def n(self) -> int:
        """Number of applied (non-degenerate) feedback updates."""
        return self._n

    @property
    def k(self) -> int:
        """Number of signals."""
        return int(self._weights.size)

    def update(
        self,
        d: npt.ArrayLike,
        mu: npt.ArrayLike,
        eta: float | EtaSchedule,
        sign: int = 1,
        *,
        eps: float = 1e-9,
    ) -> bool:
        """Apply ``w ← Π_Δ(w + sign·η·(d − μ)/‖d − μ‖)`` and count the event; True if applied.

        ``d``: normalised signal vector of the consumed item as served, float64[k] in [0, 1].
        ``mu``: mean normalised signal vector of the served list, float64[k].
        ``eta``: step length, or a schedule evaluated at t = :attr:`n`.
        ``sign``: +1 positive, −1 negative feedback, 0 neutral (no update).
        Returns False, leaving the state untouched, when sign is 0, η is 0 or ‖d − μ‖ < eps.
        After a positive update the weight of the signal with the largest d − μ never
        decreases; after a negative one it never increases (a property of the projection).
        """
        if sign not in (-1, 0, 1):
            raise ValidationError(f"sign must be -1, 0 or +1, got {sign}")
        d_arr = self._signal_vector(d, "d")
        mu_arr = self._signal_vector(mu, "mu")
        step = eta.eta(self._n) if isinstance(eta, EtaSchedule) else float(eta)
        if not (math.isfinite(step) and step >= 0.0):
            raise ValidationError(f"eta must be finite and ≥ 0, got {step}")
        if sign == 0 or step == 0.0:
            return False
        diff = d_arr - mu_arr
        norm = float(np.linalg.norm(diff))
        if norm < eps:
            return False
        self._weights = project_to_simplex(self._weights + (sign * step / norm) * diff)
        self._n += 1
        return True

    def effective(self, global_weights: npt.ArrayLike, kappa: float) -> FloatArray:
        """Raw weights shrunk toward the global weights: n/(n+κ)·w_raw + κ/(n+κ)·w_global.

        ``kappa`` (≥ 0, in feedback events) is the prior strength of the global weights. With
        n = 0 the result is the global weights (for κ = 0 too, where the formula is 0/0: no
        evidence means no personalisation). A convex combination of two simplex points, so the
        result is on the simplex.
        """
        g = check_simplex(global_weights, self.k, name="global_weights")
        if not (math.isfinite(kappa) and kappa >= 0.0):
            raise ValidationError(f"kappa must be finite and ≥ 0, got {kappa}")
        if self._n == 0:
            return g.copy()
        own = self._n / (self._n + kappa)
        return own * self._weights + (1.0 - own) * g

    def resized(self, k: int) -> WeightState:
        """A copy for ``k`` ≥ current signals: new signals (appended) start at weight 0.

        Registration only appends signals, so old indices stay valid; updates then give the
        new signal weight if it proves predictive. Shrinking is refused (StateError).
        """
        if k < self.k:
            raise StateError(f"cannot shrink weights from {self.k} to {k} signals")
        return WeightState(np.concatenate([self._weights, np.zeros(k - self.k)]), self._n)

    def to_bytes(self) -> bytes:
        """Compact encoding: 13-byte header (magic, version, k, n) + k little-endian float64."""
        header = _HEADER.pack(_MAGIC, _VERSION, self.k, self._n)
        return header + self._weights.astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> WeightState:
        """Inverse of :meth:`to_bytes`; StateError on any malformed input."""
        if len(data) < _HEADER.size:
            raise StateError(f"weight state too short: {len(data)} bytes")
        magic, version, k, n = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise StateError(f"not a weight state (magic {magic!r}, version {version})")
        if len(data) != _HEADER.size + 8 * k:
            raise StateError(f"weight state of k={k} must be {_HEADER.size + 8 * k} bytes")
        weights = np.frombuffer(data, dtype="<f8", count=k, offset=_HEADER.size)
        return cls._decoded(weights.astype(np.float64), n)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"version": 1, "weights": [...], "n": int}``."""
        return {"version": _VERSION, "weights": self._weights.tolist(), "n": self._n}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightState:
        """Inverse of :meth:`to_dict`; StateError on any malformed input."""
        try:
            version = data["version"]
            weights = np.asarray(data["weights"], dtype=np.float64)
            n = data["n"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed weight state dict: {exc}") from exc
        if version != _VERSION or not isinstance(n, int) or isinstance(n, bool):
            raise StateError(f"unsupported weight state (version {version!r}, n {n!r})")
        return cls._decoded(weights, n)

    @classmethod
    def _decoded(cls, weights: FloatArray, n: int) -> WeightState:
        try:
            return cls(weights, n)
        except ValidationError as exc:
            raise StateError(f"decoded weight state is invalid: {exc}") from exc

    def _signal_vector(self, v: npt.ArrayLike, name: str) -> FloatArray:
        x = np.asarray(v, dtype=np.float64)
        if x.shape != (self.k,):
            raise ValidationError(f"{name} must have shape ({self.k},), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValidationError(f"{name} contains NaN or infinite entries")
        return x

    def __repr__(self) -> str:
        return f"WeightState(weights={self._weights.tolist()}, n={self._n})"


def feedback_sign(event_type: str, rating: float | None = None) -> int:
    """+1 (positive), −1 (negative) or 0 (no update) for a feedback event.

    ``rate`` needs ``rating`` on the 1–5 scale: ≥ 4 positive, ≤ 2 negative, in between 0.
    Event names are matched case-insensitively. Unknown events raise ValidationError rather
    than silently teaching nothing. See FEEDBACK_SIGNS for the reasoning per event.
    """
    kind = event_type.strip().lower()
    if kind == "rate":
        if rating is None or not math.isfinite(rating):
            raise ValidationError(f"event 'rate' needs a finite rating, got {rating!r}")
        if rating >= RATING_POSITIVE:
            return 1
        if rating <= RATING_NEGATIVE:
            return -1
        return 0
    try:
        return FEEDBACK_SIGNS[kind]
    except KeyError:
        known = sorted([*FEEDBACK_SIGNS, "rate"])
        raise ValidationError(f"unknown feedback event {event_type!r}; known: {known}") from None

"""A Dirichlet posterior over a user's K interest categories, and where categories come from.

Model: the categories of a user's next interactions are draws from an unknown distribution
θ ∈ Δ^(K−1) with prior Dirichlet(α0·π) (π a strictly positive probability vector, α0 > 0 the
prior's weight in pseudo-events). Observing decayed evidence e_c (InterestState.evidence(t):
event-weighted, exponentially forgotten counts) gives the posterior Dirichlet(α0·π + e).
Decay makes this a forgetting posterior: evidence one half-life old counts half.

Categories come from the catalogue when items have them; otherwise `fit_centroids` clusters
item embeddings (k-means on L2-normalised vectors, so clusters follow cosine similarity) and
`assign` maps items to clusters. User text (a search or review) has no category; it
contributes through `category_evidence_from_text`, a softmax over cosine similarities to the
category centroids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats
from sklearn.cluster import KMeans, MiniBatchKMeans

from recstream.models.errors import ValidationError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class DirichletPosterior:
    """Dirichlet(α) over categories `labels` (α_c > 0, finite; labels distinct, same length)."""

    __slots__ = ("_alpha", "_labels")

    def __init__(self, alpha: npt.ArrayLike, labels: Sequence[str]) -> None:
        a = np.array(alpha, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValidationError(f"alpha must be a non-empty 1-d array, got shape {a.shape}")
        if not (np.all(np.isfinite(a)) and np.all(a > 0.0)):
            raise ValidationError("alpha must be finite and > 0 in every component")
        names = [str(x) for x in labels]
        if len(names) != a.size or len(set(names)) != len(names):
            raise ValidationError(f"need {a.size} distinct labels, got {len(names)}")
        a.setflags(write=False)
        self._alpha = a
        self._labels = tuple(names)

    @classmethod
    def from_evidence(
        cls,
        evidence: Mapping[str, float],
        labels: Sequence[str],
        *,
        alpha0: float = 1.0,
        prior: npt.ArrayLike | None = None,
    ) -> DirichletPosterior:
        """α = α0·prior + evidence (pseudo-counts per label; labels absent from it add 0).

        `labels` fixes the support and order; evidence for other categories is ignored.
        prior: strictly positive, sums to 1 (default uniform). Evidence must be finite, >= 0.
        """
        k = len(labels)
        if k == 0:
            raise ValidationError("labels must not be empty")
        if not (math.isfinite(alpha0) and alpha0 > 0.0):
            raise ValidationError(f"alpha0 must be finite and > 0, got {alpha0!r}")
        if prior is None:
            pi = np.full(k, 1.0 / k)
        else:
            pi = np.asarray(prior, dtype=np.float64)
            if pi.shape != (k,) or not np.all(pi > 0.0) or abs(float(pi.sum()) - 1.0) > 1e-9:
                raise ValidationError("prior must be strictly positive, sum to 1, one per label")
        counts = np.array([float(evidence.get(c, 0.0)) for c in labels])
        if not (np.all(np.isfinite(counts)) and np.all(counts >= 0.0)):
            raise ValidationError("evidence must be finite and >= 0")
        return cls(alpha0 * pi + counts, labels)

    @property
    def alpha(self) -> FloatArray:
        """The concentration parameters (read-only array)."""
        return self._alpha

    @property
    def labels(self) -> tuple[str, ...]:
        """Category labels, in the order of alpha."""
        return self._labels

    @property
    def concentration(self) -> float:
        """α_0 = Σ α_c: prior plus evidence mass; larger means a more certain posterior."""
        return float(self._alpha.sum())

    def mean(self) -> FloatArray:
        """E[θ] = α / Σα (sums to 1)."""
        return self._alpha / self._alpha.sum()

    def mean_by_label(self) -> dict[str, float]:
        """The posterior mean as label -> probability."""
        return dict(zip(self._labels, self.mean().tolist(), strict=True))

    def credible_interval(self, level: float = 0.9) -> tuple[FloatArray, FloatArray]:
        """Equal-tailed per-category interval (lower, upper) of probability `level` ∈ (0, 1).

        θ_c's marginal is Beta(α_c, Σα − α_c), so these are its (1 ∓ level)/2 quantiles. They
        are marginal intervals, not a joint region: jointly they cover less than `level`.
        With one category θ = 1 surely and the interval is [1, 1].
        """
        if not (math.isfinite(level) and 0.0 < level < 1.0):
            raise ValidationError(f"level must be in (0, 1), got {level!r}")
        a = self._alpha
        if a.size == 1:
            return np.ones(1), np.ones(1)
        b = a.sum() - a
        tail = (1.0 - level) / 2.0
        lower = np.asarray(stats.beta.ppf(tail, a, b), dtype=np.float64)
        upper = np.asarray(stats.beta.ppf(1.0 - tail, a, b), dtype=np.float64)
        return lower, upper

    def entropy(self) -> float:
        """Shannon entropy (nats) of the posterior MEAN as a categorical distribution.

        0 when one category takes everything, ln K when the mean is uniform: how spread the
        user's expected interests are. (Not the differential entropy of the Dirichlet itself,
        which measures how unsure we are about θ.)
        """
        p = self.mean()
        p = p[p > 0.0]
        return float(-(p * np.log(p)).sum())

    def thompson_sample(self, rng: np.random.Generator) -> FloatArray:
        """One θ ~ Dirichlet(α) drawn with `rng`: explore categories in proportion to belief."""
        return np.asarray(rng.dirichlet(self._alpha), dtype=np.float64)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{c}={a:.3g}" for c, a in zip(self._labels, self._alpha, strict=True))
        return f"DirichletPosterior({pairs})"


def total_variation(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """TV(p, q) = ½·Σ|p_c − q_c| ∈ [0, 1] for probability vectors of the same shape."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValidationError(f"p and q must be 1-d of the same shape, got {a.shape}, {b.shape}")
    return 0.5 * float(np.abs(a - b).sum())


def _unit_rows(x: npt.ArrayLike, name: str, *, allow_zero: bool = False) -> FloatArray:
    """Rows scaled to unit L2 norm. Zero rows raise, or stay zero (similarity 0 to anything)
    with allow_zero, which centroids need: fit_centroids can return one (see there)."""
    m = np.asarray(x, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValidationError(f"{name} must be a non-empty 2-d array, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValidationError(f"{name} must be finite")
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if not allow_zero and np.any(norms == 0.0):
        raise ValidationError(f"{name} has a zero row (no direction)")
    return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0.0)


def category_evidence_from_text(
    text_vec: npt.ArrayLike, centroids: npt.ArrayLike, temperature: float = 0.1
) -> FloatArray:
    """Softmax over categories of cosine(text, centroid_c) / temperature; sums to 1.

    Shares for InterestState.update(text_categories=...). temperature > 0 (unitless, on the
    cosine scale): small values give (nearly) all of the text's evidence to the closest
    centroid, large ones spread it evenly. Invariant to the scale of `text_vec`.
    """
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValidationError(f"temperature must be finite and > 0, got {temperature!r}")
    c = _unit_rows(centroids, "centroids", allow_zero=True)
    t = np.asarray(text_vec, dtype=np.float64)
    if t.shape != (c.shape[1],):
        raise ValidationError(f"text_vec must have shape ({c.shape[1]},), got {t.shape}")
    t = _unit_rows(t[None, :], "text_vec")[0]
    logits = (c @ t) / temperature
    logits -= logits.max()  # stable softmax: the largest term is e^0
    w = np.exp(logits)
    return w / w.sum()


def fit_centroids(
    vectors: npt.ArrayLike,
    k: int,
    seed: int | np.random.Generator,
    *,
    n_init: int = 4,
    batch_size: int | None = None,
    init: npt.ArrayLike | None = None,
) -> FloatArray:
    """k unit-norm centroids (k, d) from k-means on the L2-normalised rows of `vectors`.

    For catalogues without categories: clusters stand in for categories (see
    `cluster_labels`). batch_size=None runs full KMeans; an int runs MiniBatchKMeans with that
    batch size (for large catalogues). `init`: starting centres (k, d), e.g. those of the last
    fit (then one run, whatever n_init says: restarts from one start are the same run).
    Deterministic for a given int seed. Needs at least k distinct directions (ValidationError
    otherwise).
    """
    if k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")
    if n_init < 1:
        raise ValidationError(f"n_init must be >= 1, got {n_init}")
    x = _unit_rows(vectors, "vectors")
    if np.unique(x, axis=0).shape[0] < k:
        raise ValidationError(f"need at least k={k} distinct vector directions")
    start: Any = "k-means++"
    if init is not None:
        start = _unit_rows(init, "init", allow_zero=True)
        if start.shape != (k, x.shape[1]):
            raise ValidationError(f"init must have shape ({k}, {x.shape[1]}), got {start.shape}")
        n_init = 1
    state = seed if isinstance(seed, int) else int(seed.integers(0, 2**31 - 1))
    model: KMeans | MiniBatchKMeans
    if batch_size is None:
        model = KMeans(n_clusters=k, init=start, n_init=n_init, random_state=state)
    else:
        if batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
        model = MiniBatchKMeans(
            n_clusters=k, init=start, n_init=n_init, batch_size=batch_size, random_state=state
        )
    model.fit(x)
    centres = np.asarray(model.cluster_centers_, dtype=np.float64)
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    # A centre is a mean of unit vectors, so it is zero only for perfectly opposed members;
    # keep such a centre as is rather than dividing by zero.
    return np.divide(centres, norms, out=centres.copy(), where=norms > 0.0)


def assign(vectors: npt.ArrayLike, centroids: npt.ArrayLike) -> IntArray:
    """Index of the most cosine-similar centroid for each row of `vectors` (ties: lowest)."""
    x = _unit_rows(vectors, "vectors")
    c = _unit_rows(centroids, "centroids", allow_zero=True)
    if x.shape[1] != c.shape[1]:
        raise ValidationError(f"dimension mismatch: vectors {x.shape[1]}, centroids {c.shape[1]}")
    return np.asarray(np.argmax(x @ c.T, axis=1), dtype=np.int64)


def cluster_labels(k: int) -> list[str]:
    """Category labels for k clusters: "cluster_0" … "cluster_{k-1}"."""
    if k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")
    return [f"cluster_{i}" for i in range(k)]

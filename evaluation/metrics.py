"""Ranking and beyond-accuracy metrics (prequential scoring: `recstream.evaluation.prequential`).

Conventions shared by every function:

- ``ranked`` is a recommendation list, best first; rank r is 1-based. Only the first
  occurrence of an item counts if a list repeats it.
- ``k`` is a cut-off >= 0; ``ranked[:k]`` is what is scored, so lists shorter than k are fine.
- Relevance is binary: an item is relevant or it is not.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from recstream.models.errors import ValidationError


def _check_k(k: int) -> None:
    if k < 0:
        raise ValidationError(f"cut-off k must be >= 0, got {k}")


def _first_occurrences(ranked: Sequence[str], k: int) -> list[str | None]:
    """``ranked[:k]`` with repeats blanked to None (first occurrence kept, ranks preserved)."""
    seen: set[str] = set()
    out: list[str | None] = []
    for item in ranked[:k]:
        out.append(None if item in seen else item)  # None keeps the slot so ranks do not shift
        seen.add(item)
    return out


def hit_rate_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """HR@k = 1.0 if ``target`` is among the first ``k`` items of ``ranked``, else 0.0."""
    _check_k(k)
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalised discounted cumulative gain at k, binary relevance, log2 discount.

    ``DCG@k = sum_{r=1..k} rel_r / log2(r + 1)`` with ``rel_r = 1`` if the item at rank r is in
    ``relevant`` (first occurrence only), and ``IDCG@k = sum_{r=1..min(|relevant|, k)}
    1 / log2(r + 1)``, the DCG of a perfect list. Returns ``DCG@k / IDCG@k`` in [0, 1], and 0.0
    when ``relevant`` is empty or k == 0. A single target at rank 3 scores 1 / log2(4) = 0.5.
    """
    _check_k(k)
    relevant_set = set(relevant)
    n_ideal = min(len(relevant_set), k)
    if n_ideal == 0:
        return 0.0
    dcg = sum(
        1.0 / math.log2(rank + 1)
        for rank, item in enumerate(_first_occurrences(ranked, k), start=1)
        if item in relevant_set
    )
    idcg = sum(1.0 / math.log2(rank + 1) for rank in range(1, n_ideal + 1))
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Recall@k = |relevant ∩ ranked[:k]| / |relevant| in [0, 1]; 0.0 when ``relevant`` is empty."""
    _check_k(k)
    relevant_set = set(relevant)
    if not relevant_set:
        return 0.0
    return len(relevant_set.intersection(ranked[:k])) / len(relevant_set)


def reciprocal_rank(ranked: Sequence[str], target: str) -> float:
    """1 / r for the 1-based rank r of the first occurrence of ``target``; 0.0 if absent.

    The mean over queries is the MRR. No cut-off: pass ``ranked[:k]`` for MRR@k.
    """
    for rank, item in enumerate(ranked, start=1):
        if item == target:
            return 1.0 / rank
    return 0.0


def catalog_coverage(lists: Iterable[Sequence[str]], catalog_size: int) -> float:
    """Catalogue coverage = |union of all items in ``lists``| / ``catalog_size``.

    The fraction of the catalogue recommended at least once; in [0, 1] when every listed item is
    in the catalogue. Pass lists already cut to k for coverage@k.
    """
    if catalog_size <= 0:
        raise ValidationError(f"catalog_size must be > 0, got {catalog_size}")
    distinct: set[str] = set()
    for ranked in lists:
        distinct.update(ranked)
    return len(distinct) / catalog_size


def novelty(
    ranked: Sequence[str], item_popularity: Mapping[str, int | float], n_users: int
) -> float:
    """Mean self-information of a list, in bits: ``mean_i -log2 p(i)``, ``p(i) = pop(i) / n_users``.

    ``item_popularity[i]`` is the number of distinct users who interacted with item i, so p(i)
    is the fraction of users who know it (Zhou et al., 2010). Items with a count below 1 or no
    entry are treated as count 1, the rarest observable item: otherwise an unseen item would have
    infinite novelty. Repeats count once. Returns 0.0 for an empty list.

    Raises:
        ValidationError: ``n_users`` < 1, or a count above ``n_users`` (p(i) > 1 is impossible).
    """
    if n_users < 1:
        raise ValidationError(f"n_users must be >= 1, got {n_users}")
    items = list(dict.fromkeys(ranked))
    if not items:
        return 0.0
    bits = []
    for item in items:
        count = float(item_popularity.get(item, 0.0))
        if count > n_users:
            raise ValidationError(
                f"item {item!r} has popularity {count} > n_users {n_users}; pass user counts"
            )
        bits.append(-math.log2(max(count, 1.0) / n_users))
    return float(np.mean(bits))


def intra_list_diversity(vectors: Sequence[np.ndarray] | np.ndarray) -> float:
    """Mean pairwise cosine distance of a list: ``mean_{i<j} (1 - cos(v_i, v_j))``, in [0, 2].

    ``vectors`` holds one embedding per recommended item (shape (n, d)). Returns 0.0 for fewer
    than two vectors.

    Raises:
        ValidationError: a zero vector (its cosine is undefined) or a non-2-D input.
    """
    matrix = np.asarray(vectors, dtype=float)
    if matrix.ndim == 1 and matrix.size == 0:
        return 0.0
    if matrix.ndim != 2:
        raise ValidationError(f"vectors must form an (n, d) array, got shape {matrix.shape}")
    n = matrix.shape[0]
    if n < 2:
        return 0.0
    norms = np.linalg.norm(matrix, axis=1)
    if np.any(norms == 0.0):
        raise ValidationError("intra_list_diversity is undefined for a zero vector")
    unit = matrix / norms[:, None]
    # Σ_{i<j} cos = (ΣG − trace G) / 2 for the Gram matrix G = U·Uᵀ, without forming G:
    # ΣG = ‖Σ_i u_i‖² and trace G = Σ_i ‖u_i‖², both O(n·d). It runs for every scored list.
    summed = unit.sum(axis=0)
    pair_cos = (float(summed @ summed) - float(np.einsum("ij,ij->", unit, unit))) / 2.0
    return 1.0 - pair_cos / (n * (n - 1) / 2.0)


def percentiles(values: Iterable[float], ps: Sequence[float] = (50, 95, 99)) -> dict[float, float]:
    """The ``ps`` percentiles (0..100) of ``values`` with linear interpolation between ranks.

    Uses numpy's default ("linear") method: the p-th percentile of sorted x_0..x_{n-1} is the
    value at fractional index ``p/100 * (n - 1)``. Returns ``{p: value}``; every value is NaN
    when ``values`` is empty (e.g. no latencies recorded yet).
    """
    for p in ps:
        if not 0.0 <= p <= 100.0:
            raise ValidationError(f"percentile must be in [0, 100], got {p}")
    data = np.fromiter(values, dtype=float)
    if data.size == 0:
        return {p: math.nan for p in ps}
    result = np.percentile(data, list(ps))
    return {p: float(v) for p, v in zip(ps, result, strict=True)}

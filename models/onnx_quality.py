"""How closely one backend's vectors follow the reference (torch fp32) vectors of the same texts.

Two figures, both computed here on plain numpy arrays:

- the cosine of each text's vector to its reference vector (1.0: the same direction);
- retrieval agreement: for every text, the overlap of its ``k`` nearest other texts (by cosine)
  under the two sets of vectors, which is what the recommender sees of the vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recstream.models.errors import ValidationError

__all__ = ["agreement"]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _neighbours(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Indices ``(n, k)`` of each row's ``k`` most similar other rows (unordered)."""
    n = x.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        sims = x[start : start + chunk] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # a text is not its own neighbour
        out[start : start + chunk] = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return out


def agreement(
    reference: np.ndarray, other: np.ndarray, k: int = 10, chunk: int = 1024
) -> dict[str, Any]:
    """Cosine and top-``k`` neighbour agreement of ``other`` with ``reference``.

    Args:
        reference: ``(n, d)`` vectors of the reference backend; rows need not be unit-norm.
        other: ``(n, d)`` vectors of the same texts, in the same order.
        k: neighbours per text (``1 <= k < n``).
        chunk: rows per similarity block (memory: ``chunk × n`` float32).

    Returns:
        ``cosine_mean``, ``cosine_min`` and ``cosine_p01`` (1st percentile) of the per-text
        cosines; ``topk_overlap``: the mean over texts of |N_ref ∩ N_other| / k, where N is the
        set of the ``k`` nearest other texts (ties broken arbitrarily); ``k`` and ``n``.

    Raises:
        ValidationError: shapes differ, or ``k`` is out of range.
    """
    if reference.shape != other.shape or reference.ndim != 2:
        raise ValidationError(
            f"reference and other must be (n, d) of one shape: {reference.shape}, {other.shape}"
        )
    n = reference.shape[0]
    if not 1 <= k < n:
        raise ValidationError(f"k must be in [1, {n - 1}], got {k}")
    ref, oth = _unit(reference), _unit(other)
    cos = np.sum(ref * oth, axis=1)
    a = _neighbours(ref, k, chunk)
    b = _neighbours(oth, k, chunk)
    overlap = np.fromiter(
        (len(np.intersect1d(a[i], b[i], assume_unique=True)) for i in range(n)),
        dtype=np.float64,
        count=n,
    )
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "cosine_p01": float(np.percentile(cos, 1)),
        "topk_overlap": float(overlap.mean() / k),
        "k": k,
        "n": n,
    }

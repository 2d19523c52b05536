"""MMR re-ranking (intra-list diversity, a metric, is in evaluation/metrics.py)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recstream.models.diversity import (
    mmr,
    mmr_indices,
    mmr_select,
    mmr_select_batch,
)
from recstream.models.errors import ValidationError

FAST = settings(max_examples=50, deadline=None)


@st.composite
def mmr_cases(
    draw: st.DrawFn,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int]:
    n = draw(st.integers(1, 25))
    dim = draw(st.integers(1, 6))
    # Coarse relevance values force ties, which the tie rule must resolve like a stable sort.
    relevance = draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])))
    vectors = draw(arrays(np.float64, (n, dim), elements=st.floats(-1.0, 1.0)))
    k = draw(st.integers(0, n + 3))
    return relevance, vectors, k


def naive_mmr(
    rel: npt.NDArray[np.float64], vectors: npt.NDArray[np.float64], k: int, lam: float
) -> list[int]:
    """Textbook MMR, recomputing the max similarity from scratch at every step."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    v = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    picks: list[int] = []
    # Similarities are computed as v @ v[j], like the implementation, so that both see the same
    # floating-point values and only the selection logic is compared.
    sims: dict[int, npt.NDArray[np.float64]] = {}
    for _ in range(min(k, rel.size)):
        best, best_key = -1, (-np.inf, -np.inf)
        for i in range(rel.size):
            if i in picks:
                continue
            redundancy = max((float(sims[j][i]) for j in picks), default=0.0)
            key = (lam * rel[i] - (1 - lam) * redundancy, rel[i])
            if key > best_key:  # strict: ties keep the lower index
                best, best_key = i, key
        picks.append(best)
        sims[best] = v @ v[best]
    return picks


@FAST
@given(mmr_cases())
def test_mmr_with_lambda_one_is_relevance_order(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int],
) -> None:
    relevance, vectors, k = case
    ids = [f"item{i}" for i in range(relevance.size)]
    expected = [ids[i] for i in np.argsort(-relevance, kind="stable")[:k]]
    assert mmr(ids, relevance, vectors, k, trade_off=1.0) == expected


@FAST
@given(mmr_cases(), st.sampled_from([0.0, 0.3, 0.7]))
def test_mmr_matches_naive_reference(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int], lam: float
) -> None:
    relevance, vectors, k = case
    picks = mmr_indices(relevance, vectors, k, lam)
    assert picks == naive_mmr(relevance, vectors, k, lam)
    assert len(set(picks)) == len(picks) == min(k, relevance.size)


def test_mmr_trades_relevance_for_novelty() -> None:
    # Two near-duplicates on top, one different item a little less relevant.
    vectors = np.array([[1.0, 0.0], [0.999, 0.0447], [0.0, 1.0]])
    relevance = np.array([1.0, 0.95, 0.8])
    ids = [10, 11, 12]
    assert mmr(ids, relevance, vectors, 2, trade_off=1.0) == [10, 11]
    assert mmr(ids, relevance, vectors, 2, trade_off=0.5) == [10, 12]
    assert mmr(ids, relevance, vectors, 3, trade_off=0.0) == [10, 12, 11]


def test_mmr_rejects_bad_input() -> None:
    v = np.eye(2)
    with pytest.raises(ValidationError):
        mmr([1, 2], [0.1, 0.2], v, 1, trade_off=1.5)
    with pytest.raises(ValidationError):
        mmr([1, 2, 3], [0.1, 0.2], v, 1, trade_off=0.5)
    with pytest.raises(ValidationError):
        mmr_indices([0.1, np.nan], v, 1, 0.5)
    with pytest.raises(ValidationError):
        mmr_indices([0.1, 0.2], np.eye(3), 1, 0.5)


# --- mmr_select: MMR over a precomputed similarity matrix (the engine's hot path) ----------


def unit_rows(vectors: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def gemv_similarities(vectors: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Row j is v @ v[j], the very values mmr_indices computes, so only the selection logic
    differs between the two (a matrix product may round differently: see mmr_select)."""
    v = unit_rows(vectors)
    return np.array([v @ v[j] for j in range(v.shape[0])]).reshape(v.shape[0], v.shape[0])


@FAST
@given(mmr_cases(), st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.8, 1.0]))
def test_mmr_select_matches_mmr_indices(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int], lam: float
) -> None:
    relevance, vectors, k = case
    picks = mmr_select(relevance, gemv_similarities(vectors), k, lam)
    assert picks == mmr_indices(relevance, vectors, k, lam)
    assert len(set(picks)) == len(picks) == min(k, relevance.size)


@FAST
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.sampled_from([0.0, 0.5, 1.0])),
            # Coarse directions: many exactly equal similarities, so the tie rules decide.
            arrays(np.float64, (n, 2), elements=st.sampled_from([-1.0, 0.0, 1.0])),
        )
    ),
    st.sampled_from([0.0, 0.5, 1.0]),
)
def test_mmr_select_ties_resolve_like_mmr_indices(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]], lam: float
) -> None:
    relevance, vectors = case
    n = relevance.size
    assert mmr_select(relevance, gemv_similarities(vectors), n, lam) == mmr_indices(
        relevance, vectors, n, lam
    )


def test_mmr_select_on_engine_shaped_input() -> None:
    """float32 unit vectors and their Gram matrix, as the engine passes them."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        vecs = rng.normal(size=(n, 16)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        rel = rng.random(n)
        sims = (vecs @ vecs.T).astype(np.float64)
        for lam in (0.5, 0.8):
            assert mmr_select(rel, sims, 10, lam) == mmr_indices(rel, vecs, 10, lam)


def test_mmr_select_edge_cases() -> None:
    sims = np.eye(3)
    assert mmr_select([0.1, 0.9, 0.5], sims, 0, 0.5) == []
    assert mmr_select([0.1, 0.9, 0.5], sims, 10, 1.0) == [1, 2, 0]  # k > n: every item
    assert mmr_select([], np.zeros((0, 0)), 3, 0.5) == []
    # Two near-duplicates on top: novelty pulls the different item up to second place.
    dup = np.array([[1.0, 0.99, 0.0], [0.99, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert mmr_select([1.0, 0.95, 0.6], dup, 2, 0.5) == [0, 2]
    assert mmr_select([1.0, 0.95, 0.6], dup, 2, 1.0) == [0, 1]


@FAST
@given(
    st.integers(1, 80).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, n, elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
            arrays(np.float64, (n, 3), elements=st.sampled_from([-1.0, 0.0, 1.0, 2.0])),
            st.integers(0, n + 2),
        )
    ),
    st.sampled_from([0.0, 0.5, 0.8, 1.0]),
)
def test_mmr_select_over_lists_and_over_arrays_pick_alike(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int], lam: float
) -> None:
    """Small pools run over Python lists, large ones over arrays: the same picks, ties too."""
    from recstream.models.diversity import _mmr_over_arrays, _mmr_over_lists

    relevance, vectors, k = case
    sims = gemv_similarities(vectors)
    assert _mmr_over_lists(relevance, sims, k, lam) == _mmr_over_arrays(relevance, sims, k, lam)


# --- mmr_select_batch: every list's MMR one step at a time ----------------------------------


@FAST
@given(
    st.lists(st.integers(0, 12), min_size=1, max_size=6),
    st.integers(0, 8),
    st.sampled_from([0.0, 0.3, 0.8, 1.0]),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_mmr_select_batch_equals_mmr_select_per_list(
    sizes: list[int], k: int, lam: float, seed: int, coarse: bool
) -> None:
    """Each row is mmr_select of that list alone, whatever the other lists (coarse values
    make ties in relevance and objective common)."""
    rng = np.random.default_rng(seed)
    width = max(sizes)
    rel = np.zeros((len(sizes), width))
    sims = np.zeros((len(sizes), width, width))
    expected = []
    for j, n in enumerate(sizes):
        r = rng.random(n)
        vecs = rng.normal(size=(n, 4))
        if coarse:
            r = np.round(r, 1)
            vecs = np.round(vecs)
        s = gemv_similarities(vecs)
        rel[j, :n], sims[j, :n, :n] = r, s
        rel[j, n:] = 5.0  # padding must never be picked
        expected.append(mmr_select(r, s, k, lam))
    picks = mmr_select_batch(rel, sims, sizes, k, lam)
    assert picks.shape == (len(sizes), min(k, width))
    assert [[int(x) for x in row if x >= 0] for row in picks] == expected

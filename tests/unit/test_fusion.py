"""Per-request normalisation, weighted fusion with exact contributions, top-k, and scaling
with given bounds."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recstream.models.errors import ValidationError
from recstream.models.fusion import (
    fuse,
    fuse_rows,
    normalise_segments,
    normalise_signals,
    normalise_with,
    top_k,
    top_per_segment,
)
from recstream.models.weights import project_to_simplex

FAST = settings(max_examples=50, deadline=None)

# Wide finite range plus the non-finite values a source may emit (missing or broken scores).
raw_entries = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf]))
raw_matrices = st.tuples(st.integers(0, 30), st.integers(1, 7)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=raw_entries)
)


@st.composite
def fusion_cases(draw: st.DrawFn) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    raw = draw(raw_matrices)
    w = project_to_simplex(draw(arrays(np.float64, raw.shape[1], elements=st.floats(-3.0, 3.0))))
    return normalise_signals(raw), w


@FAST
@given(raw_matrices)
def test_normalised_signals_are_finite_and_in_unit_interval(raw: npt.NDArray[np.float64]) -> None:
    s = normalise_signals(raw)
    assert s.shape == raw.shape
    assert np.all(np.isfinite(s))
    assert np.all((s >= 0.0) & (s <= 1.0))
    # Min-max keeps the order of the finite entries within each column.
    for column in range(raw.shape[1]):
        x, y = raw[:, column], s[:, column]
        ok = np.isfinite(x)
        order = np.argsort(x[ok], kind="stable")
        assert np.all(np.diff(y[ok][order]) >= 0.0)


def test_normalise_known_values_and_choices() -> None:
    raw = np.array(
        [
            [1.0, 7.0, np.nan, 2.0],
            [3.0, 7.0, np.nan, np.inf],
            [2.0, 7.0, np.nan, 4.0],
        ]
    )
    s = normalise_signals(raw)
    np.testing.assert_allclose(s[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(s[:, 1], 0.0)  # constant column: no information → 0
    np.testing.assert_array_equal(s[:, 2], 0.0)  # all missing → 0
    np.testing.assert_array_equal(s[:, 3], [0.0, 0.0, 1.0])  # non-finite = missing → 0
    assert normalise_signals(np.zeros((0, 3))).shape == (0, 3)
    with pytest.raises(ValidationError):
        normalise_signals(np.zeros(3))


@FAST
@given(fusion_cases())
def test_contributions_add_up_to_scores(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
) -> None:
    s, w = case
    scores, contributions = fuse(s, w)
    np.testing.assert_allclose(contributions.sum(axis=1), scores, rtol=0.0, atol=1e-9)
    np.testing.assert_array_equal(contributions, s * w)
    if s.shape[0]:
        # Left-to-right summation order: the identity holds bit for bit.
        np.testing.assert_array_equal(np.cumsum(contributions, axis=1)[:, -1], scores)
    assert np.all((scores >= 0.0) & (scores <= 1.0 + 1e-12))


def test_fuse_rejects_weights_off_the_simplex() -> None:
    s = np.array([[0.1, 0.2]])
    for bad in ([0.5, 0.6], [1.0], [1.5, -0.5], [np.nan, 1.0]):
        with pytest.raises(ValidationError):
            fuse(s, bad)
    with pytest.raises(ValidationError):
        fuse(np.array([[np.nan, 0.0]]), [0.5, 0.5])


@FAST
@given(
    arrays(np.float64, st.integers(0, 40), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])),
    st.integers(0, 45),
)
def test_top_k_matches_stable_sort(scores: npt.NDArray[np.float64], k: int) -> None:
    # Few distinct values: many ties, which must go to the lower index.
    expected = np.argsort(-scores, kind="stable")[:k]
    np.testing.assert_array_equal(top_k(scores, k), expected)


def test_top_k_nan_last_and_bad_input() -> None:
    np.testing.assert_array_equal(top_k([np.nan, 0.1, 0.9], 3), [2, 1, 0])
    with pytest.raises(ValidationError):
        top_k([0.1], -1)
    with pytest.raises(ValidationError):
        top_k([[0.1]], 1)


@given(arrays(np.float64, (7, 3), elements=st.floats(-1e3, 1e3)))
@FAST
def test_normalise_with_own_bounds_is_normalise_signals(raw: npt.NDArray[np.float64]) -> None:
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    assert np.allclose(normalise_with(raw, lo, hi), normalise_signals(raw), atol=1e-12)
    # One row on a list's scale: the row's own entry of the matrix.
    assert np.allclose(normalise_with(raw[2], lo, hi), normalise_signals(raw)[2], atol=1e-12)


# --- many lists at once: bit for bit the per-list functions ---------------------------------


@st.composite
def segmented(draw: st.DrawFn) -> tuple[list[int], npt.NDArray[np.float64]]:
    sizes = draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
    values = draw(
        arrays(np.float64, (sum(sizes), 3), elements=st.sampled_from([0.0, 0.25, 1.0, 3.5, -2.0]))
    )
    return sizes, values


@FAST
@given(segmented(), st.integers(0, 2**16))
def test_segment_functions_equal_the_per_list_ones(
    data: tuple[list[int], npt.NDArray[np.float64]], seed: int
) -> None:
    sizes, raw = data
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    bounds = [(int(a), int(b)) for a, b in itertools.pairwise(starts.tolist())]
    lo = np.stack([raw[a:b].min(axis=0) if b > a else np.zeros(3) for a, b in bounds])
    hi = np.stack([raw[a:b].max(axis=0) if b > a else np.zeros(3) for a, b in bounds])
    norm = normalise_segments(raw, lo, hi, owner)
    weights = np.stack([project_to_simplex(rng.random(3)) for _ in sizes])
    scores, contributions = fuse_rows(norm, weights[owner])
    tops = top_per_segment(scores, sizes, 4)
    for s, (a, b) in enumerate(bounds):
        alone = normalise_with(raw[a:b], lo[s], hi[s])
        assert np.array_equal(norm[a:b], alone)
        own_scores, own_contributions = fuse(alone, weights[s])
        assert np.array_equal(scores[a:b], own_scores)
        assert np.array_equal(contributions[a:b], own_contributions)
        best = np.argsort(-own_scores, kind="stable")[:4] + a
        assert tops[s][tops[s] >= 0].tolist() == best.tolist()

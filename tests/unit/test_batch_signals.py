"""Batch candidates and signals: the same choice whatever the catalogue's row order.

Rows are assigned in arrival order, which differs between workers and between the two
runners; every cut (top rows, semantic candidates) must therefore break ties by item id and
every per-candidate sum must not depend on where the row sits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.batch_signals import (
    PREDICTIVE,
    BatchContext,
    CoVisits,
    SignalInputs,
    _cosines,
    _covisit_column,
    category_shares,
    raw_signals,
    semantic_scores,
    semantic_tops,
    top_rows,
)
from recstream.models.catalog import Catalog

FAST = settings(max_examples=40, deadline=None)
DIM = 8


def catalog_of(ids: list[str], vectors: np.ndarray) -> Catalog:
    cat = Catalog(DIM, capacity=len(ids))
    for item_id, v in zip(ids, vectors, strict=True):
        cat.upsert(item_id, v)
    return cat


def inputs(short: np.ndarray, long: np.ndarray, exclude: list[int] | None = None) -> SignalInputs:
    return SignalInputs(
        short=short.astype(np.float32),
        long=long.astype(np.float32),
        at_ts=0.0,
        recent=(),
        exclude=np.unique(np.asarray(exclude or [], dtype=np.int64)),
        category_mean={},
    )


@FAST
@given(
    values=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, float("-inf")]), min_size=1, max_size=30),
    n=st.integers(0, 12),
    seed=st.integers(0, 1000),
)
def test_top_rows_breaks_ties_by_the_tie_key_also_at_the_cut(
    values: list[float], n: int, seed: int
) -> None:
    arr = np.asarray(values)
    ties = np.random.default_rng(seed).permutation(arr.size).astype(np.int64)
    got = top_rows(arr, n, ties).tolist()
    finite = [i for i in range(arr.size) if np.isfinite(arr[i])]
    want = sorted(finite, key=lambda i: (-arr[i], ties[i]))[:n]
    assert got == want


def test_id_rank_orders_rows_as_their_ids_and_follows_changes() -> None:
    cat = Catalog(DIM)
    for item_id in ["b", "a", "c"]:
        cat.upsert(item_id, None)
    assert cat.id_rank().tolist() == [1, 0, 2]
    cat.upsert("0", None)
    assert [cat.ids[r] for r in np.argsort(cat.id_rank())] == ["0", "a", "b", "c"]


@FAST
@given(seed=st.integers(0, 10_000), n=st.integers(1, 25))
def test_semantic_tops_is_the_same_set_in_any_row_order(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"i{k:03d}" for k in range(60)]
    vectors = rng.standard_normal((60, DIM))
    vectors[rng.integers(0, 60, 10)] = vectors[0]  # exact duplicates: ties by id
    reqs = [inputs(rng.standard_normal(DIM), rng.standard_normal(DIM)) for _ in range(3)]
    reqs.append(inputs(np.zeros(DIM), np.zeros(DIM)))  # no query: no semantic candidates
    results = []
    for order in (np.arange(60), rng.permutation(60)):
        cat = catalog_of([ids[k] for k in order], vectors[order])
        sem = semantic_scores(cat, reqs)
        tops = semantic_tops(sem, reqs, cat, n)
        results.append([[cat.ids[r] for r in t.tolist()] for t in tops])
    assert results[0] == results[1]
    assert results[0][3] == []
    assert all(len(t) == n for t in results[0][:3])


def test_semantic_tops_leaves_out_excluded_rows() -> None:
    rng = np.random.default_rng(3)
    cat = catalog_of([f"i{k}" for k in range(20)], rng.standard_normal((20, DIM)))
    q = cat.vectors[5].copy()
    req = inputs(q, q, exclude=[5, 6])
    tops = semantic_tops(semantic_scores(cat, [req]), [req], cat, 19)[0].tolist()
    assert 5 not in tops and 6 not in tops and len(tops) == 18


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cosines_do_not_depend_on_row_position(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(200)]
    vectors = rng.standard_normal((200, DIM))
    reqs = [inputs(rng.standard_normal(DIM), rng.standard_normal(DIM)) for _ in range(5)]
    rows = rng.integers(0, 200, 300)
    owner = np.sort(rng.integers(0, 5, 300))
    base = _cosines(rows, owner, reqs, catalog_of(ids, vectors))
    perm = rng.permutation(200)
    moved = catalog_of([ids[k] for k in perm], vectors[perm])
    where = np.argsort(perm)  # old row → new row
    shuffled = rng.permutation(300)
    got = _cosines(where[rows][shuffled], owner[shuffled], reqs, moved)
    assert np.array_equal(got, base[shuffled])
    exact = np.einsum("ij,j->i", catalog_of(ids, vectors).vectors[rows[:3]], reqs[owner[0]].short)
    assert np.allclose(base[:3, 0], exact / np.linalg.norm(reqs[owner[0]].short), atol=1e-6)


def test_covisit_column_looks_up_each_candidate_in_its_own_request() -> None:
    covs = [
        CoVisits(np.array([2, 7]), np.array([0.5, 1.5])),
        CoVisits.empty(),
        CoVisits(np.array([7]), np.array([3.0])),
    ]
    rows = np.array([7, 2, 3, 7, 7, 2])
    owner = np.array([0, 0, 0, 1, 2, 2])
    got = _covisit_column(rows, owner, covs, 10)
    assert got.tolist() == [1.5, 0.5, 0.0, 0.0, 3.0, 0.0]


@FAST
@given(
    pops=st.lists(st.sampled_from([0.0, 1.0, 1.0, 2.5, float("-inf")]), min_size=0, max_size=40),
    n=st.integers(0, 45),
    seed=st.integers(0, 1000),
)
def test_arm_rows_is_the_head_of_a_full_sort(pops: list[float], n: int, seed: int) -> None:
    from recstream.models.recommender import arm_rows

    rng = np.random.default_rng(seed)
    pop = np.asarray(pops, dtype=np.float64)
    rows = rng.permutation(100)[: pop.size].astype(np.int64)
    rank = rng.permutation(pop.size).astype(np.int64)
    want = rows[np.lexsort((rank, -pop))][:n]
    assert arm_rows(rows, pop, rank, n).tolist() == want.tolist()


def test_category_index_follows_the_catalogue() -> None:
    cat = Catalog(DIM)
    cat.upsert("a", None, ("x", "y"))
    cat.upsert("b", None, ("y",))
    labels, index = cat.category_index()
    assert labels == ("x", "y") and index.tolist() == [[0, 1], [1, 2]]
    cat.set_categories("b", ("z", "x", "y"))
    labels, index = cat.category_index()
    assert labels == ("x", "y", "z") and index.tolist() == [[0, 1, 3], [2, 0, 1]]


@FAST
@given(
    cats=st.lists(
        st.lists(st.integers(0, 3), min_size=0, max_size=3, unique=True), min_size=1, max_size=25
    ),
    pops=st.lists(st.sampled_from([0.0, -3.0, 1.5, 40.0, float("-inf")]), min_size=25, max_size=25),
    shift=st.floats(-500.0, 500.0),
)
def test_category_shares_are_each_categorys_popularity_distribution(
    cats: list[list[int]], pops: list[float], shift: float
) -> None:
    n_labels = 4
    width = max(1, *(len(c) for c in cats))
    index = np.full((len(cats), width), n_labels, dtype=np.int64)
    for row, labels in enumerate(cats):
        index[row, : len(labels)] = labels
    lm = np.asarray(pops[: len(cats)], dtype=np.float64)
    shares = category_shares(lm, index, n_labels)
    assert shares.shape == index.shape and np.all(shares >= 0)
    assert np.all(shares[index == n_labels] == 0) and np.all(shares[~np.isfinite(lm)] == 0)
    for c in range(n_labels):
        members = index == c
        total = shares[members].sum()
        has_mass = bool(np.isfinite(lm[members.any(axis=1)]).any())
        assert total == pytest.approx(1.0 if has_mass else 0.0, abs=1e-9)
    # Log mass at another time (the decay's common factor) gives the same shares.
    np.testing.assert_allclose(category_shares(lm + shift, index, n_labels), shares, atol=1e-12)


def test_predictive_is_the_posterior_mixture_of_within_category_popularity() -> None:
    cat = Catalog(DIM)
    rng = np.random.default_rng(3)
    spec = {"a": ("x",), "b": ("x",), "c": ("y",), "d": ("x", "y")}
    for item_id, labels in spec.items():
        cat.upsert(item_id, rng.normal(size=DIM), labels)
    labels, index = cat.category_index()
    pop = np.log(np.array([3.0, 1.0, 2.0, 4.0]))  # decayed counts 3, 1, 2, 4 (rows a..d)
    ctx = BatchContext(pop, np.arange(4), index, labels, category_shares(pop, index, len(labels)))
    req = SignalInputs(
        short=np.ones(DIM, np.float32), long=np.ones(DIM, np.float32), at_ts=0.0, recent=(),
        exclude=np.zeros(0, np.int64), category_mean={"x": 0.75, "y": 0.25},
    )  # fmt: skip
    rows = np.arange(4, dtype=np.int64)
    raw = raw_signals(rows, np.zeros(4, np.int64), [req], [CoVisits.empty()], ctx, cat,
                      pop_rate=0.0, fresh_rate=0.0)  # fmt: skip
    # x holds a, b, d (mass 8), y holds c, d (mass 6).
    want = [0.75 * 3 / 8, 0.75 * 1 / 8, 0.25 * 2 / 6, 0.75 * 4 / 8 + 0.25 * 4 / 6]
    np.testing.assert_allclose(raw[:, PREDICTIVE], want)

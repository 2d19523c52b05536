"""The engine's item catalogue: stable rows with reuse, unit vectors, category index cache."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recstream.models.catalog import Catalog
from recstream.models.errors import ValidationError
from recstream.models.interest_state import item_key

FAST = settings(max_examples=50, deadline=None)

ids = st.sampled_from([f"item{k}" for k in range(10)])
cats = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3)
nonzero = arrays(np.float64, 4, elements=st.floats(-100.0, 100.0)).filter(
    lambda v: float(np.linalg.norm(v)) > 1e-3
)
# One catalogue operation: ("upsert", id, vector or None, categories) or ("remove", id).
ops = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), ids, st.one_of(st.none(), nonzero), cats),
        st.tuples(st.just("remove"), ids),
    ),
    max_size=40,
)


def check_invariants(catalog: Catalog) -> None:
    rows = catalog.rows
    live = [r for r in range(rows) if catalog.alive[r]]
    assert sorted(catalog.row_of.values()) == live  # one live row per item, no sharing
    assert len(catalog) == len(live)
    for item_id, row in catalog.row_of.items():
        assert catalog.ids[row] == item_id
        assert catalog.row_of_key[item_key(item_id)] == row
    norms = np.linalg.norm(catalog.vectors[:rows].astype(np.float64), axis=1)
    for r in range(rows):
        if catalog.has_vector[r]:
            assert catalog.alive[r]
            assert norms[r] == pytest.approx(1.0, abs=1e-6)
        else:
            assert norms[r] == 0.0
        if not catalog.alive[r]:
            assert catalog.categories[r] == ()
            assert math.isnan(catalog.item_ts[r])
    assert not catalog.vectors[rows:].any()  # unused capacity stays zero


# --- rows ----------------------------------------------------------------------------------


def test_upsert_assigns_rows_in_order_and_replaces_in_place() -> None:
    c = Catalog(3, capacity=2)
    assert c.upsert("a", [1.0, 0.0, 0.0], ["x"], ts=10.0, title="A") == 0
    assert c.upsert("b", [0.0, 2.0, 0.0]) == 1
    assert c.upsert("c", None) == 2  # grows past the initial capacity
    assert c.rows == 3 and len(c) == 3 and "b" in c and "zz" not in c
    assert c.upsert("a", [0.0, 0.0, 5.0], ["y", "y", "z"], title="A2") == 0  # same row
    assert c.rows == 3
    assert c.categories[0] == ("y", "z")  # de-duplicated, order kept
    assert c.titles[0] == "A2"
    assert math.isnan(c.item_ts[0])  # ts=None replaces the old time
    np.testing.assert_allclose(c.vectors[0], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(c.vectors[1], [0.0, 1.0, 0.0])  # survived the growth
    check_invariants(c)


def test_removed_row_is_freed_and_reused() -> None:
    c = Catalog(2)
    for name in ("a", "b", "c"):
        c.upsert(name, [1.0, 1.0], ["k"], ts=1.0, title=name)
    assert c.remove("b") is True
    assert c.remove("b") is False
    assert c.remove("never") is False
    assert "b" not in c and len(c) == 2 and c.rows == 3
    assert not c.alive[1] and not c.has_vector[1] and not c.vectors[1].any()
    assert c.categories[1] == () and c.titles[1] == "" and math.isnan(c.item_ts[1])
    assert c.vector("b") is None
    assert item_key("b") not in c.row_of_key
    assert c.upsert("d", [0.0, 3.0], ["m"]) == 1  # the freed row, not a new one
    assert c.rows == 3 and c.ids[1] == "d" and c.alive[1]
    assert c.upsert("e", None) == 3
    check_invariants(c)


def test_vectors_are_normalised_and_zero_means_none() -> None:
    c = Catalog(3)
    c.upsert("a", np.array([3.0, 4.0, 0.0]))
    v = c.vector("a")
    assert v is not None and v.dtype == np.float32
    np.testing.assert_allclose(v, [0.6, 0.8, 0.0], rtol=1e-6)
    c.upsert("z", [0.0, 0.0, 0.0])
    assert c.vector("z") is None and not c.has_vector[c.row_of["z"]]
    c.upsert("n", None)
    assert c.vector("n") is None
    assert c.vector("unknown") is None


@FAST
@given(nonzero)
def test_any_nonzero_vector_becomes_a_unit_vector_in_its_direction(
    v: npt.NDArray[np.float64],
) -> None:
    c = Catalog(4)
    c.upsert("x", v)
    stored = c.vector("x")
    assert stored is not None
    assert float(np.linalg.norm(stored.astype(np.float64))) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(stored, v / np.linalg.norm(v), atol=1e-6)


@pytest.mark.parametrize(
    "vector",
    [[1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [[1.0, 0.0, 0.0]], [math.nan, 0.0, 0.0], [math.inf, 1, 1]],
)
def test_bad_vectors_are_refused(vector: list[float]) -> None:
    c = Catalog(3)
    with pytest.raises(ValidationError):
        c.upsert("a", vector)


def test_refused_upsert_changes_nothing() -> None:
    c = Catalog(3)
    c.upsert("a", [1.0, 0.0, 0.0], ["x"], title="A")
    c.category_rows()
    version = c.version
    with pytest.raises(ValidationError):
        c.upsert("b", [1.0, 0.0])  # wrong shape: a new item
    with pytest.raises(ValidationError):
        c.upsert("a", [math.nan, 0.0, 0.0], ["y"], title="A2")  # an existing item
    assert "b" not in c and len(c) == 1
    assert c.categories[0] == ("x",) and c.titles[0] == "A"
    assert c.version == version and c.category_rows() == {"x": [0]}


def test_invalid_arguments() -> None:
    with pytest.raises(ValidationError):
        Catalog(0)
    with pytest.raises(ValidationError):
        Catalog(2).upsert("", [1.0, 0.0])


def test_non_finite_ts_is_stored_as_nan() -> None:
    c = Catalog(2)
    c.upsert("a", None, ts=math.inf)
    c.upsert("b", None, ts=5.0)
    assert math.isnan(c.item_ts[0]) and c.item_ts[1] == 5.0


def test_rows_of_keeps_order_and_skips_unknown_ids() -> None:
    c = Catalog(2)
    for name in ("a", "b", "c"):
        c.upsert(name, None)
    c.remove("b")
    rows = c.rows_of(["c", "nope", "a", "b", "c"])
    assert rows.dtype == np.int64
    assert rows.tolist() == [2, 0, 2]
    assert c.rows_of([]).tolist() == []
    assert c.rows_of(x for x in ["a"]).tolist() == [0]  # any iterable


# --- category index and version ------------------------------------------------------------


def test_category_rows_cache_is_invalidated_by_every_change() -> None:
    c = Catalog(2)
    versions = [c.version]

    def changed() -> None:
        assert c.version > versions[-1]
        versions.append(c.version)

    c.upsert("a", None, ["x", "y"])
    changed()
    c.upsert("b", None, ["y"])
    changed()
    assert c.category_rows() == {"x": [0], "y": [0, 1]}
    assert c.category_rows() is c.category_rows()  # cached while nothing changes
    assert c.version == versions[-1]  # reading does not bump
    c.set_categories("a", ["z"])
    changed()
    assert c.category_rows() == {"y": [1], "z": [0]}
    c.upsert("b", None, ["z"])
    changed()
    assert c.category_rows() == {"z": [0, 1]}
    c.remove("a")
    changed()
    assert c.category_rows() == {"z": [1]}
    c.upsert("c", None, ["q"])  # reuses row 0
    changed()
    assert c.category_rows() == {"q": [0], "z": [1]}
    assert c.remove("missing") is False
    assert c.version == versions[-1]  # a no-op remove is not a change
    with pytest.raises(KeyError):
        c.set_categories("missing", ["x"])


@FAST
@given(ops)
def test_random_operations_match_a_dict_model(ops: list[tuple[object, ...]]) -> None:
    c = Catalog(4, capacity=2)
    model: dict[str, tuple[npt.NDArray[np.float64] | None, tuple[str, ...]]] = {}
    peak = 0
    for op in ops:
        if op[0] == "upsert":
            _, item_id, vec, categories = op
            assert isinstance(item_id, str) and isinstance(categories, list)
            before = c.row_of.get(item_id)
            row = c.upsert(item_id, vec, categories)  # type: ignore[arg-type]
            if before is not None:
                assert row == before  # rows are stable while an item lives
            model[item_id] = (vec, tuple(dict.fromkeys(categories)))  # type: ignore[arg-type]
        else:
            item_id = op[1]
            assert isinstance(item_id, str)
            assert c.remove(item_id) is (item_id in model)
            model.pop(item_id, None)
        peak = max(peak, len(model))
        c.category_rows()  # keep a cache alive across changes: it must never go stale
    check_invariants(c)
    assert set(c.row_of) == set(model)
    expected: dict[str, list[int]] = {}
    for item_id, (vec, categories) in model.items():
        row = c.row_of[item_id]
        assert c.categories[row] == categories
        stored = c.vector(item_id)
        if vec is None:
            assert stored is None
        else:
            assert stored is not None
            np.testing.assert_allclose(stored, vec / np.linalg.norm(vec), atol=1e-6)
        for cat in categories:
            expected.setdefault(cat, []).append(row)
    assert c.category_rows() == {k: sorted(v) for k, v in expected.items()}
    # A new row is only allocated when no freed row is available: rows = peak live items.
    assert c.rows == peak

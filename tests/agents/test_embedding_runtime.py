"""The per-worker embedding runtime: catalog mirror, vector index and k-means categories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.agents.embedding import EmbeddingRuntime, encode_vector
from recstream.config.settings import Settings


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_items_without_categories_get_kmeans_clusters(tmp_path: Path) -> None:
    rt = EmbeddingRuntime(Settings(data_dir=tmp_path, interest_clusters=2))
    rng = np.random.default_rng(0)
    a, b = np.zeros(16), np.zeros(16)
    a[0], b[1] = 1.0, 1.0
    groups = {}
    for n in range(12):
        base = a if n % 2 else b
        vec = _unit(base + 0.05 * rng.normal(size=16))
        groups[f"i{n}"] = n % 2
        rt.apply_catalog(f"i{n}", {"title": f"t{n}", "categories": [], "vec": encode_vector(vec)})
    labels = {i: rt.item_categories[i] for i in groups}
    assert all(len(v) == 1 and v[0].startswith("cluster_") for v in labels.values())
    # Items of one group share a cluster; the two groups get different clusters.
    by_group = {g: {labels[i] for i, gg in groups.items() if gg == g} for g in (0, 1)}
    assert len(by_group[0]) == 1 and len(by_group[1]) == 1 and by_group[0] != by_group[1]
    assert sum(len(m) for m in rt.category_items.values()) == 12
    # A later item joins its nearest cluster; one with catalog categories keeps them.
    rt.apply_catalog("late", {"title": "x", "categories": [], "vec": encode_vector(_unit(a))})
    assert rt.item_categories["late"] == next(iter(by_group[1]))
    rt.apply_catalog("cat", {"title": "y", "categories": ["jazz"], "vec": encode_vector(_unit(a))})
    assert rt.item_categories["cat"] == ("jazz",)
    # Deleting removes the item from the mirror, the index and its cluster.
    rt.apply_catalog("late", None)
    assert "late" not in rt.item_categories and rt.item_vector("late") is None
    assert all("late" not in m for m in rt.category_items.values())


def _state(rt: EmbeddingRuntime) -> tuple[object, ...]:
    """What the mirror holds: categories, members, metadata, clusters and indexed vectors."""
    index = rt.index
    # Per item its indexed vector or None: a batch whose vectors are all refused makes no
    # index where one by one the first refused vector made an empty one; both hold none.
    vectors = {i: None if index is None else index.get(i) for i in rt.item_categories}
    return (
        rt.item_categories,
        {c: m for c, m in rt.category_items.items() if m},
        rt.item_meta,
        rt._uncategorised,
        rt._uncategorised_indexed,
        rt._cluster_of,
        {i: None if v is None else v.round(6).tolist() for i, v in vectors.items()},
    )


_changes = st.lists(
    st.tuples(
        st.sampled_from([f"i{n}" for n in range(8)]),
        st.one_of(st.none(), st.tuples(st.booleans(), st.integers(0, 5), st.booleans())),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(first=_changes, second=_changes)
def test_a_batch_of_changes_mirrors_as_the_same_changes_one_by_one(
    tmp_path_factory: pytest.TempPathFactory,
    first: list[tuple[str, tuple[bool, int, bool] | None]],
    second: list[tuple[str, tuple[bool, int, bool] | None]],
) -> None:
    # Upserts with and without categories and vectors, bad vectors (NaN, zero),
    # deletions and repeats of an item within one batch; clusters fitted between the batches.
    basis = np.eye(8, dtype=np.float32)

    def change(item_id: str, spec: tuple[bool, int, bool] | None) -> tuple[str, Any, Any]:
        if spec is None:
            return item_id, None, None
        categorised, which, good = spec
        vec = basis[which] if good else np.full(8, np.nan if which % 2 else 0.0, np.float32)
        entry = {"title": item_id, "categories": ["c"] if categorised else [], "ts": which}
        entry["vec"] = encode_vector(vec) if which < 5 else None  # 5: not embedded (yet)
        return item_id, entry, None

    one = EmbeddingRuntime(Settings(data_dir=tmp_path_factory.mktemp("one"), interest_clusters=2))
    many = EmbeddingRuntime(Settings(data_dir=tmp_path_factory.mktemp("many"), interest_clusters=2))
    for batch in (first, second):
        changes = [change(i, s) for i, s in batch]
        for c in changes:
            one.apply_catalog(*c, refresh=False)
        many.apply_catalog_many(changes, refresh=False)
        assert _state(one) == _state(many)
        one.refresh_clusters()
        many.refresh_clusters()
    assert _state(one) == _state(many)


def test_a_bulk_load_refits_the_clusters_on_doubling_and_at_its_end(tmp_path: Path) -> None:
    rt = EmbeddingRuntime(Settings(data_dir=tmp_path, interest_clusters=2))
    rng = np.random.default_rng(0)
    fits: list[int] = []
    original = rt.refresh_clusters

    def counted() -> None:
        original()
        fits.append(rt._clustered_at)

    rt.refresh_clusters = counted  # type: ignore[method-assign]

    def batch(start: int, size: int) -> list[tuple[str, Any, Any]]:
        return [
            (f"i{n}", {"title": "t", "categories": [], "vec": "x"}, _unit(rng.normal(size=16)))
            for n in range(start, start + size)
        ]

    for start in range(0, 100, 10):  # ten batches with more behind each
        rt.apply_catalog_many(batch(start, 10), backlog=True)
    assert fits == [10, 20, 40, 80]  # 10% growth would have refitted after every batch
    rt.apply_catalog_many(batch(100, 10), backlog=False)  # the load's last batch
    assert fits == [10, 20, 40, 80, 110]
    assert {len(rt.item_categories[f"i{n}"]) for n in range(110)} == {1}  # all clustered

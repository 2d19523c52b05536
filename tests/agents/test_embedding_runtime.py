"""The per-worker embedding runtime: catalog mirror, vector index and k-means categories."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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

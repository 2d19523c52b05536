"""The trained sequence model (sasrec.py) as the engine's eighth signal, "sasrec".

The engine holds at most one snapshot (`Recommender.use_model`). Per batch, the requests
that need the signal (a list to publish, or a probed item for feedback) are scored in one
forward pass: their last hidden states against the model's embedding of every catalogue row.
Rows are the engine's catalogue rows, not the model's: an item the model was not trained on
(newer than the snapshot) is scored through the projection of its text vector, so it is not
left out. Without a snapshot the signal is absent: its column is 0 for every candidate, so
d − μ is 0 there and the η rule moves no weight onto it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from recstream.models.batch_signals import top_rows
from recstream.models.catalog import Catalog
from recstream.models.errors import SnapshotError
from recstream.models.sasrec import Scorer, Snapshot

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: A snapshot whose items are fewer than this share of a non-empty catalogue, or of which
#: fewer than this share is in the catalogue, is of another catalogue: refused.
MIN_OVERLAP = 0.5


class ModelSignal:
    """One accepted snapshot, with its item table over the engine's catalogue rows (cached
    per catalogue version)."""

    def __init__(self, snapshot: Snapshot, catalog: Catalog, device: str | None = None) -> None:
        if snapshot.text_dim != catalog.dim:
            raise SnapshotError(
                f"snapshot v{snapshot.version} projects {snapshot.text_dim}-d item vectors, "
                f"the catalogue has {catalog.dim}-d ones"
            )
        check_overlap(snapshot, catalog)
        self.snapshot = snapshot
        self.version = snapshot.version
        self.scorer = Scorer(snapshot, device)
        self._table: tuple[int, FloatArray] | None = None

    def table(self, catalog: Catalog) -> FloatArray:
        """float32[catalog.rows, dim]: every catalogue row's embedding under the model."""
        if self._table is None or self._table[0] != catalog.version:
            rows = catalog.rows
            vecs = catalog.vectors[:rows]
            self._table = (catalog.version, self.scorer.item_table(catalog.ids[:rows], vecs))
        return self._table[1]

    def scores(self, catalog: Catalog, histories: Sequence[Sequence[str]]) -> FloatArray:
        """float32[len(histories), catalog.rows]: each history's score of every row."""
        if not histories:
            return np.zeros((0, catalog.rows), dtype=np.float32)
        states = self.scorer.user_states(histories)
        return np.asarray(states @ self.table(catalog).T, dtype=np.float32)


def check_overlap(snapshot: Snapshot, catalog: Catalog) -> None:
    """Refuse (SnapshotError) a snapshot that does not describe this catalogue."""
    if not catalog.rows or not snapshot.item_ids:
        return
    known = sum(1 for i in snapshot.item_ids if i in catalog)
    share_model = known / len(snapshot.item_ids)
    share_catalog = known / max(len(catalog), 1)
    if share_model < MIN_OVERLAP or share_catalog < MIN_OVERLAP:
        raise SnapshotError(
            f"snapshot v{snapshot.version} is of another catalogue: {known} of its "
            f"{len(snapshot.item_ids)} items are among the catalogue's {len(catalog)}"
        )


def model_candidates(
    scores: FloatArray, sem: npt.NDArray[np.float32], n: int, rank: IntArray
) -> IntArray:
    """The `n` rows the model scores highest among those the request may show (finite in
    its semantic row `sem`: not excluded, not dead), best first, ties by id rank."""
    live = np.where(np.isfinite(sem), scores, -np.inf)
    return top_rows(live, n, rank)


def model_column(
    scores: FloatArray, at: npt.NDArray[np.int64], rows: IntArray, owner: IntArray
) -> npt.NDArray[np.float64]:
    """float64[len(rows)]: row `rows[j]`'s score for request `owner[j]`, whose scores are
    ``scores[at[owner[j]]]`` (at < 0: not scored, 0)."""
    out = np.zeros(rows.size, dtype=np.float64)
    if rows.size == 0 or scores.shape[0] == 0:
        return out
    where = at[owner]
    hit = where >= 0
    out[hit] = scores[where[hit], rows[hit]]
    return out

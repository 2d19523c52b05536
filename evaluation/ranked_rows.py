"""A row of non-negative weights kept in serving order, for the neighbourhood baselines.

item-kNN and the sequence neighbourhood read each history item's strongest neighbours for
every prediction, while every consumption adds to a handful of rows. Sorting a row (or a
heap over it) per read costs O(row) each time; keeping the order beside the map costs one
binary search and one list move per addition, and a read is a slice.
"""

from __future__ import annotations

from bisect import bisect_left, insort


class RankedRow:
    """key → weight, with ``top(n)``: the n largest weights, ties by ascending key.

    Invariant: ``_order`` holds (−weight, key) for every key, ascending.
    """

    __slots__ = ("_order", "_weights")

    def __init__(self) -> None:
        self._weights: dict[str, float] = {}
        self._order: list[tuple[float, str]] = []

    def add(self, key: str, amount: float) -> None:
        """weight[key] += amount (a new key starts at 0)."""
        old = self._weights.get(key)
        new = amount if old is None else old + amount
        if old is not None:
            del self._order[bisect_left(self._order, (-old, key))]
        insort(self._order, (-new, key))
        self._weights[key] = new

    def top(self, n: int) -> list[tuple[str, float]]:
        """The (key, weight) of the n largest weights, largest first, ties by key."""
        return [(key, -neg) for neg, key in self._order[:n]]

    def __len__(self) -> int:
        return len(self._weights)

    def get(self, key: str, default: float = 0.0) -> float:
        return self._weights.get(key, default)

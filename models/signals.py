"""Registry of ranking signals: the ordered names behind every signal vector and weight vector.

A signal is one source of candidate evidence (semantic similarity, co-visitation, trending, ...).
Every per-candidate signal vector, every weight vector and every column of a signal matrix is
indexed by the registry's order, so the registry is the single place that fixes that order.
Fusion code only ever sees ``names``/``len``; a new signal (e.g. a sequence model) is added by
registering its name, with no change to fusion or weight-update code.

Invariants:
- names are unique, non-empty strings; the index of a name never changes once registered
  (registration only appends), so stored weight vectors stay valid and can be padded with
  :meth:`recstream.models.weights.WeightState.resized` when a signal is added.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from recstream.models.errors import StateError, ValidationError

#: Signal names served by the default pipeline, in vector order.
DEFAULT_SIGNAL_NAMES: tuple[str, ...] = (
    "semantic_short",  # similarity to the short-horizon (session) interest embedding
    "semantic_long",  # similarity to the long-horizon profile embedding
    "covisit",  # co-visitation counts with recently consumed items
    "trending",  # recent popularity
    "category",  # category affinity from the user's category posterior
    "freshness",  # item age (newer is higher)
    "sequence",  # what users consume next after the user's last items (sequence_rules.py)
    "sasrec",  # the trained sequence model's score of the next item (sasrec.py; 0 without one)
    "predictive",  # P(item | user): category posterior shares × share of category popularity
)


class SignalRegistry:
    """Ordered, append-only set of signal names.

    ``frozen=True`` makes :meth:`register` raise, which protects shared registries such as
    :data:`DEFAULT_SIGNALS` from being mutated by one caller behind everyone else's back;
    use :meth:`extended` to get a new registry with more signals.
    """

    __slots__ = ("_frozen", "_index", "_names")

    def __init__(self, names: Iterable[str] = (), *, frozen: bool = False) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._frozen = False
        for name in names:
            self.register(name)
        self._frozen = frozen

    def register(self, name: str) -> int:
        """Append ``name`` and return its index (its column in every signal vector).

        Raises ValidationError for an empty or duplicate name, StateError when frozen.
        """
        if self._frozen:
            raise StateError(f"signal registry is frozen; cannot register {name!r}")
        if not isinstance(name, str) or not name:
            raise ValidationError(f"signal name must be a non-empty string, got {name!r}")
        if name in self._index:
            raise ValidationError(f"signal {name!r} is already registered")
        self._index[name] = len(self._names)
        self._names.append(name)
        return self._index[name]

    @property
    def names(self) -> tuple[str, ...]:
        """Registered names in vector order."""
        return tuple(self._names)

    @property
    def frozen(self) -> bool:
        """Whether :meth:`register` is refused."""
        return self._frozen

    def index(self, name: str) -> int:
        """Column of ``name``; ValidationError if it is not registered."""
        try:
            return self._index[name]
        except KeyError:
            raise ValidationError(f"unknown signal {name!r}; known: {self._names}") from None

    def vector(
        self, scores: Mapping[str, float], *, strict: bool = True
    ) -> npt.NDArray[np.float64]:
        """Dense float64[k] vector in registry order; a missing signal scores 0.

        Missing means "this source produced no evidence for the candidate", which the fusion
        treats the same as the lowest normalised score. With ``strict`` an unknown name raises
        ValidationError, because a misspelt signal would otherwise be dropped silently.
        """
        out = np.zeros(len(self._names), dtype=np.float64)
        for name, value in scores.items():
            column = self._index.get(name)
            if column is None:
                if strict:
                    raise ValidationError(f"unknown signal {name!r}; known: {self._names}")
                continue
            out[column] = float(value)
        return out

    def matrix(
        self, rows: Sequence[Mapping[str, float]], *, strict: bool = True
    ) -> npt.NDArray[np.float64]:
        """float64[n, k] signal matrix, one :meth:`vector` per candidate row."""
        out = np.zeros((len(rows), len(self._names)), dtype=np.float64)
        for i, row in enumerate(rows):
            out[i] = self.vector(row, strict=strict)
        return out

    def extended(self, *names: str, frozen: bool = False) -> SignalRegistry:
        """A new registry with this one's names followed by ``names`` (this one is unchanged)."""
        return SignalRegistry((*self._names, *names), frozen=frozen)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._names))

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"SignalRegistry({self._names!r}, frozen={self._frozen})"


#: The default, frozen registry. Extend with ``DEFAULT_SIGNALS.extended("sequence")``.
DEFAULT_SIGNALS: SignalRegistry = SignalRegistry(DEFAULT_SIGNAL_NAMES, frozen=True)

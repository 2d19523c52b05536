"""The signal registry: order, lookup, dense vectors, plug-in of new signals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.models.errors import StateError, ValidationError
from recstream.models.signals import DEFAULT_SIGNAL_NAMES, DEFAULT_SIGNALS, SignalRegistry


def test_default_registry_order_and_frozen() -> None:
    assert (
        DEFAULT_SIGNALS.names
        == DEFAULT_SIGNAL_NAMES
        == (
            "semantic_short",
            "semantic_long",
            "covisit",
            "trending",
            "category",
            "freshness",
            "sequence",
            "sasrec",
            "predictive",
        )
    )
    assert DEFAULT_SIGNALS.frozen
    with pytest.raises(StateError):
        DEFAULT_SIGNALS.register("gru4rec")
    assert len(DEFAULT_SIGNALS) == 9


def test_register_appends_and_indexes() -> None:
    registry = SignalRegistry(["a", "b"])
    assert registry.register("c") == 2
    assert registry.names == ("a", "b", "c")
    assert [registry.index(name) for name in registry] == [0, 1, 2]
    assert "b" in registry and "z" not in registry
    for bad in ("a", ""):
        with pytest.raises(ValidationError):
            registry.register(bad)
    with pytest.raises(ValidationError):
        registry.index("z")


def test_extended_plugs_in_a_signal_without_touching_the_original() -> None:
    extended = DEFAULT_SIGNALS.extended("gru4rec")
    assert extended.names == (*DEFAULT_SIGNAL_NAMES, "gru4rec")
    assert extended.index("gru4rec") == 9
    assert not extended.frozen
    assert DEFAULT_SIGNALS.names == DEFAULT_SIGNAL_NAMES


def test_vector_missing_is_zero_unknown_raises() -> None:
    v = DEFAULT_SIGNALS.vector({"trending": 2.5, "semantic_short": 0.9})
    np.testing.assert_array_equal(v, [0.9, 0.0, 0.0, 2.5, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert v.dtype == np.float64
    with pytest.raises(ValidationError):
        DEFAULT_SIGNALS.vector({"trendng": 1.0})
    np.testing.assert_array_equal(
        DEFAULT_SIGNALS.vector({"trendng": 1.0}, strict=False), np.zeros(9)
    )


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(DEFAULT_SIGNAL_NAMES), st.floats(-5, 5, allow_nan=False), max_size=7
        ),
        max_size=8,
    )
)
def test_matrix_rows_match_vectors(rows: list[dict[str, float]]) -> None:
    matrix = DEFAULT_SIGNALS.matrix(rows)
    assert matrix.shape == (len(rows), len(DEFAULT_SIGNAL_NAMES))
    for i, row in enumerate(rows):
        for name, value in row.items():
            assert matrix[i, DEFAULT_SIGNALS.index(name)] == value
        assert np.count_nonzero(matrix[i]) <= len(row)

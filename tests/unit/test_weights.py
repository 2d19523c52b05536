"""Simplex projection, the η-scaled weight update, shrinkage, schedules, codecs, feedback signs,
and a seeded simulation of the whole learn-from-feedback loop."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recstream.models.errors import StateError, ValidationError
from recstream.models.fusion import fuse, normalise_signals, top_k
from recstream.models.weights import (
    EtaSchedule,
    WeightState,
    check_simplex,
    feedback_sign,
    pool_baseline,
    project_to_simplex,
)

FAST = settings(max_examples=50, deadline=None)

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
vectors = st.integers(1, 8).flatmap(lambda k: arrays(np.float64, k, elements=finite))
small_vectors = st.integers(1, 4).flatmap(lambda k: arrays(np.float64, k, elements=finite))


def on_simplex(w: npt.NDArray[np.float64]) -> bool:
    return bool(np.all(w >= 0.0) and abs(w.sum() - 1.0) <= 1e-9)


def brute_force_projection(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Exact projection by enumerating faces: the optimum is the projection of v onto the
    affine hull of some face {x_S ≥ 0, Σx_S = 1, x_rest = 0} that lands inside that face."""
    k = v.size
    best, best_dist = None, np.inf
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            idx = list(support)
            x = np.zeros(k)
            x[idx] = v[idx] - (v[idx].sum() - 1.0) / size
            if x.min() >= -1e-12:
                dist = float(np.sum((x - v) ** 2))
                if dist < best_dist:
                    best, best_dist = x, dist
    assert best is not None
    return best


# --- projection -------------------------------------------------------------------------------


@FAST
@given(vectors)
def test_projection_lands_on_simplex_and_is_idempotent(v: npt.NDArray[np.float64]) -> None:
    p = project_to_simplex(v)
    assert on_simplex(p)
    np.testing.assert_allclose(project_to_simplex(p), p, atol=1e-12)


@FAST
@given(small_vectors)
def test_projection_is_the_closest_point(v: npt.NDArray[np.float64]) -> None:
    p = project_to_simplex(v)
    np.testing.assert_allclose(p, brute_force_projection(v), atol=1e-9)
    # Variational inequality of a projection onto a convex set, checked at every vertex
    # (enough, since the simplex is their convex hull): (v − p)·(e_i − p) ≤ 0.
    residual = v - p
    assert np.all(residual @ (np.eye(v.size) - p).T <= 1e-9)


def test_projection_known_values() -> None:
    np.testing.assert_allclose(project_to_simplex([0.5, 0.5]), [0.5, 0.5])
    np.testing.assert_allclose(project_to_simplex([2.0, 0.0]), [1.0, 0.0])
    np.testing.assert_allclose(project_to_simplex([1.0, 1.0, 1.0]), [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(project_to_simplex([0.4, 0.3, -5.0]), [0.55, 0.45, 0.0])


@pytest.mark.parametrize("bad", [[], [[1.0]], [np.nan, 1.0], [np.inf, 0.0]])
def test_projection_rejects_bad_input(bad: npt.ArrayLike) -> None:
    with pytest.raises(ValidationError):
        project_to_simplex(bad)


# --- update -----------------------------------------------------------------------------------

unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def update_cases(
    draw: st.DrawFn,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
    k = draw(st.integers(2, 7))
    w = project_to_simplex(draw(arrays(np.float64, k, elements=finite)))
    d = draw(arrays(np.float64, k, elements=unit))
    mu = draw(arrays(np.float64, k, elements=unit))
    eta = draw(st.floats(0.001, 2.0))
    return w, d, mu, eta


@FAST
@given(update_cases(), st.sampled_from([-1, 1]))
def test_update_keeps_weights_on_simplex(
    case: tuple[npt.NDArray[np.float64], ...], sign: int
) -> None:
    w, d, mu, eta = case
    state = WeightState(w)
    applied = state.update(d, mu, float(eta), sign)
    assert on_simplex(state.weights)
    assert applied == (np.linalg.norm(d - mu) >= 1e-9)
    assert state.n == int(applied)


@FAST
@given(update_cases())
def test_negative_feedback_lowers_the_offending_signal(
    case: tuple[npt.NDArray[np.float64], ...],
) -> None:
    w, d, mu, eta = case
    offending = int(np.argmax(d - mu))  # the signal that most favoured the rejected item
    neg = WeightState(w)
    neg.update(d, mu, float(eta), sign=-1)
    assert neg.weights[offending] <= w[offending] + 1e-12
    pos = WeightState(w)
    pos.update(d, mu, float(eta), sign=+1)
    assert pos.weights[offending] >= w[offending] - 1e-12


def test_update_follows_the_rule_literally() -> None:
    w = np.array([0.2, 0.3, 0.5])
    d, mu = np.array([0.9, 0.1, 0.4]), np.array([0.5, 0.5, 0.5])
    state = WeightState(w)
    assert state.update(d, mu, 0.1, sign=-1)
    diff = d - mu
    expected = project_to_simplex(w - 0.1 * diff / np.linalg.norm(diff))
    np.testing.assert_array_equal(state.weights, expected)
    assert state.weights[0] < w[0]  # strictly lower: interior weight, non-constant d − μ


def test_update_guards_degenerate_and_neutral_cases() -> None:
    state = WeightState.uniform(3)
    same = np.array([0.3, 0.6, 0.1])
    assert not state.update(same, same, 0.1)
    assert not state.update(same, same + 1e-12, 0.1)
    assert not state.update([1.0, 0.0, 0.0], same, 0.1, sign=0)
    assert not state.update([1.0, 0.0, 0.0], same, 0.0)
    assert state.n == 0
    np.testing.assert_array_equal(state.weights, np.full(3, 1 / 3))
    with pytest.raises(ValidationError):
        state.update([1.0, 0.0], same, 0.1)
    with pytest.raises(ValidationError):
        state.update(same, same, 0.1, sign=2)
    with pytest.raises(ValidationError):
        state.update([np.nan, 0.0, 0.0], same, 0.1)


def test_update_uses_schedule_at_feedback_count() -> None:
    schedule = EtaSchedule.decaying(0.2, tau=1.0)
    d, mu = np.array([1.0, 0.0]), np.array([0.0, 0.0])
    state = WeightState([0.5, 0.5], n=1)  # η_1 = 0.2 / 2 = 0.1
    state.update(d, mu, schedule)
    np.testing.assert_allclose(state.weights, project_to_simplex([0.6, 0.5]))
    assert state.n == 2


def test_eta_schedule() -> None:
    assert EtaSchedule.constant(0.05).eta(1000) == 0.05
    decay = EtaSchedule.decaying(0.1, tau=50.0)
    assert decay.eta(0) == 0.1
    assert decay.eta(50) == pytest.approx(0.05)
    assert decay.eta(150) == pytest.approx(0.025)
    for bad in ((-0.1, None), (0.1, 0.0), (float("nan"), None)):
        with pytest.raises(ValidationError):
            EtaSchedule(*bad)


# --- shrinkage, resizing, codecs ----------------------------------------------------------------


def test_effective_shrinks_toward_global() -> None:
    g = np.array([0.5, 0.5, 0.0])
    state = WeightState([1.0, 0.0, 0.0], n=0)
    np.testing.assert_array_equal(state.effective(g, kappa=10.0), g)
    np.testing.assert_array_equal(state.effective(g, kappa=0.0), g)  # n = 0: no evidence
    state = WeightState([1.0, 0.0, 0.0], n=30)
    eff = state.effective(g, kappa=10.0)
    np.testing.assert_allclose(eff, 0.75 * np.array([1.0, 0.0, 0.0]) + 0.25 * g)
    assert on_simplex(eff)
    np.testing.assert_array_equal(state.effective(g, kappa=0.0), [1.0, 0.0, 0.0])
    with pytest.raises(ValidationError):
        state.effective([0.5, 0.6, 0.0], kappa=1.0)
    with pytest.raises(ValidationError):
        state.effective(g, kappa=-1.0)


def test_resized_appends_zero_weight_signals() -> None:
    state = WeightState([0.25, 0.75], n=4)
    grown = state.resized(3)
    np.testing.assert_array_equal(grown.weights, [0.25, 0.75, 0.0])
    assert grown.n == 4
    with pytest.raises(StateError):
        grown.resized(2)


@FAST
@given(update_cases(), st.integers(0, 2**40))
def test_codecs_round_trip(case: tuple[npt.NDArray[np.float64], ...], n: int) -> None:
    state = WeightState(case[0], n=n)
    for restored in (
        WeightState.from_bytes(state.to_bytes()),
        WeightState.from_dict(state.to_dict()),
    ):
        np.testing.assert_array_equal(restored.weights, state.weights)
        assert restored.n == n
    assert len(state.to_bytes()) == 13 + 8 * state.k


def test_codecs_reject_malformed_state() -> None:
    good = WeightState([0.5, 0.5], n=3).to_bytes()
    for bad in (good[:10], b"XX" + good[2:], good[:-1], good + b"\0"):
        with pytest.raises(StateError):
            WeightState.from_bytes(bad)
    off_simplex = good[:13] + np.array([0.9, 0.9], dtype="<f8").tobytes()
    with pytest.raises(StateError):
        WeightState.from_bytes(off_simplex)
    for bad_dict in (
        {},
        {"version": 2, "weights": [1.0], "n": 0},
        {"version": 1, "weights": [1.0]},
    ):
        with pytest.raises(StateError):
            WeightState.from_dict(bad_dict)


def test_check_simplex() -> None:
    check_simplex([0.2, 0.8], 2)
    for bad in ([0.2, 0.7], [-0.1, 1.1], [np.nan, 1.0]):
        with pytest.raises(ValidationError):
            check_simplex(bad)
    with pytest.raises(ValidationError):
        check_simplex([0.2, 0.8], 3)


# --- feedback signs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "rating", "sign"),
    [
        ("click", None, 1),
        ("add_to_cart", None, 1),
        ("PURCHASE", None, 1),
        ("skip", None, -1),
        ("dislike", None, -1),
        ("view", None, 0),
        ("rate", 5.0, 1),
        ("rate", 4.0, 1),
        ("rate", 3.0, 0),
        ("rate", 2.0, -1),
        ("rate", 1.0, -1),
    ],
)
def test_feedback_sign(event: str, rating: float | None, sign: int) -> None:
    assert feedback_sign(event, rating) == sign


def test_feedback_sign_rejects_unknown_and_unrated() -> None:
    with pytest.raises(ValidationError):
        feedback_sign("hover")
    with pytest.raises(ValidationError):
        feedback_sign("rate")


# --- simulation ---------------------------------------------------------------------------------

N_CANDIDATES, N_SIGNALS, SERVED, BETA = 100, 6, 10, 2.0


def draw_request(
    rng: np.random.Generator, true_column: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Raw signals [n, 6] and the latent preference. Only ``true_column`` is the latent itself;
    the five noise signals are drawn independently of it, with different units and shapes so
    that per-request normalisation is exercised."""
    n = N_CANDIDATES
    columns = [
        rng.lognormal(0.0, 1.0, n),
        rng.poisson(3.0, n).astype(np.float64),
        rng.uniform(0.0, 1.0, n),
        rng.exponential(2.0, n),
        rng.normal(5.0, 2.0, n),
    ]
    latent = rng.normal(0.0, 1.0, n)
    columns.insert(true_column, latent)
    return np.column_stack(columns), latent


def consume(rng: np.random.Generator, latent: npt.NDArray[np.float64]) -> int:
    """Index of the consumed item: softmax choice on the latent preference only."""
    logits = BETA * (latent - latent.max())
    p = np.exp(logits)
    return int(rng.choice(latent.size, p=p / p.sum()))


@pytest.mark.parametrize(("true_column", "seed"), [(2, 20240501), (5, 7)])
def test_simulation_learns_the_predictive_signal(true_column: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    state = WeightState.uniform(N_SIGNALS)
    schedule = EtaSchedule.decaying(0.1, tau=100.0)
    for _ in range(300):
        raw, latent = draw_request(rng, true_column)
        s = normalise_signals(raw)
        served = top_k(fuse(s, state.weights)[0], SERVED)
        # The user chooses among what was served, by the latent preference only.
        consumed = served[consume(rng, latent[served])]
        state.update(s[consumed], s[served].mean(axis=0), schedule, sign=+1)
    learned = state.weights
    assert learned[true_column] >= 0.8, learned

    # Held-out requests: the item the user would consume (drawn from all candidates) must land
    # in the top 10 more often under the learned weights than under equal weights.
    equal = np.full(N_SIGNALS, 1.0 / N_SIGNALS)
    hits = {"learned": 0, "equal": 0}
    trials = 400
    for _ in range(trials):
        raw, latent = draw_request(rng, true_column)
        s = normalise_signals(raw)
        wanted = consume(rng, latent)
        for name, w in (("learned", learned), ("equal", equal)):
            hits[name] += int(wanted in top_k(fuse(s, w)[0], 10))
    assert hits["learned"] > hits["equal"] + 0.2 * trials, hits


# --- μ of the η rule over a pool ------------------------------------------------------------

unit = st.floats(0.0, 1.0, allow_nan=False)
pools = st.tuples(st.integers(1, 12), st.integers(1, 6)).flatmap(
    lambda nk: st.tuples(
        arrays(np.float64, nk, elements=unit),
        arrays(np.float64, nk[1], elements=st.floats(0.01, 1.0)),
    )
)


@FAST
@given(pools, st.floats(0.01, 10.0))
def test_pool_baseline_is_a_convex_combination_of_the_rows(pool, tau) -> None:
    rows, w = pool
    w = w / w.sum()
    mu = pool_baseline(rows, w, tau)
    assert mu.shape == (rows.shape[1],)
    assert np.all(mu >= rows.min(axis=0) - 1e-12) and np.all(mu <= rows.max(axis=0) + 1e-12)


@FAST
@given(pools, st.floats(0.05, 2.0))
def test_pool_baseline_gives_the_gradient_of_the_log_likelihood(pool, tau) -> None:
    """(d − μ)/τ is ∂/∂w log softmax(rows·w/τ)[j]: checked by central differences."""
    rows, w = pool
    w = w / w.sum()

    def log_p(v: npt.NDArray[np.float64], j: int) -> float:
        s = rows @ v / tau
        return float(s[j] - (s.max() + np.log(np.exp(s - s.max()).sum())))

    mu = pool_baseline(rows, w, tau)
    for j in range(rows.shape[0]):
        h = 1e-6
        numeric = np.array(
            [(log_p(w + h * e, j) - log_p(w - h * e, j)) / (2 * h) for e in np.eye(w.size)]
        )
        np.testing.assert_allclose(numeric, (rows[j] - mu) / tau, atol=1e-5)


def test_pool_baseline_limits_are_the_mean_and_the_top_row() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.1]])
    w = np.array([0.7, 0.3])
    np.testing.assert_allclose(pool_baseline(rows, None, 0.1), rows.mean(axis=0))
    np.testing.assert_allclose(pool_baseline(rows, w, float("inf")), rows.mean(axis=0))
    np.testing.assert_allclose(pool_baseline(rows, w, 1e6), rows.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(pool_baseline(rows, w, 1e-4), rows[0], atol=1e-9)
    with pytest.raises(ValidationError):
        pool_baseline(np.zeros((0, 2)), w, 0.2)

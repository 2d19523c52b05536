"""Dirichlet posterior over interest categories, text-to-category evidence, clustering, and
the posterior's behaviour on generated users: convergence and the pace of forgetting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from recstream.models.errors import ValidationError
from recstream.models.interest_posterior import (
    DirichletPosterior,
    assign,
    category_evidence_from_text,
    cluster_labels,
    fit_centroids,
    total_variation,
)
from recstream.models.interest_state import InterestEvent, InterestParams, InterestState

FAST = settings(max_examples=50, deadline=None)

T0 = 1_700_000_000.0
DAY = 86_400.0

alphas = st.integers(1, 8).flatmap(lambda k: arrays(np.float64, k, elements=st.floats(0.05, 50.0)))
simplex = st.integers(2, 8).flatmap(
    lambda k: arrays(np.float64, k, elements=st.floats(0.0, 1.0)).filter(lambda x: x.sum() > 0)
)


def labels_for(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


# ----------------------------------------------------------------------------- the posterior


@pytest.mark.parametrize(
    ("alpha", "labels"),
    [([], []), ([1.0, 0.0], ["a", "b"]), ([1.0, math.nan], ["a", "b"]), ([1.0], ["a", "b"])],
)
def test_posterior_validation(alpha: list[float], labels: list[str]) -> None:
    with pytest.raises(ValidationError):
        DirichletPosterior(np.array(alpha), labels)
    with pytest.raises(ValidationError):
        DirichletPosterior(np.ones(2), ["a", "a"])


def test_from_evidence_adds_pseudo_counts_to_the_prior() -> None:
    post = DirichletPosterior.from_evidence(
        {"jazz": 3.0, "other": 100.0}, ["jazz", "cooking"], alpha0=2.0, prior=[0.25, 0.75]
    )
    np.testing.assert_allclose(post.alpha, [3.5, 1.5])  # "other" is outside the support
    assert post.mean_by_label() == {"jazz": pytest.approx(0.7), "cooking": pytest.approx(0.3)}
    for bad in ({"alpha0": 0.0}, {"prior": [0.5, 0.6]}, {"prior": [1.0, 0.0]}):
        with pytest.raises(ValidationError):
            DirichletPosterior.from_evidence({}, ["a", "b"], **bad)
    with pytest.raises(ValidationError):
        DirichletPosterior.from_evidence({"a": -1.0}, ["a", "b"])


@FAST
@given(alpha=alphas)
def test_mean_interval_and_entropy_are_consistent(alpha: np.ndarray) -> None:
    post = DirichletPosterior(alpha, labels_for(alpha.size))
    mean = post.mean()
    assert mean.sum() == pytest.approx(1.0) and np.all(mean > 0)
    lo90, hi90 = post.credible_interval(0.9)
    lo50, hi50 = post.credible_interval(0.5)
    assert np.all((lo90 >= 0) & (lo90 <= lo50) & (lo50 <= hi50) & (hi50 <= hi90) & (hi90 <= 1))
    assert 0.0 <= post.entropy() <= math.log(alpha.size) + 1e-12


def test_credible_interval_covers_its_level_under_sampling() -> None:
    post = DirichletPosterior(np.array([2.0, 5.0, 0.5]), ["a", "b", "c"])
    lo, hi = post.credible_interval(0.9)
    draws = np.random.default_rng(0).dirichlet(post.alpha, size=20_000)
    coverage = ((draws >= lo) & (draws <= hi)).mean(axis=0)
    # Binomial sd of a 0.9 coverage over 20 000 draws is 0.0021: 0.01 is ~5 sd.
    np.testing.assert_allclose(coverage, 0.9, atol=0.01)
    with pytest.raises(ValidationError):
        post.credible_interval(1.0)
    assert DirichletPosterior(np.array([3.0]), ["only"]).credible_interval() == (
        pytest.approx(np.ones(1)),
        pytest.approx(np.ones(1)),
    )


def test_entropy_extremes() -> None:
    assert DirichletPosterior(np.ones(4), labels_for(4)).entropy() == pytest.approx(math.log(4))
    peaked = DirichletPosterior(np.array([1e6, 1e-3, 1e-3]), labels_for(3))
    assert peaked.entropy() < 1e-4


def test_thompson_samples_are_seeded_and_centred_on_the_mean() -> None:
    post = DirichletPosterior(np.array([4.0, 1.0, 2.0]), labels_for(3))
    a = post.thompson_sample(np.random.default_rng(5))
    b = post.thompson_sample(np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.sum() == pytest.approx(1.0) and np.all(a >= 0)
    rng = np.random.default_rng(1)
    draws = np.array([post.thompson_sample(rng) for _ in range(4000)])
    # sd of each component's sample mean <= 0.5/sqrt(4000) ≈ 0.008
    np.testing.assert_allclose(draws.mean(axis=0), post.mean(), atol=0.03)


@FAST
@given(p=simplex, q=simplex, r=simplex)
def test_total_variation_is_a_metric_on_the_simplex(
    p: np.ndarray, q: np.ndarray, r: np.ndarray
) -> None:
    k = min(p.size, q.size, r.size)
    p, q, r = (x[:k] + 1e-12 for x in (p, q, r))
    p, q, r = (x / x.sum() for x in (p, q, r))
    assert total_variation(p, p) == 0.0
    assert total_variation(p, q) == total_variation(q, p)
    assert 0.0 <= total_variation(p, q) <= 1.0 + 1e-12
    assert total_variation(p, r) <= total_variation(p, q) + total_variation(q, r) + 1e-12
    with pytest.raises(ValidationError):
        total_variation(p, np.ones(k + 1) / (k + 1))


# ----------------------------------------------------------------------------- text and clusters


@FAST
@given(
    centroids=arrays(np.float64, (5, 6), elements=st.floats(-1, 1)).filter(
        lambda c: bool(np.all(np.linalg.norm(c, axis=1) > 0.1))
    ),
    text=arrays(np.float64, 6, elements=st.floats(-1, 1)).filter(
        lambda t: bool(np.linalg.norm(t) > 0.1)
    ),
    scale=st.floats(0.1, 100.0),
)
def test_text_evidence_is_a_softmax_of_cosines(
    centroids: np.ndarray, text: np.ndarray, scale: float
) -> None:
    probs = category_evidence_from_text(text, centroids, temperature=0.1)
    assert probs.sum() == pytest.approx(1.0) and np.all(probs >= 0)
    cos = centroids @ text / np.linalg.norm(centroids, axis=1) / np.linalg.norm(text)
    # Two centroids at the same cosine (up to rounding) may swap which one is the larger.
    assert probs[np.argmax(cos)] == pytest.approx(probs.max(), rel=1e-12)
    np.testing.assert_allclose(category_evidence_from_text(text * scale, centroids, 0.1), probs)
    sharper = category_evidence_from_text(text, centroids, temperature=0.01)
    assert sharper.max() >= probs.max() - 1e-12
    # log-odds between categories are cosine differences over the temperature
    assert math.log(probs[0] / probs[1]) == pytest.approx((cos[0] - cos[1]) / 0.1, abs=1e-6)


def test_text_evidence_validation() -> None:
    c = np.eye(3)
    for bad_text, bad_temp in ((np.zeros(3), 0.1), (np.ones(2), 0.1), (np.ones(3), 0.0)):
        with pytest.raises(ValidationError):
            category_evidence_from_text(bad_text, c, bad_temp)


def _blobs(seed: int, k: int = 4, per: int = 40, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((dim, k)))[0].T  # orthonormal directions
    truth = np.repeat(np.arange(k), per)
    x = centres[truth] + 0.05 * rng.standard_normal((k * per, dim))
    return x * rng.uniform(0.5, 3.0, (k * per, 1)), truth  # scale must not matter


@pytest.mark.parametrize("batch_size", [None, 64])
def test_fit_centroids_recovers_separated_clusters(batch_size: int | None) -> None:
    x, truth = _blobs(3)
    centroids = fit_centroids(x, 4, seed=0, batch_size=batch_size)
    assert centroids.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0)
    got = assign(x, centroids)
    # Same partition up to relabelling: each true cluster maps to exactly one label.
    pairs = set(zip(truth.tolist(), got.tolist(), strict=True))
    assert len(pairs) == 4 and len({g for _, g in pairs}) == 4
    np.testing.assert_array_equal(fit_centroids(x, 4, seed=0, batch_size=batch_size), centroids)


@pytest.mark.parametrize("batch_size", [None, 64])
def test_fit_centroids_warm_start_keeps_the_labels(batch_size: int | None) -> None:
    x, truth = _blobs(3)
    first = fit_centroids(x[::2], 4, seed=0, batch_size=batch_size)
    refit = fit_centroids(x, 4, seed=0, batch_size=batch_size, init=first)
    # Started from the last centres, each cluster keeps its index (its label's meaning).
    np.testing.assert_array_equal(assign(x, refit), assign(x, first))
    pairs = set(zip(truth.tolist(), assign(x, refit).tolist(), strict=True))
    assert len(pairs) == 4
    with pytest.raises(ValidationError):
        fit_centroids(x, 4, seed=0, init=first[:3])


def test_fit_centroids_validation_and_labels() -> None:
    x, _ = _blobs(1, k=2, per=3)
    with pytest.raises(ValidationError):
        fit_centroids(np.repeat(x[:1], 5, axis=0), 2, seed=0)  # one distinct direction
    with pytest.raises(ValidationError):
        fit_centroids(x, 0, seed=0)
    with pytest.raises(ValidationError):
        assign(x, np.ones((2, 3)))
    assert fit_centroids(x, 2, seed=np.random.default_rng(0)).shape == (2, 16)
    assert cluster_labels(3) == ["cluster_0", "cluster_1", "cluster_2"]


# ----------------------------------------------------------------------------- generated users


def _posterior(state: InterestState, labels: list[str], at: float) -> DirichletPosterior:
    return DirichletPosterior.from_evidence(state.evidence(at), labels, alpha0=1.0)


def _quota(p: np.ndarray, n: int) -> np.ndarray:
    """Largest-remainder rounding of n·p: integer counts within 1 of n·p_c each."""
    raw = n * p
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts))[: n - counts.sum()]] += 1
    return counts


@FAST
@given(
    truth=st.integers(2, 6).flatmap(lambda k: arrays(np.float64, k, elements=st.floats(0.01, 1.0))),
    seed=st.integers(0, 2**32 - 1),
)
def test_posterior_mean_is_within_tv_01_of_a_generated_users_truth(
    truth: np.ndarray, seed: int
) -> None:
    """200 events whose category counts follow the truth (quota-sampled, shuffled, random
    times within a day). The bound is derived, not fitted:
    TV(mean, truth) <= K/(2n)                      rounding the counts to integers
                     + (1/a − 1)/2                 decay weights in [a, 1], a = 2^(−1 day/H)
                     + α0/(α0 + a·n)               the prior's pull
    which for K <= 6, n = 200, H = 60 days is 0.015 + 0.006 + 0.005 < 0.1."""
    p = truth / truth.sum()
    k, n = p.size, 200
    labels = labels_for(k)
    rng = np.random.default_rng(seed)
    cats = rng.permutation(np.repeat(np.arange(k), _quota(p, n)))
    times = np.sort(rng.uniform(0.0, DAY, n))
    state = InterestState(InterestParams(dim=4))  # evidence half-life = long = 60 days
    for i in range(n):
        state.update(InterestEvent(f"e{i}", "view", T0 + times[i]), None, (labels[cats[i]],))
    a = 2.0 ** (-DAY / (60 * DAY))
    bound = k / (2 * n) + (1 / a - 1) / 2 + 1.0 / (1.0 + a * n)
    tv = total_variation(_posterior(state, labels, T0 + DAY).mean(), p)
    assert tv <= bound < 0.1


def test_iid_generated_users_converge_within_200_events() -> None:
    """i.i.d. categories this time (seeded). Expected error bound (Jensen + Cauchy–Schwarz):
    E[TV(empirical, p)] <= ½·Σ_c sqrt(p_c(1 − p_c)/n) <= ½·sqrt((K − 1)/n), plus the decay
    and prior terms above. Sampling noise puts a few users past 0.1 (P ≈ 1% for K = 5)."""
    rng = np.random.default_rng(2024)
    n, users = 200, 200
    a = 2.0 ** (-DAY / (60 * DAY))
    tvs, bounds = [], []
    for u in range(users):
        k = int(rng.integers(2, 6))
        p = rng.dirichlet(np.ones(k))
        labels = labels_for(k)
        cats = rng.choice(k, n, p=p)
        times = np.sort(rng.uniform(0.0, DAY, n))
        state = InterestState(InterestParams(dim=4))
        for i in range(n):
            ev = InterestEvent(f"u{u}-{i}", "view", T0 + times[i])
            state.update(ev, None, (labels[cats[i]],))
        tvs.append(total_variation(_posterior(state, labels, T0 + DAY).mean(), p))
        bounds.append(0.5 * math.sqrt((k - 1) / n) + (1 / a - 1) / 2 + 1.0 / (1.0 + a * n))
    assert np.mean(tvs) <= np.mean(bounds)
    assert np.mean(np.array(tvs) <= 0.1) >= 0.95


@FAST
@given(
    half_life=st.floats(3600.0, 100 * DAY),
    old_ages=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=60),  # in half-lives
    n_new=st.integers(1, 120),
)
def test_after_an_abrupt_switch_old_evidence_fades_at_the_half_life_pace(
    half_life: float, old_ages: list[float], n_new: int
) -> None:
    """Old-category events up to the switch at T_s, then n_new new-category events evenly
    spaced over the next half-life H, the last at T = T_s + H. From the decay math:
    - old evidence at T is exactly half its value at T_s (no new old-category events);
    - new evidence at T is Σ_{i<n} 2^(−i/n) = 1 / (2·(1 − 2^(−1/n)));
    - so, against a no-decay baseline that counts events, the old:new odds are multiplied
      by (E_old(T)/n_old) / (E_new(T)/n_new) = (E_old(T_s)/n_old)·n·(1 − 2^(−1/n)). For a
      burst of old events at T_s that is n·(1 − 2^(−1/n)) ∈ [½, ln 2]: the old evidence
      halves, and the new evidence, itself decaying, keeps ≈ 1/(2 ln 2) ≈ 0.72 of its
      event count, so the old share relative to the baseline falls to ≈ ln 2, not ½."""
    params = InterestParams(dim=4, long_half_life_s=half_life)
    ts_switch = T0
    state = InterestState(params)
    for i, age in enumerate(old_ages):
        state.update(InterestEvent(f"o{i}", "view", ts_switch - age * half_life), None, ("old",))
    e_old_switch = sum(2.0**-age for age in old_ages)
    assert state.evidence(ts_switch)["old"] == pytest.approx(e_old_switch, rel=1e-9)
    for j in range(1, n_new + 1):
        ts = ts_switch + half_life * j / n_new
        state.update(InterestEvent(f"n{j}", "view", ts), None, ("new",))
    t_end = ts_switch + half_life
    ev = state.evidence(t_end)
    e_new = 1.0 / (2.0 * (1.0 - 2.0 ** (-1.0 / n_new)))
    assert ev["old"] == pytest.approx(e_old_switch / 2.0, rel=1e-9)
    assert ev["new"] == pytest.approx(e_new, rel=1e-9)
    post = DirichletPosterior.from_evidence(ev, ["old", "new"], alpha0=1.0)
    expected_old = (0.5 + e_old_switch / 2.0) / (1.0 + e_old_switch / 2.0 + e_new)
    assert post.mean()[0] == pytest.approx(expected_old, rel=1e-9)
    odds_factor = (ev["old"] / ev["new"]) / (len(old_ages) / n_new)
    predicted = (e_old_switch / len(old_ages)) * n_new * (1.0 - 2.0 ** (-1.0 / n_new))
    assert odds_factor == pytest.approx(predicted, rel=1e-9)
    if all(age == 0.0 for age in old_ages):  # a burst right at the switch
        # (1e-9: the fixed-epoch rounding, ≈ λ·t·1e-16 relative; see decay.py)
        assert 0.5 * (1 - 1e-9) <= odds_factor <= math.log(2) * (1 + 1e-9)


@pytest.mark.parametrize("n_new", [1, 10, 200])
def test_after_a_burst_the_odds_against_the_baseline_fall_to_about_ln2(n_new: int) -> None:
    """The burst case of the test above, spelled out: 50 old events at the switch."""
    hl = 60 * DAY
    state = InterestState(InterestParams(dim=4))
    for i in range(50):
        state.update(InterestEvent(f"o{i}", "view", T0), None, ("old",))
    for j in range(1, n_new + 1):
        state.update(InterestEvent(f"n{j}", "view", T0 + hl * j / n_new), None, ("new",))
    ev = state.evidence(T0 + hl)
    assert ev["old"] == pytest.approx(25.0, rel=1e-9)  # one half-life: halved
    factor = (ev["old"] / ev["new"]) / (50 / n_new)
    assert factor == pytest.approx(n_new * (1 - 2 ** (-1 / n_new)), rel=1e-9)
    if n_new == 200:
        assert factor == pytest.approx(math.log(2), rel=2e-3)

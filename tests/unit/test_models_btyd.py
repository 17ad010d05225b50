"""BG/NBD and Pareto/NBD: parameters recovered from data simulated from each model, CDNOW's published
estimates reproduced, and the predictions' defining properties."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from churnstream.models.btyd import BGNBD, ParetoNBD, check_inputs
from churnstream.models.btyd_features import inputs_from_columns


def simulate_bgnbd(
    rng: np.random.Generator, n: int, T: np.ndarray, r: float, alpha: float, a: float, b: float
):
    """Repeat purchases in (0, T]: Poisson(lambda) while alive, gone after a purchase with probability p."""
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    return x, t_x


def simulate_pareto_nbd(
    rng: np.random.Generator, n: int, T: np.ndarray, r: float, alpha: float, s: float, beta: float
):
    """Repeat purchases in (0, min(tau, T)]: Poisson(lambda) during an exponential lifetime tau ~ Exp(mu)."""
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    end = np.minimum(rng.exponential(1.0 / mu), T)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > end[i]:
                break
            x[i] += 1
            t_x[i] = t
    return x, t_x


def _relative_errors(fitted: object, truth: dict[str, float]) -> dict[str, float]:
    return {k: abs(getattr(fitted, k) - v) / v for k, v in truth.items()}


def test_bgnbd_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(7)
    truth = {"r": 0.5, "alpha": 6.0, "a": 0.8, "b": 2.5}
    n = 8000
    T = rng.uniform(30, 60, n)
    x, t_x = simulate_bgnbd(rng, n, T, **truth)
    fitted = BGNBD.fit(x, t_x, T)
    errors = _relative_errors(fitted, truth)
    assert max(errors.values()) < 0.15, (fitted, errors)
    # the fit is the maximum: the true parameters are less likely on this sample
    assert fitted.log_likelihood(x, t_x, T).sum() >= BGNBD(**truth).log_likelihood(x, t_x, T).sum()


def test_pareto_nbd_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(11)
    truth = {"r": 0.6, "alpha": 8.0, "s": 0.8, "beta": 12.0}
    n = 8000
    T = rng.uniform(30, 60, n)
    x, t_x = simulate_pareto_nbd(rng, n, T, **truth)
    fitted = ParetoNBD.fit(x, t_x, T)
    errors = _relative_errors(fitted, truth)
    assert max(errors.values()) < 0.25, (fitted, errors)
    assert fitted.log_likelihood(x, t_x, T).sum() >= ParetoNBD(**truth).log_likelihood(x, t_x, T).sum()


def test_fit_is_unit_free_alpha_and_beta_scale_with_time() -> None:
    rng = np.random.default_rng(3)
    T = rng.uniform(30, 60, 3000)
    x, t_x = simulate_pareto_nbd(rng, 3000, T, r=0.6, alpha=8.0, s=0.8, beta=12.0)
    weeks = ParetoNBD.fit(x, t_x, T)
    days = ParetoNBD.fit(x, t_x * 7, T * 7)
    assert days.alpha == pytest.approx(7 * weeks.alpha, rel=1e-3)
    assert days.beta == pytest.approx(7 * weeks.beta, rel=1e-3)
    assert days.r == pytest.approx(weeks.r, rel=1e-3)
    assert days.s == pytest.approx(weeks.s, rel=1e-3)


def _cdnow_summary() -> Path:
    """The published 2,357-customer CDNOW sample (x, t_x, T in weeks, 39-week calibration period)."""
    spec = importlib.util.find_spec("lifetimes")
    for loc in spec.submodule_search_locations if spec and spec.submodule_search_locations else []:
        path = Path(loc) / "datasets" / "cdnow_customers_summary.csv"
        if path.is_file():
            return path
    pytest.skip("the CDNOW sample ships with lifetimes (pip install --no-deps lifetimes==0.11.3)")


def _cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.loadtxt(_cdnow_summary(), delimiter=",", skiprows=1)
    return data[:, 1], data[:, 2], data[:, 3]


def test_bgnbd_matches_published_cdnow_estimates() -> None:
    x, t_x, T = _cdnow()
    assert len(x) == 2357
    m = BGNBD.fit(x, t_x, T)
    # Fader, Hardie & Lee (2005), section 5: r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4
    assert (round(m.r, 3), round(m.alpha, 3), round(m.a, 3), round(m.b, 3)) == (0.243, 4.414, 0.793, 2.426)
    assert m.log_likelihood(x, t_x, T).sum() == pytest.approx(-9582.4, abs=0.1)


def test_pareto_nbd_matches_published_cdnow_estimates() -> None:
    x, t_x, T = _cdnow()
    m = ParetoNBD.fit(x, t_x, T)
    # Fader, Hardie & Lee (2005), section 5, the Pareto/NBD benchmark: LL = -9595.0 at
    # r = 0.553, alpha = 10.578, s = 0.606, beta = 11.669
    published = (0.553, 10.578, 0.606, 11.669)
    assert (m.r, m.alpha, m.s, m.beta) == pytest.approx(published, abs=0.0015)  # the optimum is flat
    assert m.log_likelihood(x, t_x, T).sum() == pytest.approx(-9595.0, abs=0.1)


@pytest.mark.parametrize(
    "model",
    [BGNBD(r=0.243, alpha=4.414, a=0.793, b=2.426), ParetoNBD(r=0.553, alpha=10.578, s=0.606, beta=11.669)],
    ids=lambda m: m.name,
)
def test_predictions_behave(model: BGNBD | ParetoNBD) -> None:
    x = np.array([3.0, 3.0, 3.0])
    t_x = np.array([5.0, 20.0, 38.0])
    T = np.full(3, 39.0)
    alive = model.p_alive(x, t_x, T)
    assert np.all((alive > 0) & (alive <= 1))
    assert np.all(np.diff(alive) > 0)  # a more recent last purchase: more likely alive
    soon, later = model.expected_purchases(13.0, x, t_x, T), model.expected_purchases(39.0, x, t_x, T)
    assert np.all(np.diff(soon) > 0) and np.all(later > soon)
    assert model.expected_purchases(0.0, x, t_x, T).tolist() == [0.0, 0.0, 0.0]


def test_expected_purchases_match_simulation() -> None:
    """E[Y(t) | history] against the simulated future of customers who share one observed history."""
    rng = np.random.default_rng(5)
    truth = {"r": 0.5, "alpha": 6.0, "a": 0.8, "b": 2.5}
    n = 200_000
    T = np.full(n, 40.0)
    model = BGNBD(**truth)
    # Simulated customers, vectorised: history to week 40, then purchases in (40, 60].
    lam = rng.gamma(truth["r"], 1.0 / truth["alpha"], n)
    p = rng.beta(truth["a"], truth["b"], n)
    hist = np.zeros(n)
    last = np.zeros(n)
    future = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    t = np.zeros(n)
    while alive.any():
        t[alive] += rng.exponential(1.0 / lam[alive])
        stop = alive & (t > 60.0)
        alive &= ~stop
        before = alive & (t <= 40.0)
        after = alive & (t > 40.0)
        hist[before] += 1
        last[before] = t[before]
        future[after] += 1
        alive &= rng.random(n) >= p
    for k in (0, 1, 2):
        group = hist == k
        predicted = model.expected_purchases(20.0, hist[group], last[group], T[group]).mean()
        assert future[group].mean() == pytest.approx(predicted, rel=0.05), k


def test_inputs_refused_when_inconsistent() -> None:
    with pytest.raises(ValueError, match="t_x must be 0"):
        check_inputs([0], [3.0], [10.0])
    with pytest.raises(ValueError, match="0 <= t_x <= T"):
        check_inputs([2], [12.0], [10.0])


def test_inputs_from_feature_columns() -> None:
    x, t_x, T, known = inputs_from_columns(
        np.array([1.0, 4.0, np.nan]), np.array([20.0, 5.0, np.nan]), np.array([np.nan, 10.0, np.nan])
    )
    assert x.tolist() == [0.0, 3.0, 0.0]
    assert t_x.tolist() == [0.0, 30.0, 0.0]
    assert T.tolist() == [20.0, 35.0, 0.0]
    assert known.tolist() == [True, True, False]


# -- the transform inside the batch model -------------------------------------------------------------

NAMES = ["orders_total", "recency_days", "mean_days_between_orders", "spent_total"]


def _feature_rows(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Stored-feature rows of Pareto/NBD customers observed for 60-400 days, labelled by the next 90 days."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(60, 400, n)
    lam = rng.gamma(0.6, 1 / 40.0, n)
    life = rng.exponential(1 / rng.gamma(0.8, 1 / 300.0, n))
    X = np.full((n, len(NAMES)), np.nan)
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        times = np.cumsum(rng.exponential(1 / lam[i], 60))
        seen = times[times <= min(life[i], T[i])]
        k = len(seen) + 1  # the first order at day 0
        X[i, 0] = k
        X[i, 1] = T[i] - (seen[-1] if len(seen) else 0.0)
        X[i, 2] = seen[-1] / len(seen) if len(seen) else np.nan
        X[i, 3] = 20.0 * k
        y[i] = int(not np.any((times > T[i]) & (times <= min(life[i], T[i] + 90))))
    X[:50] = np.nan  # customers with tickets only: no completed order
    X[:50, 3] = 0.0
    return X, y


@pytest.mark.parametrize("model", ["bg_nbd", "pareto_nbd"])
def test_transform_appends_p_alive_and_expected_orders_from_the_fitted_model(model: str) -> None:
    from churnstream.models.btyd import MODELS
    from churnstream.models.btyd_features import BTYDFeatures

    X, _ = _feature_rows(0)
    step = BTYDFeatures(feature_names=NAMES, horizon_days=90.0, model=model).fit(X)
    assert isinstance(step.fitted_, MODELS[model])
    out = step.transform(X)
    assert out.shape == (len(X), len(NAMES) + 2)
    np.testing.assert_array_equal(out[:, : len(NAMES)], X)
    assert np.all(np.isnan(out[:50, -2:]))  # no completed order: nothing to say
    x, t_x, T, known = inputs_from_columns(X[:, 0], X[:, 1], X[:, 2])
    assert known[50:].all()
    np.testing.assert_allclose(out[50:, -2], step.fitted_.p_alive(x[50:], t_x[50:], T[50:]))
    expected = step.fitted_.expected_purchases(90.0, x[50:], t_x[50:], T[50:])
    np.testing.assert_allclose(out[50:, -1], expected)
    # scoring never refits: other rows leave the parameters as they were
    before = step.fitted_
    step.transform(_feature_rows(1)[0])
    assert step.fitted_ is before


def test_batch_model_with_the_transform_scores_in_numpy_and_survives_the_registry(tmp_path: Path) -> None:
    from churnstream.models.batch import BatchModel, Calibration
    from churnstream.models.btyd_features import with_btyd_features
    from churnstream.models.candidates import _logistic
    from churnstream.models.registry import ModelRegistry

    X, y = _feature_rows(2)
    estimator = with_btyd_features(_logistic(NAMES), NAMES, horizon_days=90.0).fit(X, y)
    model = BatchModel(estimator=estimator, feature_names=NAMES, medians=dict.fromkeys(NAMES, 0.0))
    fresh, fresh_y = _feature_rows(3)
    got = model.raw_score(fresh)
    assert model._fast, "the transform must not take the logistic pipeline off its numpy path"
    np.testing.assert_allclose(got, estimator.predict_proba(fresh)[:, 1], rtol=0, atol=1e-12)
    model.calibration = Calibration.fit(got, fresh_y, "sigmoid")

    registry = ModelRegistry(tmp_path / "models")
    registry.register(model, {}, promote=True)
    loaded = registry.load().model
    np.testing.assert_array_equal(loaded.predict_proba(fresh), model.predict_proba(fresh))
    assert loaded.estimator.steps[0][1].fitted_ == estimator.steps[0][1].fitted_


def test_the_transform_carries_signal_a_linear_model_cannot_build_itself() -> None:
    """On Pareto/NBD customers, P(alive) and expected orders rank next-90-day churn better than the raw
    features do in the same logistic model (the reason the transform exists)."""
    from churnstream.models.btyd_features import with_btyd_features
    from churnstream.models.candidates import _logistic
    from churnstream.models.evaluation import roc_auc

    X, y = _feature_rows(4, n=6000)
    test, test_y = _feature_rows(5, n=6000)
    plain = _logistic(NAMES).fit(X, y)
    with_btyd = with_btyd_features(_logistic(NAMES), NAMES, horizon_days=90.0).fit(X, y)
    auc_plain = roc_auc(test_y, plain.predict_proba(test)[:, 1])
    auc_btyd = roc_auc(test_y, with_btyd.predict_proba(test)[:, 1])
    assert auc_btyd > auc_plain


def test_the_btyd_candidate_is_opt_in() -> None:
    from churnstream.models.btyd_features import BTYDFeatures
    from churnstream.models.candidates import candidates
    from churnstream.models.time_split import TrainConfig

    assert "logistic_regression_btyd" not in [c.name for c in candidates(TrainConfig())]
    chosen = [c for c in candidates(TrainConfig(), horizon_days=30.0) if c.name == "logistic_regression_btyd"]
    assert len(chosen) == 1 and chosen[0].role == "candidate"
    first = chosen[0].make(NAMES).steps[0][1]
    assert isinstance(first, BTYDFeatures) and first.horizon_days == 30.0

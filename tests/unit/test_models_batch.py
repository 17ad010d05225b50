"""The batch model's numpy scoring path gives scikit-learn's own numbers, or is not used."""

from __future__ import annotations

import numpy as np
import pytest

from churnstream.models.batch import BatchModel, _fast_path
from churnstream.models.candidates import _hgb, _logistic

NAMES = [f"f{i}" for i in range(6)]


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.lognormal(1.0, 1.5, size=(2000, len(NAMES))) * rng.choice([-1, 1], size=(2000, len(NAMES)))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:, 5] = np.nan  # a column with no values at all
    y = (np.nan_to_num(X[:, 0]) + rng.normal(0, 3, 2000) > 2).astype(int)
    return X, y


@pytest.mark.parametrize("only", [None, ["f1", "f0", "f3"]])
def test_logistic_pipelines_score_in_numpy_exactly_as_scikit_learn(only: list[str] | None) -> None:
    X, y = _data()
    estimator = _logistic(NAMES, only=only).fit(X[:1500], y[:1500])
    model = BatchModel(estimator=estimator, feature_names=NAMES, medians=dict.fromkeys(NAMES, 0.0))
    fresh, _ = _data(seed=1)
    got = model.raw_score(fresh[:300])
    assert model._fast, "the logistic pipeline should have a numpy path"
    expected = estimator.predict_proba(fresh)[:, 1]
    np.testing.assert_allclose(model.raw_score(fresh), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, expected[:300], rtol=0, atol=1e-12)


def test_gradient_boosting_has_no_numpy_path_and_scores_through_scikit_learn() -> None:
    X, y = _data()
    estimator = _hgb(max_iter=20, seed=1).fit(X, y)
    assert _fast_path(estimator, X[:50]) is None
    model = BatchModel(estimator=estimator, feature_names=NAMES, medians=dict.fromkeys(NAMES, 0.0))
    np.testing.assert_allclose(model.raw_score(X[:50]), estimator.predict_proba(X[:50])[:, 1])


def test_a_path_that_disagrees_is_refused() -> None:
    X, y = _data()
    estimator = _logistic(NAMES).fit(X, y)
    original = estimator.predict_proba
    estimator.predict_proba = lambda Z: 1 - original(Z)  # scikit-learn now says something else
    assert _fast_path(estimator, X[:50]) is None

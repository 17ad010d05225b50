"""The batch model's numpy scoring path gives scikit-learn's own numbers, or is not used."""

from __future__ import annotations

import numpy as np
import pytest

from churnstream.models.batch import BatchModel, _fast_path, _merged_trees
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


@pytest.mark.parametrize(("leaves", "compiled"), [(31, 20), (7, 7), (3, 4)])
def test_gradient_boosting_scores_exactly_as_scikit_learn(leaves: int, compiled: int) -> None:
    """Small trees are grafted into product trees (20 trees of 7 leaves: 7 of up to 343 leaves); a graft
    that sent any row down a wrong branch, or lost a leaf's value, would show in the scores."""
    X, y = _data()
    estimator = _hgb(max_iter=20, seed=1, max_leaf_nodes=leaves, min_samples_leaf=20).fit(X, y)
    final = estimator.steps[-1][1]
    grown = [int(p.nodes["is_leaf"].sum()) for (p,) in final._predictors]
    assert len(grown) == 20 and max(grown) == leaves, grown
    assert len(_merged_trees([p.nodes for (p,) in final._predictors])) == compiled
    assert _fast_path(estimator, X[:50]) is not None, "a numeric binary HistGB should have a tree path"
    model = BatchModel(estimator=estimator, feature_names=NAMES, medians=dict.fromkeys(NAMES, 0.0))
    fresh, _ = _data(seed=2)
    got = model.raw_score(fresh[:1])
    assert model._fast
    expected = estimator.predict_proba(fresh)[:, 1]
    np.testing.assert_allclose(model.raw_score(fresh), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, expected[:1], rtol=0, atol=1e-12)


def test_gradient_boosting_with_categories_scores_through_scikit_learn() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _data()
    X = np.nan_to_num(X[:, :5])
    X[:, 4] = np.random.default_rng(3).integers(0, 5, len(X))
    estimator = HistGradientBoostingClassifier(max_iter=10, categorical_features=[4]).fit(X, y)
    path = _fast_path(estimator, X[:50])
    if path is not None:  # a path that exists must agree; the check inside _fast_path guarantees it
        np.testing.assert_allclose(path(X), estimator.predict_proba(X)[:, 1], rtol=0, atol=1e-9)


def test_a_path_that_disagrees_is_refused() -> None:
    X, y = _data()
    estimator = _logistic(NAMES).fit(X, y)
    original = estimator.predict_proba
    estimator.predict_proba = lambda Z: 1 - original(Z)  # scikit-learn now says something else
    assert _fast_path(estimator, X[:50]) is None

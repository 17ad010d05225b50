"""Explanations: occlusion contributions to the blended probability, largest first, and their actions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from churnstream.messages import Reason
from churnstream.models.batch import BatchModel, Calibration
from churnstream.models.blend import Blender
from churnstream.models.explain import (
    CHECK_IN,
    EXPEDITE,
    SENIOR_SUPPORT,
    WIN_BACK,
    explain,
    recommended_actions,
)
from churnstream.models.online import OnlineModel

NAMES = ["recency_days", "negative_tickets_total", "open_tickets", "spent_90d", "age"]
MEDIANS = {
    "recency_days": 10.0,
    "negative_tickets_total": 0.0,
    "open_tickets": 0.0,
    "spent_90d": 100.0,
    "age": 40.0,
}


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.exponential(15, n),
            rng.poisson(0.5, n),
            rng.poisson(0.3, n),
            rng.gamma(2, 60, n),
            rng.integers(18, 80, n),
        ]
    ).astype(float)
    logit = -2.0 + 0.08 * X[:, 0] + 0.9 * X[:, 1] + 0.5 * X[:, 2] - 0.002 * X[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def models() -> tuple[BatchModel, OnlineModel, Blender]:
    X, y = _world(4000, 0)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000)).fit(X, y)
    batch = BatchModel(estimator=estimator, feature_names=NAMES, medians=MEDIANS)
    batch.calibration = Calibration.fit(batch.raw_score(X), y, "isotonic")
    online = OnlineModel(feature_names=NAMES, min_learned=100)
    rows = [dict(zip(NAMES, x, strict=True)) for x in X.tolist()]
    online.learn_many(rows, y.tolist())
    blender = Blender(min_pairs=50)
    X2, y2 = _world(1000, 1)
    rows2 = [dict(zip(NAMES, x, strict=True)) for x in X2.tolist()]
    for b, o, label in zip(batch.predict_proba(X2), online.predict_many(rows2), y2, strict=True):
        blender.observe(float(b), o, int(label))
    assert 0.0 < blender.weights()["online"] < 1.0  # both models matter, so the test covers the blend
    return batch, online, blender


def _rows(X: np.ndarray) -> list[dict[str, float | None]]:
    return [{n: (None if np.isnan(v) else v) for n, v in zip(NAMES, x, strict=True)} for x in X.tolist()]


def _blended(models: tuple[BatchModel, OnlineModel, Blender], X: np.ndarray) -> np.ndarray:
    batch, online, blender = models
    return blender.blend(batch.predict_proba(X), online.predict_many(_rows(X)))


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _occlusion(models: tuple, x: np.ndarray, feature: str) -> float:
    """The documented rule, computed the slow way for one row and one feature."""
    typical_one = x.copy()
    typical_one[NAMES.index(feature)] = MEDIANS[feature]
    typical_all = np.array([MEDIANS[n] for n in NAMES])
    p, p_one, p_all = _blended(models, np.vstack([x, typical_one, typical_all]))
    slope = (p - p_all) / (_logit(p) - _logit(p_all))
    return (_logit(p) - _logit(p_one)) * slope


def test_reasons_are_honest_occlusion_contributions_largest_first(models: tuple) -> None:
    X = np.array(
        [[60.0, 4.0, 0.0, 100.0, 40.0], [45.0, 0.0, 3.0, 20.0, np.nan], [12.0, 1.0, 1.0, 90.0, 30.0]]
    )
    explanations = explain(*models, X, _rows(X), top_k=1)
    assert [len(r) for r in explanations] == [3, 3, 3]  # at least three reasons, whatever top_k says
    assert {r.feature for r in explanations[0][:2]} == {"recency_days", "negative_tickets_total"}
    assert explanations[0][1].contribution > 0.05
    assert explanations[1][0].feature == "recency_days"
    assert {r.feature for r in explanations[1][:2]} == {"recency_days", "open_tickets"}
    base = _blended(models, X)
    for i, reasons in enumerate(explanations):
        contributions = [r.contribution for r in reasons]
        assert contributions == sorted(contributions, reverse=True)
        for reason in reasons:
            j = NAMES.index(reason.feature)
            assert reason.contribution == pytest.approx(_occlusion(models, X[i], reason.feature), abs=1e-4)
            assert reason.value == (None if np.isnan(X[i, j]) else X[i, j])
        assert sum(r.contribution > 0 for r in reasons) >= 1 and base[i] > 0


def test_contributions_sum_to_about_the_distance_from_a_typical_customer(models: tuple) -> None:
    X = np.array([[50.0, 3.0, 2.0, 30.0, 50.0], [1.0, 0.0, 0.0, 400.0, 25.0]])
    typical = np.array([[MEDIANS[n] for n in NAMES]])
    explanations = explain(*models, X, _rows(X), top_k=len(NAMES))
    gap = _blended(models, X) - _blended(models, typical)[0]
    for reasons, distance in zip(explanations, gap, strict=True):
        total = sum(r.contribution for r in reasons)
        assert np.sign(total) == np.sign(distance)
        assert total == pytest.approx(distance, rel=0.5)  # the blend is not additive in log-odds...


def test_contributions_add_up_exactly_for_a_model_additive_in_log_odds(models: tuple) -> None:
    batch, _, _ = models
    additive = BatchModel(estimator=batch.estimator, feature_names=NAMES, medians=MEDIANS)  # uncalibrated LR
    X = np.array([[50.0, 3.0, 2.0, 30.0, 50.0], [1.0, 0.0, 0.0, 400.0, 25.0]])
    typical = np.array([[MEDIANS[n] for n in NAMES]])
    gap = additive.predict_proba(X) - additive.predict_proba(typical)[0]
    for reasons, distance in zip(explain(additive, None, Blender(), X, _rows(X), top_k=5), gap, strict=True):
        assert sum(r.contribution for r in reasons) == pytest.approx(distance, abs=1e-3)


def test_a_typical_customer_has_no_contributions(models: tuple) -> None:
    X = np.array([[MEDIANS[n] for n in NAMES]])
    reasons = explain(*models, X, _rows(X))[0]
    assert all(r.contribution == 0 for r in reasons) and len(reasons) == 3
    assert recommended_actions(reasons) == [CHECK_IN]


def test_batch_only_explanations_without_an_online_model(models: tuple) -> None:
    batch, _, _ = models
    X = np.array([[70.0, 0.0, 0.0, 100.0, 40.0]])
    reasons = explain(batch, None, Blender(), X, _rows(X))[0]
    assert reasons[0].feature == "recency_days"
    # with only recency atypical, its contribution is the whole distance from the typical customer
    typical = np.array([[MEDIANS[n] for n in NAMES]])
    expected = batch.predict_proba(X)[0] - batch.predict_proba(typical)[0]
    assert reasons[0].contribution == pytest.approx(expected, abs=1e-4)
    assert explain(batch, None, Blender(), np.zeros((0, len(NAMES))), []) == []


def test_recommended_actions_follow_the_reasons() -> None:
    reasons = [
        Reason("negative_tickets_total", 3, 0.2),
        Reason("recency_days", 50.0, 0.1),
        Reason("open_tickets", 2, 0.05),
        Reason("spent_90d", 400.0, -0.03),
    ]
    assert recommended_actions(reasons) == [SENIOR_SUPPORT, WIN_BACK, EXPEDITE]
    assert recommended_actions([Reason("age", 30, 0.2)]) == [CHECK_IN]

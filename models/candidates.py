"""The models a training run tries, the baselines it compares them with, and how one is fitted.

Each :class:`Candidate` builds an unfitted scikit-learn estimator for the feature names; :func:`fit_candidate`
fits it and its calibration map on later rows. The best :data:`SELECTION_METRIC` on the held-out period wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from churnstream.models.batch import BatchModel, Calibration, DropEmptyColumns, signed_log1p
from churnstream.models.time_split import TrainConfig

SELECTION_METRIC = "pr_auc"


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    role: str  # "candidate" (may be chosen) or "baseline" (reported only)
    description: str
    make: Callable[[Sequence[str]], Any]


def _select(indices: Sequence[int]) -> Any:
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(_take_columns, kw_args={"indices": list(indices)})


def _take_columns(X: np.ndarray, indices: list[int]) -> np.ndarray:
    return X[:, indices]


def _logistic(feature_names: Sequence[str], *, only: Sequence[str] | None = None, C: float = 0.5) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    steps: list[Any] = []
    if only is not None:
        steps.append(_select([list(feature_names).index(n) for n in only]))
    steps += [
        FunctionTransformer(signed_log1p),
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=C, max_iter=1000),
    ]
    return make_pipeline(*steps)


def _hgb(max_iter: int, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        DropEmptyColumns(),
        HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=0.07,
            max_leaf_nodes=31,
            min_samples_leaf=100,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        ),
    )


def candidates(config: TrainConfig) -> list[Candidate]:
    """The models tried and the baselines they are compared with."""
    from churnstream.features.definitions import REQUIRED_FEATURES

    return [
        Candidate(
            "logistic_regression",
            "candidate",
            "signed log1p, median imputation + missing indicators, standardisation, "
            "L2 logistic regression (C=0.5)",
            lambda names: _logistic(names),
        ),
        Candidate(
            "hist_gradient_boosting",
            "candidate",
            f"HistGradientBoostingClassifier({config.hgb_max_iter} iterations, lr 0.07, 31 leaves, "
            "min 100 rows per leaf, l2 1.0; NaN handled natively)",
            lambda names: _hgb(config.hgb_max_iter, config.seed),
        ),
        Candidate(
            "recency_only",
            "baseline",
            "logistic regression on recency_days alone (+ missing indicator)",
            lambda names: _logistic(names, only=["recency_days"], C=1.0),
        ),
        Candidate(
            "lr_required_features",
            "baseline",
            "the logistic regression above, on the contract's required features only",
            lambda names: _logistic(names, only=list(REQUIRED_FEATURES)),
        ),
    ]


def calibration_method(y: np.ndarray) -> str:
    """Isotonic with enough rows of both classes to estimate a free-form curve, else Platt scaling."""
    positives = int(np.sum(y))
    return "isotonic" if len(y) >= 2000 and min(positives, len(y) - positives) >= 100 else "sigmoid"


def fit_candidate(
    candidate: Candidate,
    feature_names: Sequence[str],
    X_fit: np.ndarray,
    y_fit: np.ndarray,
    X_cal: np.ndarray,
    y_cal: np.ndarray,
    medians: dict[str, float],
) -> BatchModel:
    """Fit ``candidate`` on the fit rows and its calibration map on the (later) calibration rows."""
    estimator = candidate.make(feature_names)
    estimator.fit(X_fit, y_fit)
    model = BatchModel(estimator=estimator, feature_names=feature_names, medians=medians, name=candidate.name)
    model.calibration = Calibration.fit(model.raw_score(X_cal), y_cal, calibration_method(y_cal))
    return model

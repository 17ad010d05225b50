"""The models a training run tries, the baselines it compares them with, and how one is fitted.

Each :class:`Candidate` builds an unfitted scikit-learn estimator for the feature names; :func:`fit_candidate`
fits it and its calibration map on later rows. :func:`candidates` lists a few model families, each with a
small grid of settings (logistic regression on signed-log features, histogram gradient boosting, a random
forest); :mod:`~churnstream.models.selection` runs them through the plan's time splits and the best mean
:data:`SELECTION_METRIC` wins. Extra trees scored below the forest on CDNOW at the highest cost, so they
are not tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from churnstream.models.batch import BatchModel, Calibration, DropEmptyColumns, signed_log1p
from churnstream.models.btyd_features import with_btyd_features
from churnstream.models.time_split import TrainConfig

SELECTION_METRIC = "pr_auc"
DEFAULT_CANDIDATE = "logistic_regression"  # used when no time split is left to choose on


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    role: str  # "candidate" (may be chosen) or "baseline" (reported only)
    description: str
    make: Callable[[Sequence[str]], Any]
    family: str = ""


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


def _hgb(
    max_iter: int,
    seed: int,
    *,
    learning_rate: float = 0.07,
    max_leaf_nodes: int = 31,
    min_samples_leaf: int = 100,
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        DropEmptyColumns(),
        HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        ),
    )


def _random_forest(seed: int, *, trees: int, min_samples_leaf: int) -> Any:
    """Trees on bootstrap half-samples with sqrt(features) per split; NaN is routed natively by the splits."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline

    forest = RandomForestClassifier(
        n_estimators=trees,
        min_samples_leaf=min_samples_leaf,
        max_features="sqrt",
        max_samples=0.5,
        n_jobs=1,
        random_state=seed,
    )
    return make_pipeline(DropEmptyColumns(), forest)


def candidates(config: TrainConfig, *, horizon_days: float | None = None) -> list[Candidate]:
    """The models tried (the two defaults, then the search grid unless ``config.search`` is off) and the
    baselines they are compared with.

    >>> [(c.name, c.family) for c in candidates(TrainConfig(search=False)) if c.role == "candidate"]
    [('logistic_regression', 'logistic_regression'), ('hist_gradient_boosting', 'hist_gradient_boosting')]
    >>> len(candidates(TrainConfig()))
    7
    """
    from churnstream.features.definitions import REQUIRED_FEATURES

    seed = config.seed
    tried = [
        Candidate(
            DEFAULT_CANDIDATE,
            "candidate",
            "signed log1p, median imputation + missing indicators, standardisation, "
            "L2 logistic regression (C=0.5)",
            lambda names: _logistic(names),
            "logistic_regression",
        ),
        Candidate(
            "hist_gradient_boosting",
            "candidate",
            f"HistGradientBoostingClassifier({config.hgb_max_iter} iterations, lr 0.07, 31 leaves, "
            "min 100 rows per leaf, l2 1.0; NaN handled natively)",
            lambda names: _hgb(config.hgb_max_iter, seed),
            "hist_gradient_boosting",
        ),
    ]
    if config.search:
        tried += [
            Candidate(
                "logistic_regression_c0.02",
                "candidate",
                "the logistic regression above, regularised harder (C=0.02)",
                lambda names: _logistic(names, C=0.02),
                "logistic_regression",
            ),
            Candidate(
                "hist_gradient_boosting_small",
                "candidate",
                "HistGradientBoostingClassifier(200 iterations, lr 0.05, 7 leaves, min 400 rows per leaf, "
                "l2 1.0): smoother, for fewer or noisier rows",
                lambda names: _hgb(200, seed, learning_rate=0.05, max_leaf_nodes=7, min_samples_leaf=400),
                "hist_gradient_boosting",
            ),
            Candidate(
                "random_forest",
                "candidate",
                "RandomForestClassifier(60 trees on half-samples, sqrt features, min 200 rows per leaf)",
                lambda names: _random_forest(seed, trees=60, min_samples_leaf=200),
                "random_forest",
            ),
        ]
    # Opt-in (train does not pass a horizon): on CDNOW it earned nothing offline, and on a short history
    # (cutoff B of issue #19) it won selection yet ranked worse at scoring time (docs/models.md).
    if config.search and horizon_days is not None:
        tried.append(
            Candidate(
                "logistic_regression_btyd",
                "candidate",
                "the logistic regression (C=0.5) plus BG/NBD P(alive) and expected orders in the "
                "horizon, fitted on the training rows (models/btyd.py BTYDFeatures)",
                lambda names: with_btyd_features(_logistic(names), names, horizon_days=horizon_days),
                "logistic_regression",
            )
        )
    return tried + [
        Candidate(
            "recency_only",
            "baseline",
            "logistic regression on recency_days alone (+ missing indicator)",
            lambda names: _logistic(names, only=["recency_days"], C=1.0),
            "logistic_regression",
        ),
        Candidate(
            "lr_required_features",
            "baseline",
            "the logistic regression above, on the contract's required features only",
            lambda names: _logistic(names, only=list(REQUIRED_FEATURES)),
            "logistic_regression",
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

"""The batch model: a fitted scikit-learn estimator plus a calibration map, scored as numpy matrices.

Imputation lives inside the estimator (logistic regression imputes medians and adds missing-value
indicators; gradient boosting handles NaN natively), so callers pass ``None``/NaN as they come.
Calibration is stored as plain arrays and applied with numpy, so scoring a batch of 500 rows costs a
few milliseconds and pickles stay small.

>>> import numpy as np
>>> cal = Calibration.fit(np.array([0.1, 0.2, 0.8, 0.9] * 50), np.array([0, 0, 1, 1] * 50), "sigmoid")
>>> p = cal.apply(np.array([0.1, 0.9]))
>>> bool(p[0] < 0.2 and p[1] > 0.8)
True
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

# Calibrated probabilities never reach 0 or 1: a log-loss of infinity would break the blender's weights.
P_MIN, P_MAX = 1e-3, 1.0 - 1e-3


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: tames heavy-tailed counts and amounts for linear models; NaN stays NaN.

    >>> signed_log1p(np.array([0.0, np.e - 1, -(np.e - 1), np.nan])).round(3).tolist()
    [0.0, 1.0, -1.0, nan]
    """
    return np.sign(x) * np.log1p(np.abs(x))


class DropEmptyColumns:
    """A scikit-learn transformer that drops the columns with no value at fit time (all NaN).

    Gradient boosting cannot bin a column without values (e.g. ``age`` when no profiles carry it).

    >>> DropEmptyColumns().fit(np.array([[1.0, np.nan], [2.0, np.nan]])).transform(np.ones((1, 2))).tolist()
    [[1.0]]
    """

    def __init__(self) -> None:
        self.keep_: np.ndarray | None = None

    def fit(self, X: np.ndarray, y: Any = None) -> DropEmptyColumns:
        self.keep_ = np.flatnonzero(~np.all(np.isnan(np.asarray(X, dtype=np.float64)), axis=0))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        assert self.keep_ is not None, "DropEmptyColumns is not fitted"
        return np.asarray(X, dtype=np.float64)[:, self.keep_]

    def fit_transform(self, X: np.ndarray, y: Any = None) -> np.ndarray:
        return self.fit(X, y).transform(X)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {}

    def set_params(self, **params: Any) -> DropEmptyColumns:
        return self


@dataclass(slots=True)
class Calibration:
    """A monotone map from raw scores to calibrated probabilities.

    ``method`` is ``isotonic`` (piecewise-linear through the centres of the isotonic fit's blocks),
    ``sigmoid`` (Platt scaling on the logit of the score) or ``identity``.

    Isotonic regression is a step function: interpolating through its thresholds keeps each step flat, so
    every customer in a step gets the same probability and the ranking between them is lost (on CDNOW's
    real orders at 1998-03-31, 23,465 of 23,570 customers tied and ROC-AUC fell from 0.8381 to 0.8370).
    Through the steps' centres the map is strictly increasing between the first and last centre.

    A sigmoid fitted with a slope of 0 or less (scores nearly constant on the calibration slice, or ranking
    against it) would be a decreasing map: a review's random forest went from a test ROC-AUC of 0.92 to a
    held-out 0.142 through it. The calibration is then the identity, which keeps the estimator's ranking.

    >>> rng = np.random.default_rng(0)
    >>> scores = rng.random(400)
    >>> Calibration.fit(scores, (scores < 0.5).astype(int), "sigmoid").method  # labels against the scores
    'identity'
    >>> Calibration.fit(scores, (scores > 0.5).astype(int), "sigmoid").method
    'sigmoid'
    """

    method: str = "identity"
    xs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, method: str) -> Calibration:
        """Fit on a calibration slice the estimator did not see (later in time than its training rows)."""
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=P_MIN, y_max=P_MAX, out_of_bounds="clip").fit(scores, labels)
            xs, ys = _block_centres(np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_))
            return cls(method="isotonic", xs=xs, ys=ys)
        if method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            z = _logit(scores).reshape(-1, 1)
            lr = LogisticRegression(C=1e4, max_iter=1000).fit(z, labels.astype(int))
            a = float(lr.coef_[0, 0])
            if not a > 0:  # the slice ranks against the scores: a map would turn the ranking over (see below)
                return cls()
            return cls(method="sigmoid", a=a, b=float(lr.intercept_[0]))
        if method == "identity":
            return cls()
        raise ValueError(f"unknown calibration method {method!r}")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            p = np.interp(scores, self.xs, self.ys)
        elif self.method == "sigmoid":
            p = 1.0 / (1.0 + np.exp(-(self.a * _logit(scores) + self.b)))
        else:
            p = np.asarray(scores, dtype=np.float64)
        return np.clip(p, P_MIN, P_MAX)

    def describe(self) -> dict[str, Any]:
        if self.method == "sigmoid":
            return {"method": "sigmoid", "a": self.a, "b": self.b}
        return {"method": self.method, "knots": int(len(self.xs))}


def _block_centres(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One knot per flat step of an isotonic fit, at the middle of the step's scores.

    >>> _block_centres(np.array([0.1, 0.3, 0.4, 0.8]), np.array([0.2, 0.2, 0.5, 0.5]))
    (array([0.2, 0.6]), array([0.2, 0.5]))
    """
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    ends = np.r_[starts[1:] - 1, len(ys) - 1]
    return (xs[starts] + xs[ends]) / 2.0, ys[starts]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class BatchModel:
    """A fitted churn classifier over ``feature_names``: ``predict_proba`` gives calibrated P(churn).

    ``medians`` are the reference customer's features (NaN for missing): a typical customer who stayed,
    from the training rows (:func:`churnstream.models.train.typical_customer`), used by
    :func:`churnstream.models.explain.explain` as the customer a feature is replaced by.
    """

    def __init__(
        self,
        *,
        estimator: Any,
        feature_names: Sequence[str],
        medians: Mapping[str, float],
        calibration: Calibration | None = None,
        name: str = "",
        n_threads: int = 1,
    ) -> None:
        self.estimator = estimator
        self.feature_names: list[str] = list(feature_names)
        self.medians: dict[str, float] = {n: float(medians[n]) for n in self.feature_names}
        self.calibration = calibration or Calibration()
        self.name = name
        self.n_threads = n_threads
        self._controller: Any = None
        self._fast: Any = None  # see _fast_path; False when the estimator has none

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_controller"] = None
        state["_fast"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("n_threads", 1)
        state.setdefault("_controller", None)
        state["_fast"] = None
        self.__dict__.update(state)

    def _limit_threads(self) -> Any:
        """Cap OpenMP threads while scoring: on shared cores, gradient boosting's default thread pool
        busy-waits and a 500-row batch takes seconds instead of milliseconds."""
        if self._controller is None:
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller.limit(limits=self.n_threads, user_api="openmp")

    def raw_score(self, X: np.ndarray) -> np.ndarray:
        """The estimator's uncalibrated P(churn), shape (n,)."""
        X = self._check(X)
        if len(X) == 0:
            return np.zeros(0)
        if self._fast is None:
            self._fast = _fast_path(self.estimator, X) or False
        if self._fast:
            return self._fast(X)
        return self._sklearn_score(X)

    def _sklearn_score(self, X: np.ndarray) -> np.ndarray:
        with self._limit_threads():
            return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated P(churn) for each row of ``X`` (shape (n, len(feature_names)), NaN for missing)."""
        return self.calibration.apply(self.raw_score(X))

    def vectorize(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Feature dicts (name -> number | None) to a float64 matrix in ``feature_names`` order, NaN for None.

        >>> m = BatchModel(estimator=None, feature_names=["a", "b"], medians={"a": 0, "b": 0})
        >>> m.vectorize([{"a": 1, "b": None}, {"a": True}]).tolist()
        [[1.0, nan], [1.0, nan]]
        """
        names = self.feature_names
        if len(names) > 1:
            take = operator.itemgetter(*names)
            try:  # rows from features_as_of carry every name: one C call per row
                return np.array([take(row) for row in rows], dtype=np.float64).reshape(len(rows), len(names))
            except KeyError:
                pass
        return np.array([[row.get(n) for n in names] for row in rows], dtype=np.float64).reshape(
            len(rows), len(names)
        )

    def warm_up(self) -> None:
        """Choose the scoring path now (the first call costs ~25 ms), not while the first events wait."""
        m = self.median_vector()
        self.raw_score(np.vstack([m, np.full_like(m, np.nan), m * 2 + 1]))

    def median_vector(self) -> np.ndarray:
        return np.array([self.medians[n] for n in self.feature_names], dtype=np.float64)

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a matrix with {len(self.feature_names)} feature columns, got shape {X.shape}"
            )
        return X

    def __repr__(self) -> str:
        return (
            f"BatchModel(name={self.name!r}, features={len(self.feature_names)}, "
            f"calibration={self.calibration.method})"
        )


def _fast_path(estimator: Any, X: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """The same scores as ``estimator.predict_proba(X)[:, 1]`` in plain numpy, or None.

    scikit-learn validates inputs and parameters at every step of every call, ~2 ms per call for our
    logistic pipeline: more than the arithmetic of a 500-row batch, and a floor under the scorer's
    latency. For a pipeline made only of the steps below, the arithmetic is redone here; the result
    is checked against scikit-learn's own on ``X`` (a real batch) and used only if it agrees.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from churnstream.models.btyd_features import BTYDFeatures

    steps = [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    *transforms, final = steps
    trees = _tree_sum(final)
    if trees is None and not (isinstance(final, LogisticRegression) and final.coef_.shape[0] == 1):
        return None
    ops: list[Callable[[np.ndarray], np.ndarray]] = []
    for step in transforms:
        if isinstance(step, FunctionTransformer) and not step.validate and step.func is not None:
            ops.append(functools.partial(step.func, **(step.kw_args or {})))
        elif isinstance(step, DropEmptyColumns) or (
            isinstance(step, BTYDFeatures) and step.fitted_ is not None
        ):
            ops.append(step.transform)
        elif isinstance(step, SimpleImputer) and isinstance(step.missing_values, float):
            ops.append(_imputer(step))
        elif isinstance(step, StandardScaler):
            mean = step.mean_ if step.with_mean else 0.0
            scale = step.scale_ if step.with_std else 1.0
            ops.append(functools.partial(_standardise, mean=mean, scale=scale))
        else:
            return None
    if trees is not None:
        linear: Callable[[np.ndarray], np.ndarray] = trees
    else:
        coef = np.asarray(final.coef_[0], dtype=np.float64)
        intercept = float(final.intercept_[0])

        def linear(X: np.ndarray) -> np.ndarray:
            return np.asarray(X @ coef + intercept)

    def score(X: np.ndarray) -> np.ndarray:
        for op in ops:
            X = op(X)
        return np.asarray(expit(linear(X)), dtype=np.float64)

    # the batch, plus rows that take every branch: all missing, all zero, large negative values
    probe = np.vstack([X, np.full(X.shape[1], np.nan), np.zeros(X.shape[1]), np.full(X.shape[1], -1e3)])
    try:
        expected = np.asarray(estimator.predict_proba(probe)[:, 1], dtype=np.float64)
        agrees = np.allclose(score(probe), expected, rtol=0, atol=1e-9)
    except Exception:  # any surprise (shapes, dtypes): scikit-learn itself stays in charge
        return None
    return score if agrees else None


def _tree_sum(final: Any) -> Callable[[np.ndarray], np.ndarray] | None:
    """The log-odds of a binary, purely numeric HistGradientBoostingClassifier, tree by tree, or None.

    scikit-learn wraps each tree's prediction in a Python call that allocates its own output, and
    validates the input and rebuilds the categorical bitsets for every call: ~1.1 ms a call for our
    200 trees before the first row (a 175-row batch: 2.0 ms). Here each tree's compiled traversal
    (the same routine scikit-learn calls) writes into one preallocated matrix, and consecutive trees
    are first grafted into product trees (:func:`_merged_trees`), so that routine is called 67 times a
    batch, not 200. It uses a private routine, so :func:`_fast_path` checks the result against
    ``predict_proba`` and keeps scikit-learn in charge if anything differs or moved.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    if not isinstance(final, HistGradientBoostingClassifier):
        return None
    try:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data

        if final.n_trees_per_iteration_ != 1 or getattr(final, "_preprocessor", None) is not None:
            return None
        known_cat_bitsets, f_idx_map = final._bin_mapper.make_known_categories_bitsets()
        trees = [(p.nodes, p.raw_left_cat_bitsets) for (p,) in final._predictors]
        if not any(nodes["is_categorical"].any() for nodes, _ in trees):
            no_categories = trees[0][1]
            trees = [(nodes, no_categories) for nodes in _merged_trees([nodes for nodes, _ in trees])]
        baseline = float(np.asarray(final._baseline_prediction).ravel()[0])
    except Exception:  # a scikit-learn whose internals moved: its own predict_proba then
        return None

    def log_odds(X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty((len(trees), len(X)))
        for i, (nodes, cat_bitsets) in enumerate(trees):
            _predict_from_raw_data(nodes, X, cat_bitsets, known_cat_bitsets, f_idx_map, 1, out[i])
        return np.asarray(out.sum(axis=0) + baseline)

    return log_odds


# Leaves of one product tree (:func:`_merged_trees`): our 7-leaf trees merge three at a time (343
# leaves, ~680 nodes, 38 KB); the default 31-leaf trees stay apart. What a call of the compiled
# traversal costs whatever the rows (~2.4 us, 0.5 ms for 200 trees) is paid once per product tree,
# and a row visits as many nodes as before. Measured on the served model (200 trees of 7 leaves):
# 20 rows 0.58 -> 0.21 ms, 200 rows 1.43 -> 0.91 ms; four at a time (2,401 leaves) gained little more.
_MERGED_LEAVES = 512


def _merged_trees(trees: list[np.ndarray]) -> list[np.ndarray]:
    """Consecutive numeric trees (scikit-learn's predictor node arrays) grafted into product trees of at
    most :data:`_MERGED_LEAVES` leaves, whose values sum to the same: exactly, up to float rounding
    (a leaf now holds the sum of two or three trees' values; log-odds move by ~1e-15)."""
    out: list[np.ndarray] = []
    leaves: list[int] = []
    for nodes in trees:
        n = int(nodes["is_leaf"].sum())
        if out and leaves[-1] * n <= _MERGED_LEAVES:
            out[-1] = _graft(out[-1], nodes)
            leaves[-1] *= n
        else:
            out.append(nodes)
            leaves.append(n)
    return out


def _graft(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One tree whose value is ``first``'s plus ``second``'s: a copy of ``second`` in place of each of
    ``first``'s leaves, that leaf's value added to the copy's leaves."""
    inner = second["is_leaf"] == 0
    out = [first.copy()]
    size = len(first)
    for leaf in np.flatnonzero(first["is_leaf"]):
        copy = second.copy()
        # the copy's root takes the leaf's place; its other nodes go at the end
        where = np.concatenate([[leaf], size + np.arange(len(second) - 1)])
        for child in ("left", "right"):
            copy[child][inner] = where[second[child][inner]]
        copy["value"][~inner] += first["value"][leaf]
        out[0][leaf] = copy[0]
        out.append(copy[1:])
        size += len(second) - 1
    return np.concatenate(out)


def _standardise(X: np.ndarray, *, mean: Any, scale: Any) -> np.ndarray:
    return np.asarray((X - mean) / scale)


def _imputer(step: Any) -> Callable[[np.ndarray], np.ndarray]:
    """SimpleImputer.transform for NaN markers: fill with the fitted statistics, then the indicators."""
    fill = np.asarray(step.statistics_, dtype=np.float64)
    keep = np.flatnonzero(~np.isnan(fill)) if not step.keep_empty_features else np.arange(len(fill))
    fill = np.where(np.isnan(fill), 0.0, fill)[keep]
    indicator = step.indicator_.features_ if step.add_indicator else None

    def impute(X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        out = np.where(missing, fill_full, X)[:, keep]
        if indicator is None:
            return out
        return np.hstack([out, missing[:, indicator].astype(np.float64)])

    fill_full = np.zeros(len(step.statistics_))
    fill_full[keep] = fill
    return impute

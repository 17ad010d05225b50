"""Evidently's default drift tests, computed in-process for every window in milliseconds.

Rendering an Evidently report takes seconds, so the monitor judges every window itself, with the tests
Evidently would pick for a numerical column (``_get_default_stattest`` of Evidently's registry): with more
than 1,000 reference values, the normed Wasserstein distance (Jensen-Shannon distance when the column
takes at most 5 distinct values), threshold 0.1; with fewer, the K-S test (chi-square for 3..5 distinct
values, a Z-test of proportions for 1..2), p-value threshold 0.05. NaN and infinite values are left out,
as Evidently does.

One rule of our own, passed to Evidently as the column's method so its report agrees: a window with at
most 500 values of a column is judged by the K-S test against a large reference, not by a distance. A
distance does not know how few values it saw. Windows drawn from the reference itself (the unit tests'
shop, 40 windows of each size) crossed the 0.1 threshold in every column at 20 rows, in 64 % of columns
at 100 rows, 30 % at 200, 12 % at 300, 5 % at 500 and none at 1,000; the K-S test flagged 1-3 % at every
size. So a handful of rows (the tail of a model's predictions at a promotion) read "28 of 28 columns
drifted". From 500 rows on the distance errs no more often than the test, and keeps Evidently's choice.
The verdicts equal those of the rendered report (``tests/unit`` checks both agree).

The reference side of every test (sorted values, spread, distinct values) is prepared once per model
version in :class:`ReferenceStats`; a window then costs one sort per column.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = ReferenceStats({"x": rng.normal(0, 1, 5000)})
>>> column_drift(ref["x"], rng.normal(0, 1, 2000))["drifted"]
False
>>> d = column_drift(ref["x"], rng.normal(0.5, 1, 2000))
>>> d["method"], d["drifted"], d["score"] > d["threshold"]
('Wasserstein distance (normed)', True, True)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WASSERSTEIN = "Wasserstein distance (normed)"
JENSEN_SHANNON = "Jensen-Shannon distance"
KS = "K-S p_value"
CHI_SQUARE = "chi-square p_value"
Z_TEST = "Z-test p_value"

_DISTANCE_THRESHOLD = 0.1
_P_VALUE_THRESHOLD = 0.05
_SMALL_REFERENCE = 1000  # Evidently's switch from p-value tests to distances
_SMALL_CURRENT = 500  # ours, for the window's side (see the module docstring)
_FEW_VALUES = 5


@dataclass(frozen=True, slots=True)
class ColumnReference:
    """One reference column, ready for every test: finite values sorted, their spread and few values."""

    values: np.ndarray
    std: float
    distinct: np.ndarray | None  # the distinct values when there are at most 5, else None

    @classmethod
    def of(cls, values: Any) -> ColumnReference:
        array = np.asarray(values, dtype="float64")
        finite = np.sort(array[np.isfinite(array)], kind="stable")
        distinct = _distinct_sorted(finite, _FEW_VALUES)
        std = float(np.std(finite)) if finite.size else 0.0
        return cls(values=finite, std=std, distinct=distinct)


class ReferenceStats:
    """Column name -> :class:`ColumnReference`, built once per model version."""

    def __init__(self, columns: Mapping[str, Any]) -> None:
        self.columns = {name: ColumnReference.of(values) for name, values in columns.items()}
        # Columns judged by the Wasserstein distance (many values, a large reference), stacked by
        # reference size: a window then judges all of them in a handful of numpy calls, which matters
        # in a process whose other threads (the Kafka client) compete for the GIL.
        groups: dict[int, list[str]] = {}
        for name, ref in self.columns.items():
            if ref.distinct is None and ref.values.size > _SMALL_REFERENCE:
                groups.setdefault(ref.values.size, []).append(name)
        self.stacks = {
            size: (
                names,
                np.vstack([self.columns[n].values for n in names]),
                np.maximum([self.columns[n].std for n in names], 0.001),
            )
            for size, names in groups.items()
        }

    def __getitem__(self, name: str) -> ColumnReference:
        return self.columns[name]

    def usable(self, names: Sequence[str]) -> list[str]:
        """The names the reference has with at least one finite value."""
        return [n for n in names if n in self.columns and self.columns[n].values.size > 0]


def column_drift(reference: ColumnReference, current: Any) -> dict[str, Any] | None:
    """``{method, score, threshold, drifted}`` of one column, or None when either side has no value."""
    cur = np.asarray(current, dtype="float64")
    cur = cur[np.isfinite(cur)]
    ref = reference.values
    if cur.size == 0 or ref.size == 0:
        return None
    n_values = _n_distinct(reference, cur)
    if ref.size <= _SMALL_REFERENCE:
        if n_values <= 2:
            method, score, threshold = Z_TEST, _z_test(ref, cur), _P_VALUE_THRESHOLD
            drifted = score < threshold
        elif n_values <= _FEW_VALUES:
            method, score, threshold = CHI_SQUARE, _chi_square(ref, cur), _P_VALUE_THRESHOLD
            drifted = score < threshold
        else:
            method, score, threshold = _ks(ref, cur)
            drifted = score <= threshold
    elif _small_window(ref.size, cur.size):
        method, score, threshold = _ks(ref, cur)
        drifted = score <= threshold
    elif n_values <= _FEW_VALUES:
        method, score, threshold = JENSEN_SHANNON, _jensen_shannon(ref, cur), _DISTANCE_THRESHOLD
        drifted = score >= threshold
    else:
        method, threshold = WASSERSTEIN, _DISTANCE_THRESHOLD
        score = _wasserstein(ref, np.sort(cur)) / max(reference.std, 0.001)
        drifted = score >= threshold
    return {
        "method": method,
        "score": _number(score),
        "threshold": threshold,
        "drifted": bool(drifted),  # a NaN score (degenerate Z-test) compares False, as in Evidently
    }


def evidently_method(reference: ColumnReference, current: Any) -> str | None:
    """The method to ask of Evidently for this column, when it is not Evidently's own default: ``"ks"``
    for a small window against a large reference (see the module docstring)."""
    finite = int(np.isfinite(np.asarray(current, dtype="float64")).sum())
    return "ks" if finite and _small_window(reference.values.size, finite) else None


def _small_window(reference_values: int, current_values: int) -> bool:
    """Whether a column is judged by the K-S test for the window's few values (the module docstring)."""
    return reference_values > _SMALL_REFERENCE and current_values <= _SMALL_CURRENT


def _ks(ref: np.ndarray, cur: np.ndarray) -> tuple[str, float, float]:
    from scipy.stats import ks_2samp

    return KS, float(ks_2samp(ref, cur)[1]), _P_VALUE_THRESHOLD


@dataclass(slots=True)
class Verdict:
    """The drift verdict of one window: per column, prediction drift, share and dataset drift."""

    columns: dict[str, dict[str, Any]]
    prediction_drift: dict[str, Any] | None
    dataset_drift: bool
    drift_share: float
    drifted_columns: list[str]
    skipped_columns: list[str]


def window_verdict(
    current: Mapping[str, Any],
    reference: ReferenceStats,
    features: Sequence[str],
    *,
    prediction_column: str | None,
    drift_share: float,
) -> Verdict:
    """Judge ``current`` (column -> values) against ``reference`` as the Evidently report does.

    A feature without a finite value on either side is skipped (listed in ``skipped_columns``); the
    dataset drifts when the share of drifted features is at least ``drift_share``.
    """
    columns: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    wanted = [name for name in features if _both(name, current, reference)]
    if prediction_column and prediction_column not in wanted and _both(prediction_column, current, reference):
        wanted.append(prediction_column)
    stacked = _stacked_wasserstein(current, reference, wanted)
    for name in features:
        if name in stacked:
            columns[name] = stacked[name]
            continue
        result = column_drift(reference[name], current[name]) if _both(name, current, reference) else None
        if result is None:
            skipped.append(name)
        else:
            columns[name] = result
    prediction = None
    if (
        prediction_column
        and prediction_column not in columns
        and _both(prediction_column, current, reference)
    ):
        prediction = stacked.get(prediction_column) or column_drift(
            reference[prediction_column], current[prediction_column]
        )
    drifted = [name for name, result in columns.items() if result["drifted"]]
    share = len(drifted) / len(columns) if columns else 0.0
    return Verdict(
        columns=columns,
        prediction_drift=prediction,
        dataset_drift=bool(columns) and share >= drift_share,
        drift_share=round(share, 4),
        drifted_columns=drifted,
        skipped_columns=skipped,
    )


def _stacked_wasserstein(
    current: Mapping[str, Any], reference: ReferenceStats, names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """:func:`column_drift` of the stacked Wasserstein columns whose current values are all finite."""
    out: dict[str, dict[str, Any]] = {}
    wanted = set(names)
    for size, (stack_names, values, std) in reference.stacks.items():
        rows = [i for i, name in enumerate(stack_names) if name in wanted]
        if not rows:
            continue
        matrix = np.vstack([np.asarray(current[stack_names[i]], dtype="float64") for i in rows])
        if _small_window(size, matrix.shape[1]):
            continue  # a small window: the K-S test, column by column
        finite = np.isfinite(matrix).all(axis=1)
        if not finite.any():
            continue  # columns with a missing value take the one-column path
        keep = np.asarray(rows)[finite]
        ordered = np.sort(matrix[finite], axis=1)
        iu, iv, weights = _quantile_grid(size, ordered.shape[1])
        distances = (np.abs(values[keep][:, iu] - ordered[:, iv]) @ weights) / std[keep]
        for i, distance in zip(keep, distances, strict=True):
            out[stack_names[i]] = {
                "method": WASSERSTEIN,
                "score": _number(distance),
                "threshold": _DISTANCE_THRESHOLD,
                "drifted": bool(distance >= _DISTANCE_THRESHOLD),
            }
    return out


def _both(name: str, current: Mapping[str, Any], reference: ReferenceStats) -> bool:
    return name in current and name in reference.columns


def _distinct_sorted(values: np.ndarray, limit: int) -> np.ndarray | None:
    """Distinct values of a sorted array when there are at most ``limit``, else None."""
    if values.size == 0:
        return values
    starts = np.flatnonzero(np.diff(values)) + 1
    if starts.size + 1 > limit:
        return None
    return values[np.concatenate(([0], starts))]


def _n_distinct(reference: ColumnReference, current: np.ndarray) -> int:
    """Distinct values of reference and current together, exact up to 5 (6 means "more")."""
    if reference.distinct is None:
        return _FEW_VALUES + 1
    mine = np.unique(current)
    if mine.size > _FEW_VALUES:
        return _FEW_VALUES + 1
    return int(np.union1d(reference.distinct, mine).size)


def _wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples: scipy's ``wasserstein_distance``, as the area
    between the quantile functions, so a window costs a gather instead of a search (no sorting)."""
    iu, iv, weights = _quantile_grid(u.size, v.size)
    return float(np.dot(weights, np.abs(u[iu] - v[iv])))


@functools.lru_cache(maxsize=16)
def _quantile_grid(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the quantile functions of samples of sizes ``n`` and ``m`` step, in units of 1/(n*m): for
    each stretch between steps, the index into each sorted sample and the stretch's length."""
    steps = np.union1d(np.arange(n + 1, dtype=np.int64) * m, np.arange(m + 1, dtype=np.int64) * n)
    starts = steps[:-1]
    return starts // m, starts // n, np.diff(steps) / (n * m)


def _shares(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = np.union1d(np.unique(ref), np.unique(cur))
    ref_counts = np.bincount(np.searchsorted(keys, ref), minlength=keys.size).astype("float64")
    cur_counts = np.bincount(np.searchsorted(keys, cur), minlength=keys.size).astype("float64")
    return keys, ref_counts, cur_counts


def _jensen_shannon(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.spatial import distance

    _, ref_counts, cur_counts = _shares(ref, cur)
    return float(distance.jensenshannon(ref_counts / ref.size, cur_counts / cur.size))


def _chi_square(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import chisquare

    _, ref_counts, cur_counts = _shares(ref, cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(chisquare(cur_counts, ref_counts * (cur.size / ref.size))[1])


def _z_test(ref: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import norm

    keys = np.union1d(np.unique(ref), np.unique(cur))
    if keys.size == 1:
        return 1.0
    p1 = float(np.mean(ref != keys[0]))
    p2 = float(np.mean(cur != keys[0]))
    pooled = (p1 * ref.size + p2 * cur.size) / (ref.size + cur.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / ref.size + 1.0 / cur.size))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def _number(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None

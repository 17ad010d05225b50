"""The in-process drift tests give Evidently's verdicts: same method, score and decision per column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from churnstream.monitoring.report import run_drift_report
from churnstream.monitoring.stattests import (
    ColumnReference,
    ReferenceStats,
    _wasserstein,
    column_drift,
    window_verdict,
)

COLUMNS = ["amount", "days", "tenure", "tickets", "flag", "level", "mostly_empty", "constant"]


def frame(n: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    """A column of each kind Evidently treats differently: continuous, few values, binary, 3..5 values."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3 + shift, 0.5, n)
    amount[rng.random(n) < 0.05] = np.nan
    empty = np.full(n, np.nan)
    empty[: max(1, n // 100)] = rng.normal(0, 1, max(1, n // 100)) + shift
    return pd.DataFrame(
        {
            "amount": amount,
            "days": rng.exponential(20 + 10 * shift, n),  # no missing values: judged with the stacked columns
            "tenure": rng.gamma(2, 50, n),
            "tickets": rng.poisson(1.0 + shift, n).clip(0, 4).astype(float),
            "flag": (rng.random(n) < 0.3 + shift / 4).astype(float),
            "level": rng.integers(0, 3, n).astype(float) + (rng.random(n) < shift / 2),
            "mostly_empty": empty,
            "constant": np.ones(n),
            "churn_probability": 1 / (1 + np.exp(-rng.normal(shift, 1, n))),
        }
    )


@pytest.mark.parametrize(
    ("reference_rows", "current_rows", "shift"),
    [
        (3000, 1000, 0.0),
        (3000, 1000, 0.4),
        (800, 500, 0.0),
        (800, 500, 0.4),
        (20_000, 5000, 0.15),
        (3000, 500, 0.0),  # a small window against a large reference: the K-S test on both sides
        (3000, 500, 0.4),
        (5000, 3, 0.0),
    ],
)
def test_in_process_verdict_equals_evidently(reference_rows: int, current_rows: int, shift: float) -> None:
    reference = frame(reference_rows, seed=1)
    current = frame(current_rows, seed=2, shift=shift)
    evidently = run_drift_report(current, reference, COLUMNS, drift_share=0.5)
    mine = window_verdict(
        {c: current[c].to_numpy() for c in current.columns},
        ReferenceStats({c: reference[c].to_numpy() for c in reference.columns}),
        COLUMNS,
        prediction_column="churn_probability",
        drift_share=0.5,
    )
    assert set(mine.columns) == set(evidently.columns)
    for name, theirs in evidently.columns.items():
        ours = mine.columns[name]
        assert ours["method"] == theirs["method"], name
        assert ours["drifted"] == theirs["drifted"], (name, ours, theirs)
        assert ours["threshold"] == pytest.approx(theirs["threshold"]), name
        if theirs["score"] is None:
            assert ours["score"] is None, name
        else:
            assert ours["score"] == pytest.approx(theirs["score"], rel=1e-4, abs=1e-6), (name, ours, theirs)
    assert mine.drifted_columns == evidently.drifted_columns
    assert mine.dataset_drift == evidently.dataset_drift and mine.drift_share == evidently.drift_share
    assert mine.prediction_drift is not None and evidently.prediction_drift is not None
    assert mine.prediction_drift["drifted"] == evidently.prediction_drift["drifted"]
    assert mine.prediction_drift["score"] == pytest.approx(evidently.prediction_drift["score"], rel=1e-4)


def test_the_methods_cover_each_kind_of_column() -> None:
    reference = frame(3000, seed=1)
    verdict = window_verdict(
        {c: frame(1000, seed=3)[c].to_numpy() for c in COLUMNS},
        ReferenceStats({c: reference[c].to_numpy() for c in COLUMNS}),
        COLUMNS,
        prediction_column=None,
        drift_share=0.5,
    )
    methods = {c: v["method"] for c, v in verdict.columns.items()}
    assert methods["amount"] == methods["days"] == "Wasserstein distance (normed)"
    assert methods["tickets"] == methods["flag"] == "Jensen-Shannon distance"
    small = ReferenceStats({c: reference[c].to_numpy()[:500] for c in COLUMNS})
    verdict = window_verdict(
        {c: frame(500, seed=3)[c].to_numpy() for c in COLUMNS},
        small,
        COLUMNS,
        prediction_column=None,
        drift_share=0.5,
    )
    methods = {c: v["method"] for c, v in verdict.columns.items()}
    assert methods["amount"] == "K-S p_value" and methods["flag"] == "Z-test p_value"
    assert methods["level"] == "chi-square p_value"
    verdict = window_verdict(  # a small window against the large reference: the K-S test, whatever the kind
        {c: frame(500, seed=3)[c].to_numpy() for c in COLUMNS},
        ReferenceStats({c: reference[c].to_numpy() for c in COLUMNS}),
        COLUMNS,
        prediction_column=None,
        drift_share=0.5,
    )
    assert {v["method"] for c, v in verdict.columns.items() if c != "mostly_empty"} == {"K-S p_value"}


def test_a_handful_of_rows_from_the_reference_is_not_drift() -> None:
    """The tail of a model's predictions at a promotion: two rows. By a distance, every column drifted."""
    reference = frame(5000, seed=1)
    stats = ReferenceStats({c: reference[c].to_numpy() for c in reference.columns})
    tails = [frame(5000, seed=s).iloc[:2] for s in range(20)]
    verdicts = [
        window_verdict(
            {c: t[c].to_numpy() for c in t.columns}, stats, COLUMNS, prediction_column=None, drift_share=0.5
        )
        for t in tails
    ]
    assert not any(v.dataset_drift for v in verdicts)
    distances = [
        column_drift(ColumnReference.of(reference["tenure"].to_numpy()), t["tenure"].to_numpy()[:2])
        for t in tails
    ]
    assert all(d is not None and d["method"] == "K-S p_value" for d in distances)


def test_a_column_without_values_is_skipped_not_judged() -> None:
    reference = ReferenceStats({"x": np.arange(2000.0), "y": np.full(2000, np.nan)})
    verdict = window_verdict(
        {"x": np.full(10, np.nan), "y": np.arange(10.0)},
        reference,
        ["x", "y", "z"],
        prediction_column=None,
        drift_share=0.3,
    )
    assert verdict.columns == {} and verdict.skipped_columns == ["x", "y", "z"]
    assert verdict.dataset_drift is False and verdict.drift_share == 0.0


def test_presorted_wasserstein_is_scipys() -> None:
    rng = np.random.default_rng(5)
    u, v = rng.gamma(2, 3, 7000), rng.gamma(2.2, 3, 1500).round(1)
    assert _wasserstein(np.sort(u), np.sort(v)) == pytest.approx(wasserstein_distance(u, v), rel=1e-12)
    assert ColumnReference.of([3.0, np.nan, 1.0, np.inf]).values.tolist() == [1.0, 3.0]

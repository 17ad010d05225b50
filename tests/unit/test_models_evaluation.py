"""The one ROC-AUC: equal to scikit-learn's, ties counted half, None without both classes."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churnstream.models.evaluation import evaluate, roc_auc


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_equals_scikit_learn_with_and_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    continuous = rng.random(500) + 0.3 * y
    tied = np.round(continuous, 1)  # many ties
    for scores in (continuous, tied):
        assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


def test_roc_auc_takes_plain_sequences_and_needs_both_classes() -> None:
    assert roc_auc(deque([0, 1, 0, 1]), deque([0.1, 0.9, 0.2, 0.8])) == 1.0
    assert roc_auc([0, 1], [0.7, 0.7]) == 0.5
    assert roc_auc([1, 0], [0.1, 0.9]) == 0.0
    assert roc_auc([], []) is None
    assert roc_auc([0, 0, 0], [0.1, 0.2, 0.3]) is None


def test_evaluate_reports_the_same_roc_auc() -> None:
    y = np.array([0, 1, 1, 0, 1, 0])
    p = np.array([0.2, 0.6, 0.9, 0.6, 0.4, 0.1])
    metrics = evaluate(y, p)
    assert metrics["roc_auc"] == roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert evaluate(np.ones(3, dtype=int), np.full(3, 0.5))["roc_auc"] is None


@pytest.mark.parametrize("metric", ["roc_auc", "pr_auc"])
def test_bootstrap_interval_equals_scikit_learn_on_the_same_resamples(metric: str) -> None:
    from sklearn.metrics import average_precision_score

    from churnstream.models.evaluation import bootstrap_interval

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.4 * y, 1)  # many ties
    # the helper draws all 200 resamples of 300 rows in one block from default_rng(seed)
    picks = np.random.default_rng(11).integers(0, 300, size=(200, 300))
    score_of = roc_auc_score if metric == "roc_auc" else average_precision_score
    expected = np.quantile([score_of(y[i], scores[i]) for i in picks], [0.025, 0.975])
    got = bootstrap_interval(y, scores, metric, resamples=200, seed=11)
    assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_bootstrap_interval_narrows_with_more_rows_and_needs_both_classes() -> None:
    from churnstream.models.evaluation import bootstrap_interval

    rng = np.random.default_rng(5)
    widths = []
    for n in (200, 20_000):
        y = rng.integers(0, 2, n)
        low, high = bootstrap_interval(y, rng.random(n) + 0.5 * y, resamples=300) or (0.0, 0.0)
        widths.append(high - low)
    assert widths[1] < widths[0] / 4
    assert bootstrap_interval([0, 0], [0.1, 0.2]) is None
    with pytest.raises(ValueError, match="roc_auc or pr_auc"):
        bootstrap_interval([0, 1], [0.1, 0.2], "brier")

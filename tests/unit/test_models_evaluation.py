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

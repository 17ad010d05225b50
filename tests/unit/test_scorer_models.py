"""ModelSet.score: rows of several partitions scored in one pass equal each partition's models alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from churnstream.features.definitions import FEATURE_NAMES
from churnstream.models.batch import BatchModel
from churnstream.models.blend import Blender
from churnstream.models.learner import Learner
from churnstream.models.online import OnlineModel
from churnstream.models.registry import ModelRegistry
from churnstream.streams.scorer import ModelSet


def _learner(seed: int, labels: int) -> Learner:
    rng = np.random.default_rng(seed)
    online, blender = OnlineModel(), Blender(min_pairs=50)
    X = rng.exponential(5.0, (labels, len(FEATURE_NAMES)))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (rng.random(labels) < 0.3).astype(int)
    online.learn_matrix(X, y)
    for i in range(min(labels, 300)):
        blender.observe(float(rng.random()), float(rng.random()), int(y[i]))
    return Learner(online, blender)


def test_one_pass_over_partitions_scores_each_row_as_its_own_partition_would(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.exponential(5.0, (400, len(FEATURE_NAMES)))
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500)).fit(
        X, (X[:, 0] > 5).astype(int)
    )
    model = BatchModel(
        estimator=estimator, feature_names=list(FEATURE_NAMES), medians=dict.fromkeys(FEATURE_NAMES, 1.0)
    )
    ModelRegistry(tmp_path).register(model, {}, promote=True)
    # partitions 0-2 differ (their own labels); partition 3 has too few labels to be ready
    learners = {p: _learner(p, 1500 + 300 * p) for p in range(3)} | {3: _learner(3, 10)}
    assert [learners[p].online.ready for p in range(4)] == [True, True, True, False]
    assert len({learners[p].blender.online_weight() for p in range(3)}) > 1  # the weights differ too
    models = ModelSet(registry=ModelRegistry(tmp_path), load_learner=learners.__getitem__)

    rows_X = rng.exponential(5.0, (60, len(FEATURE_NAMES)))
    rows_X[rng.random(rows_X.shape) < 0.1] = np.nan
    rows = [
        {n: (None if np.isnan(v) else float(v)) for n, v in zip(FEATURE_NAMES, r, strict=True)}
        for r in rows_X
    ]
    partitions = [int(p) for p in rng.integers(0, 4, len(rows))]
    _, batch_p, online_p, churn_p = models.score(rows, partitions)

    for i, p in enumerate(partitions):
        alone = learners[p]
        if p == 3:
            assert online_p[i] is None and churn_p[i] == batch_p[i]
            continue
        expected = float(alone.online.predict_matrix(rows_X[i : i + 1])[0])
        assert online_p[i] == expected, (i, p)
        assert churn_p[i] == alone.blender.blend(batch_p[i : i + 1], [expected])[0], (i, p)

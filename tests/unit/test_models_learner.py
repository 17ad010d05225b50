"""A learner restored from its snapshot plus log is the learner that wrote them."""

from __future__ import annotations

import random

import numpy as np
import pytest

from churnstream.errors import ModelIntegrityError
from churnstream.features.definitions import FEATURE_NAMES
from churnstream.models.learner import Learner


def _batch(rng: random.Random, n: int) -> tuple[list[list[float | None]], list[int], list[float], list]:
    vectors = [
        [None if rng.random() < 0.1 else rng.lognormvariate(1, 1) for _ in FEATURE_NAMES] for _ in range(n)
    ]
    labels = [int(v[3] is not None and v[3] > 3) for v in vectors]  # recency_days drives the label
    batch_p = [rng.random() for _ in range(n)]
    online_p = [None if rng.random() < 0.2 else rng.random() for _ in range(n)]
    return vectors, labels, batch_p, online_p


def test_snapshot_plus_log_restores_the_same_learner() -> None:
    """Batches of any size, scored (blend) in between as the worker does; after every batch a learner
    restored from what was written blends, predicts and holds exactly what the live one does."""
    rng = random.Random(7)
    live = Learner.restore(None, None, None)
    live.snapshot_every = 300  # many snapshots in ~4,300 labels, with chunks and refits between them
    written: dict[str, bytes] = {"log": b""}
    probe = np.array(_batch(rng, 50)[0], dtype=np.float64)
    snapshots = 0
    for step in range(120):
        vectors, labels, batch_p, online_p = _batch(rng, rng.choice([1, 3, 17, 40, 120]))
        live.blender.blend(np.array(batch_p), online_p)  # scoring may choose the weight again
        checkpoint = live.learn(vectors, labels, batch_p, online_p, feature_names=FEATURE_NAMES)
        if checkpoint.snapshot:
            written["online"], written["blender"] = live.snapshot_bytes()
            written["log"] = b""
            snapshots += 1
        else:
            written["log"] += checkpoint.log
        restored = Learner.restore(written.get("online"), written.get("blender"), written["log"])
        assert restored.online.n_learned == live.online.n_learned, step
        assert restored.online._buffer_y == live.online._buffer_y, step
        assert restored.blender.to_dict() == live.blender.to_dict(), step
        assert restored.blender.online_weight() == live.blender.online_weight(), step
        expected = live.online.predict_matrix(probe)
        np.testing.assert_array_equal(restored.online.predict_matrix(probe), expected)
    chunks = (live.online.n_learned - live.online.n_waiting) // live.online.chunk_size
    assert chunks > 5 and snapshots > 5  # both paths were taken many times
    assert live.online.ready and live.blender.weights()["pairs"] > 200


def test_a_log_is_much_smaller_than_a_snapshot() -> None:
    rng = random.Random(1)
    learner = Learner.restore(None, None, None)
    for _ in range(20):
        learner.learn(*_batch(rng, 40), feature_names=FEATURE_NAMES)
    checkpoint = learner.learn(*_batch(rng, 1), feature_names=FEATURE_NAMES)
    assert not checkpoint.snapshot
    assert len(checkpoint.log) * 20 < sum(map(len, learner.snapshot_bytes()))


def test_a_malformed_log_is_a_clear_error() -> None:
    with pytest.raises(ModelIntegrityError, match="learner log"):
        Learner.restore(None, None, b'[["a"], [["x"]]]\n')

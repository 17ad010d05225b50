"""A learner restored from its snapshot plus log is the learner that wrote them."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from churnstream.errors import ModelIntegrityError
from churnstream.features.definitions import FEATURE_NAMES
from churnstream.models.batch import BatchModel
from churnstream.models.learner import Learner
from churnstream.models.registry import ModelRegistry
from churnstream.models.serving import ModelSet


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
        np.testing.assert_array_equal(restored.online._buffer_y, live.online._buffer_y)
        np.testing.assert_array_equal(restored.online._buffer_X, live.online._buffer_X)
        assert restored.blender.to_dict() == live.blender.to_dict(), step
        assert restored.blender.online_weight() == live.blender.online_weight(), step
        expected = live.online.predict_matrix(probe)
        np.testing.assert_array_equal(restored.online.predict_matrix(probe), expected)
    chunks = (live.online.n_learned - live.online.n_waiting) // live.online.chunk_size
    assert chunks > 5 and snapshots > 5  # both paths were taken many times
    assert live.online.ready and live.blender.weights()["pairs"] > 200


def _ticks(rng: random.Random, cuts: list[int], rows: list) -> tuple[Learner, dict[str, bytes]]:
    """Labels handed over in batches ending at ``cuts`` and learned at every tick (each 200th label),
    written as the worker writes them."""
    learner = Learner.restore(None, None, None)
    learner.snapshot_every = 500
    written: dict[str, bytes] = {"log": b""}
    bounds = sorted({*cuts, *range(200, len(rows) + 1, 200), len(rows)})
    lo = 0
    for hi in bounds:
        part = rows[lo:hi]
        if part:
            keys, vectors, labels, batch_p, online_p = (list(c) for c in zip(*part, strict=True))
            written["log"] += learner.wait(
                keys, vectors, labels, batch_p, online_p, feature_names=FEATURE_NAMES
            )
        if hi % 200 == 0:
            checkpoint = learner.learn_waiting()
            if checkpoint.snapshot:
                written["online"], written["blender"] = learner.snapshot_bytes()
                written["log"] = b""
            else:
                written["log"] += checkpoint.log
        lo = hi
    return learner, written


def test_labels_learned_at_ticks_give_the_same_learner_whatever_batches_brought_them() -> None:
    """The worker hands labels to its learners as batches resolve them and has them learned at sweep
    ticks, in the labels' own order: batches cut anywhere (and labels arriving in another order between
    two ticks) give the same models, and a restore from what was written has the same labels waiting."""
    rng = random.Random(3)
    vectors, labels, batch_p, online_p = _batch(rng, 1150)
    rows = [
        ([i // 7, f"p{i:05d}"], v, y, b, o)
        for i, (v, y, b, o) in enumerate(zip(vectors, labels, batch_p, online_p, strict=True))
    ]
    one, written = _ticks(rng, list(range(0, 1150, 37)), rows)
    shuffled = [
        r for lo in range(0, 1150, 200) for r in rng.sample(rows[lo : lo + 200], len(rows[lo : lo + 200]))
    ]
    other, _ = _ticks(rng, list(range(0, 1150, 5)), shuffled)
    assert (
        one.online.n_learned == other.online.n_learned == 1000
        and len(one.waiting) == len(other.waiting) == 150
    )
    assert one.blender.to_dict() == other.blender.to_dict()
    probe = np.array(_batch(rng, 50)[0], dtype=np.float64)
    np.testing.assert_array_equal(one.online.predict_matrix(probe), other.online.predict_matrix(probe))
    restored = Learner.restore(written.get("online"), written.get("blender"), written["log"])
    assert restored.online.n_learned == 1000 and restored.waiting == one.waiting
    np.testing.assert_array_equal(restored.online.predict_matrix(probe), one.online.predict_matrix(probe))


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
    learner = Learner.restore(None, None, b"")
    line = learner.wait([[1, "p1"]], [[0.5]], [1], [0.4], [None], feature_names=["a"])
    assert Learner.restore(None, None, line).waiting  # a label of 1 is read back
    with pytest.raises(ModelIntegrityError, match="0 or 1"):  # the blender's loss holds for 0 and 1 only
        Learner.restore(None, None, line.replace(b",1,0.4,", b",2,0.4,"))


# --- River's conventions: one dict per event ------------------------------------------------------


def _rows(vectors: list[list[float | None]], rng: random.Random) -> list[dict[str, float | None]]:
    """Feature dicts, each with its keys in its own order (a dict's order must not matter)."""
    out = []
    for v in vectors:
        pairs = list(zip(FEATURE_NAMES, v, strict=True))
        rng.shuffle(pairs)
        out.append(dict(pairs))
    return out


def test_learning_one_dict_at_a_time_teaches_the_online_model_what_batches_do() -> None:
    rng = random.Random(3)
    one, batched = Learner.restore(None, None, None), Learner.restore(None, None, None)
    log = b""
    for size in [1, 30, 90, 90] * 3:  # 633 rows: two learned chunks of 256, short of a snapshot (1,024)
        vectors, labels, batch_p, online_p = _batch(rng, size)
        batched.learn(vectors, labels, batch_p, online_p, feature_names=FEATURE_NAMES)
        for x, y, b, o in zip(_rows(vectors, rng), labels, batch_p, online_p, strict=True):
            checkpoint = one.learn_one(x, y, batch_p=b, online_p=o)
            assert not checkpoint.snapshot  # snapshot_every (1,024) is not reached: all of it is in the log
            log += checkpoint.log
    assert one.online.ready and one.online.n_learned == batched.online.n_learned > 500
    probe = np.array(_batch(rng, 40)[0], dtype=np.float64)
    np.testing.assert_array_equal(one.online.predict_matrix(probe), batched.online.predict_matrix(probe))
    assert one.blender.n_observed == batched.blender.n_observed
    restored = Learner.restore(None, None, log)  # what learn_one wrote restores the same learner
    np.testing.assert_array_equal(restored.online.predict_matrix(probe), one.online.predict_matrix(probe))
    assert restored.blender.to_dict() == one.blender.to_dict()


def test_predict_proba_one_is_the_online_model_alone_or_the_blend() -> None:
    rng = random.Random(5)
    learner = Learner.restore(None, None, None)
    x = _rows(_batch(rng, 1)[0], rng)[0]
    assert learner.predict_proba_one(x) == {}  # nothing learned yet, as River answers
    assert learner.predict_proba_one(x, batch_p=0.25) == {0: 0.75, 1: 0.25}
    for _ in range(10):
        learner.learn(*_batch(rng, 100), feature_names=FEATURE_NAMES)
    assert learner.online.ready and 0.0 < learner.blender.online_weight() < 1.0
    vector = np.array([[x[n] for n in FEATURE_NAMES]], dtype=np.float64)
    online = float(learner.online.predict_matrix(vector)[0])
    assert learner.predict_proba_one(x) == {0: 1.0 - online, 1: online}
    w = learner.blender.online_weight()
    blended = learner.predict_proba_one(x, batch_p=0.25)
    assert blended[1] == pytest.approx((1 - w) * 0.25 + w * online, abs=1e-12)
    assert blended[0] == pytest.approx(1.0 - blended[1], abs=1e-12) and blended[1] != 0.25


def test_predict_proba_one_is_what_the_worker_serves(tmp_path: Path) -> None:
    """The one-dict prediction equals the batch path the worker scores with (ModelSet.score)."""
    rng = random.Random(11)
    learner = Learner.restore(None, None, None)
    for _ in range(10):
        learner.learn(*_batch(rng, 100), feature_names=FEATURE_NAMES)
    vectors, labels, _, _ = _batch(rng, 300)
    X = np.array(vectors, dtype=np.float64)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(C=0.01, max_iter=500)).fit(X, labels)
    model = BatchModel(
        estimator=estimator, feature_names=list(FEATURE_NAMES), medians=dict.fromkeys(FEATURE_NAMES, 1.0)
    )
    ModelRegistry(tmp_path).register(model, {}, promote=True)
    models = ModelSet(registry=ModelRegistry(tmp_path), load_learner=lambda p: learner)
    rows = _rows(_batch(rng, 50)[0], rng)
    _, batch_p, online_p, churn_p = models.score(rows, [0] * len(rows))
    assert 0.0 < learner.blender.online_weight() < 1.0
    for i, x in enumerate(rows):
        assert learner.predict_proba_one(x).get(1) == online_p[i]
        assert learner.predict_proba_one(x, batch_p=float(batch_p[i]))[1] == pytest.approx(
            churn_p[i], abs=1e-12
        )


def test_a_learner_s_serving_state_scores_and_explains_exactly_as_it_did(tmp_path: Path) -> None:
    """What the learner history keeps: a learner restored from it gives the scorer's probabilities and
    reasons bit for bit at every step, long after the live learner learned on, and learns nothing."""
    from churnstream.models.explain import explain

    rng = random.Random(3)
    live = Learner.restore(None, None, None)
    vectors, labels, _, _ = _batch(rng, 300)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(C=0.01, max_iter=500)).fit(
        np.array(vectors, dtype=np.float64), labels
    )
    model = BatchModel(
        estimator=estimator, feature_names=list(FEATURE_NAMES), medians=dict.fromkeys(FEATURE_NAMES, 1.0)
    )
    ModelRegistry(tmp_path).register(model, {}, promote=True)
    models = ModelSet(registry=ModelRegistry(tmp_path), load_learner=lambda p: live)
    rows = _rows(_batch(rng, 40)[0], rng)
    kept = []
    for _ in range(12):  # not ready, then ready, then weighted: each state kept with what it served
        _, _, online_p, churn_p = models.score(rows, [0] * len(rows))
        X = model.vectorize(rows)
        reasons = explain(model, live.online, live.blender, X, rows, top_k=3)
        kept.append((live.serving_bytes(), online_p, churn_p, reasons))
        live.learn(*_batch(rng, 60), feature_names=FEATURE_NAMES)
    assert kept[0][1][0] is None and kept[-1][1][0] is not None
    assert len({state for state, *_ in kept}) >= 3  # a state changes once a chunk of 256 is learned
    for state, online_p, churn_p, reasons in kept:
        past = Learner.serving_only(state)
        _, _, again_online, again_churn = models.score(rows, [7] * len(rows), learners={7: past})
        assert again_online == online_p
        np.testing.assert_array_equal(again_churn, churn_p)
        assert explain(model, past.online, past.blender, model.vectorize(rows), rows, top_k=3) == reasons
    with pytest.raises(TypeError, match="learns nothing"):
        past.learn(*_batch(rng, 300), feature_names=FEATURE_NAMES)
    with pytest.raises(ModelIntegrityError, match="serving state is malformed"):
        Learner.serving_only(b'{"format": 1, "names": ["a"]}')


def test_after_a_promotion_the_new_model_serves_alone_until_labels_of_its_own_come(tmp_path: Path) -> None:
    """The blend weight was chosen on the old batch model's probabilities and kept for the new one for a
    horizon or more; a promotion justified on batch-vs-batch evidence barely moved what was served."""
    rng = random.Random(5)
    learner = Learner.restore(None, None, None)
    lines: list[bytes] = []
    clock = 0

    def labels(n: int, version: str, *, start: int | None = None) -> None:
        nonlocal clock
        vectors, ys, _, _ = _batch(rng, n)
        first = clock if start is None else start
        keys = [[first + i, f"{version}-{first + i}"] for i in range(n)]
        online_p = [0.9 if y else 0.1 for y in ys]  # the online model was right: it earns weight
        lines.append(
            learner.wait(
                keys, vectors, ys, [0.5] * n, online_p, feature_names=FEATURE_NAMES, versions=[version] * n
            )
        )
        lines.append(learner.learn_waiting().log)
        clock = max(clock, first + n)

    labels(1000, "v0001")
    X = np.array(_batch(rng, 300)[0], dtype=np.float64)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500)).fit(
        X, rng.choices([0, 1], k=300)
    )
    model = BatchModel(
        estimator=estimator, feature_names=list(FEATURE_NAMES), medians=dict.fromkeys(FEATURE_NAMES, 1.0)
    )
    registry = ModelRegistry(tmp_path)
    registry.register(model, {}, promote=True)
    models = ModelSet(registry=registry, load_learner=lambda p: learner)
    rows = _rows(_batch(rng, 50)[0], rng)

    def served() -> tuple[np.ndarray, np.ndarray]:
        _, batch_p, _, churn_p = models.score(rows, [0] * len(rows))
        return batch_p, churn_p

    batch_p, churn_p = served()
    assert learner.blender.online_weight() == 1.0 and not np.allclose(batch_p, churn_p)
    registry.register(model, {}, promote=True)  # v0002, promoted
    assert models.maybe_reload()
    batch_p, churn_p = served()
    assert np.array_equal(batch_p, churn_p)  # v0002 alone
    labels(300, "v0001", start=clock - 500)  # v0001's predictions, labelled after the promotion
    assert learner.blender.version == "v0001" and np.array_equal(*served())
    labels(150, "v0002")  # v0002's first labels: its own window, not min_pairs yet
    assert learner.blender.version == "v0002" and np.array_equal(*served())
    labels(150, "v0002")
    batch_p, churn_p = served()
    assert learner.blender.online_weight() > 0.0 and not np.allclose(batch_p, churn_p)
    restored = Learner.restore(None, None, b"".join(lines))  # the log carries the versions
    assert restored.blender.to_dict() == learner.blender.to_dict()
    # ... at the end of each key, so a line keeps the shape the release before reads: [wait, names, rows]
    waited = [orjson.loads(line) for line in lines if line.startswith(b'["wait"')]
    assert all(len(line) == 3 and all(len(row[0]) == 3 for row in line[2]) for line in waited)

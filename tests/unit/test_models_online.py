"""The online learner: exact checkpoints, refusing corrupted ones, and learning as labels arrive."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnstream.errors import ModelIntegrityError
from churnstream.events import parse_time
from churnstream.features.definitions import FEATURE_NAMES
from churnstream.features.offline import read_events, training_table
from churnstream.models.online import OnlineModel
from churnstream.settings import DAY_MS
from churnstream.sources.simulate import SimulationConfig, simulate


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Labelled point-in-time rows of a small simulated shop, in the order their labels resolve."""
    out = tmp_path_factory.mktemp("world")
    simulate(
        SimulationConfig(customers=600, days=300, seed=11, start_ms=parse_time("2024-01-01T00:00:00Z")),
        out,
        progress_bar=False,
    )
    log = read_events(out)
    cutoffs = list(range(log.start + 30 * DAY_MS, log.end - 30 * DAY_MS, 7 * DAY_MS))
    table = training_table(log.events, cutoffs, horizon_ms=30 * DAY_MS, lateness_ms=0, progress=False)
    return table.sort_values("as_of", kind="stable").reset_index(drop=True)


def _rows(table: pd.DataFrame) -> list[dict[str, float | None]]:
    frame = table[list(FEATURE_NAMES)].astype(object)
    return frame.where(frame.notna(), None).to_dict("records")


def test_no_prediction_until_min_learned_labels(stream: pd.DataFrame) -> None:
    model = OnlineModel(min_learned=200)
    rows, labels = _rows(stream.iloc[:150]), stream["label"].iloc[:150].tolist()
    model.learn_many(rows, labels)
    assert model.n_learned == 150
    assert model.predict_many(rows[:3]) == [None, None, None]
    model.learn_many(_rows(stream.iloc[150:250]), stream["label"].iloc[150:250].tolist())
    assert model.n_waiting == 250  # fewer than one chunk (256): taken in, not learned yet
    assert model.predict_many(rows[:3]) == [None, None, None]
    model.learn_many(_rows(stream.iloc[250:300]), stream["label"].iloc[250:300].tolist())
    assert model.n_waiting == 300 - 256
    assert all(isinstance(p, float) and 0 < p < 1 for p in model.predict_many(rows[:3]))


def test_what_is_learned_does_not_depend_on_how_labels_are_batched(stream: pd.DataFrame) -> None:
    rows, labels = _rows(stream.iloc[:2000]), stream["label"].iloc[:2000].tolist()
    whole, pieces = OnlineModel(), OnlineModel()
    whole.learn_many(rows, labels)
    start = 0
    for size in [1, 7, 300, 13, 500, 2, 177] * 10:
        pieces.learn_many(rows[start : start + size], labels[start : start + size])
        start += size
        if start >= len(rows):
            break
    pieces.learn_many(rows[start:], labels[start:])
    held_out = _rows(stream.iloc[-300:])
    assert pieces.predict_many(held_out) == whole.predict_many(held_out)
    assert pieces.metrics() == whole.metrics()
    restored = OnlineModel.from_bytes(pieces.to_bytes())  # the waiting labels travel with the checkpoint
    assert restored.n_waiting == pieces.n_waiting == 2000 % 256


def test_vectorised_predictions_equal_the_river_pipeline(stream: pd.DataFrame) -> None:
    model = OnlineModel()
    model.learn_many(_rows(stream.iloc[:3000]), stream["label"].iloc[:3000].tolist())
    rows = _rows(stream.iloc[-20:])
    design = model.design(model.vectorize(rows))
    river = [model.pipeline.predict_proba_one(dict(zip(model.columns, d, strict=True)))[True] for d in design]
    np.testing.assert_allclose(model.predict_many(rows), river, rtol=1e-9)


def test_checkpoint_restores_the_same_state(stream: pd.DataFrame) -> None:
    model = OnlineModel(min_learned=100)
    half = len(stream) // 2
    model.learn_many(_rows(stream.iloc[:half]), stream["label"].iloc[:half].tolist())
    restored = OnlineModel.from_bytes(model.to_bytes())

    held_out = _rows(stream.iloc[-500:])
    assert restored.predict_many(held_out) == model.predict_many(held_out)
    assert restored.n_learned == model.n_learned == half
    assert restored.metrics() == model.metrics()
    assert restored.metrics()["roc_auc"] is not None

    # ... and keeps learning exactly as the original would
    more_rows, more_labels = (
        _rows(stream.iloc[half : half + 1000]),
        stream["label"].iloc[half : half + 1000].tolist(),
    )
    model.learn_many(more_rows, more_labels)
    restored.learn_many(more_rows, more_labels)
    assert restored.predict_many(held_out) == model.predict_many(held_out)
    assert restored.metrics() == model.metrics()


def test_corrupted_checkpoints_are_refused() -> None:
    model = OnlineModel(feature_names=["recency_days"], min_learned=1)
    model.learn_many([{"recency_days": 40.0}, {"recency_days": 1.0}] * 10, [1, 0] * 10)
    good = model.to_bytes()

    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    with pytest.raises(ModelIntegrityError, match="sha256"):
        OnlineModel.from_bytes(bytes(flipped))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        OnlineModel.from_bytes(good[:-1])
    with pytest.raises(ModelIntegrityError, match="magic"):
        OnlineModel.from_bytes(b"not a checkpoint at all, just some bytes....")
    with pytest.raises(ModelIntegrityError, match="format 9"):
        OnlineModel.from_bytes(good[:4] + bytes([9]) + good[5:])
    with pytest.raises(ModelIntegrityError, match="magic"):
        OnlineModel.from_bytes(pickle.dumps(model))
    assert OnlineModel.from_bytes(good).n_learned == 20


def test_auc_rises_as_labels_arrive(stream: pd.DataFrame) -> None:
    later = stream.iloc[int(len(stream) * 0.85) :]
    later_rows, later_labels = _rows(later), later["label"].to_numpy()
    training = stream.iloc[: int(len(stream) * 0.75)]

    model = OnlineModel(min_learned=200)
    aucs = []
    done = 0
    for upto in (300, len(training)):  # 300: one chunk of 256 learned, 44 waiting
        model.learn_many(_rows(training.iloc[done:upto]), training["label"].iloc[done:upto].tolist())
        done = upto
        aucs.append(roc_auc_score(later_labels, model.predict_many(later_rows)))
    few, many = aucs
    assert many > few + 0.05, aucs
    assert many > 0.8
    metrics = model.metrics()
    assert metrics["n_learned"] == len(training)
    assert 0 < metrics["n_evaluated"] < metrics["n_learned"]  # only labels seen after min_learned are scored
    assert metrics["roc_auc"] > 0.75 and 0 < metrics["log_loss"] < 0.69


def test_mismatched_rows_and_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 rows but 1 labels"):
        OnlineModel().learn_many([{}, {}], [1])

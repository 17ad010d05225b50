"""The shadow slot (#24): the registry keeps and logs it, workers score with it beside the current model,
and the shadow's probability travels from a prediction to its outcome."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from churnstream.cli import main
from churnstream.features.definitions import FEATURE_NAMES
from churnstream.features.labels import add_pending, resolve_by_event
from churnstream.features.state import new_state
from churnstream.models.batch import BatchModel
from churnstream.models.blend import Blender
from churnstream.models.learner import Learner
from churnstream.models.online import OnlineModel
from churnstream.models.registry import ModelRegistry
from churnstream.models.serving import ModelSet
from churnstream.predictions import Outcome, Prediction
from churnstream.schemas import schema

DAY_MS = 86_400_000


def _model(seed: int, column: int = 0) -> BatchModel:
    rng = np.random.default_rng(seed)
    X = rng.exponential(5.0, (400, len(FEATURE_NAMES)))
    y = (X[:, column] > 5).astype(int)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500)).fit(X, y)
    return BatchModel(
        estimator=estimator, feature_names=list(FEATURE_NAMES), medians=dict.fromkeys(FEATURE_NAMES, 1.0)
    )


def _rows(n: int) -> list[dict[str, float | None]]:
    rng = np.random.default_rng(9)
    return [
        {name: float(v) for name, v in zip(FEATURE_NAMES, r, strict=True)}
        for r in rng.exponential(5, (n, len(FEATURE_NAMES)))
    ]


def test_shadow_slot_is_kept_logged_cleared_and_emptied_by_promotion(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(_model(1), {}, promote=True)
    v2 = registry.register(_model(2), {})
    assert registry.shadow_version() is None
    registry.shadow(v2)
    assert ModelRegistry(tmp_path).shadow_version() == v2
    registry.shadow(None, reason="cleared")
    assert registry.shadow_version() is None
    registry.shadow(v2)
    registry.promote(v2)
    assert registry.current_version() == v2 and registry.shadow_version() is None
    log = [(e["action"], e["version"]) for e in registry.log()]
    assert log == [
        ("promote", v1),
        ("shadow", v2),
        ("shadow", None),
        ("shadow", v2),
        ("promote", v2),
        ("shadow", None),
    ]


def test_models_command_shadows_lists_and_clears(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(1), {}, promote=True)
    registry.register(_model(2), {})
    base = ["models", "--model-dir", str(tmp_path)]
    assert main([*base, "shadow", "v0002"]) == 0
    assert main([*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert "champion: v0001   shadow: v0002" in listing and "s v0002" in listing and "* v0001" in listing
    assert main([*base, "shadow", "v0001"]) == 1  # the current model cannot shadow itself
    assert main([*base, "shadow", "v0009"]) == 1
    assert main([*base, "shadow", "--clear"]) == 0
    assert registry.shadow_version() is None


def test_model_set_scores_the_shadow_and_follows_the_slot(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(1, column=0), {}, promote=True)
    v2 = registry.register(_model(2, column=3), {})
    models = ModelSet(
        registry=ModelRegistry(tmp_path), load_learner=lambda p: Learner(OnlineModel(), Blender())
    )
    rows = _rows(40)
    X, batch_p, _, _ = models.score(rows, [0] * len(rows))
    assert models.shadow_score(rows, X) is None
    registry.shadow(v2)
    models.maybe_reload()
    shadow_p = models.shadow_score(rows, X)
    assert shadow_p is not None and models.shadow.version == v2
    expected = registry.load(v2).model.predict_proba(registry.load(v2).model.vectorize(rows))
    assert np.allclose(shadow_p, expected) and not np.allclose(shadow_p, batch_p)
    registry.shadow(None)
    models.maybe_reload()
    assert models.shadow is None


def test_the_shadow_travels_from_prediction_to_outcome_and_validates() -> None:
    state = new_state()
    add_pending(
        state,
        "p1",
        DAY_MS,
        0.4,
        None,
        0.4,
        [],
        horizon_ms=90 * DAY_MS,
        lateness_ms=0,
        recency_days=1.0,
        shadow=["v0002", 0.7],
    )
    add_pending(state, "p0", 0, 0.3, None, 0.3, [], horizon_ms=90 * DAY_MS, lateness_ms=0, recency_days=None)
    resolved = {
        r.prediction_id: r for r in resolve_by_event(state, 2 * DAY_MS, churned=None, horizon_ms=90 * DAY_MS)
    }
    assert resolved["p1"].shadow == ["v0002", 0.7] and resolved["p0"].shadow is None
    outcome = Outcome("p1", "c1", DAY_MS, 2 * DAY_MS, 0, "order", 0.4, None, 0.4, "v0002", 0.7)
    body = outcome.to_json()
    assert body["shadow_model_version"] == "v0002" and body["shadow_probability"] == 0.7
    Draft202012Validator(schema("churn_outcomes")).validate(body)
    plain = Outcome("p0", "c1", 0, 2 * DAY_MS, 0, "order", 0.3, None, 0.3).to_json()
    assert "shadow_model_version" not in plain
    prediction = Prediction(
        "p1",
        "c1",
        DAY_MS,
        DAY_MS,
        "event",
        "e1",
        "v0001",
        0.4,
        None,
        0.4,
        "LOW",
        dict.fromkeys(FEATURE_NAMES, 1.0),
        1.0,
        "v0002",
        0.7,
    )
    Draft202012Validator(schema("churn_predictions")).validate(prediction.to_json())
    assert json.loads(json.dumps(prediction.to_json()))["shadow_probability"] == 0.7


def test_a_shadow_that_cannot_be_loaded_is_skipped_and_scoring_goes_on(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(1), {}, promote=True)
    v2 = registry.register(_model(2), {})
    registry.shadow(v2)
    with open(tmp_path / v2 / "model.pkl", "ab") as handle:  # tampered after it went into shadow
        handle.write(b"x")
    models = ModelSet(
        registry=ModelRegistry(tmp_path), load_learner=lambda p: Learner(OnlineModel(), Blender())
    )
    rows = _rows(5)
    X, batch_p, _, _ = models.score(rows, [0] * 5)
    assert models.shadow is None and models.shadow_score(rows, X) is None and len(batch_p) == 5
    models.maybe_reload()
    assert models.shadow is None

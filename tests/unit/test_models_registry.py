"""The model registry: roundtrips, refusing tampered artifacts before unpickling, promotion and rollback."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from churnstream.cli import main
from churnstream.errors import ModelIntegrityError, ModelNotFoundError
from churnstream.models.batch import BatchModel, Calibration
from churnstream.models.registry import ModelRegistry

NAMES = ["recency_days", "orders_90d"]


def _model(seed: int = 0) -> BatchModel:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.exponential(30, 400), rng.poisson(3, 400)]).astype(float)
    y = (X[:, 0] + rng.normal(0, 10, 400) > 30).astype(int)
    estimator = LogisticRegression().fit(X, y)
    model = BatchModel(
        estimator=estimator, feature_names=NAMES, medians={"recency_days": 20.0, "orders_90d": 3.0}
    )
    model.calibration = Calibration.fit(model.raw_score(X), y, "sigmoid")
    return model


def _reference() -> pd.DataFrame:
    return pd.DataFrame(
        {"recency_days": [1.0, 50.0], "orders_90d": [4.0, 0.0], "churn_probability": [0.1, 0.9]}
    )


class _SideEffect:
    """Unpickling this creates a directory: proof that a pickle's bytes were executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_register_then_load_gives_the_same_model_metadata_and_reference(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    model = _model()
    version = registry.register(
        model, {"metrics": {"chosen": {"pr_auc": 0.8}}}, reference=_reference(), promote=True
    )

    loaded = ModelRegistry(tmp_path / "models").load()
    X = np.array([[3.0, 5.0], [90.0, 0.0], [40.0, 1.0]])
    assert loaded.version == version == "v0001"
    np.testing.assert_array_equal(loaded.model.predict_proba(X), model.predict_proba(X))
    assert loaded.metadata["metrics"]["chosen"]["pr_auc"] == 0.8
    assert loaded.metadata["feature_names"] == NAMES
    assert len(loaded.metadata["sha256"]) == 64
    assert (loaded.path / "model.sha256").read_text().split()[0] == loaded.metadata["sha256"]
    pd.testing.assert_frame_equal(loaded.reference, _reference())
    assert (loaded.path / "MODEL_CARD.md").read_text().startswith("# Churn model v0001")


def test_one_changed_byte_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.register(_model(), {}, promote=True)
    artifact = tmp_path / version / "model.pkl"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))

    with pytest.raises(ModelIntegrityError, match="sha256"):
        registry.load(version)
    with pytest.raises(ModelIntegrityError):
        registry.promote(version)


def test_tampered_artifact_is_refused_before_its_bytes_are_unpickled(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register(_model(), {}, promote=True)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_SideEffect(marker))
    (tmp_path / "models" / version / "model.pkl").write_bytes(evil)

    with pytest.raises(ModelIntegrityError):
        registry.load()
    assert not marker.exists()  # the payload never ran

    pickle.loads(evil)  # ... although it would have, had the registry unpickled it
    assert marker.is_dir()


def test_promote_rollback_and_the_pointer_survive_a_new_registry_object(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(_model(1), {}, promote=True)
    v2 = registry.register(_model(2), {}, promote=True)
    v3 = registry.register(_model(3), {}, promote=False)
    assert registry.versions() == [v1, v2, v3]
    assert registry.current_version() == v2

    registry.promote(v3)
    assert ModelRegistry(tmp_path).current_version() == v3
    assert (tmp_path / "current").read_text().strip() == v3
    assert registry.rollback() == v2
    assert registry.rollback() == v1
    assert ModelRegistry(tmp_path).load().version == v1
    with pytest.raises(ModelNotFoundError, match="nothing to roll back"):
        registry.rollback()
    assert registry.current_version() == v1
    log = json.loads((tmp_path / "history.json").read_text())["log"]
    assert [entry["action"] for entry in log] == ["promote", "promote", "promote", "rollback", "rollback"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_half_written_versions_are_invisible(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(), {}, promote=True)
    (tmp_path / ".tmp-crashed").mkdir()
    (tmp_path / ".tmp-crashed" / "model.pkl").write_bytes(b"partial")
    assert registry.versions() == ["v0001"]
    assert registry.register(_model(), {}) == "v0002"


def test_missing_registry_and_versions_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no model registry at .*churnstream train --events"):
        ModelRegistry(tmp_path / "nowhere").load()
    registry = ModelRegistry(tmp_path)
    assert registry.current_version() is None
    registry.register(_model(), {}, promote=False)
    with pytest.raises(ModelNotFoundError, match="promote v0001"):
        registry.load()
    with pytest.raises(ModelNotFoundError, match="no model version v0042"):
        registry.load("v0042")
    with pytest.raises(ModelNotFoundError):
        registry.load("../etc")


def test_models_command_lists_promotes_and_rolls_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(1), {"chosen": "lr", "metrics": {"chosen": {"pr_auc": 0.5}}}, promote=True)
    registry.register(_model(2), {"chosen": "hgb", "metrics": {"chosen": {"pr_auc": 0.7}}})

    assert main(["models", "--model-dir", str(tmp_path), "promote", "v0002"]) == 0
    assert main(["models", "--model-dir", str(tmp_path), "list"]) == 0
    listing = capsys.readouterr().out
    assert "* v0002" in listing and "  v0001" in listing and "0.700" in listing
    assert main(["models", "--model-dir", str(tmp_path), "show"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v0002"
    assert main(["models", "--model-dir", str(tmp_path), "rollback"]) == 0
    assert registry.current_version() == "v0001"
    assert main(["models", "--model-dir", str(tmp_path), "show", "v0009"]) == 1
    capsys.readouterr()
    assert main(["models", "--model-dir", str(tmp_path), "promote", "v0009"]) == 1
    said = capsys.readouterr()
    assert "no model version v0009" in said.err and "shadow" not in said.out  # only the real error

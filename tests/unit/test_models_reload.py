"""A promoted model this release cannot load (another release's artifact: a class it does not have)
is refused once, and the model being served goes on; the version is tried again once its files are
written again, and a later promotion is taken up."""

from __future__ import annotations

import json
import pickle
import sys
import types
from pathlib import Path

import pytest

from churnstream.errors import ModelIntegrityError
from churnstream.models.blend import Blender
from churnstream.models.learner import Learner
from churnstream.models.online import OnlineModel
from churnstream.models.registry import HASH_FILE, METADATA_FILE, MODEL_FILE, ModelRegistry, sha256_hex
from churnstream.models.serving import ModelSet
from tests.unit.test_models_shadow import _model


def register_unloadable(registry: ModelRegistry, *, promote: bool = False) -> str:
    """A version whose artifact is intact (its sha256 checks) but pickles a class of a module this
    release does not have, as a model trained by a newer release would."""
    version = registry.register(_model(7), {})
    module = types.ModuleType("churnstream_future_release")
    exec("class GradientBoostedModelV2:\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        data = pickle.dumps(module.GradientBoostedModelV2())
    finally:
        del sys.modules[module.__name__]
    vdir = registry.root / version
    (vdir / MODEL_FILE).write_bytes(data)
    (vdir / HASH_FILE).write_text(f"{sha256_hex(data)}  {MODEL_FILE}\n", encoding="utf-8")
    metadata = json.loads((vdir / METADATA_FILE).read_text(encoding="utf-8"))
    (vdir / METADATA_FILE).write_text(json.dumps(dict(metadata, sha256=sha256_hex(data))), encoding="utf-8")
    if promote:  # as by hand, or by an older release: `promote` itself refuses it (test below)
        with registry._lock():
            registry._set_current(version, action="promote")
    return version


def test_promote_shadow_and_rollback_refuse_a_version_workers_could_not_serve(tmp_path: Path) -> None:
    """A review promoted a model this release cannot unpickle: `promote` said it was current, the running
    scorer kept the old one, and every scorer or API started afterwards exited at start-up. A model
    reading a feature churnstream does not compute was served with NaN in that column, silently."""
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(_model(1), {}, promote=True)
    broken = register_unloadable(registry)
    with pytest.raises(ModelIntegrityError, match="cannot be loaded by this release"):
        registry.promote(broken)
    with pytest.raises(ModelIntegrityError, match="cannot be loaded by this release"):
        registry.shadow(broken)
    other = _model(2)
    other.feature_names = [*other.feature_names[:-1], "recency_days_v2"]
    renamed = registry.register(other, {})
    with pytest.raises(ModelIntegrityError, match="does not compute: recency_days_v2"):
        registry.promote(renamed)
    assert registry.current_version() == v1 and registry.shadow_version() is None


def test_a_promoted_model_that_cannot_be_loaded_is_refused_once_and_the_served_one_goes_on(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(_model(1), {}, promote=True)
    models = ModelSet(
        registry=ModelRegistry(tmp_path), load_learner=lambda p: Learner(OnlineModel(), Blender())
    )
    broken = register_unloadable(registry, promote=True)
    with pytest.raises(
        ModelIntegrityError, match="cannot be loaded by this release of churnstream"
    ) as caught:
        models.maybe_reload()
    assert "ModuleNotFoundError" in str(caught.value) and "churnstream models rollback" in str(caught.value)
    assert models.maybe_reload() is False  # said once, not at every poll
    assert models.version == v1
    # the registry and the served model disagree: the scorer's /health says so while it lasts
    assert f"serving {v1}: model version {broken}: model.pkl cannot be loaded" in str(models.not_served())
    # the artifact is written again (a copy by hand finished, a fixed artifact): tried again
    for name in (MODEL_FILE, HASH_FILE, METADATA_FILE):
        (registry.root / broken / name).write_bytes((registry.root / v1 / name).read_bytes())
    assert models.maybe_reload() is True and models.version == broken and models.not_served() is None
    v3 = registry.register(_model(3), {}, promote=True)
    assert models.maybe_reload() is True and models.version == v3
    assert broken not in (v1, v3)


def test_a_worker_started_while_the_current_model_cannot_load_serves_the_earlier_one(tmp_path: Path) -> None:
    """A review's restarted scorer, and the API, exited at start while the registry's current model could
    not be loaded, though the running workers kept serving the earlier one. Started now, they serve that
    one too, and say so; with no earlier model that loads, the start still fails, saying why."""
    registry = ModelRegistry(tmp_path)
    v1 = registry.register(_model(1), {}, promote=True)
    broken = register_unloadable(registry, promote=True)  # made current by hand
    models = ModelSet(
        registry=ModelRegistry(tmp_path), load_learner=lambda p: Learner(OnlineModel(), Blender())
    )
    assert models.version == v1
    assert f"serving {v1}: model version {broken}: model.pkl cannot be loaded" in str(models.not_served())
    assert models.maybe_reload() is False  # not tried again until its files change
    alone = ModelRegistry(tmp_path / "alone")
    register_unloadable(alone, promote=True)
    with pytest.raises(ModelIntegrityError, match="cannot be loaded by this release"):
        ModelSet(registry=alone, load_learner=lambda p: Learner(OnlineModel(), Blender()))

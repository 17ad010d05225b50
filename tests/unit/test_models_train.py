"""End to end on a small simulated shop: train registers a calibrated model that beats recency alone,
chosen among every candidate on the time splits; short histories train under a smaller plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from churnstream.cli import main
from churnstream.errors import ModelError
from churnstream.events import parse_time
from churnstream.features.definitions import FEATURE_NAMES, REQUIRED_FEATURES
from churnstream.models.candidates import candidates
from churnstream.models.registry import ModelRegistry
from churnstream.models.train import TrainConfig, plan_cutoffs, train
from churnstream.models.train_report import summary_table
from churnstream.settings import DAY_MS, Settings
from churnstream.sources.simulate import SimulationConfig, simulate

START = parse_time("2024-01-01T00:00:00Z")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    simulate(SimulationConfig(customers=1500, days=360, seed=5, start_ms=START), out, progress_bar=False)
    return out


@pytest.fixture(scope="module")
def registry(world: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    root = tmp_path_factory.mktemp("models")
    assert main(["train", "--events", str(world), "--out", str(root)]) == 0
    return ModelRegistry(root)


def test_train_registers_and_promotes_a_model_with_held_out_metrics(registry: ModelRegistry) -> None:
    loaded = registry.load()
    meta = loaded.metadata
    assert registry.current_version() == loaded.version == "v0001"
    assert meta["horizon_days"] == 30
    assert meta["feature_names"] == list(FEATURE_NAMES)
    assert meta["plan"]["kind"] == "full" and meta["plan"]["unchecked"] == []
    tried = [c["name"] for c in meta["candidates"] if c["role"] == "candidate"]
    assert list(meta["metrics"]["candidates"]) == tried  # every candidate tried is reported
    assert [c.name for c in candidates(TrainConfig()) if c.role == "candidate"] == tried[:5]
    assert {"logistic_regression", "hist_gradient_boosting", "random_forest"} <= set(tried)
    assert set(meta["metrics"]["baselines"]) == {"recency_only", "lr_required_features", "constant_base_rate"}
    for metrics in (*meta["metrics"]["candidates"].values(), *meta["metrics"]["baselines"].values()):
        assert {"roc_auc", "pr_auc", "brier", "ece", "log_loss", "rows"} <= set(metrics)
    chosen = meta["metrics"]["chosen"]
    assert chosen == meta["metrics"]["candidates"][meta["chosen"]]
    # chosen by the mean of the selection metric over the two rolling-origin splits
    assert meta["metrics"]["splits"] == ["calibration", "test"]
    for metrics in meta["metrics"]["candidates"].values():
        by_split = [metrics["splits"][name]["pr_auc"] for name in ("calibration", "test")]
        assert metrics["selection_score"] == pytest.approx(np.mean(by_split), abs=1e-4)
    scores = [m["selection_score"] for m in meta["metrics"]["candidates"].values()]
    assert chosen["selection_score"] == max(scores)
    # held out in time: train < calibration < test, each H apart
    splits = meta["splits"]
    assert parse_time(splits["train"]["to"]) + 30 * DAY_MS <= parse_time(splits["calibration"]["from"])
    assert parse_time(splits["calibration"]["to"]) + 30 * DAY_MS <= parse_time(splits["test"]["from"])
    assert meta["training_window"]["start"] < meta["training_window"]["end"]
    assert len(loaded.metadata["sha256"]) == 64
    assert meta["served_model"]["fitted_on"].startswith("every labelled cutoff, the test period included")


def test_the_model_beats_recency_alone_on_held_out_time_and_is_calibrated(registry: ModelRegistry) -> None:
    meta = registry.load().metadata
    chosen, recency = meta["metrics"]["chosen"], meta["metrics"]["baselines"]["recency_only"]
    assert chosen["pr_auc"] > recency["pr_auc"]
    assert chosen["roc_auc"] > recency["roc_auc"]
    assert chosen["brier"] < meta["metrics"]["baselines"]["constant_base_rate"]["brier"]
    assert chosen["ece"] < 0.06


def test_the_table_shows_every_candidate_by_split(registry: ModelRegistry) -> None:
    loaded = registry.load()
    table = summary_table(loaded.metadata, loaded.version, promoted=True).splitlines()
    for name, metrics in loaded.metadata["metrics"]["candidates"].items():
        mark = "*" if name == loaded.metadata["chosen"] else ""
        row = next(line for line in table if line.startswith(f"{name}{mark} "))
        cells = row.split()
        by_split = [metrics["splits"][s]["pr_auc"] for s in ("calibration", "test")]
        assert cells[2:5] == [f"{v:.4f}" for v in (*by_split, metrics["selection_score"])]


def test_reference_sample_and_model_card(registry: ModelRegistry) -> None:
    loaded = registry.load()
    reference = loaded.reference
    assert list(reference.columns) == [*FEATURE_NAMES, "churn_probability"]
    assert 100 < len(reference) <= 5000
    assert reference["churn_probability"].between(0, 1).all()
    card = (loaded.path / "MODEL_CARD.md").read_text()
    assert "# Churn model v0001" in card and "recency_only" in card and "random_forest" in card
    assert "**Plan** `full`" in card


def test_the_loaded_model_scores_feature_dicts_with_missing_values(registry: ModelRegistry) -> None:
    model = registry.load().model
    rows = [
        {name: None for name in FEATURE_NAMES},
        {"orders_total": 5, "recency_days": 2.0, "orders_30d": 3, "tenure_days": 200.0},
        {"orders_total": 5, "recency_days": 150.0, "orders_30d": 0, "tenure_days": 300.0},
    ]
    p = model.predict_proba(model.vectorize(rows))
    assert p.shape == (3,) and np.all((p > 0) & (p < 1))
    assert p[2] > p[1]
    assert set(REQUIRED_FEATURES) <= set(model.medians)


def test_no_promote_registers_without_changing_current(world: Path, registry: ModelRegistry) -> None:
    config = TrainConfig(hgb_max_iter=20, max_rows=20_000)
    version = train(world, registry.root, settings=Settings(), promote=False, progress=False, config=config)
    assert version == "v0002"
    assert registry.current_version() == "v0001"
    assert (
        json.loads((registry.root / version / "metadata.json").read_text())["sampling"]["customer_fraction"]
        < 1
    )


def test_too_little_history_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelError, match="not enough history"):
        plan_cutoffs(START, START + 100 * DAY_MS, horizon_ms=90 * DAY_MS, config=TrainConfig())
    short = tmp_path / "short"
    simulate(SimulationConfig(customers=50, days=50, seed=1, start_ms=START), short, progress_bar=False)
    capsys.readouterr()
    assert main(["train", "--events", str(short), "--out", str(tmp_path / "m")]) == 1
    error = capsys.readouterr().err
    assert "not enough history to build a single labelled example" in error
    assert "need at least 60 (a 30-day warm-up and one 30-day horizon)" in error
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").glob("v*"))


def test_the_served_model_is_fitted_on_every_labelled_row_the_newest_period_included() -> None:
    from churnstream.models.selection import Rows, _fit, refit_on_every_label
    from churnstream.models.time_split import FULL, Plan

    rng = np.random.default_rng(3)
    n = 600
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    test = np.arange(n) >= 400
    rows = Rows(
        X=X,
        y=y,
        masks={"train": ~test, "test": test, "production_fit": np.arange(n) < 300},
        folds=np.arange(n) % 3,
        feature_names=["a", "b"],
        medians={"a": 0.0, "b": 0.0},
        eval_medians={"a": 0.0, "b": 0.0},
    )
    plan = Plan(
        cutoffs=[0],
        step_ms=DAY_MS,
        horizon_ms=DAY_MS,
        test_from=0,
        cal_from=0,
        cal_to=0,
        train_to=0,
        prod_fit_to=0,
    )
    assert plan.kind == FULL
    cand = next(c for c in candidates(TrainConfig()) if c.name == "logistic_regression")
    served = refit_on_every_label(cand, plan, rows)
    assert served is not None
    on_everything = _fit(cand, rows, np.ones(n, dtype=bool), rows.medians)
    on_older = _fit(cand, rows, rows.masks["production_fit"], rows.medians)
    assert np.allclose(served.raw_score(X), on_everything.raw_score(X))
    assert not np.allclose(served.raw_score(X), on_older.raw_score(X))
    p = served.predict_proba(X)
    order = np.argsort(served.raw_score(X))
    assert np.all(np.diff(p[order]) >= -1e-12)  # calibration keeps the ranking
    assert p.min() > 0.0 and p.max() < 1.0


def test_risk_categories_do_not_sit_at_the_models_cap(registry: ModelRegistry) -> None:
    """The deciles of every held-out score sat at the model's cap (HIGH and MEDIUM both 0.999 on a
    simulated shop: a third of the scores were long-gone customers), and a customer at 0.95 read LOW."""
    risk = registry.load().metadata["risk_thresholds"]
    assert 0.3 < risk["medium"] < risk["high"] < 0.999, risk

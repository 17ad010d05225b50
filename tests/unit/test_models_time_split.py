"""Training plans: the long-history plan is unchanged, shorter histories get smaller plans that keep the
purged time split, and only a history without a single labelled example is refused. Then end to end: a
year at H=90, six months at H=30 and five months at H=90 train and register a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from churnstream.cli import main
from churnstream.errors import ModelError
from churnstream.events import parse_time
from churnstream.models.registry import ModelRegistry
from churnstream.models.time_split import (
    FULL,
    NO_PERIOD,
    ONE_PERIOD,
    PLAN_KINDS,
    Plan,
    TrainConfig,
    crossfit_folds,
    history_needed,
    plan_cutoffs,
)
from churnstream.settings import DAY_MS
from churnstream.sources.simulate import SimulationConfig, simulate

START = parse_time("2024-01-01T00:00:00Z")
CDNOW_START = parse_time("1997-01-01T00:00:00Z")


def _legacy(start: int, end: int, horizon_ms: int) -> tuple[list[int], int, int, int, int, int]:
    """The plan as it was before short histories were handled (cutoffs, step, test_from, cal_from,
    cal_to, train_to), for spans it accepted."""
    t_max, t_min = end - horizon_ms, start + 30 * DAY_MS
    span = t_max - t_min
    step = int((7.0 if span < 365 * DAY_MS else 14.0) * DAY_MS)
    period = max(2 * step, int(round(0.12 * span / step)) * step)
    test_from = t_max - period
    cal_to = test_from - horizon_ms
    cal_from = cal_to - period
    cutoffs = list(range(t_max, t_min - 1, -step))[::-1]
    return cutoffs, step, test_from, cal_from, cal_to, cal_from - horizon_ms


@pytest.mark.parametrize(
    ("until", "horizon_days"),
    [
        ("1998-03-31T22:34:35Z", 90),  # the CDNOW log up to the bench's scoring cutoff
        ("1998-06-30T21:10:00Z", 90),  # all of CDNOW
        ("1998-06-30T21:10:00Z", 30),
        ("1997-09-30T23:00:00Z", 30),  # the demo's training window
    ],
)
def test_the_long_history_plan_is_unchanged(until: str, horizon_days: int) -> None:
    end, horizon_ms = parse_time(until), horizon_days * DAY_MS
    plan = plan_cutoffs(CDNOW_START, end, horizon_ms=horizon_ms, config=TrainConfig())
    cutoffs, step, test_from, cal_from, cal_to, train_to = _legacy(CDNOW_START, end, horizon_ms)
    assert plan.kind == FULL
    assert (plan.cutoffs, plan.step_ms, plan.test_from, plan.cal_from, plan.cal_to) == (
        cutoffs,
        step,
        test_from,
        cal_from,
        cal_to,
    )
    assert (plan.train_to, plan.prod_fit_to) == (train_to, test_from - horizon_ms)


@pytest.mark.parametrize(
    ("days", "horizon_days", "kind"),
    [
        (364, 90, ONE_PERIOD),
        (272, 90, ONE_PERIOD),
        (182, 30, FULL),
        (150, 90, NO_PERIOD),
        (120, 90, NO_PERIOD),
    ],
)
def test_shorter_histories_get_smaller_plans(days: int, horizon_days: int, kind: str) -> None:
    plan = plan_cutoffs(START, START + days * DAY_MS, horizon_ms=horizon_days * DAY_MS, config=TrainConfig())
    assert plan.kind == kind
    masks = plan.masks(np.array(plan.cutoffs))
    assert masks["train"].sum() >= 1
    assert masks["test"].any() == (kind != NO_PERIOD)
    assert masks["calibration"].any() == (kind == FULL)


def _check_purged(plan: Plan) -> None:
    """Every split is scored by a model whose labels end before the split's first cutoff."""
    as_of = np.array(plan.cutoffs)
    masks = plan.masks(as_of)
    for _, fitted_on, scored in plan.folds():
        assert masks[fitted_on].any() and masks[scored].any()
        assert as_of[masks[fitted_on]].max() + plan.horizon_ms <= as_of[masks[scored]].min()
    if masks["test"].any():  # the served model is fitted on labels that end before test, calibrated on it
        assert as_of[masks["production_fit"]].max() + plan.horizon_ms <= as_of[masks["test"]].min()
        assert as_of[masks["train"]].max() + plan.horizon_ms <= as_of[masks["test"]].min()


@pytest.mark.parametrize("horizon_days", [14, 30, 90])
def test_every_plan_keeps_the_purged_time_split(horizon_days: int) -> None:
    horizon_ms = horizon_days * DAY_MS
    kinds = set()
    for days in range(30 + horizon_days, 900, 3):
        plan: Plan | None = plan_cutoffs(
            START, START + days * DAY_MS, horizon_ms=horizon_ms, config=TrainConfig()
        )
        assert plan is not None
        kinds.add(plan.kind)
        while plan is not None:  # and so does every fallback, with the same cutoffs
            _check_purged(plan)
            fallback = plan.fallback()
            assert fallback is None or fallback.cutoffs == plan.cutoffs
            plan = fallback
    assert kinds == set(PLAN_KINDS)


@pytest.mark.parametrize("horizon_days", [30, 90])
def test_history_needed_is_where_each_plan_starts(horizon_days: int) -> None:
    horizon_ms = horizon_days * DAY_MS
    needed = history_needed(horizon_ms, TrainConfig())
    assert needed[NO_PERIOD] == 30 + horizon_days
    assert needed[NO_PERIOD] < needed[ONE_PERIOD] < needed[FULL]
    for kind, days in needed.items():
        plan = plan_cutoffs(START, START + days * DAY_MS, horizon_ms=horizon_ms, config=TrainConfig())
        assert PLAN_KINDS.index(plan.kind) <= PLAN_KINDS.index(kind)
        if days - 1 >= needed[NO_PERIOD]:
            before = plan_cutoffs(
                START, START + (days - 1) * DAY_MS, horizon_ms=horizon_ms, config=TrainConfig()
            )
            assert PLAN_KINDS.index(before.kind) > PLAN_KINDS.index(kind)
    with pytest.raises(
        ModelError, match=f"need at least {needed[NO_PERIOD]} .* {needed[FULL]} the full plan"
    ):
        plan_cutoffs(
            START, START + (needed[NO_PERIOD] - 1) * DAY_MS, horizon_ms=horizon_ms, config=TrainConfig()
        )


def test_crossfit_folds_keep_each_customer_whole_and_are_balanced() -> None:
    customers = [f"c{i}" for i in range(3000)]
    rows = customers * 3
    folds = crossfit_folds(rows, 3, seed=0)
    assert (folds[:3000] == folds[3000:6000]).all() and (folds[:3000] == folds[6000:]).all()
    counts = np.bincount(folds[:3000], minlength=3)
    assert counts.min() > 900
    assert not (crossfit_folds(customers, 3, seed=1) == folds[:3000]).all()


def _world(tmp_path_factory: pytest.TempPathFactory, days: int, seed: int) -> Path:
    out = tmp_path_factory.mktemp(f"shop{days}")
    simulate(SimulationConfig(customers=1200, days=days, seed=seed, start_ms=START), out, progress_bar=False)
    return out


@pytest.mark.parametrize(
    ("days", "horizon_days", "kind"),
    [(365, 90, ONE_PERIOD), (182, 30, FULL), (150, 90, NO_PERIOD)],
    ids=["a-year-at-H90", "six-months-at-H30", "five-months-at-H90"],
)
def test_short_histories_train_and_register_a_model(
    days: int,
    horizon_days: int,
    kind: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = _world(tmp_path_factory, days, seed=days)
    root = tmp_path_factory.mktemp("models")
    monkeypatch.setenv("CHURN_HORIZON_DAYS", str(horizon_days))
    assert main(["train", "--events", str(world), "--out", str(root)]) == 0
    registry = ModelRegistry(root)
    loaded = registry.load()
    assert registry.current_version() == loaded.version == "v0001"
    meta = loaded.metadata
    assert meta["horizon_days"] == horizon_days
    assert meta["plan"]["kind"] == kind
    assert meta["plan"]["history_days"]["events"] == pytest.approx(days, abs=1.5)
    assert (meta["plan"]["unchecked"] == []) == (kind == FULL)
    for what in meta["plan"]["unchecked"]:  # said in the log and in the model card
        assert what in caplog.text
        assert what in (loaded.path / "MODEL_CARD.md").read_text()
    chosen = meta["metrics"]["chosen"]
    recency = meta["metrics"]["baselines"]["recency_only"]
    assert chosen["roc_auc"] > recency["roc_auc"]
    assert chosen["brier"] < meta["metrics"]["baselines"]["constant_base_rate"]["brier"]
    splits = meta["splits"]
    if kind == NO_PERIOD:
        assert meta["chosen"] == "logistic_regression"  # nothing to choose on
        assert list(meta["metrics"]["candidates"]) == ["logistic_regression"]
        assert splits["test"] == {"rows": 0} and meta["metrics"]["splits"] == []
        assert "cross-fitted over customers" in meta["metrics"]["evaluated_on"]
    else:
        assert len(meta["metrics"]["candidates"]) > 2
        assert parse_time(splits["train"]["to"]) + horizon_days * DAY_MS <= parse_time(splits["test"]["from"])
        scores = [m["selection_score"] for m in meta["metrics"]["candidates"].values()]
        assert chosen["selection_score"] == max(scores)
    model = loaded.model  # it scores what the scorer will serve
    p = model.predict_proba(loaded.reference[model.feature_names].to_numpy(dtype=np.float64))
    assert np.all((p > 0) & (p < 1)) and p.std() > 0.01
    assert json.loads((root / "v0001" / "metadata.json").read_text())["plan"]["kind"] == kind

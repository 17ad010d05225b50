"""Champion vs shadow evidence (#24) and what the monitor does with it: promote, roll back, retrain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from churnstream.models.registry import ModelRegistry
from churnstream.monitoring.evidence import compare, evidence_from_outcomes, pr_auc, roc_auc
from churnstream.settings import Settings
from churnstream.streams.retrain import LoopWatch
from tests.unit.test_models_shadow import _model

DAY_MS = 86_400_000


def _outcomes(n: int, *, shadow_better: bool, version: str = "v0002", seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    good = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    poor = np.clip(0.3 + 0.05 * (y - 0.3) + rng.normal(0, 0.2, n), 0, 1)
    champion, shadow = (poor, good) if shadow_better else (good, poor)
    return [
        {
            "as_of": int(i * DAY_MS // 10),
            "label": int(y[i]),
            "batch_probability": float(champion[i]),
            "shadow_probability": float(shadow[i]),
            "shadow_model_version": version,
        }
        for i in range(n)
    ]


def test_metrics_equal_scikit_learns_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(10):
        y = (rng.random(500) < 0.2).astype(int)
        p = np.round(rng.random(500), 1)
        assert abs(roc_auc(y, p) - roc_auc_score(y, p)) < 1e-12  # type: ignore[operator]
        assert abs(pr_auc(y, p) - average_precision_score(y, p)) < 1e-12  # type: ignore[operator]
    assert roc_auc(np.zeros(5, dtype=int), np.ones(5)) is None


def test_the_interval_decides_and_equal_models_are_undecided() -> None:
    better = evidence_from_outcomes(_outcomes(1500, shadow_better=True), shadow_version="v0002")
    worse = evidence_from_outcomes(_outcomes(1500, shadow_better=False), shadow_version="v0002")
    assert better["cumulative"]["verdict"] == "better" and worse["cumulative"]["verdict"] == "worse"
    assert all(better["cumulative"][m]["difference"] > 0 for m in ("roc_auc", "pr_auc", "alert_value"))
    low, high = better["cumulative"]["roc_auc"]["interval"]
    assert 0 < low <= better["cumulative"]["roc_auc"]["difference"] <= high
    assert len(better["windows"]) == 22 and sum(w["labels"] for w in better["windows"]) == 1500
    rng = np.random.default_rng(1)
    y = (rng.random(1000) < 0.3).astype(int)
    p = rng.random(1000)
    assert compare(y, p, p)["verdict"] == "undecided"
    assert compare(y[:50], p[:50], p[:50])["verdict"] == "too few labels"
    other = evidence_from_outcomes(
        _outcomes(300, shadow_better=True, version="v0009"), shadow_version="v0002"
    )
    assert other["cumulative"]["labels"] == 0 and other["cumulative"]["verdict"] == "too few labels"


def _registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path)
    registry.register(_model(1), {}, promote=True)
    registry.register(_model(2), {})
    return registry


def test_the_monitor_promotes_a_better_shadow_only_when_the_policy_is_set(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(1500, shadow_better=True)
    off = LoopWatch(Settings(model_dir=tmp_path), outcomes=lambda: rows)
    evidence = off.on_report("none")
    assert evidence is not None and evidence["cumulative"]["verdict"] == "better"
    assert registry.current_version() == "v0001"  # no policy: the evidence is only reported
    assert registry.evidence() == evidence
    too_few = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.01, auto_promote_min_labels=5000),
        outcomes=lambda: rows,
    )
    too_few.on_report("none")
    assert registry.current_version() == "v0001"
    on = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.01, auto_promote_min_labels=1000),
        outcomes=lambda: rows,
    )
    on.on_report("none")
    assert registry.current_version() == "v0002" and registry.shadow_version() == "v0001"
    # the demoted model in shadow: if the new one does worse on later labels, the same rule rolls back
    later = _outcomes(1500, shadow_better=True, version="v0001", seed=4)
    LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.01, auto_promote_min_labels=1000),
        outcomes=lambda: later,
    ).on_report("none")
    assert registry.current_version() == "v0001" and registry.shadow_version() == "v0002"


def test_a_worse_shadow_is_never_promoted(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    registry.shadow("v0002")
    rows = _outcomes(3000, shadow_better=False)
    watch = LoopWatch(
        Settings(model_dir=tmp_path, auto_promote_margin=0.0, auto_promote_min_labels=100),
        outcomes=lambda: rows,
    )
    assert watch.on_report("retrain")["cumulative"]["verdict"] == "worse"  # type: ignore[index]
    assert registry.current_version() == "v0001" and registry.shadow_version() == "v0002"


class _Process:
    def __init__(self) -> None:
        self.code: int | None = None

    def poll(self) -> int | None:
        return self.code


def test_retrain_on_advice_starts_one_retrain_at_a_time_without_a_shadow(tmp_path: Path) -> None:
    _registry(tmp_path)
    started: list[_Process] = []

    def start() -> _Process:
        started.append(_Process())
        return started[-1]

    never = LoopWatch(Settings(model_dir=tmp_path), outcomes=list, start_retrain=start)
    never.on_report("retrain")
    assert started == []
    watch = LoopWatch(Settings(model_dir=tmp_path, retrain_on_advice=1), outcomes=list, start_retrain=start)
    watch.on_report("watch")
    assert started == []
    watch.on_report("retrain")
    watch.on_report("retrain")
    assert len(started) == 1  # one at a time
    started[0].code = 0
    watch.on_report("retrain")
    assert len(started) == 2
    started[1].code = 0
    ModelRegistry(tmp_path).shadow("v0002")
    watch.on_report("retrain")  # a candidate is in shadow already: its evidence comes first
    assert len(started) == 2


def test_the_alert_value_replays_the_policy_on_probability_times_the_customers_value() -> None:
    """Outcomes carry customer_value, so the replayed policy picks by value at risk as the real one does:
    a valuable churner with a low probability outranks cheap likely churners."""
    labels, champion, values = [1, 0, 0, 1], [0.9, 0.8, 0.1, 0.2], [1.0, 1.0, 1.0, 100.0]
    outcomes = [
        {
            "as_of": 1_700_000_000_000 + i,
            "label": y,
            "batch_probability": p,
            "shadow_model_version": "v2",
            "shadow_probability": p,
            "customer_value": v,
        }
        for i, (y, p, v) in enumerate(zip(labels, champion, values, strict=True))
    ]
    by_value = evidence_from_outcomes(outcomes, shadow_version="v2", share=0.5, samples=10)
    assert by_value["cumulative"]["alert_value"]["champion"] == 1.0  # rows 3 (value 100) and 0: both churned
    unknown = [{k: v for k, v in o.items() if k != "customer_value"} for o in outcomes]
    by_probability = evidence_from_outcomes(unknown, shadow_version="v2", share=0.5, samples=10)
    assert by_probability["cumulative"]["alert_value"]["champion"] == 0.5  # rows 0 and 1

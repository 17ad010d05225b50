"""Evidently drift reports on synthetic data: a shifted column is flagged and named, equal data is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnstream.messages import MonitoringBatch
from monitoring.monitor import DriftMonitor, MonitorConfig
from monitoring.reference import FrameSource
from monitoring.report import ReportStore, run_drift_report

FEATURES = ["spent_total", "avg_order_value", "tickets_90d", "recency_days", "orders_total"]


def frame(n: int, seed: int, *, shift: dict[str, float] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "spent_total": rng.lognormal(5, 0.6, n),
            "avg_order_value": rng.lognormal(3.5, 0.4, n),
            "tickets_90d": rng.poisson(1.2, n).astype(float),
            "recency_days": rng.exponential(20, n),
            "orders_total": rng.poisson(8, n).astype(float),
        }
    )
    df["churn_probability"] = 1 / (1 + np.exp(-(df["recency_days"] / 20 - 1)))
    for column, factor in (shift or {}).items():
        df[column] = df[column] * factor
    return df


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return frame(3000, seed=1)


def test_shifted_columns_are_flagged_and_named(reference: pd.DataFrame) -> None:
    current = frame(1000, seed=2, shift={"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5})
    result = run_drift_report(current, reference, FEATURES)
    assert set(result.drifted_columns) == {"spent_total", "avg_order_value", "tickets_90d"}
    assert result.dataset_drift is True
    assert result.drift_share == pytest.approx(3 / 5)
    column = result.columns["spent_total"]
    assert set(column) == {"method", "score", "threshold", "drifted"}
    assert column["drifted"] is True and column["score"] > column["threshold"]
    assert result.columns["recency_days"]["drifted"] is False
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is False
    assert "churn_probability" not in result.columns


def test_same_distribution_is_not_drift(reference: pd.DataFrame) -> None:
    result = run_drift_report(frame(1000, seed=3), reference, FEATURES)
    assert result.dataset_drift is False
    assert result.drifted_columns == []
    assert result.drift_share == 0.0


def test_prediction_drift_is_reported_apart(reference: pd.DataFrame) -> None:
    current = frame(1000, seed=4)
    current["churn_probability"] = np.clip(current["churn_probability"] + 0.3, 0, 1)
    result = run_drift_report(current, reference, FEATURES)
    assert result.prediction_drift is not None and result.prediction_drift["drifted"] is True
    assert result.dataset_drift is False


def test_empty_columns_are_skipped(reference: pd.DataFrame) -> None:
    current = frame(500, seed=5)
    current["age"] = np.nan
    result = run_drift_report(current, reference, [*FEATURES, "age"])
    assert result.skipped_columns == ["age"]
    assert "age" not in result.columns


def _batches(df: pd.DataFrame, version: str, t0: int, size: int = 250) -> list[MonitoringBatch]:
    out = []
    for lo in range(0, len(df), size):
        part = df.iloc[lo : lo + size]
        n = len(part)
        predictions: dict[str, list[Any]] = {c: part[c].tolist() for c in part.columns}
        predictions["as_of"] = [t0 + lo + i for i in range(n)]
        predictions["customer_id"] = [f"c{lo + i}" for i in range(n)]
        outcomes: dict[str, list[Any]] = {
            "labeled_at": predictions["as_of"],
            "label": [int(p > 0.5) for p in part["churn_probability"]],
            "source": ["order"] * n,
            "batch_probability": part["churn_probability"].tolist(),
            "online_probability": [None] * n,
            "churn_probability": part["churn_probability"].tolist(),
        }
        out.append(MonitoringBatch(f"b{lo}", 0, version, FEATURES, predictions, outcomes))
    return out


def test_monitor_reports_windows_and_writes_files(tmp_path: Path, reference: pd.DataFrame) -> None:
    store = ReportStore(tmp_path / "reports")
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=store,
        config=MonitorConfig(window_rows=1000),
        url_base="http://127.0.0.1:8088",
    )
    drifted = frame(1000, seed=7, shift={"spent_total": 1.6, "avg_order_value": 1.6, "tickets_90d": 2.5})
    pending = []
    for batch in _batches(
        pd.concat([frame(1000, seed=6), drifted, frame(100, seed=8)]), "v1", 1_700_000_000_000
    ):
        pending += monitor.add(batch)
    assert len(pending) == 2 and monitor.rows_pending == 100
    reports = [monitor.render(p) for p in pending]
    assert [r.dataset_drift for r in reports] == [False, True]
    message = reports[1].to_json()
    assert set(message["drifted_columns"]) == {"spent_total", "avg_order_value", "tickets_90d"}
    assert message["rows"] == 1000 and message["reference_rows"] == 3000
    assert message["url"] == f"http://127.0.0.1:8088/reports/{message['report_id']}"
    assert message["concept_drift"]["detector"] == "ADWIN"
    assert message["model_auc"]["blend"] == 1.0
    assert Path(message["html_path"]).stat().st_size > 100_000
    saved = json.loads(store.json_path(message["report_id"]).read_text())
    assert saved["dataset_drift"] is True and "evidently" in saved
    assert [m["report_id"] for m in store.load_messages()] == [r.report_id for r in reports]
    assert (store.workspace_path).is_dir()


def test_bootstrap_reference_when_the_source_has_none(tmp_path: Path) -> None:
    class Nothing:
        def reference(self, model_version: str) -> None:
            return None

    monitor = DriftMonitor(
        references=Nothing(),
        store=ReportStore(tmp_path, workspace=False),
        config=MonitorConfig(window_rows=500),
    )
    pending = []
    for batch in _batches(frame(2000, seed=9), "v9", 0):
        pending += monitor.add(batch)
    # windows 1 and 2 become the reference; 3 and 4 are reported against it
    assert len(pending) == 2
    assert monitor.reference_rows("v9") == 1000
    assert pending[0].extra["reference_source"] == "stream"

"""The shadow's evidence (#24) through the running monitor, real Kafka: with a model in shadow and labelled
outcomes on ``churn_outcomes``, every drift report carries the evidence, and the monitor's list, each
window's own page and each window's run in the Evidently UI show it, and the dashboard's "champion vs
shadow" panel draws both ROC-AUCs, one point per window each (in headless Chromium; its screenshot is kept
as ``artifacts/evidently_shadow_panel.png``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from churnstream.models.registry import ModelRegistry
from churnstream.monitoring.pages import evidence_summary
from churnstream.monitoring.ui import SHADOW_PANEL, WINDOW_VALUE_METRIC, project_for
from churnstream.settings import Settings, Topics
from tests.integration.conftest import produce_raw
from tests.integration.test_monitor import ROOT, run_monitor, settled_reports, wait_reports
from tests.integration.test_monitor_browser import (
    ROWS,
    T0,
    _batches,
    _panels,
    browser,
    chromium,
    evidently_ui,
)
from tests.unit.test_models_shadow import _model
from tests.unit.test_monitoring_evidence import _outcomes, outcome_messages

__all__ = ["browser"]  # the fixture, shared with the other browser test

DAYS = 8 * 86_400_000


def test_every_report_page_and_run_shows_the_shadows_evidence(
    browser: str, settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "models")  # run_monitor's model_dir
    champion = registry.register(_model(1), {}, promote=True)
    shadow = registry.register(_model(2), {})
    registry.shadow(shadow)
    outcomes = _outcomes(1500, shadow_better=True, version=shadow)
    produce_raw(
        settings,
        settings.topics.churn_outcomes,
        [(m["customer_id"].encode(), json.dumps(m).encode()) for m in outcome_messages(outcomes, t0=T0)],
    )
    # windows after every outcome's label is known (a report's evidence is as its window's end knew it):
    # the predictions span 150 days from T0, each labelled a horizon later
    after = T0 + 200 * 86_400_000
    batches = [
        dataclasses.replace(b, model_version=champion)
        for i in range(5)
        for b in _batches(20 + i, shifted=False, t0=after + i * DAYS)
    ]
    with run_monitor(settings, tmp_path, window_rows=ROWS) as monitor:
        produce_raw(
            settings,
            settings.topics.monitoring_batches,
            [(b.model_version.encode(), json.dumps(b.to_json()).encode()) for b in batches],
        )
        reports = settled_reports(monitor, wait_reports(settings, monitor, 3))  # light ones drawn in full
        status, listing = monitor.get("/")
        pages = {r["report_id"]: monitor.get(f"/reports/{r['report_id']}") for r in reports}
    assert status == 200

    for r in reports:
        evidence = r["evidence"]
        assert (evidence["shadow_version"], evidence["champion_version"]) == (shadow, champion)
        cumulative = evidence["cumulative"]
        assert cumulative["labels"] == 1500 and cumulative["verdict"] == "better"
        assert cumulative["roc_auc"]["shadow"] > cumulative["roc_auc"]["champion"]
        summary = evidence_summary(evidence)
        assert summary in listing.decode()
        code, page = pages[r["report_id"]]
        # a full report's banner, or a light page's facts and its evidence table
        assert code == 200 and summary in page.decode()
        assert "<table id='evidence'>" in page.decode() or f"Evidence: {summary}." in page.decode()

    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path / "reports" / "workspace"))
    (project,) = workspace.search_project(project_for(settings.topic_prefix))
    for r in reports:
        run = workspace.get_run(project.id, str(r["evidently_run"]))
        assert run is not None and run.tags[-2:] == [f"shadow:{shadow}", "evidence:better"]
        assert run.metadata["evidence_verdict"] == "better" and run.metadata["shadow_version"] == shadow
        values = {
            res.metric_value_location.metric.params["column"]: res.value
            for res in run.metric_results.values()
            if res.metric_value_location.metric.params["type"] == WINDOW_VALUE_METRIC
        }
        auc = r["evidence"]["cumulative"]["roc_auc"]
        assert values["champion_roc_auc"] == auc["champion"] and values["shadow_roc_auc"] == auc["shadow"]

    (ROOT / "artifacts").mkdir(exist_ok=True)
    with evidently_ui(tmp_path / "reports" / "workspace", tmp_path / "evidently-ui.log") as ui:
        dashboard = f"{ui}/projects/{project.id}"
        dom = chromium("--virtual-time-budget=20000", "--window-size=1400,2400", "--dump-dom", dashboard)
        chromium(
            "--virtual-time-budget=20000",
            "--window-size=1400,2400",
            "--hide-scrollbars",
            "--force-prefers-reduced-motion",
            f"--screenshot={ROOT / 'artifacts' / 'evidently_shadow_panel.png'}",
            dashboard,
        )
    panel = _panels(dom)[SHADOW_PANEL]
    assert panel.count("MuiMarkElement-root") == 2 * len(reports)  # champion and shadow, once per window
    assert "champion" in panel and "shadow" in panel

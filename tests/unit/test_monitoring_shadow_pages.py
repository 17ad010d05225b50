"""The shadow's evidence (#24) on the monitor's pages and in the window's Evidently run: the list, the banner
and the window's page show champion against shadow; each run carries both ROC-AUCs for the dashboard's
"champion vs shadow" panel, and the verdict in its tags and metadata. The publisher asks for the evidence
before the window is drawn, so the page, the run and the message agree."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnstream.messages import DriftReport
from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
from churnstream.monitoring.pages import (
    evidence_summary,
    render_report_list,
    render_window_page,
    window_banner,
)
from churnstream.monitoring.reference import FrameSource
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.ui import (
    SHADOW_PANEL,
    SHADOW_VALUES,
    WINDOW_VALUE_METRIC,
    WINDOW_VALUES,
    dashboard_panels,
    light_snapshot,
    window_run,
)
from churnstream.settings import Settings
from churnstream.streams.monitor_service import MonitorService
from churnstream.timefmt import parse_time
from tests.unit.test_monitoring_service import TOPIC, DrawsNothing, record

DAY = 86_400_000
WEEK = 7 * DAY


def _metric(champion: float, shadow: float, low: float, high: float) -> dict[str, Any]:
    return {
        "champion": champion,
        "shadow": shadow,
        "difference": round(shadow - champion, 4),
        "interval": [low, high],
    }


def _found(labels: int, verdict: str, auc: tuple[float, float], **bounds: int) -> dict[str, Any]:
    return {
        "labels": labels,
        "positives": labels // 4,
        "roc_auc": _metric(*auc, 0.01, 0.09),
        "pr_auc": _metric(0.41, 0.52, 0.03, 0.18),
        "alert_value": _metric(0.30, 0.35, -0.02, 0.11),
        "verdict": verdict,
        **bounds,
    }


def _evidence(week_starts: list[int]) -> dict[str, Any]:
    return {
        "shadow_version": "v7",
        "champion_version": "v6",
        "probabilities": "batch",
        "cumulative": _found(2400, "better", (0.801, 0.862)),
        "windows": [
            _found(600 + i, "undecided", (0.7 + i / 100, 0.75 + i / 100), start=s, end=s + WEEK)
            for i, s in enumerate(week_starts)
        ],
    }


def _message(**extra: Any) -> dict[str, Any]:
    return {
        "report_id": "r9",
        "window_start": "2024-06-10T00:00:00Z",
        "window_end": "2024-06-12T00:00:00Z",
        "rows": 1000,
        "model_version": "v6",
        "dataset_drift": False,
        "drift_share": 0.0,
        "drifted_columns": [],
        "columns": {},
        "action": "none",
        **extra,
    }


def test_the_window_page_shows_the_evidence_cumulative_and_the_windows_own_week() -> None:
    start = parse_time("2024-06-10T00:00:00Z")
    older, own = start - 2 * WEEK, start - 3 * DAY  # the second week overlaps the window
    message = _message(evidence=_evidence([older, own]))
    page = render_window_page(message, note="drawn light")

    assert "Champion v6 vs shadow v7" in page and "<table id='evidence'>" in page
    rows = page.split("<table id='evidence'>")[1].split("<tbody>")[1].split("</tr>")[:-1]
    assert len(rows) == 2  # cumulative, then this window's week; the older week is not this window's
    assert "cumulative" in rows[0] and "2,400 (600 churned)" in rows[0] and "better" in rows[0]
    assert "0.801" in rows[0] and "0.862" in rows[0] and "+0.061 [+0.010, +0.090]" in rows[0]
    assert "+0.110 [+0.030, +0.180]" in rows[0] and "+0.050 [-0.020, +0.110]" in rows[0]  # PR-AUC, alerts
    assert "this window&#x27;s week 2024-06-07T00:00:00Z .. 2024-06-14T00:00:00Z" in rows[1]
    assert "601 (150 churned)" in rows[1] and "undecided" in rows[1] and "0.710" in rows[1]
    summary = (
        "shadow v7 vs champion v6 on 2,400 labels: better "
        "(ROC-AUC shadow 0.862, champion 0.801, difference +0.061 [+0.010, +0.090])"
    )
    assert evidence_summary(message["evidence"]) == summary
    assert summary.replace("'", "&#x27;") in page  # among the window's facts
    assert window_banner(message).endswith(f"action none. Evidence: {summary}.")


def test_a_window_none_of_whose_predictions_are_labelled_yet_shows_the_latest_labelled_week() -> None:
    start = parse_time("2024-06-10T00:00:00Z")
    page = render_window_page(_message(evidence=_evidence([start - 5 * WEEK, start - 4 * WEEK])), note="")
    rows = page.split("<table id='evidence'>")[1].split("<tbody>")[1].split("</tr>")[:-1]
    assert (
        len(rows) == 2
        and "latest labelled week 2024-05-13T00:00:00Z" in rows[1]
        and "601" in rows[1]
        and "(none of this window" in rows[1]
    )


def test_a_window_before_both_models_training_end_says_its_predictions_never_count() -> None:
    """It said 'none of this window's yet' for a window whose predictions the evidence leaves out for
    good (made before the later of the two models' training ends)."""
    start = parse_time("2024-06-10T00:00:00Z")
    evidence = {**_evidence([start + 5 * WEEK]), "after": start + 4 * WEEK}
    page = render_window_page(_message(evidence=evidence), note="")
    row = page.split("<table id='evidence'>")[1].split("<tbody>")[1].split("</tr>")[1]
    assert "predate both models&#x27; training: they never count" in row, row


def test_without_a_shadow_the_pages_show_no_evidence() -> None:
    message = _message()
    assert "<table id='evidence'>" not in render_window_page(message, note="")
    assert "Evidence" not in window_banner(message)


def test_the_report_list_shows_each_windows_evidence() -> None:
    health = {
        "windows_reported": 2,
        "windows_done": 2,
        "rows_pending": 0,
        "window_rows": 1000,
        "reports_rendered": 2,
        "windows_merged": 0,
        "reports_pending": 0,
        "last_report_at": None,
    }
    with_shadow = _message(report_id="r2", evidence=_evidence([]))
    page = render_report_list([_message(report_id="r1"), with_shadow], health)
    assert "<th>champion vs shadow (realized)</th>" in page
    cells = page.split("<td class='evidence'>")[1:]
    assert len(cells) == 2  # newest first: r2, then r1 (before the shadow)
    assert cells[0].startswith("shadow v7 vs champion v6 on 2,400 labels: better (ROC-AUC shadow 0.862")
    assert cells[1].startswith("&ndash;</td>")


def test_the_report_list_says_how_each_window_was_drawn() -> None:
    health = {
        "windows_reported": 3,
        "windows_done": 3,
        "rows_pending": 0,
        "window_rows": 1000,
        "reports_rendered": 2,
        "windows_merged": 0,
        "reports_pending": 0,
        "windows_drawn_later": 1,
        "last_report_at": None,
    }
    drawn = [
        {"drawn": "full", "rows": 1000},
        {"drawn": "light", "rows": 1000},
        {"drawn": "full", "rows": 1000, "drawn_later": True, "drawn_later_at": "2024-06-01T00:00:00Z"},
    ]
    page = render_report_list(
        [_message(report_id=f"r{i}", evidently_report=e) for i, e in enumerate(drawn)], health
    )
    cells = [c.split("</td>")[0] for c in page.split("<td class='drawn'>")[1:]]
    assert cells == [  # newest first
        "full report (drawn once the monitor caught up; light when published)",
        "light page (full report not drawn)",
        "full report",
    ]
    assert "1 of the windows listed have a light page" in page and "1 light windows drawn in full" in page


def test_each_run_carries_both_roc_aucs_and_the_verdict() -> None:
    run = window_run(_message(evidence=_evidence([])), topic_prefix="t.", mean_probability=0.3)
    assert run.values["champion_roc_auc"] == 0.801 and run.values["shadow_roc_auc"] == 0.862
    assert run.tags == ["model:v6", "prefix:t.", "no drift", "shadow:v7", "evidence:better"]
    assert run.metadata["champion_version"] == "v6" and run.metadata["shadow_version"] == "v7"
    assert run.metadata["evidence_verdict"] == "better" and run.metadata["evidence_labels"] == "2400"
    assert run.metadata["evidence_roc_auc"] == "champion 0.801, shadow 0.862, difference 0.061 [0.01, 0.09]"

    plain = window_run(_message(), topic_prefix="t.", mean_probability=0.3)
    assert not set(SHADOW_VALUES) & set(plain.values)  # nothing to plot without a shadow
    assert plain.tags == ["model:v6", "prefix:t.", "no drift"] and "shadow_version" not in plain.metadata

    # Evidently's run holds both as WindowValue results, named for the dashboard's panel
    snapshot = light_snapshot(run).to_snapshot_model()
    values = {
        r.metric_value_location.metric.params["column"]: r.value
        for r in snapshot.metric_results.values()
        if r.metric_value_location.metric.params["type"] == WINDOW_VALUE_METRIC
    }
    assert values["champion_roc_auc"] == pytest.approx(0.801) and values["shadow_roc_auc"] == pytest.approx(
        0.862
    )
    assert snapshot.metadata["evidence_verdict"] == "better" and "shadow:v7" in snapshot.tags


def test_the_dashboard_draws_champion_and_shadow_on_one_panel() -> None:
    panels = dashboard_panels()
    assert [p.title for p in panels] == [*WINDOW_VALUES.values(), SHADOW_PANEL]
    shadow = panels[-1]
    assert [(m.legend, m.metric, m.metric_labels) for m in shadow.values] == [
        ("champion", WINDOW_VALUE_METRIC, {"column": "champion_roc_auc"}),
        ("shadow", WINDOW_VALUE_METRIC, {"column": "shadow_roc_auc"}),
    ]


@pytest.mark.parametrize("outcome", ["evidence", "none", "fails"])
def test_the_publisher_asks_for_the_evidence_before_the_window_is_drawn(tmp_path: Path, outcome: str) -> None:
    reference = pd.DataFrame({"x": np.random.default_rng(0).normal(0, 1, 3000), "churn_probability": 0.5})
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=ReportStore(tmp_path / "reports", workspace=False),
        config=MonitorConfig(window_rows=1000),
    )
    asked: list[tuple[str | None, str | None, str | None]] = []

    def evidence(action: str | None, until: str | None, model: str | None) -> dict[str, Any] | None:
        asked.append((action, until, model))
        if outcome == "fails":
            raise RuntimeError("churn_outcomes unreadable")
        return _evidence([]) if outcome == "evidence" else None

    published: list[DriftReport] = []
    renderer = DrawsNothing()

    async def go() -> None:
        done = asyncio.Event()

        async def publish_report(report: DriftReport) -> None:
            published.append(report)
            done.set()

        async def publish_dead_letter(letter: Any) -> None: ...

        service = MonitorService(
            settings=Settings(),
            monitor=monitor,
            publish_report=publish_report,
            publish_dead_letter=publish_dead_letter,
            renderer=renderer,  # type: ignore[arg-type]
            evidence=evidence,
        )
        for k in range(4):
            await service.on_message(b"v1", record(k), TOPIC, 0, k, ack=lambda: None)
        task = asyncio.create_task(service.publisher.run())
        await done.wait()
        task.cancel()

    asyncio.run(go())
    (report,) = published
    (job,) = renderer.jobs  # what the report worker was given to draw
    # a retrain stops at the window's end; the advice is of the window's model
    assert asked == [(report.action, report.to_json()["window_end"], report.to_json()["model_version"])]
    message = json.loads(json.dumps(report.to_json()))
    if outcome == "evidence":
        assert message["evidence"]["cumulative"]["verdict"] == "better"
        assert job.message["evidence"] == message["evidence"]  # the page drawn shows what was published
        assert job.run.values["shadow_roc_auc"] == 0.862 and "evidence:better" in job.run.tags
        assert "mean_churn_probability" in job.run.values
    else:
        assert "evidence" not in message and "evidence" not in job.message
        assert "shadow_roc_auc" not in job.run.values

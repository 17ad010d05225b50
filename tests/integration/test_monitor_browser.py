"""The monitor's web pages and the Evidently UI in a real browser (headless Chromium).

Chromium renders the pages (Evidently's report and UI are drawn by JavaScript), ``--dump-dom`` gives the
DOM after rendering, and screenshots are kept under ``artifacts/`` for people to look at; the Evidently
dashboard's is ``docs/evidently_dashboard.png`` (the README shows it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnstream.events import parse_time
from churnstream.messages import MonitoringBatch
from churnstream.monitoring.ui import SHADOW_PANEL, WINDOW_VALUES, drift_strength, project_for
from churnstream.settings import DAY_MS, Settings, Topics
from tests.integration.conftest import produce_raw
from tests.integration.test_monitor import ROOT, free_port, run_monitor, settled_reports, wait_reports

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FEATURES = ["spent_total", "avg_order_value", "tickets_90d", "recency_days", "orders_total"]
ROWS = 500
T0 = 1_717_200_000_000


def _batches(seed: int, *, shifted: bool, t0: int) -> list[MonitoringBatch]:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {
        "spent_total": rng.lognormal(5, 0.6, ROWS) * (1.6 if shifted else 1.0),
        "avg_order_value": rng.lognormal(3.5, 0.4, ROWS) * (1.6 if shifted else 1.0),
        "tickets_90d": rng.poisson(2.5 if shifted else 1.0, ROWS).astype(float),
        "recency_days": rng.exponential(20, ROWS),
        "orders_total": rng.poisson(8, ROWS).astype(float),
    }
    probability = 1 / (1 + np.exp(-(columns["recency_days"] / 20 - 1)))
    predictions: dict[str, list[Any]] = {name: values.tolist() for name, values in columns.items()}
    predictions.update(
        as_of=[t0 + i * 60_000 for i in range(ROWS)],
        customer_id=[f"c{i}" for i in range(ROWS)],
        trigger=["event"] * ROWS,
        batch_probability=probability.tolist(),
        online_probability=[None] * ROWS,
        churn_probability=probability.tolist(),
    )
    return [MonitoringBatch(f"b{seed}", 0, "browser-v1", FEATURES, predictions, {})]


def _labelled(batch: MonitoringBatch, earlier: MonitoringBatch, seed: int) -> MonitoringBatch:
    """``batch`` carrying the labels of ``earlier``'s predictions (drawn from their own probabilities, so
    the model is calibrated), known as of ``batch``'s first prediction."""
    rng = np.random.default_rng(seed)
    probability = np.asarray(earlier.predictions["churn_probability"])
    outcomes: dict[str, list[Any]] = {
        "as_of": list(earlier.predictions["as_of"]),
        "labeled_at": [batch.predictions["as_of"][0]] * len(probability),
        "label": [int(x) for x in rng.random(len(probability)) < probability],
        "source": ["inactivity"] * len(probability),
        "batch_probability": probability.tolist(),
        "online_probability": [None] * len(probability),
        "churn_probability": probability.tolist(),
    }
    return dataclasses.replace(batch, outcomes=outcomes)


def chromium(*args: str, timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def browser() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium) and cannot be installed here")
    return CHROMIUM


def test_report_list_and_report_render_in_chromium(
    browser: str, settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with run_monitor(settings, tmp_path, window_rows=ROWS) as monitor:
        batches = [
            *_batches(1, shifted=False, t0=T0),
            *_batches(2, shifted=False, t0=T0 + DAY_MS),  # these two become the reference
            *_batches(3, shifted=False, t0=T0 + 2 * DAY_MS),
            *_batches(4, shifted=True, t0=T0 + 3 * DAY_MS),
        ]
        produce_raw(
            settings,
            settings.topics.monitoring_batches,
            [(b.model_version.encode(), json.dumps(b.to_json()).encode()) for b in batches],
        )
        reports = wait_reports(settings, monitor, 2)
        drifted = reports[1]
        assert [r["dataset_drift"] for r in reports] == [False, True]

        listing = chromium("--virtual-time-budget=5000", "--dump-dom", monitor.base_url + "/")
        chromium(
            "--window-size=1280,2000", f"--screenshot={artifacts / 'monitor_reports.png'}", monitor.base_url
        )
        report_url = drifted["url"]
        assert report_url == f"{monitor.base_url}/reports/{drifted['report_id']}"
        page = chromium("--virtual-time-budget=15000", "--dump-dom", report_url)
        chromium(
            "--virtual-time-budget=15000",
            "--window-size=1280,2000",
            f"--screenshot={artifacts / 'monitor_report.png'}",
            report_url,
        )

    # the list: one row per report, newest first, with verdict, share and drifted columns, and a link
    table = listing[listing.index('<table id="drift-reports"') :]
    rows = re.findall(r"<tr class=\"(drift|ok)\">(.*?)</tr>", table, flags=re.S)
    assert [cls for cls, _ in rows] == ["drift", "ok"]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0][1], flags=re.S)
    assert "DRIFT" in cells[4] and cells[5] == "60%"
    assert {"spent_total", "avg_order_value", "tickets_90d"} <= {c.strip() for c in cells[6].split(",")}
    assert f'href="/reports/{drifted["report_id"]}"' in rows[0][1]

    # the Evidently report, rendered: the data-drift table with its headers and a row per column
    headers = set(re.findall(r"<th[^>]*>(?:<[^>]+>)*([A-Za-z ]{3,40})<", page))
    assert {"Column", "Data Drift", "Stat Test", "Drift Score"} <= headers, headers
    assert re.search(r"<td[^>]*>(?:<[^>]+>)*avg_order_value<", page)
    assert (artifacts / "monitor_report.png").stat().st_size > 10_000
    assert (artifacts / "monitor_reports.png").stat().st_size > 5_000


@contextlib.contextmanager
def evidently_ui(workspace: Path, log: Path) -> Iterator[str]:
    """``evidently ui`` on ``workspace`` (telemetry off, as docker-compose runs it) until the block ends."""
    port = free_port()
    program = str(Path(sys.executable).with_name("evidently"))
    command = [program, "ui", "--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DO_NOT_TRACK": "1"}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "evidently ui never answered:\n" + log.read_text()[-3000:]
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(base + "/api/projects", timeout=5) as answer,
            ):
                if answer.status == 200:
                    break
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def _panels(dom: str) -> dict[str, str]:
    """The dashboard's panels, by title: the DOM from each title to the next."""
    shown = [*WINDOW_VALUES.values(), SHADOW_PANEL]
    titles = sorted((dom.index(t + "</h5>"), t) for t in shown if t + "</h5>" in dom)
    ends = [at for at, _ in titles[1:]] + [len(dom)]
    return {title: dom[at:end] for (at, title), end in zip(titles, ends, strict=True)}


def test_evidently_ui_shows_one_point_per_window_and_every_link_its_own_window(
    browser: str, settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    shifted = [False, True, False, True, True, False]
    # windows 8 days apart, each carrying the labels of the one before: once the horizon has passed in
    # event time, windows report the realized ROC-AUC of an earlier one
    days = 8 * DAY_MS
    batches = [
        *_batches(1, shifted=False, t0=T0),
        *_batches(2, shifted=False, t0=T0 + days),  # these two become the reference
        *[
            b
            for i, shift in enumerate(shifted)
            for b in _batches(10 + i, shifted=shift, t0=T0 + (2 + i) * days)
        ],
    ]
    batches = batches[:1] + [_labelled(b, batches[i], seed=i) for i, b in enumerate(batches[1:])]
    with run_monitor(settings, tmp_path, window_rows=ROWS) as monitor:
        produce_raw(
            settings,
            settings.topics.monitoring_batches,
            [(b.model_version.encode(), json.dumps(b.to_json()).encode()) for b in batches],
        )
        published = wait_reports(settings, monitor, len(shifted))  # as on drift_reports
        # stopped while light windows wait for their full report (each takes seconds): a restart
        monitor.process.send_signal(signal.SIGTERM)
        assert monitor.process.wait(timeout=60) == 0, monitor.log_tail()
    later = tmp_path / "reports" / "later"
    saved = {
        p["report_id"]: json.loads((tmp_path / "reports" / f"{p['report_id']}.json").read_text())
        for p in published
    }
    waiting = {rid for rid, m in saved.items() if m["evidently_report"]["drawn"] == "light"}
    assert (
        waiting and {f.stem for f in later.rglob("*.arrow")} == waiting
    )  # their columns, beside the reports
    port = int(published[0]["url"].split(":")[2].split("/")[0])  # the links published stay valid
    with run_monitor(settings, tmp_path, window_rows=ROWS, port=port) as monitor:
        # the saved windows are kept to draw (a draw done since counts out)
        assert 0 < monitor.health()["windows_awaiting_full_report"] <= len(waiting)
        reports = settled_reports(monitor, published)  # once it caught up: light windows drawn in full
        pages = {
            r["report_id"]: chromium("--virtual-time-budget=3000", "--dump-dom", r["url"]) for r in reports
        }
    assert not list(later.rglob("*.arrow"))
    assert [r["dataset_drift"] for r in reports] == shifted

    # six windows at once: the report worker draws the first two in full (the drifted one taking the
    # place of a waiting one) and the rest light; once it caught up it draws those in full after all,
    # those the first monitor had not drawn yet by the monitor after the restart
    drawn = {r["report_id"]: r["evidently_report"]["drawn"] for r in published}
    assert set(drawn.values()) == {"full", "light"} and drawn[reports[1]["report_id"]] == "full"
    for r in reports:
        later = drawn[r["report_id"]] == "light"
        assert (
            r["evidently_report"]["drawn"] == "full"
            and bool(r["evidently_report"].get("drawn_later")) == later
        )
        assert r["url"] == next(p["url"] for p in published if p["report_id"] == r["report_id"])

    # every link shows its own window: its bounds, and the full report
    for r in reports:
        page = pages[r["report_id"]]
        assert f"{r['window_start']} .. {r['window_end']}" in page, r["report_id"]
        others = [o for o in reports if o is not r]
        assert not any(f"{o['window_start']} .. {o['window_end']}" in page for o in others)
        assert "was not drawn" not in page and len(page) > 100_000, r["report_id"]  # the report's banner
        assert Path(r["html_path"]).name == f"{r['report_id']}.html"

    # every window is one run of the Evidently project, stamped with its end in event time
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(tmp_path / "reports" / "workspace"))
    (project,) = workspace.search_project(project_for(settings.topic_prefix))
    every = {str(i): workspace.get_run(project.id, i) for i in workspace.list_runs(project.id)}
    runs = {i: run for i, run in every.items() if run is not None and run.metadata["report"] != "realized"}
    assert sorted(runs) == sorted(str(r["evidently_run"]) for r in reports)
    # a labelled window's realized ROC-AUC: one run at that window's end, however many reports gave it
    labelled = {
        (p["window_start"], p["window_end"])
        for r in reports
        if (p := r.get("realized_performance") or {}).get("value") is not None
    }
    realized = sorted(run.timestamp for run in every.values() if run and run.metadata["report"] == "realized")
    assert realized == sorted(
        dt.datetime.fromtimestamp(parse_time(end) / 1000, dt.UTC).replace(tzinfo=None) for _, end in labelled
    )
    for r in reports:
        run = runs[str(r["evidently_run"])]
        assert run is not None and run.name == r["report_id"]
        end = dt.datetime.fromtimestamp(parse_time(r["window_end"]) / 1000, dt.UTC).replace(tzinfo=None)
        assert run.timestamp == end
        assert run.tags == [f"model:{r['model_version']}", f"prefix:{settings.topic_prefix}", drift_tag(r)]
        assert run.metadata["window_start"] == r["window_start"] and run.metadata["rows"] == str(ROWS)

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with evidently_ui(tmp_path / "reports" / "workspace", tmp_path / "evidently-ui.log") as ui:
        dashboard = f"{ui}/projects/{project.id}"
        dom = chromium("--virtual-time-budget=20000", "--window-size=1400,1600", "--dump-dom", dashboard)
        chromium(
            "--virtual-time-budget=20000",
            "--window-size=1400,1600",
            "--hide-scrollbars",
            "--force-prefers-reduced-motion",  # the charts drawn whole, not mid-animation
            f"--screenshot={ROOT / 'docs' / 'evidently_dashboard.png'}",
            dashboard,
        )

    # the dashboard: a panel per number, one point per window that has it, on an event-time axis
    panels = _panels(dom)
    # no model in shadow here: no champion-vs-shadow panel standing empty
    assert list(panels) == list(WINDOW_VALUES.values()), list(panels)
    expected = {
        "drift_share": len(reports),
        "drifted_columns": len(reports),
        "mean_churn_probability": len(reports),
        "prediction_drift_strength": sum(
            1 for r in reports if drift_strength(r.get("prediction_drift") or {}) is not None
        ),
        "estimated_roc_auc": sum(
            1 for r in reports if (r.get("estimated_performance") or {}).get("value") is not None
        ),
        "window_realized_roc_auc": len(labelled),
    }
    first = min([reports[0]["window_end"], *(end for _, end in labelled)])[:10]
    last = reports[-1]["window_end"][:10]
    for column, title in WINDOW_VALUES.items():
        assert panels[title].count("MuiMarkElement-root") == expected[column], (title, expected[column])
        if expected[column]:
            ticks = re.findall(r"<tspan[^>]*>(\d{4}-\d{2}-\d{2})[ T]", panels[title])
            assert ticks and all(first <= t <= last for t in ticks), (title, ticks, first, last)
    assert (ROOT / "docs" / "evidently_dashboard.png").stat().st_size > 30_000


def drift_tag(report: dict[str, Any]) -> str:
    return "drift" if report["dataset_drift"] else "no drift"

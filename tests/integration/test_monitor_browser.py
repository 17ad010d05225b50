"""The monitor's web pages in a real browser: headless Chromium opens the report list and one report.

Chromium renders the pages (Evidently's report is drawn by JavaScript), ``--dump-dom`` gives the DOM
after rendering, and screenshots of both pages are kept under ``artifacts/`` for people to look at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from churnstream.messages import MonitoringBatch
from churnstream.settings import DAY_MS, Settings, Topics
from tests.integration.conftest import produce_raw
from tests.integration.test_monitor import ROOT, run_monitor, wait_reports

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

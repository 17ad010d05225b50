"""``churnstream monitor`` on real Kafka: windows of a simulated stream become drift_reports messages.

The monitor runs as a subprocess, exactly as users start it, with its settings in the environment and an
empty model registry, so the first two windows of the model version become its reference. Records are
built the way the scorer builds them: one MonitoringBatch per micro-batch, predictions as of each event
(features from the same code the store runs) with probabilities from a fixed function of the features.

Two simulated worlds with the same seed: ``churnstream simulate`` without drift, and with
``--drift-at 1`` (order amounts 1.4x, tickets 2x, from day 1). The stationary stream is the first world
alone; the shifted stream is the first world until day ``SHIFT_DAY`` and the drifted world after it, a
shift that is complete at once (with ``--drift-at SHIFT_DAY`` itself, 30/90-day features would follow the
world only gradually).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from churnstream.events import OrderEvent, ProfileEvent, parse_time
from churnstream.messages import MonitoringBatch
from churnstream.settings import DAY_MS, Settings, Topics, child_env
from features.definitions import FEATURE_NAMES, features_as_of
from features.offline import read_events
from features.state import apply_event, new_state
from tests.integration.conftest import consume_all, produce_raw

ROOT = Path(__file__).resolve().parents[2]
CHURNSTREAM = str(Path(sys.executable).with_name("churnstream"))
WINDOW_ROWS = 2000
BATCH_ROWS = 500
CUSTOMERS = 12000
DAYS = 180
SEED = 11
START_DAY = 140  # predictions before this day are not sent (the monitor starts on a running business)
SHIFT_DAY = 150
MODEL_VERSION = "sim-v1"
SHIFTED = {
    "spent_total",
    "avg_order_value",
    "spent_90d",
    "spent_30d",
    "tickets_total",
    "tickets_90d",
    "tickets_30d",
}


@dataclass(slots=True)
class Rows:
    """Prediction rows of one simulated world (chronological), with their labels when known."""

    rows: list[dict[str, Any]]

    def since(self, day: int, start: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["as_of"] >= start + day * DAY_MS]

    def between(self, lo: int, hi: int, start: int) -> list[dict[str, Any]]:
        return [r for r in self.rows if start + lo * DAY_MS <= r["as_of"] < start + hi * DAY_MS]


def _probability(f: dict[str, Any], bias: float = -1.5) -> float:
    z = (
        bias
        + 0.04 * (f["recency_days"] if f["recency_days"] is not None else 60.0)
        + 0.35 * (f["negative_tickets_total"] or 0)
        + 0.2 * (f["tickets_90d"] or 0)
        - 0.15 * (f["orders_90d"] or 0)
    )
    return 1.0 / (1.0 + math.exp(-z))


def prediction_rows(directory: Path, *, horizon_days: float = 30.0) -> tuple[Rows, int]:
    """One prediction per order/ticket event from ``START_DAY`` on, features as of the event; plus day 0."""
    log = read_events(directory)
    start = log.start - log.start % DAY_MS
    horizon = int(horizon_days * DAY_MS)
    orders: dict[str, list[int]] = {}
    for e in log.events:
        if isinstance(e, OrderEvent) and e.status == "completed":
            orders.setdefault(e.customer_id, []).append(e.timestamp)
    states: dict[str, dict[str, Any]] = {}
    rows = []
    first = start + START_DAY * DAY_MS
    for e in log.events:
        state = states.get(e.customer_id)
        if state is None:
            state = states[e.customer_id] = new_state()
        apply_event(state, e, lateness_ms=7 * DAY_MS)
        if e.timestamp < first or isinstance(e, ProfileEvent):
            continue
        f = features_as_of(state, e.timestamp)
        row: dict[str, Any] = {"as_of": e.timestamp, "customer_id": e.customer_id, **f}
        row["batch_probability"] = _probability(f)
        row["online_probability"] = _probability(f, bias=-1.4)
        row["churn_probability"] = 0.5 * (row["batch_probability"] + row["online_probability"])
        later = [t for t in orders.get(e.customer_id, ()) if e.timestamp < t <= e.timestamp + horizon]
        row["label"], row["labeled_at"] = (0, later[0]) if later else (1, e.timestamp + horizon)
        rows.append(row)
    return Rows(rows), start


def monitoring_batches(rows: list[dict[str, Any]], version: str = MODEL_VERSION) -> list[MonitoringBatch]:
    """Scorer-like records: predictions in chunks, each outcome in the batch during which it resolved."""
    batches = []
    pending = sorted(rows, key=lambda r: r["labeled_at"])
    j = 0
    for lo in range(0, len(rows), BATCH_ROWS):
        chunk = rows[lo : lo + BATCH_ROWS]
        upto = chunk[-1]["as_of"]
        resolved = []
        while j < len(pending) and pending[j]["labeled_at"] <= upto:
            resolved.append(pending[j])
            j += 1
        predictions = {
            name: [r[name] for r in chunk]
            for name in (
                "as_of",
                "customer_id",
                *FEATURE_NAMES,
                "batch_probability",
                "online_probability",
                "churn_probability",
            )
        }
        predictions["trigger"] = ["event"] * len(chunk)
        outcomes = {
            name: [r[name] for r in resolved]
            for name in (
                "labeled_at",
                "label",
                "batch_probability",
                "online_probability",
                "churn_probability",
            )
        }
        outcomes["source"] = ["order" if r["label"] == 0 else "inactivity" for r in resolved]
        batches.append(
            MonitoringBatch(
                uuid.uuid4().hex, int(time.time() * 1000), version, list(FEATURE_NAMES), predictions, outcomes
            )
        )
    return batches


def send_batches(settings: Settings, batches: list[MonitoringBatch]) -> None:
    produce_raw(
        settings,
        settings.topics.monitoring_batches,
        [
            (b.model_version.encode(), json.dumps(b.to_json()).encode()) for b in batches
        ],  # as the scorer keys them
    )


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Prediction rows of the simulated business without drift and with drift from day 1 (same seed)."""
    out: dict[str, Any] = {}
    for name, extra in (("stationary", []), ("drifted", ["--drift-at", "1"])):
        directory = tmp_path_factory.mktemp(name)
        args = ["simulate", "--customers", str(CUSTOMERS), "--days", str(DAYS), "--seed", str(SEED)]
        subprocess.run([CHURNSTREAM, *args, "--out", str(directory), *extra], check=True, capture_output=True)
        out[name] = prediction_rows(directory)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class RunningMonitor:
    process: subprocess.Popen[bytes]
    base_url: str
    report_dir: Path
    log_path: Path

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict[str, Any]:
        return json.loads(self.get("/health")[1])

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def run_monitor(settings: Settings, tmp: Path, window_rows: int = WINDOW_ROWS) -> Iterator[RunningMonitor]:
    """``churnstream monitor`` in a subprocess until the block ends; then SIGTERM, which must exit 0."""
    port = free_port()
    env = child_env(
        dataclasses.replace(
            settings,
            report_dir=tmp / "reports",
            var_dir=tmp / "var",
            model_dir=tmp / "models",
            drift_window_rows=window_rows,
            web_host="127.0.0.1",
            web_port=port,
        )
    )
    log_path = tmp / "monitor.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CHURNSTREAM, "monitor"], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT
        )
    monitor = RunningMonitor(process, f"http://127.0.0.1:{port}", tmp / "reports", log_path)
    try:
        deadline = time.monotonic() + 90
        while True:  # the web server answers once the worker is up
            assert process.poll() is None, f"monitor exited early:\n{monitor.log_tail()}"
            assert time.monotonic() < deadline, f"monitor web server never came up:\n{monitor.log_tail()}"
            with contextlib.suppress(OSError):
                if monitor.get("/health")[0] == 200:
                    break
            time.sleep(0.2)
        yield monitor
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"monitor did not stop on SIGTERM:\n{monitor.log_tail()}")
            assert code == 0, f"monitor exited with {code} on SIGTERM:\n{monitor.log_tail()}"


def wait_reports(
    settings: Settings, monitor: RunningMonitor, count: int, timeout: float = 240
) -> list[dict[str, Any]]:
    """The first ``count`` drift_reports messages, in window order (waits by consuming the topic)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = consume_all(settings, settings.topics.drift_reports, expected=count, timeout=10)
        if len(messages) >= count:
            break
        assert monitor.process.poll() is None, f"monitor died:\n{monitor.log_tail()}"
        assert time.monotonic() < deadline, (
            f"{len(messages)} of {count} drift reports; health {monitor.health()}\n{monitor.log_tail()}"
        )
    return sorted((json.loads(m.value()) for m in messages), key=lambda r: r["window_start"])


def test_shift_is_flagged_in_the_first_full_window_after_it(
    settings: Settings, topics: Topics, worlds: dict[str, Any], tmp_path: Path
) -> None:
    before, start = worlds["stationary"]
    after, _ = worlds["drifted"]
    pre = before.between(START_DAY, SHIFT_DAY, start)
    post = after.since(SHIFT_DAY, start)
    assert len(pre) >= 3 * WINDOW_ROWS + 500, (
        "the simulation should give 2 reference windows and 1 more before"
    )
    stream = pre + post[: 3 * WINDOW_ROWS]
    shift_at = start + SHIFT_DAY * DAY_MS
    expected = len(stream) // WINDOW_ROWS - 2  # every full window but the two that become the reference
    with run_monitor(settings, tmp_path) as monitor:
        bad = [(b"x", b"{not json"), (b"y", json.dumps({"batch_id": "b"}).encode())]
        produce_raw(settings, settings.topics.monitoring_batches, bad)
        send_batches(settings, monitoring_batches(stream))
        reports = wait_reports(settings, monitor, expected)
        health = monitor.health()
        listing = monitor.get("/")[1].decode()
        pages = {
            path: monitor.get(path)
            for path in (f"/reports/{reports[-1]['report_id']}", f"/reports/{reports[-1]['report_id']}.json")
        }
        missing = monitor.get("/reports/no-such-report")[0], monitor.get("/reports/..%2Fmonitor.log")[0]

    windows = [(parse_time(r["window_start"]), parse_time(r["window_end"]), r) for r in reports]
    full_before = [r for s, e, r in windows if e < shift_at]
    full_after = [r for s, e, r in windows if s >= shift_at]
    assert full_before and full_after, [(r["window_start"], r["window_end"]) for r in reports]
    for r in full_before:
        assert r["dataset_drift"] is False, (r["window_start"], r["drift_share"], r["drifted_columns"])
    first = full_after[0]
    assert first["dataset_drift"] is True, (first["drift_share"], first["drifted_columns"])
    named = set(first["drifted_columns"])
    assert {"avg_order_value", "tickets_90d"} <= named and len(named & SHIFTED) >= 5, named
    assert first["rows"] == WINDOW_ROWS and first["reference_rows"] == 2 * WINDOW_ROWS
    assert first["model_version"] == MODEL_VERSION
    column = first["columns"]["avg_order_value"]
    assert column["drifted"] is True and column["score"] > column["threshold"] and column["method"]
    assert set(first["prediction_drift"]) == {"method", "score", "threshold", "drifted"}
    assert first["concept_drift"]["detector"] == "ADWIN" and "detected" in first["concept_drift"]
    assert set(first["model_auc"]) == {"batch", "online", "blend"}
    assert Path(first["html_path"]).is_file() and Path(first["html_path"]).stat().st_size > 100_000
    assert first["url"] == f"{monitor.base_url}/reports/{first['report_id']}"
    assert (tmp_path / "reports" / f"{first['report_id']}.json").is_file()
    assert (tmp_path / "reports" / "workspace").is_dir()
    # the two malformed records went to dead_letter with their stage, and the monitor went on
    letters = [json.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter, expected=2)]
    assert sorted(letter["stage"] for letter in letters) == ["decode", "validate"]
    assert health["dead_letters"] == 2 and health["windows_reported"] >= expected
    assert first["report_id"] in listing and "DRIFT" in listing
    html_page, json_page = pages.values()
    assert html_page[0] == 200 and html_page[1] == Path(reports[-1]["html_path"]).read_bytes()
    assert json_page[0] == 200 and json.loads(json_page[1])["report_id"] == reports[-1]["report_id"]
    assert missing == (404, 404)


def test_stationary_stream_never_reports_dataset_drift(
    settings: Settings, topics: Topics, worlds: dict[str, Any], tmp_path: Path
) -> None:
    rows, start = worlds["stationary"]
    windows = 10
    stream = rows.since(START_DAY, start)[: (2 + windows) * WINDOW_ROWS]
    assert len(stream) == (2 + windows) * WINDOW_ROWS
    with run_monitor(settings, tmp_path) as monitor:
        send_batches(settings, monitoring_batches(stream))
        reports = wait_reports(settings, monitor, windows)
    assert len(reports) == windows
    verdicts = [
        (r["window_start"], r["drift_share"], r["drifted_columns"]) for r in reports if r["dataset_drift"]
    ]
    assert verdicts == []
    assert all(r["rows"] == WINDOW_ROWS for r in reports)
    assert all(Path(r["html_path"]).is_file() for r in reports)

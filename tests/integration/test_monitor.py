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
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import Phase, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from churnstream.events import OrderEvent, ProfileEvent, parse_time
from churnstream.features.definitions import FEATURE_NAMES, features_as_of
from churnstream.features.offline import read_events
from churnstream.features.state import apply_event, new_state
from churnstream.messages import MonitoringBatch
from churnstream.monitoring.performance import estimate_roc_auc
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.processes import WorkerProcess, start_worker
from tests.integration.conftest import consume_all, produce_raw, wait_until

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


def monitoring_batches(
    rows: list[dict[str, Any]], version: str = MODEL_VERSION, batch_rows: int = BATCH_ROWS
) -> list[MonitoringBatch]:
    """Scorer-like records: predictions in chunks, each outcome in the batch during which it resolved."""
    batches = []
    pending = sorted(rows, key=lambda r: r["labeled_at"])
    j = 0
    for lo in range(0, len(rows), batch_rows):
        chunk = rows[lo : lo + batch_rows]
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
                "as_of",
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
                f"{version}-{lo}-{uuid.uuid4().hex[:8]}",
                int(time.time() * 1000),
                version,
                list(FEATURE_NAMES),
                predictions,
                outcomes,
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
        out[f"{name} directory"] = directory
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class RunningMonitor:
    process: WorkerProcess
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
def run_monitor(
    settings: Settings, tmp: Path, window_rows: int = WINDOW_ROWS, port: int | None = None
) -> Iterator[RunningMonitor]:
    """``churnstream monitor`` in a subprocess until the block ends; then SIGTERM, which must exit 0.
    ``port``: its web server's (so a restarted monitor keeps the links it published); default a free one."""
    port = port or free_port()
    own = dataclasses.replace(
        settings,
        report_dir=tmp / "reports",
        var_dir=tmp / "var",
        model_dir=tmp / "models",
        drift_window_rows=window_rows,
        web_host="127.0.0.1",
        web_port=port,
    )
    log_path = tmp / "monitor.log"
    log_path.unlink(missing_ok=True)  # a restarted monitor's log starts afresh
    process = start_worker("monitor", own, log=log_path, program=[CHURNSTREAM], cwd=tmp)
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
            code = process.stop(60)
            if process.killed:
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


def settled_reports(
    monitor: RunningMonitor, reports: list[dict[str, Any]], timeout: float = 300
) -> list[dict[str, Any]]:
    """``reports``' messages as the monitor serves them (``/reports/<id>.json``) once no window waits for
    its report and no light window for its full one (drawn once the monitor caught up: the message says
    so, and its page and run are the full report's)."""

    def caught_up() -> bool:
        assert monitor.process.poll() is None, f"monitor died:\n{monitor.log_tail()}"
        health = monitor.health()
        return health["reports_pending"] == 0 and health["windows_awaiting_full_report"] == 0

    wait_until(caught_up, timeout, "the monitor to draw every window it can in full")
    return [json.loads(monitor.get(f"/reports/{r['report_id']}.json")[1]) for r in reports]


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
    # whole windows before the shift, so that none straddles it: the first window after it is then the
    # first drifted one and takes the full Evidently report (a straddling window drifts too, on a world
    # with enough shifted rows in it, and would take it first)
    pre = pre[len(pre) % WINDOW_ROWS :]
    stream = pre + post[: 3 * WINDOW_ROWS]
    shift_at = start + SHIFT_DAY * DAY_MS
    expected = len(stream) // WINDOW_ROWS - 2  # every full window but the two that become the reference
    with run_monitor(settings, tmp_path) as monitor:
        bad = [(b"x", b"{not json"), (b"y", json.dumps({"batch_id": "b"}).encode())]
        produce_raw(settings, settings.topics.monitoring_batches, bad)
        send_batches(settings, monitoring_batches(stream))
        reports = settled_reports(monitor, wait_reports(settings, monitor, expected))  # pages as served
        health = monitor.health()
        listing = monitor.get("/")[1].decode()
        pages = {
            path: monitor.get(path)
            for path in (f"/reports/{reports[-1]['report_id']}", f"/reports/{reports[-1]['report_id']}.json")
        }
        missing = monitor.get("/reports/no-such-report")[0], monitor.get("/reports/..%2Fmonitor.log")[0]
        # a NUL and a name too long for a file were 500s (a review)
        odd = monitor.get("/reports/%00")[0], monitor.get("/reports/" + "a" * 7000)[0]
        # a window's page links back to the list of windows
        page_path = f"/reports/{reports[-1]['report_id']}"
        back = re.findall(r"id='churnstream-back' href='([^']*)'", pages[page_path][1].decode())
        assert back, "no link back to the list"
        back_status, back_page = monitor.get(urllib.parse.urljoin(page_path, back[0]))
        assert back_status == 200 and f"/reports/{reports[-1]['report_id']}" in back_page.decode()

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
    assert missing == (404, 404) and odd == (404, 404), odd


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


def test_each_report_estimates_performance_and_names_the_window_whose_labels_are_known(
    settings: Settings, topics: Topics, worlds: dict[str, Any], tmp_path: Path
) -> None:
    # a 3-day horizon, so labels are known within the stream: a window's are all in 3 days after its end
    rows, start = prediction_rows(worlds["stationary directory"], horizon_days=3.0)
    stream = rows.since(START_DAY, start)[: 10 * WINDOW_ROWS]
    short = dataclasses.replace(settings, horizon_days=3.0, allowed_lateness_days=0.0)
    with run_monitor(short, tmp_path) as monitor:
        send_batches(short, monitoring_batches(stream))
        reports = wait_reports(short, monitor, 8)  # windows 1 and 2 become the reference
        listing = monitor.get("/")[1].decode()
    windows = [stream[i * WINDOW_ROWS : (i + 1) * WINDOW_ROWS] for i in range(10)]
    # the list page leads with the newest window's advice, and names the window a realized ROC-AUC is of
    newest = reports[-1]
    headline = re.findall(r'<p id="headline" class="(\w+)"><b>Latest window \(([^ ]+) \.\. ([^,]+),', listing)
    assert headline == [(newest["action"], newest["window_start"][:10], newest["window_end"][:10])]
    for report in reports:
        realized = report["realized_performance"]
        if realized is not None:
            assert (
                f"{realized['value']:.3f} [{realized['lower']:.3f}, {realized['upper']:.3f}]<br><small>"
                f"({realized['labels']:,} labels of {realized['window_start'][:10]} .. "
                f"{realized['window_end'][:10]})</small>"
            ) in listing
    bounds = [(w[0]["as_of"], w[-1]["as_of"]) for w in windows]
    realized_seen = 0
    for i, report in enumerate(reports, start=2):
        assert (parse_time(report["window_start"]), parse_time(report["window_end"])) == bounds[i]
        est = report["estimated_performance"]
        assert est["metric"] == "roc_auc" and est["lower"] <= est["value"] <= est["upper"]
        # the window's own probabilities, through Kafka: the same estimate as computed here; once the
        # version's first windows hold 1,000 labels, read through them: near the window's own labels
        if est["calibrated_on"] is None:
            assert est == estimate_roc_auc([r["churn_probability"] for r in windows[i]])
        else:
            assert est["calibrated_on"]["labels"] >= 1000
            assert est["value"] == pytest.approx(_roc_auc(windows[i]), abs=0.05)
        assert report["action"] in ("none", "watch", "retrain") and report["action_reason"]
        realized = report["realized_performance"]
        if realized is None:
            continue
        realized_seen += 1
        # names an earlier window whose every prediction was labelled 3 days after its end
        j = bounds.index((parse_time(realized["window_start"]), parse_time(realized["window_end"])))
        assert j < i and bounds[j][1] + 3 * DAY_MS <= bounds[i][1]
        assert realized["labels"] == WINDOW_ROWS
        assert realized["value"] == pytest.approx(_roc_auc(windows[j]), abs=0.01)
        # the most recent such window
        assert j + 1 == i or bounds[j + 1][1] + 3 * DAY_MS > bounds[i][1]
    assert realized_seen >= 3


def _roc_auc(rows: list[dict[str, Any]]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([r["label"] for r in rows], [r["churn_probability"] for r in rows]))


def wait_health(
    monitor: RunningMonitor, ready: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    """The monitor's /health once ``ready`` holds for it (polls the monitor's own account)."""
    deadline = time.monotonic() + timeout
    while True:
        health = monitor.health()
        if ready(health):
            return health
        assert monitor.process.poll() is None, f"monitor died:\n{monitor.log_tail()}"
        assert time.monotonic() < deadline, f"health never got there: {health}\n{monitor.log_tail()}"
        time.sleep(0.2)


def wait_committed(settings: Settings, offset: int, timeout: float = 30) -> tuple[int, int]:
    """(committed, end) offset of the monitor's group on the partition holding the batches, once the
    committed offset reaches ``offset`` (faust commits every few seconds) or the time is up."""
    from churnstream.streams.kafka import group_offsets
    from churnstream.streams.monitor import app_id

    topic = settings.topics.monitoring_batches
    deadline = time.monotonic() + timeout
    while True:
        positions = group_offsets(settings, app_id(settings), [topic])
        # the batches are keyed by model version: one partition holds them all
        committed, end = max(positions.values(), key=lambda position: position[1])
        if committed >= offset or time.monotonic() > deadline:
            return committed, end
        time.sleep(0.5)


def test_records_faust_skipped_are_read_from_the_group_committed_offset(
    settings: Settings, topics: Topics
) -> None:
    """What the monitor reads when faust hands a partition's records over from later than it should
    (faust-streaming issue #596, seen about 1 restart in 5 of the test below): the records in between,
    from Kafka, each with an ack for faust's consumer (recorded here) naming its own offset."""
    import asyncio
    from types import SimpleNamespace

    from confluent_kafka import TopicPartition

    from churnstream.errors import InfraError
    from churnstream.streams.kafka import make_consumer
    from churnstream.streams.monitor import skipped_records
    from churnstream.streams.monitor_health import InputOffsets

    topic = settings.topics.monitoring_batches
    where = produce_raw(settings, topic, [(b"v1", f"r{k}".encode()) for k in range(5)])
    (partition,) = {p for p, _ in where}
    assert [offset for _, offset in where] == [0, 1, 2, 3, 4]  # a new topic
    tp = (topic, partition)
    group = f"test-skipped-{uuid.uuid4().hex[:8]}"
    committer = make_consumer(settings, group)
    committer.commit(offsets=[TopicPartition(topic, partition, 1)], asynchronous=False)
    committer.close()

    acked: list[Any] = []
    app = SimpleNamespace(consumer=SimpleNamespace(ack=acked.append))

    def read(
        group: str, start: int | None, stop: int, *, kafka: Settings = settings, attempts: int = 10
    ) -> Any:
        offsets = InputOffsets(kafka, group=group, assignment=lambda: [tp])
        try:
            return asyncio.run(skipped_records(kafka, app, offsets, attempts=attempts)(tp, start, stop))
        finally:
            offsets.close()

    found = read(group, None, 4)  # a partition's first record: from the committed offset (1)
    assert [(r.topic, r.partition, r.offset, r.value) for r, _, _ in found] == [
        (topic, partition, k, f"r{k}".encode()) for k in (1, 2, 3)
    ]
    assert all(at is not None and abs(at - time.time()) < 300 for _, at, _ in found)
    for _, _, ack in found:
        ack()
    assert [(m.topic, m.partition, m.offset, m.tp) for m in acked] == [
        (topic, partition, k, tp) for k in (1, 2, 3)
    ]

    def offsets_of(records: Any) -> list[int]:
        return [r.offset for r, _, _ in records]

    assert read(group, None, 1) == []  # faust began at the committed offset
    assert offsets_of(read(group, 3, 6)) == [3, 4]  # a gap after record 2; up to the end
    assert offsets_of(read(group, 0, 3)) == [1, 2]  # the group committed further: from there
    assert offsets_of(read(f"{group}-new", None, 2)) == [0, 1]  # no offsets: faust starts at the earliest
    # Kafka not answering: no answer rather than a count short
    gone = dataclasses.replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(InfraError, match="committed offset is unknown after 2 attempts"):
        read(group, None, 4, kafka=gone, attempts=2)


@pytest.mark.parametrize(
    ("stop", "wipe"),
    [(signal.SIGTERM, False), (signal.SIGKILL, False), (signal.SIGKILL, True)],
    ids=["sigterm", "sigkill", "sigkill-fresh-machine"],
)
def test_a_window_open_at_a_restart_counts_every_row_once(
    settings: Settings,
    topics: Topics,
    worlds: dict[str, Any],
    tmp_path: Path,
    stop: signal.Signals,
    wipe: bool,
) -> None:
    """``wipe``: the local directory (``var``: faust's data, the old state file) is gone at the restart,
    as on a new machine or container; the state comes back from the monitor's changelog topic and the
    references from the report directory (a volume)."""
    rows, start = worlds["stationary"]
    stream = rows.since(START_DAY, start)[: 4 * WINDOW_ROWS + 700]
    batches = monitoring_batches(stream, batch_rows=350)  # window bounds fall inside records
    before = batches[:20]  # 7,000 rows: windows 1-2 (the reference), 3 (reported), 1,000 rows of window 4
    with run_monitor(settings, tmp_path) as monitor:
        send_batches(settings, before)
        (third,) = wait_reports(settings, monitor, 1)
        wait_health(monitor, lambda h: h["rows_pending"] == 1000 and h["reports_pending"] == 0)
        # record 17 (rows 5,950..6,299) straddles windows 3 and 4: it and the rest stay uncommitted
        assert wait_committed(settings, 17) == (17, 20), monitor.log_tail()
        monitor.process.send_signal(stop)
        code = monitor.process.wait(timeout=60)
        assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), monitor.log_tail()
    assert not list((tmp_path / "var").rglob("state.json")), "the state belongs in the monitor's table"
    if wipe:
        shutil.rmtree(tmp_path / "var")
    with run_monitor(settings, tmp_path) as monitor:
        send_batches(settings, batches[20:])
        reports = wait_reports(settings, monitor, 2)
        health = wait_health(monitor, lambda h: h["rows_pending"] == 700)
        # commits went on past any record faust skipped and the monitor read back: up to the first record
        # holding rows of window 5
        rows_through = np.cumsum([b.rows for b in batches])
        holding = int(np.argmax(rows_through > 4 * WINDOW_ROWS))
        assert wait_committed(settings, holding) == (holding, len(batches)), monitor.log_tail()
        resumed = monitor.log_tail()

    assert [r["report_id"] for r in reports].count(third["report_id"]) == 1, "window 3 reported again"
    fourth = reports[1]
    window = stream[3 * WINDOW_ROWS : 4 * WINDOW_ROWS]
    assert fourth["rows"] == WINDOW_ROWS
    assert parse_time(fourth["window_start"]) == min(r["as_of"] for r in window)
    assert parse_time(fourth["window_end"]) == max(r["as_of"] for r in window)
    # the reference survived the restart: no two more windows spent on a new one
    assert fourth["reference_rows"] == 2 * WINDOW_ROWS and fourth["reference_source"] == "stream"
    # outcomes ride with the window open when their record arrives; each counts once, detectors included
    outcomes = [len(b.outcomes["label"]) for b in batches]
    opened = [sum(b.rows for b in batches[:k]) // WINDOW_ROWS for k in range(len(batches))]
    assert fourth["outcomes"] == sum(n for n, w in zip(outcomes, opened, strict=True) if w == 3)
    assert fourth["concept_drift"]["labels_total"] == sum(
        n for n, w in zip(outcomes, opened, strict=True) if w <= 3
    )
    assert health["windows_reported"] == 2 and health["dead_letters"] == 0
    assert "resuming after window 3, from the state in the monitor's table" in resumed
    # faust created the table's changelog topic itself, as a compacted topic of one partition
    from confluent_kafka.admin import AdminClient, ConfigResource

    from churnstream.streams.monitor import STATE_TABLE, app_id

    changelog = f"{app_id(settings)}-{STATE_TABLE}-changelog"
    admin = AdminClient(settings.kafka_config())
    assert len(admin.list_topics(changelog, timeout=10).topics[changelog].partitions) == 1
    (described,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, changelog)]).values()
    assert described.result()["cleanup.policy"].value == "compact"
    # with the message limit set, not the broker's default (1,048,588): a value the state accepts fits
    assert described.result()["max.message.bytes"].value == str(1024 * 1024)


# -- hostile input: a generated corpus of malformed records among valid ones ------------------------------

DECODE, VALIDATE = "decode", "validate"
TOP_LEVEL = {
    "batch_id": str,
    "created_at": int,
    "model_version": str,
    "feature_names": list,
    "predictions": dict,
    "outcomes": dict,
}
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _sample_record(version: str) -> dict[str, Any]:
    """A small valid record (5 predictions, 2 outcomes) to break in one place."""
    n = 5
    predictions: dict[str, list[Any]] = {
        "as_of": [1_700_000_000_000 + i for i in range(n)],
        "customer_id": [f"c{i}" for i in range(n)],
        "trigger": ["event"] * n,
        **{name: [float(i)] * n for i, name in enumerate(FEATURE_NAMES)},
        "batch_probability": [0.2] * n,
        "online_probability": [None] * n,
        "churn_probability": [0.3] * n,
    }
    outcomes = {
        "labeled_at": [1_700_000_000_000] * 2,
        "label": [0, 1],
        "source": ["order", "inactivity"],
        "batch_probability": [0.4, 0.6],
        "online_probability": [None, 0.5],
        "churn_probability": [0.4, 0.6],
    }
    return MonitoringBatch(
        "sample", 1_700_000_000_000, version, list(FEATURE_NAMES), predictions, outcomes
    ).to_json()


@st.composite
def malformed(draw: st.DrawFn, version: str) -> tuple[str, bytes | None, str]:
    """(kind, value, expected dead-letter stage) of one record broken in one way."""
    record = _sample_record(version)
    kind = draw(
        st.sampled_from(
            [
                "truncated JSON",
                "random bytes",
                "not an object",
                "missing field",
                "wrong top-level type",
                "NaN or Infinity",
                "number out of range",
                "unequal columns",
                "wrong value type",
                "probability outside [0, 1]",
                "label not 0/1",
                "as_of not epoch ms",
                "missing feature column",
                "bad feature_names",
                "unknown model version",
                "malformed model version",
                "huge payload",
                "too many rows",
            ]
        )
    )
    predictions, outcomes = record["predictions"], record["outcomes"]
    feature = draw(st.sampled_from(list(FEATURE_NAMES)))
    if kind == "truncated JSON":
        text = json.dumps(record).encode()
        return kind, text[: draw(st.integers(0, len(text) - 1))], DECODE
    if kind == "random bytes":
        return (
            kind,
            draw(
                st.one_of(st.none(), st.binary(max_size=64).filter(lambda b: not b.strip().startswith(b"{")))
            ),
            DECODE,
        )
    if kind == "not an object":
        return (
            kind,
            json.dumps(
                draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=8)))
            ).encode(),
            DECODE,
        )
    if kind == "missing field":
        del record[draw(st.sampled_from(sorted(TOP_LEVEL)))]
    elif kind == "wrong top-level type":
        name = draw(st.sampled_from(sorted(TOP_LEVEL)))
        record[name] = draw(JUNK.filter(lambda v, t=TOP_LEVEL[name]: type(v) is not t))
    elif kind == "NaN or Infinity":
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]))
        predictions[feature][draw(st.integers(0, 4))] = "@@"
        return kind, json.dumps(record).replace('"@@"', token).encode(), DECODE
    elif kind == "number out of range":
        part, name = draw(st.sampled_from([(predictions, "as_of"), (predictions, "churn_probability")]))
        part[name][0] = draw(st.sampled_from([2**62, 2**63 - 1, -(2**63)]))
    elif kind == "unequal columns":
        part = draw(st.sampled_from(["predictions", "outcomes"]))
        name = draw(st.sampled_from(sorted(record[part])))
        column = record[part][name]
        record[part][name] = (
            column[: draw(st.integers(0, len(column) - 1))] if draw(st.booleans()) else column + column
        )
    elif kind == "wrong value type":
        name = draw(st.sampled_from([feature, "churn_probability", "batch_probability"]))
        predictions[name][draw(st.integers(0, 4))] = draw(
            st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2), st.just({}))
        )
    elif kind == "probability outside [0, 1]":
        part = draw(st.sampled_from([predictions, outcomes]))
        part["churn_probability"][0] = draw(st.one_of(st.floats(1.0001, 1e9), st.floats(-1e9, -0.0001)))
    elif kind == "label not 0/1":
        outcomes["label"][1] = draw(
            st.one_of(st.integers(2, 9), st.just(True), st.just(0.5), st.just("1"), st.none())
        )
    elif kind == "as_of not epoch ms":
        part, name = draw(st.sampled_from([(predictions, "as_of"), (outcomes, "labeled_at")]))
        part[name][0] = draw(
            st.one_of(
                st.just(-1), st.just(32_503_680_000_000), st.floats(0, 1e12), st.just("2024-05-01T10:00:00Z")
            )
        )
    elif kind == "missing feature column":
        del predictions[feature]
    elif kind == "bad feature_names":
        record["feature_names"] = draw(
            st.sampled_from(
                [[], [*FEATURE_NAMES, FEATURE_NAMES[0]], [*FEATURE_NAMES, "as_of"], [*FEATURE_NAMES, 7], [""]]
            )
        )
    elif kind == "unknown model version":
        record["model_version"] = f"v{draw(st.integers(2, 9999)):04d}"
    elif kind == "malformed model version":
        record["model_version"] = draw(st.sampled_from(["", "../../etc/passwd", "v" * 65, "v 1", "<script>"]))
    elif kind == "huge payload":
        size = draw(st.integers(3 * 2**20, 3 * 2**20 + 100_000))
        return kind, b'{"batch_id": "' + b"x" * size + b'"}', VALIDATE
    elif kind == "too many rows":
        rows = 200_001
        record["predictions"] = {"as_of": [0] * rows, "churn_probability": [0] * rows}
    return kind, json.dumps(record).encode(), VALIDATE


def registered_model(model_dir: Path, reference: Any) -> str:
    """Registers a stand-in model with ``reference`` as its reference sample; returns its version."""
    from churnstream.models.batch import BatchModel
    from churnstream.models.registry import ModelRegistry

    model = BatchModel(estimator=None, feature_names=FEATURE_NAMES, medians=dict.fromkeys(FEATURE_NAMES, 0.0))
    return ModelRegistry(model_dir).register(
        model, {"note": "monitor test"}, reference=reference, promote=True
    )


def hostile_corpus(version: str, n: int) -> list[tuple[str, bytes | None, str]]:
    """``n`` malformed records, as hypothesis generates them for ``n`` runs of a property (seeded)."""
    corpus: list[tuple[str, bytes | None, str]] = []

    @settings_(max_examples=n, phases=[Phase.generate], derandomize=True, database=None, deadline=None)
    @given(malformed(version))
    def collect(item: tuple[str, bytes | None, str]) -> None:
        corpus.append(item)

    collect()
    return corpus


def test_hostile_records_go_to_dead_letter_and_the_monitor_goes_on(
    settings: Settings, topics: Topics, worlds: dict[str, Any], tmp_path: Path
) -> None:
    import pandas as pd

    rows, start = worlds["stationary"]
    stream = rows.since(START_DAY, start)
    reference = pd.DataFrame(stream[: 2 * WINDOW_ROWS])[[*FEATURE_NAMES, "churn_probability"]]
    version = registered_model(tmp_path / "models", reference)
    good = monitoring_batches(
        stream[2 * WINDOW_ROWS : 5 * WINDOW_ROWS + 300], version=version, batch_rows=400
    )
    corpus = hostile_corpus(version, 240)
    assert len(corpus) >= 200
    slots = np.random.default_rng(8).integers(0, len(good) + 1, len(corpus)).tolist()
    records: list[tuple[bytes, bytes | None, str | None]] = [
        (version.encode(), json.dumps(b.to_json()).encode(), None) for b in good
    ]
    for (kind, value, stage), slot in sorted(zip(corpus, slots, strict=True), key=lambda x: -x[1]):
        records.insert(slot, (version.encode(), value, f"{kind}|{stage}"))
    with run_monitor(settings, tmp_path) as monitor:
        where = produce_raw(settings, settings.topics.monitoring_batches, [(k, v) for k, v, _ in records])
        reports = wait_reports(settings, monitor, 3)
        health = wait_health(monitor, lambda h: h["dead_letters"] == len(corpus) and h["rows_pending"] == 300)
        letters = [
            json.loads(m.value())
            for m in consume_all(settings, settings.topics.dead_letter, expected=len(corpus), timeout=60)
        ]

    expected = {where[i]: tag for i, (_, _, tag) in enumerate(records) if tag is not None}
    got = {(letter["partition"], letter["offset"]): letter for letter in letters}
    assert len(letters) == len(corpus) and set(got) == set(expected)
    wrong = [
        (tag, letter["stage"], letter["error"][:120])
        for tp, tag in expected.items()
        if (letter := got[tp])["stage"] != tag.split("|")[1] or not letter["error"]
    ]
    assert wrong == []
    kinds = {tag.split("|")[0] for tag in expected.values()}
    assert len(kinds) >= 15, kinds  # the corpus covers (nearly) every way of breaking a record
    for letter in letters:
        assert letter["source_topic"] == settings.topics.monitoring_batches
    unknown = [got[tp]["error"] for tp, tag in expected.items() if tag.startswith("unknown model version")]
    assert all("unknown model version" in e and version in e for e in unknown)
    # every valid prediction is reported once, against the registered model's reference
    assert [r["rows"] for r in reports] == [WINDOW_ROWS] * 3
    assert all(
        r["reference_source"] == "registry" and r["reference_rows"] == 2 * WINDOW_ROWS for r in reports
    )
    assert [parse_time(r["window_start"]) for r in reports] == [
        min(r["as_of"] for r in stream[lo : lo + WINDOW_ROWS])
        for lo in range(2 * WINDOW_ROWS, 5 * WINDOW_ROWS, WINDOW_ROWS)
    ]
    assert health["windows_reported"] == 3 and monitor.process.returncode == 0


# -- liveness, readiness, and dead letters within the dead_letter topic's limit ---------------------------


def wait_ready(monitor: RunningMonitor, timeout: float = 60) -> dict[str, Any]:
    """The monitor's /ready body once it answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = monitor.get("/ready")
        if status == 200:
            return dict(json.loads(body))
        assert monitor.process.poll() is None, f"monitor died:\n{monitor.log_tail()}"
        assert time.monotonic() < deadline, (
            f"/ready never said ready: {status} {body!r}\n{monitor.log_tail()}"
        )
        time.sleep(0.3)


def sample_records(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` small valid records (5 predictions each), keyed by model version as the scorer keys them."""
    return [
        (
            MODEL_VERSION.encode(),
            json.dumps({**_sample_record(MODEL_VERSION), "batch_id": f"ok-{i}"}).encode(),
        )
        for i in range(n)
    ]


def test_an_oversized_record_is_dead_lettered_within_the_topic_limit_and_the_monitor_goes_on(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    from churnstream.streams.kafka import DEAD_LETTER_TOPIC_MAX_BYTES, make_producer

    # 9 MiB of control characters: beyond the monitor's 8 MiB, and six times that once escaped in JSON;
    # compressed it fits the topic's 4 MiB (the broker checks compressed batches)
    huge = b"\x01" * (9 * 2**20)
    producer = make_producer(settings, config={"message.max.bytes": 16 * 2**20, "compression.type": "lz4"})
    with run_monitor(settings, tmp_path) as monitor:
        producer.produce(settings.topics.monitoring_batches, key=MODEL_VERSION.encode(), value=huge)
        assert producer.flush(30) == 0
        where = produce_raw(settings, settings.topics.monitoring_batches, sample_records(3))
        health = wait_health(monitor, lambda h: h["records"] == 4 and h["rows_seen"] == 15)
        letters = consume_all(settings, settings.topics.dead_letter, expected=1)
        ready = wait_ready(monitor)

    (letter,) = letters
    assert len(letter.value()) <= DEAD_LETTER_TOPIC_MAX_BYTES
    body = json.loads(letter.value())
    assert body["stage"] == "decode" and "exceeds" in body["error"], body["error"]
    assert body["value_truncated"] is True and 0 < len(body["value"]) < len(huge)
    assert huge.decode().startswith(body["value"])
    assert (letter.key(), body["partition"], body["offset"]) == (MODEL_VERSION.encode(), where[0][0], 0)
    assert health["dead_letters"] == 1 and health["ok"] is True and health["status"] == "ok"
    assert ready["reasons"] == []


HEALTH_FIELDS = {  # what /health has always said (the demo, bench and tests read it) ...
    "ok",
    "model_version",
    "records",
    "rows_seen",
    "rows_pending",
    "rows_straggled",
    "rows_repeated",
    "labels_repeated",
    "windows_done",
    "windows_reported",
    "windows_skipped",
    "windows_merged",
    "reports_rendered",
    "reports_pending",
    "windows_light",
    "windows_drawn_later",
    "windows_awaiting_full_report",
    "report_errors",
    "report_worker",
    "dead_letters",
    "last_report_at",
    "started_at",
    "window_rows",
    "lag_ms",
    "delay_ms",
    "uncommitted_records",
    "read_offsets",
    "records_read_back",
} | {
    "status",
    "stalled_seconds",
    "stuck_after_seconds",
    "partitions",
    "lag",
    "lag_age_seconds",
    "last_batch_age_seconds",
}
READY_FIELDS = {"status", "reasons", "partitions", "lag", "last_batch_age_seconds", "stalled_seconds"}


def test_at_a_promotion_records_of_the_version_left_join_no_window_and_every_window_stays_whole(
    settings: Settings, topics: Topics, worlds: dict[str, Any], tmp_path: Path
) -> None:
    """Each scorer picks a promoted model up on its own poll, so for a few seconds the monitor reads
    records of both versions in turn (they are keyed by version: two partitions). A record of the version
    the window just left, made within a minute of the one that moved it on, joins no window
    (``rows_straggled``): before, every such record cut a window, and the next record another, so the old
    version got reports of one record's rows and the new one a reference of them."""
    rows = worlds["stationary"][0].rows
    old = monitoring_batches(rows[:6000], "sim-v1")  # two windows of reference, one reported
    late = monitoring_batches(rows[6000:7000], "sim-v1")  # a worker still on sim-v1 after the promotion
    new = monitoring_batches(rows[7000:15000], "sim-v2")  # two windows of reference, two reported
    order = [*old, new[0], late[0], new[1], late[1], *new[2:]]
    with run_monitor(settings, tmp_path) as monitor:
        for k, batch in enumerate(order, 1):  # one at a time, in this order, as the monitor reads them
            send_batches(settings, [batch])
            wait_health(monitor, lambda h, k=k: h["records"] == k)
        reports = wait_reports(settings, monitor, 3)
        health = monitor.health()
    assert [(r["model_version"], r["rows"]) for r in reports] == [("sim-v1", 2000), *[("sim-v2", 2000)] * 2]
    assert health["rows_straggled"] == 1000


def test_ready_once_running_and_both_pages_say_how_far_behind(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    with run_monitor(settings, tmp_path) as monitor:
        first = wait_ready(monitor)
        produce_raw(settings, settings.topics.monitoring_batches, sample_records(3))
        wait_health(monitor, lambda h: h["records"] == 3)
        deadline = time.monotonic() + 30
        while (ready := wait_ready(monitor))["lag"] != 0:  # measured every few seconds
            assert time.monotonic() < deadline, ready
            time.sleep(0.5)
        status, raw = monitor.get("/health")
        metrics = monitor.get("/metrics")[1].decode()

    assert set(first) == READY_FIELDS and first["status"] == "ready" and first["reasons"] == []
    assert first["partitions"] == list(range(6)) and first["last_batch_age_seconds"] is None
    assert set(ready) == READY_FIELDS and ready["status"] == "ready" and ready["stalled_seconds"] == 0
    assert 0 <= ready["last_batch_age_seconds"] < 60
    health = json.loads(raw)
    assert status == 200 and set(health) == HEALTH_FIELDS
    assert health["ok"] is True and health["status"] == "ok" and health["stalled_seconds"] == 0
    assert health["lag"] == 0 and health["partitions"] == list(range(6)) and health["records"] == 3
    assert health["stuck_after_seconds"] >= 60 and 0 <= health["last_batch_age_seconds"] < 60
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("churn_monitor_stalled_seconds", ())] == 0
    assert samples[("churn_monitor_behind_records", ())] == 0
    assert samples[("churn_monitor_records_total", ())] == 3
    assert samples[("churn_monitor_records_read_back_total", ())] == health["records_read_back"]
    assert samples[("churn_monitor_rows_total", ())] == health["rows_seen"] > 0
    assert samples[("churn_monitor_rows_pending", ())] == health["rows_pending"]
    assert samples[("churn_monitor_rows_straggled_total", ())] == health["rows_straggled"] == 0
    assert samples[("churn_monitor_rows_repeated_total", ())] == health["rows_repeated"] == 0
    assert samples[("churn_monitor_labels_repeated_total", ())] == health["labels_repeated"] == 0
    assert not any(name.startswith("churnstream_") for name, _ in samples)

"""The monitor service's bookkeeping without Kafka: which records it acks (commits) and when, and where a
restarted monitor resumes. The report worker is replaced by one that draws nothing; the same paths run
against real Kafka and the real worker in ``tests/integration/test_monitor.py``."""

from __future__ import annotations

import asyncio
import functools
import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnstream.messages import DeadLetter, DriftReport, MonitoringBatch
from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
from churnstream.monitoring.reference import FrameSource
from churnstream.monitoring.render import Rendered, RenderJob
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.state import MonitorState, Position
from churnstream.settings import Settings
from churnstream.streams.monitor_service import MonitorService, Record
from churnstream.streams.monitoring_batches import decode_batch

T0 = 1_717_200_000_000
TOPIC = "churnstream.monitoring_batches"
ROWS = 300


class DrawsNothing:
    mode = "fake"
    restarts = 0

    def __init__(self) -> None:
        self.jobs: list[RenderJob] = []

    def start(self) -> Future[float]:
        done: Future[float] = Future()
        done.set_result(0.0)
        return done

    def submit(self, job: RenderJob) -> Future[Rendered]:
        self.jobs.append(job)
        done: Future[Rendered] = Future()
        done.set_result(Rendered(job.job_id, f"/nowhere/{job.job_id}.html", 0.0))
        return done

    def restart(self) -> None: ...

    def close(self) -> None: ...


def record(k: int) -> bytes:
    """Record ``k``: predictions ``k*ROWS .. (k+1)*ROWS - 1``, ``as_of`` one second apart."""
    rng = np.random.default_rng(k)
    first = k * ROWS
    predictions: dict[str, list[Any]] = {
        "as_of": [T0 + (first + i) * 1000 for i in range(ROWS)],
        "x": rng.normal(0, 1, ROWS).tolist(),
        "churn_probability": rng.uniform(0, 1, ROWS).tolist(),
    }
    batch = MonitoringBatch(f"b{k}", T0, "v1", ["x"], predictions, {})
    return json.dumps(batch.to_json()).encode()


class Monitor:
    """A service over a state directory (or a table, as faust's, and the directory ``local``), with what it
    acked and published."""

    def __init__(
        self, tmp: Path, table: dict[str, bytes] | None = None, local: str = "state", missed: Any = None
    ) -> None:
        reference = pd.DataFrame({"x": np.random.default_rng(0).normal(0, 1, 3000), "churn_probability": 0.5})
        self.monitor = DriftMonitor(
            references=FrameSource(reference),
            store=ReportStore(tmp / "reports", workspace=False),
            config=MonitorConfig(window_rows=1000),
            state=MonitorState(tmp / local, table=table),
        )
        self.acked: list[int] = []
        self.reports: list[DriftReport] = []
        self.letters: list[DeadLetter] = []

        async def publish_report(report: DriftReport) -> None:
            self.reports.append(report)

        async def publish_dead_letter(letter: DeadLetter) -> None:
            self.letters.append(letter)

        self.service = MonitorService(
            settings=Settings(),
            monitor=self.monitor,
            publish_report=publish_report,
            publish_dead_letter=publish_dead_letter,
            renderer=DrawsNothing(),  # type: ignore[arg-type]
            missed=missed,
        )

    def feed(self, offset: int, value: bytes) -> None:
        asyncio.run(
            self.service.on_message(b"v1", value, TOPIC, 0, offset, ack=lambda: self.acked.append(offset))
        )

    def report_all(self) -> None:
        async def drain() -> None:
            publisher = self.service.publisher
            while (job := publisher.queue.take()) is not None:
                await publisher.publish(job, await publisher.render(job))

        asyncio.run(drain())


@pytest.mark.parametrize("kept_in", ["file", "table"])
def test_records_are_acked_once_reported_and_a_restart_counts_each_row_once(
    tmp_path: Path, kept_in: str
) -> None:
    """``table``: the state is kept in a table (faust's, in the running monitor) and the restarted monitor
    has a new, empty local directory."""
    table: dict[str, bytes] | None = {} if kept_in == "table" else None
    first = Monitor(tmp_path, table)
    for k in range(4):  # rows 0..1199: window 1 is rows 0..999, record 3 straddles it
        first.feed(k, record(k))
    first.feed(4, b"{broken")
    assert first.acked == [] and first.service.publisher.queue.windows == 1
    first.report_all()
    assert first.acked == [0, 1, 2]  # record 3 holds rows of the open window; the dead letter waits behind it
    assert [len(r.to_json()) > 0 and r.rows for r in first.reports] == [1000]
    state = MonitorState(tmp_path / "state", table=table).load()
    assert state is not None and state.seq == 1
    assert state.positions[f"{TOPIC}/0"].offset == 3 and state.positions[f"{TOPIC}/0"].rows == 100
    assert [letter.offset for letter in first.letters] == [4]
    assert (tmp_path / "state" / "state.json").exists() == (table is None)

    # a restart: Kafka delivers again from the committed offset (3); rows 900..999 of record 3 were reported
    second = Monitor(tmp_path, table, local="fresh" if table is not None else "state")
    second.feed(3, record(3))
    second.feed(4, b"{broken")
    for k in range(4, 7):
        second.feed(k + 1, record(k))
    second.feed(6, record(5))  # delivered twice (a rebalance): ignored
    second.report_all()
    window = second.reports[0]
    assert window.rows == 1000
    assert (window.window_start, window.window_end) == (T0 + 1000 * 1000, T0 + 1999 * 1000)
    assert second.acked == [3, 4, 5, 6]  # offset 7 (rows 1800..2099) holds rows of the open window
    assert second.monitor.rows_pending == 100
    assert second.service.health()["windows_reported"] == 2


def test_report_id_is_the_same_when_a_window_is_rebuilt(tmp_path: Path) -> None:
    one, two = Monitor(tmp_path / "a"), Monitor(tmp_path / "b")
    for monitor in (one, two):
        for k in range(4):
            monitor.feed(k, record(k))
        monitor.report_all()
    assert one.reports[0].report_id == two.reports[0].report_id


def test_strict_decoding_names_the_problem() -> None:
    good: dict[str, Any] = json.loads(record(0))
    cases: dict[str, dict[str, Any]] = {
        "as_of must be epoch milliseconds": {"predictions": {**good["predictions"], "as_of": [1.5] * ROWS}},
        "unequal lengths": {"predictions": {**good["predictions"], "x": [1.0]}},
        "x must hold numbers or nulls, not str": {"predictions": {**good["predictions"], "x": ["1"] * ROWS}},
        "churn_probability must lie in [0, 1]": {
            "predictions": {**good["predictions"], "churn_probability": [2.0] * ROWS}
        },
        "lack the column x": {"predictions": {k: v for k, v in good["predictions"].items() if k != "x"}},
        "lacks model_version": {"model_version": None},
        "is not a model version name": {"model_version": "../../etc"},
        "created_at must be a int": {"created_at": True},
    }
    for reason, change in cases.items():
        bad = {k: v for k, v in {**good, **change}.items() if v is not None}
        try:
            decode_batch(json.dumps(bad).encode())
        except Exception as exc:
            assert reason in str(exc), (reason, str(exc))
        else:
            raise AssertionError(f"accepted: {reason}")
    assert decode_batch(record(0)).rows == ROWS


def test_a_partition_read_again_late_after_a_restart_keeps_its_position(tmp_path: Path) -> None:
    first = Monitor(tmp_path)
    first.feed(0, record(0))
    for k in range(1, 4):  # partition 1 holds records 1..3; record 3 straddles windows 1 and 2
        asyncio.run(
            first.service.on_message(
                b"v1", record(k), TOPIC, 1, k - 1, ack=functools.partial(first.acked.append, k)
            )
        )
    first.report_all()
    saved = MonitorState(tmp_path / "state").load()
    assert saved is not None and saved.positions[f"{TOPIC}/1"] == Position(2, 100, None)

    # after the restart, partition 0 brings a whole window before partition 1 is read again
    second = Monitor(tmp_path)
    for k in range(10, 14):
        second.feed(k, record(k))
    second.report_all()
    saved = MonitorState(tmp_path / "state").load()
    assert saved is not None and saved.positions[f"{TOPIC}/1"] == Position(2, 100, None)
    asyncio.run(second.service.on_message(b"v1", record(3), TOPIC, 1, 2, ack=lambda: None))
    assert second.monitor.rows_pending == 200 + 200  # record 13's last 200 rows, record 3's last 200


def test_records_faust_lost_are_read_and_fed_in_order(tmp_path: Path) -> None:
    """faust can hand a partition's records over from later than the group's committed offset after a
    restart, or leave one out after its first (faust-streaming issue #596): the monitor reads what lies
    between and feeds it in offset order."""
    first = Monitor(tmp_path)
    for k in range(4):
        first.feed(k, record(k))
    first.report_all()  # committed: 3; record 3 straddles windows 1 and 2, 100 of its rows reported
    asked: list[tuple[tuple[str, int], int | None, int]] = []

    async def missed(
        tp: tuple[str, int], start: int | None, stop: int
    ) -> list[tuple[Record, float | None, Any]]:
        asked.append((tp, start, stop))
        lost = range(3 if start is None else start, stop)  # from the committed offset (3) on
        return [
            (Record(b"v1", record(k), TOPIC, 0, k), None, functools.partial(second.acked.append, k))
            for k in lost
        ]

    second = Monitor(tmp_path, missed=missed)
    for k in (4, 6, 7):  # faust starts at offset 4 and leaves out 5
        second.feed(k, record(k))
    second.feed(6, record(6))  # delivered twice (a rebalance): ignored, nothing asked
    second.report_all()
    window = second.reports[0]
    assert window.rows == 1000
    assert (window.window_start, window.window_end) == (T0 + 1000 * 1000, T0 + 1999 * 1000)
    assert asked == [((TOPIC, 0), None, 4), ((TOPIC, 0), 5, 6)]
    assert second.acked == [3, 4, 5]  # record 6 (rows 1800..2099) holds rows of the open window
    assert second.monitor.rows_pending == 100 + ROWS
    assert second.service.health()["records_read_back"] == 2
    assert b"churn_monitor_records_read_back_total 2.0" in second.service.metrics()


class DiskFull(DrawsNothing):
    def submit(self, job: RenderJob) -> Future[Rendered]:
        done: Future[Rendered] = Future()
        done.set_exception(OSError(28, "No space left on device"))  # as the report worker's save fails
        return done


def test_a_full_report_disk_publishes_the_window_without_a_page_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the error page's own write raised again inside the handler: the monitor's report task died,
    faust stopped the app, and a restart crashed on the same window: no drift report at all."""
    full = OSError(28, "No space left on device")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise full

    monkeypatch.setattr(ReportStore, "save_page", refuse)
    monkeypatch.setattr(ReportStore, "save_message", refuse)
    m = Monitor(tmp_path)
    m.service.publisher.renderer = DiskFull()  # type: ignore[assignment]
    m.monitor.url_base = "http://monitor.example"
    for k in range(4):
        m.feed(k, record(k))
    with caplog.at_level("ERROR"):
        m.report_all()
    (report,) = m.reports
    message = report.to_json()
    assert message["url"] is None and message["rows"] == 1000 and message["action"] in ("none", "watch")
    error = message["evidently_report"]["error"]
    assert "No space left on device" in error and "CHURN_REPORT_DIR" in error, error
    assert message["evidently_report"]["drawn"] == "none"
    assert m.acked == [0, 1, 2]  # settled like any other window
    assert "published without a page" in caplog.text
    # the list links the window like any other: the link shows it from its message, not a 404
    pages = asyncio.run(_get(m, "/", f"/reports/{report.report_id}", f"/reports/{report.report_id}.json"))
    (status, listing), (html_status, page), (json_status, body) = pages
    assert status == 200 and f"/reports/{report.report_id}" in listing, listing
    assert html_status == 200 and f"Drift window {report.report_id}" in page, page
    assert "No space left on device" in page and "CHURN_REPORT_DIR" in page
    assert json_status == 200 and json.loads(body) == message
    assert asyncio.run(_get(m, "/reports/no-such-window"))[0][0] == 404


async def _get(m: Monitor, *paths: str) -> list[tuple[int, str]]:
    """GET ``paths`` from the monitor's own web application (the pages faust serves), in process."""
    from aiohttp.test_utils import TestClient, TestServer

    from churnstream.streams.monitor import MonitorPages

    pages = MonitorPages(m.service, probe=None, host="127.0.0.1", port=0)  # type: ignore[arg-type]
    async with TestClient(TestServer(pages.application())) as client:
        found = []
        for path in paths:
            response = await client.get(path)
            found.append((response.status, await response.text()))
    pages.views.close()
    return found


def test_a_page_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = ReportStore(tmp_path / "reports", workspace=False)
    store.html_path("r1").mkdir(parents=True)  # the page's place is taken: the final rename fails
    with pytest.raises(OSError):
        store.save_page("r1", "<html></html>")
    assert [p.name for p in store.root.iterdir()] == ["r1.html"]


def test_the_daily_report_pages_refuse_a_day_that_does_not_exist(tmp_path: Path) -> None:
    """/report?day=2024-02-30 answered 200 'Nothing happened on 2024-02-30' where the CLI says 'not a day'."""
    m = Monitor(tmp_path)
    for path in ("/report?day=2024-02-30", "/report.json?day=2024-02-30", "/report?day=May-2"):
        ((status, text),) = asyncio.run(_get(m, path))
        assert status == 400 and "YYYY-MM-DD" in text, (path, status, text)

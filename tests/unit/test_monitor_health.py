"""The monitor's liveness and readiness decisions, and the bound on dead letters waiting to be acked, without
Kafka: a probe that says Kafka is down, input offsets given by hand. ``tests/integration/test_monitor.py``
runs the same pages against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from churnstream.settings import Settings
from churnstream.streams import monitor_acks, monitor_health
from churnstream.streams.health import DependencyProbe
from churnstream.streams.monitor_health import STUCK_SECONDS, InputOffsets, Marks
from tests.unit.test_monitoring_service import TOPIC, Monitor, record


class KafkaDown(DependencyProbe):
    def problems(self) -> dict[str, str | None]:
        return {"kafka": "Kafka at 127.0.0.1:9 does not answer (timed out)"}


class KafkaUp(DependencyProbe):
    def problems(self) -> dict[str, str | None]:
        return {"kafka": None}


class Offsets(InputOffsets):
    """Partition 0 of the monitoring topic assigned; its marks are whatever the test sets."""

    def __init__(self, marks: dict[int, Marks] | None = None) -> None:
        super().__init__(Settings(), group="g", assignment=lambda: [(TOPIC, 0)])
        assert self.topic == TOPIC
        self.marks = marks or {0: Marks(0, 0, -1001)}

    def measure(self, partitions: Iterable[int]) -> dict[int, Marks]:
        return {p: self.marks[p] for p in partitions}


def watched(tmp: Path, offsets: InputOffsets | None = None) -> Monitor:
    monitor = Monitor(tmp)
    monitor.service.watch.offsets = offsets or Offsets()
    return monitor


def observe(monitor: Monitor, end: int, committed: int = -1001) -> None:
    """A measurement of partition 0 ending at ``end``, taken now."""
    started = time.monotonic()
    monitor.service.watch.note_input({0: Marks(0, end, committed)}, started=started, finished=started)


def test_ready_needs_kafka_and_says_why_not(tmp_path: Path) -> None:
    monitor = watched(tmp_path)
    settings = Settings()
    ok, body = asyncio.run(monitor.service.watch.ready(KafkaDown(settings, redis=False)))
    assert not ok and body["status"] == "not ready"
    assert body["reasons"] == ["Kafka at 127.0.0.1:9 does not answer (timed out)"]
    assert set(body) == {
        "status",
        "reasons",
        "partitions",
        "lag",
        "last_batch_age_seconds",
        "stalled_seconds",
    }

    ok, body = asyncio.run(monitor.service.watch.ready(KafkaUp(settings, redis=False)))
    assert ok and body["reasons"] == [] and body["partitions"] == [0]
    assert body["lag"] == 0 and body["last_batch_age_seconds"] is None

    monitor.feed(0, record(0))
    ok, body = monitor.service.watch.readiness({"kafka": None})
    assert ok and 0 <= body["last_batch_age_seconds"] < 5


def test_ready_needs_partitions(tmp_path: Path) -> None:
    unassigned = Offsets()
    unassigned._assignment = lambda: []
    ok, body = watched(tmp_path, unassigned).service.watch.readiness({"kafka": None})
    assert not ok and body["reasons"] == [f"no partition of {TOPIC} is assigned to this monitor (yet)"]


def test_an_idle_topic_is_never_stuck(tmp_path: Path) -> None:
    monitor = watched(tmp_path)
    service = monitor.service
    monitor.feed(0, record(0))
    observe(monitor, end=1)  # everything on the partition handled
    assert (
        service.watch.lag == 0
        and service.watch.stalled_seconds(now=time.monotonic() + 10 * STUCK_SECONDS) == 0
    )
    # a record arriving after a long silence is input waiting from now on, not since the last record
    service.watch._turned_at -= 3600
    observe(monitor, end=2)
    assert service.watch.lag == 1 and service.watch.stalled_seconds() < 1
    assert service.live()[0] and service.health()["status"] == "ok"
    monitor.feed(1, record(1))  # handled: nothing waits any more
    assert service.watch.stalled_seconds(now=time.monotonic() + 10 * STUCK_SECONDS) == 0


def test_input_left_waiting_makes_the_monitor_stuck_and_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_health, "READY_STALL_SECONDS", 0.1)
    monitor = watched(tmp_path)
    service = monitor.service
    service.watch.stuck_after = 0.2
    observe(monitor, end=5, committed=2)  # records 2..4 wait; the agent has handled none
    assert service.watch.lag == 3 and service.live()[0]
    time.sleep(0.25)
    ok, body = service.live()
    assert not ok and body["status"] == "stuck" and body["ok"] is False and body["stalled_seconds"] >= 0.2
    assert body["windows_reported"] == 0 and "read_offsets" in body  # the state is all still there
    ok, ready = service.watch.readiness({"kafka": None})
    assert not ok and ready["reasons"] == [
        f"3 records have waited {ready['stalled_seconds']:.0f} s for the agent, none handled"
    ]
    # a measurement that cannot be taken stops the clock: Kafka's state is /ready's business
    service.watch.note_input(None, started=time.monotonic(), finished=time.monotonic())
    assert service.live()[0] and service.watch.lag is None
    # a record handled while a measurement was under way: that measurement starts no clock
    started = time.monotonic()
    monitor.feed(2, record(2))
    service.watch.note_input({0: Marks(0, 5, 2)}, started=started, finished=time.monotonic())
    assert service.watch.lag == 2 and service.watch.stalled_seconds() == 0


def test_a_record_held_too_long_makes_the_monitor_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_health, "READY_STALL_SECONDS", 0.1)
    monitor = watched(tmp_path)
    service = monitor.service
    service.watch.stuck_after = 0.2

    async def run() -> tuple[bool, bool, list[str]]:
        release = asyncio.Event()

        async def hangs(letter: object) -> None:
            await release.wait()

        service._publish_dead_letter = hangs
        handling = asyncio.ensure_future(service.on_message(b"v1", b"{broken", TOPIC, 0, 7, ack=lambda: None))
        await asyncio.sleep(0.3)
        alive = service.live()[0]
        ready, body = service.watch.readiness({"kafka": None})
        release.set()
        await handling
        return alive, service.live()[0], body["reasons"]

    alive, after, reasons = asyncio.run(run())
    assert not alive and after
    assert len(reasons) == 1 and reasons[0].startswith(
        f"the agent has been handling the record {TOPIC}[0]@7 for"
    )


def test_dead_letters_waiting_to_be_acked_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_acks, "MAX_WAITING_ACKS", 3)
    monkeypatch.setattr(monitor_acks, "MAX_WAITING_ACK_BYTES", 1000)
    monitor = Monitor(tmp_path)
    for k in range(4):  # record 3 holds rows of the open window: what follows waits behind it
        monitor.feed(k, record(k))
    monitor.feed(4, b"x" * 2000)  # too big to wait: acked at once
    for offset in range(5, 10):  # three wait, the rest are acked at once
        monitor.feed(offset, b"{broken")
    assert monitor.acked == [4, 8, 9]
    assert (
        monitor.service.uncommitted.waiting_acks == 3 and monitor.service.health()["uncommitted_records"] == 7
    )
    assert len(monitor.letters) == 6 and monitor.service.dead_letters == 6
    monitor.report_all()
    assert monitor.acked == [4, 8, 9, 0, 1, 2]  # record 3 still holds the open window
    for k in range(4, 7):  # rows 1,200..2,099: the open window closes, the waiting dead letters follow
        monitor.feed(k + 6, record(k))
    monitor.report_all()
    assert monitor.acked == [4, 8, 9, 0, 1, 2, 3, 5, 6, 7, 10, 11]
    assert (
        monitor.service.uncommitted.waiting_acks == 0 and monitor.service.uncommitted.waiting_ack_bytes == 0
    )


def test_metrics_are_named_like_the_scorers_and_follow_the_last_window() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from churnstream.streams.monitor_health import MonitorMetrics

    health = {
        "records": 4,
        "rows_seen": 1200,
        "rows_pending": 200,
        "reports_rendered": 3,
        "report_errors": 1,
        "dead_letters": 2,
        "records_read_back": 1,
        "reports_pending": 1,
        "lag": None,
        "lag_ms": None,
        "stalled_seconds": 1.5,
    }
    reports: list[dict[str, object]] = []
    metrics = MonitorMetrics(health=lambda: health, reports=lambda: reports)

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = metrics.render().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    before = samples()
    assert before[("churn_monitor_records_total", ())] == 4
    assert before[("churn_monitor_rows_total", ())] == 1200
    assert before[("churn_monitor_reports_total", ())] == 3
    assert before[("churn_monitor_report_errors_total", ())] == 1
    assert before[("churn_monitor_dead_letters_total", ())] == 2
    assert before[("churn_monitor_records_read_back_total", ())] == 1
    assert before[("churn_monitor_rows_pending", ())] == 200
    assert before[("churn_monitor_reports_waiting", ())] == 1
    assert before[("churn_monitor_stalled_seconds", ())] == 1.5
    assert before[("churn_monitor_windows_total", (("verdict", "drift"),))] == 0
    absent = ("churn_monitor_drift_share", "churn_monitor_behind_records")
    assert not any(name in absent for name, _ in before)

    reports += [
        {
            "dataset_drift": True,
            "drift_share": 0.5,
            "action": "watch",
            "realized_performance": {"value": 0.71},
        },
        {
            "dataset_drift": False,
            "drift_share": 0.1,
            "action": "retrain",
            "estimated_performance": {"value": 0.66},
            "realized_performance": None,
        },
    ]
    health.update(lag=7, lag_ms={"p50": 250.0, "p99": 900.0, "max": 1000.0})
    after = samples()
    assert after[("churn_monitor_windows_total", (("verdict", "drift"),))] == 1
    assert after[("churn_monitor_windows_total", (("verdict", "no_drift"),))] == 1
    assert after[("churn_monitor_drift_share", ())] == 0.1
    assert after[("churn_monitor_estimated_auc", ())] == 0.66
    assert after[("churn_monitor_realized_auc", ())] == 0.71  # the last one known
    actions = {dict(labels)["action"]: v for (n, labels), v in after.items() if n == "churn_monitor_action"}
    assert actions == {"none": 0, "watch": 0, "retrain": 1}
    assert after[("churn_monitor_behind_records", ())] == 7
    assert after[("churn_monitor_lag_seconds", (("quantile", "0.99"),))] == 0.9
    assert ("churn_monitor_lag_seconds", (("quantile", "0.5"),)) in after  # not "0.50": what PromQL asks for


def test_health_measures_a_stale_lag_again_before_it_answers(tmp_path: Path) -> None:
    """Measured only when asked, a monitor probed rarely answered /health with the lag of ten minutes
    before: 1,226 records behind while nothing waited (an operator review)."""
    monitor = watched(tmp_path, Offsets({0: Marks(0, 5, 2)}))
    watch = monitor.service.watch
    observe(monitor, end=1229)  # ten minutes ago, 1,226 records were waiting
    watch._observed_at = time.monotonic() - 600
    assert watch.lag == 1229 and monitor.service.health()["lag_age_seconds"] >= 600

    async def ask() -> None:
        await watch.fresh()

    asyncio.run(ask())
    assert watch.lag == 3 and monitor.service.health()["lag_age_seconds"] < 5

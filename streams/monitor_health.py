"""The monitor's liveness and readiness: how long input has waited for its agent, measured from outside faust.

``/health`` is liveness: 503 with ``stuck`` once input has waited :data:`STUCK_SECONDS` for the agent
(records on its partitions beyond what it handled, and no record handled since; or one record in hand that
long). An idle topic has nothing waiting, so it never reads as stuck. ``/ready`` is readiness: 200 while
Kafka answers, partitions are assigned and no input has waited :data:`READY_STALL_SECONDS`, else 503 with
``reasons``. What waits is measured by a Kafka client of the monitor's own (:class:`InputOffsets`), so a
stuck faust consumer cannot hide it; :class:`InputWatch` keeps the stall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from confluent_kafka import TopicPartition

from churnstream.settings import Settings
from churnstream.streams.health import Answer, DependencyProbe
from churnstream.streams.kafka import make_consumer, records_behind, watermarks

# the monitor's log lines keep the name operators know them by
log = logging.getLogger("churnstream.streams.monitor")

# Input left waiting this long without a record handled makes /health say stuck: longer than a faust
# rebalance (60 s) plus one slow broker request (90 s), so neither reads as stuck.
STUCK_SECONDS = 180.0
READY_STALL_SECONDS = 30.0  # input left waiting this long makes the monitor not ready
OBSERVE_SECONDS = 5.0  # the input offsets are measured at most this often
STALE_SECONDS = 2 * OBSERVE_SECONDS  # a measurement this old is taken again before /health answers
FRESH_WAIT_SECONDS = 2.0  # how long /health waits for it


class Marks(NamedTuple):
    """One partition of the monitoring topic: its first and end offsets, and the monitor group's committed
    offset (negative when it has none)."""

    start: int
    end: int
    committed: int


class InputOffsets:
    """Where this monitor's partitions of the monitoring topic end, and where its group committed, read by
    a Kafka client of its own that never joins the group (so a stuck faust consumer cannot hide input);
    every call waits at most ``timeout`` seconds. ``assignment`` gives faust's assigned (topic, partition)
    pairs."""

    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        assignment: Callable[[], Iterable[tuple[str, int]]],
        timeout: float = 1.0,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.monitoring_batches
        self.group = group
        self.timeout = timeout
        self._assignment = assignment
        self._consumer: Any = None
        self._lock = threading.Lock()

    def partitions(self) -> list[int] | None:
        """This monitor's partitions of the monitoring topic; None while its consumer has not started."""
        try:
            return sorted(p for topic, p in self._assignment() if topic == self.topic)
        except Exception:  # faust raises ConsumerNotStarted and the like until its consumer runs
            return None

    def measure(self, partitions: Iterable[int]) -> dict[int, Marks]:
        """The :class:`Marks` of ``partitions``; blocks (run it off the event loop), and raises
        ``KafkaException`` when Kafka does not answer in time."""
        with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(self.settings, self.group)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            if not tps:
                return {}
            marks = watermarks(self._consumer, tps, timeout=self.timeout)
            committed = self._consumer.committed(tps, timeout=self.timeout)
            return {tp.partition: Marks(*marks[(self.topic, tp.partition)], tp.offset) for tp in committed}

    def committed(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offsets of ``partitions`` ((topic, partition) pairs), as the broker has
        them (partitions without one are left out); blocks up to this instance's ``timeout`` and raises
        ``KafkaException`` when Kafka does not answer."""
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not tps:
            return {}
        with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(self.settings, self.group)
            answer = self._consumer.committed(tps, timeout=self.timeout)
        return {(tp.topic, tp.partition): tp.offset for tp in answer if tp.offset >= 0}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


class InputWatch:
    """The stall clock of the monitor's agent and how far behind it is (``lag``, records), for ``/health``
    and ``/ready``. ``offsets`` measures the input waiting (none: never measured); ``read_offsets`` is the
    next offset the agent will handle per (topic, partition)."""

    def __init__(
        self, *, settings: Settings, offsets: InputOffsets | None, read_offsets: Mapping[tuple[str, int], int]
    ) -> None:
        self.settings = settings
        self.stuck_after = STUCK_SECONDS
        self.offsets = offsets
        self.lag: int | None = None  # records on the assigned partitions beyond those handled
        self.partitions: list[int] | None = None
        self.last_batch_at: float | None = None  # wall clock when the agent last handled a record
        self._read_offsets = read_offsets
        self._turned_at = time.monotonic()  # when the agent last handled a record (or the start)
        self._busy: tuple[float, str] | None = None  # since when the agent holds which record
        self._waiting_since: float | None = None  # input seen waiting, and no record handled since
        self._observed_at = -OBSERVE_SECONDS
        self._observing: asyncio.Task[None] | None = None
        self._observe_lock: asyncio.Lock | None = None

    def handling(self, record: str) -> None:
        """The agent took ``record`` ("topic[partition]@offset") in hand."""
        self._busy = (time.monotonic(), record)

    def handled(self) -> None:
        """The agent is done with its record: nothing waits for it now."""
        self._busy, self._waiting_since = None, None
        self._turned_at = time.monotonic()
        self.last_batch_at = time.time()

    def stalled_seconds(self, now: float | None = None) -> float:
        """How long the agent has kept input waiting: one record in hand, or records waiting on its
        partitions (as last measured) and none handled since; 0 when nothing waits."""
        now = time.monotonic() if now is None else now
        since = [t for t in (self._busy[0] if self._busy else None, self._waiting_since) if t is not None]
        return max(0.0, now - min(since)) if since else 0.0

    def readiness(self, problems: Mapping[str, str | None]) -> Answer:
        """Readiness from the dependencies' ``problems`` (:meth:`DependencyProbe.problems`): ready when
        none has one, the consumer holds partitions and no input has waited ``READY_STALL_SECONDS``."""
        reasons = [why for why in problems.values() if why]
        if self.offsets is not None:
            self.partitions = self.offsets.partitions()
            if not self.partitions:
                reasons.append(f"no partition of {self.offsets.topic} is assigned to this monitor (yet)")
        stalled = self.stalled_seconds()
        if stalled >= READY_STALL_SECONDS:
            if self._busy is not None:
                reasons.append(f"the agent has been handling the record {self._busy[1]} for {stalled:.0f} s")
            else:
                reasons.append(f"{self.lag} records have waited {stalled:.0f} s for the agent, none handled")
        return not reasons, {
            "status": "ready" if not reasons else "not ready",
            "reasons": reasons,
            "partitions": self.partitions,
            "lag": self.lag,
            "last_batch_age_seconds": self.last_batch_age(),
            "stalled_seconds": round(stalled, 3),
        }

    async def ready(self, probe: DependencyProbe) -> Answer:
        """Readiness for ``/ready``: the probe's checks (they block up to its timeout) run in a thread,
        beside a fresh measurement of the input waiting."""
        loop = asyncio.get_running_loop()
        checked, _ = await asyncio.gather(
            loop.run_in_executor(None, probe.problems), self.observe(), return_exceptions=True
        )
        if isinstance(checked, BaseException):
            checked = {"kafka": f"the Kafka check failed: {type(checked).__name__}: {checked}"}
        return self.readiness(checked)

    def observe_soon(self) -> None:
        """Measure the input waiting in the background (``/health`` answers at once, from the last one)."""
        if self.offsets is not None and (self._observing is None or self._observing.done()):
            self._observing = asyncio.ensure_future(self.observe())

    async def fresh(self, wait: float = FRESH_WAIT_SECONDS) -> None:
        """For ``/health``: a measurement older than ``STALE_SECONDS`` is taken again before answering (up to
        ``wait`` seconds; Kafka's answer is ``/ready``'s business), a recent one in the background. Only
        measured when asked, a rarely probed monitor answered with a lag ten minutes old (a review: 1,226
        records behind while nothing waited)."""
        if self.offsets is None:
            return
        age = self.lag_age()
        self.observe_soon()
        if age is not None and age < STALE_SECONDS or self._observing is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._observing), wait)

    def lag_age(self) -> float | None:
        """Seconds since the lag was measured (None: never)."""
        if self._observed_at < 0:
            return None
        return time.monotonic() - self._observed_at

    async def observe(self) -> None:
        """Measure how far behind the agent is (at most every ``OBSERVE_SECONDS``), in a thread."""
        offsets = self.offsets
        if offsets is None:
            return
        if self._observe_lock is None:
            self._observe_lock = asyncio.Lock()
        async with self._observe_lock:
            if time.monotonic() - self._observed_at < OBSERVE_SECONDS:
                return
            self.partitions = offsets.partitions()
            started = time.monotonic()
            marks: dict[int, Marks] | None = None
            if self.partitions is not None:
                try:
                    marks = await asyncio.get_running_loop().run_in_executor(
                        None, offsets.measure, self.partitions
                    )
                except Exception as exc:  # Kafka's answer is /ready's business; here it is unknown input
                    log.debug("input offsets not measured: %s", self.settings.redact(str(exc)))
            self._observed_at = time.monotonic()
            self.note_input(marks, started=started, finished=self._observed_at)

    def note_input(self, marks: Mapping[int, Marks] | None, *, started: float, finished: float) -> None:
        """Take a measurement begun at ``started`` (monotonic): the lag, and input seen waiting starts the
        stall clock unless the agent handled a record since; an unknown measurement stops it."""
        if marks is None or self.offsets is None:
            self.lag, self._waiting_since = None, None
            return
        topic = self.offsets.topic
        ends = {(topic, p): (m.start, m.end) for p, m in marks.items()}
        read = {(topic, p): max(m.committed, self._read_offsets.get((topic, p), 0)) for p, m in marks.items()}
        behind = records_behind(ends, read)
        self.lag = behind
        if not behind:
            self._waiting_since = None
        elif self._waiting_since is None and self._turned_at < started:
            self._waiting_since = finished

    def last_batch_age(self) -> float | None:
        return None if self.last_batch_at is None else round(time.time() - self.last_batch_at, 3)

    def close(self) -> None:
        if self.offsets is not None:
            self.offsets.close()


def percentiles(values: deque[float], *, scale: float) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype="float64") * scale
    p50, p99, top = np.percentile(array, [50, 99, 100])
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "max": round(float(top), 1)}


class MonitorMetrics:
    """The monitor's Prometheus metrics (a registry of its own, so tests can run several), named like the
    scorer's (:mod:`~churnstream.streams.scorer_metrics`): ``churn_monitor_*``, ``_total`` on counters.

    The values live in the monitor (its ``/health`` body and the messages it published), so they are read
    when Prometheus scrapes: ``health`` gives the body, ``reports`` the published messages in window order.

    >>> metrics = MonitorMetrics(health=lambda: _SAMPLE_HEALTH, reports=lambda: _SAMPLE_REPORTS)
    >>> text = metrics.render().decode()
    >>> 'churn_monitor_windows_total{verdict="drift"} 1.0' in text
    True
    >>> 'churn_monitor_action{action="watch"} 1.0' in text, 'churn_monitor_realized_auc 0.7' in text
    (True, True)
    """

    def __init__(
        self,
        *,
        health: Callable[[], Mapping[str, Any]],
        reports: Callable[[], Sequence[Mapping[str, Any]]],
    ) -> None:
        from prometheus_client import CollectorRegistry

        self._health = health
        self._reports = reports
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def describe(self) -> list[Any]:
        return []  # values are read at scrape time; nothing to describe up front

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        h, reports = self._health(), self._reports()

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"churn_monitor_{name}", text, value=value)

        def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"churn_monitor_{name}", text, value=value)

        yield counter("records", "Monitoring batch records consumed", h["records"])
        yield counter("rows", "Predictions consumed", h["rows_seen"])
        yield counter(
            "rows_straggled",
            "Predictions of workers still on the model version the window had just left (in no window)",
            h.get("rows_straggled", 0),
        )
        yield counter(
            "rows_repeated",
            "Predictions delivered again by a scorer that answered a unit twice (left out of the windows)",
            h.get("rows_repeated", 0),
        )
        yield counter(
            "labels_repeated",
            "Labels delivered again by a scorer that answered a unit twice (left out of the windows)",
            h.get("labels_repeated", 0),
        )
        windows = CounterMetricFamily(
            "churn_monitor_windows", "Drift windows reported, by verdict", labels=["verdict"]
        )
        drifted = sum(1 for r in reports if r.get("dataset_drift"))
        windows.add_metric(["drift"], drifted)
        windows.add_metric(["no_drift"], len(reports) - drifted)
        yield windows
        yield counter("reports", "Evidently reports drawn", h["reports_rendered"])
        yield counter("report_errors", "Evidently reports that could not be drawn", h["report_errors"])
        yield counter(
            "windows_light",
            "Windows published with a light page (reports fell behind, or the report failed)",
            h.get("windows_light", 0),
        )
        yield counter(
            "windows_drawn_later",
            "Windows published light whose full Evidently report was drawn once the monitor caught up",
            h.get("windows_drawn_later", 0),
        )
        yield counter("dead_letters", "Records sent to dead_letter", h["dead_letters"])
        yield counter(
            "records_read_back",
            "Records faust skipped as it started, read from Kafka by the monitor itself",
            h["records_read_back"],
        )
        yield gauge("rows_pending", "Predictions in the open window", h["rows_pending"])
        yield gauge("reports_waiting", "Closed windows waiting for their report", h["reports_pending"])
        last = reports[-1] if reports else None
        if last is not None:
            yield gauge("drift_share", "Share of drifted columns in the last window", last["drift_share"])
            estimated = last.get("estimated_performance") or {}
            if estimated.get("value") is not None:
                yield gauge("estimated_auc", "Estimated ROC-AUC of the last window", estimated["value"])
            action = GaugeMetricFamily(
                "churn_monitor_action", "The last window's action (1) and the others (0)", labels=["action"]
            )
            for name in ACTIONS:
                action.add_metric([name], 1.0 if last.get("action") == name else 0.0)
            yield action
        realized = next(
            (r["realized_performance"] for r in reversed(reports) if r.get("realized_performance")), None
        )
        if realized and realized.get("value") is not None:
            yield gauge("realized_auc", "Last known realized ROC-AUC", realized["value"])
        if h["lag"] is not None:
            yield gauge("behind_records", "Records on the monitor's partitions not yet read", h["lag"])
        lag = GaugeMetricFamily(
            "churn_monitor_lag_seconds", "Record created_at to consumption", labels=["quantile"]
        )
        for q, value in (h["lag_ms"] or {}).items():
            quantile = {"p50": "0.5", "p99": "0.99"}.get(q)  # as Prometheus' summaries write them
            if quantile is not None:
                lag.add_metric([quantile], value / 1000)
        yield lag
        yield gauge("stalled_seconds", "How long input has waited for the agent", h["stalled_seconds"])

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


ACTIONS = ("none", "watch", "retrain")

_SAMPLE_HEALTH: dict[str, Any] = {  # doctest data: a /health body
    "records": 3,
    "rows_seen": 900,
    "rows_pending": 100,
    "rows_straggled": 0,
    "rows_repeated": 0,
    "labels_repeated": 0,
    "reports_rendered": 2,
    "report_errors": 0,
    "dead_letters": 0,
    "records_read_back": 0,
    "reports_pending": 0,
    "lag": 0,
    "lag_ms": {"p50": 120.0, "p99": 480.0, "max": 500.0},
    "stalled_seconds": 0.0,
}
_SAMPLE_REPORTS: list[dict[str, Any]] = [  # doctest data: two drift_reports messages
    {"dataset_drift": False, "drift_share": 0.0, "action": "none", "realized_performance": {"value": 0.7}},
    {"dataset_drift": True, "drift_share": 0.6, "action": "watch", "estimated_performance": {"value": 0.68}},
]

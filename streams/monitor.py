"""``churnstream monitor``: the drift monitor as a faust-streaming app, with its web pages.

One agent reads the scorer's monitoring batches (one record per scored micro-batch) from
``settings.topics.monitoring_batches`` and feeds a :class:`~churnstream.monitoring.monitor.DriftMonitor`,
which judges each window as it closes (Evidently's tests, computed in-process). The Evidently HTML of each
window is drawn in a separate worker process (:mod:`churnstream.monitoring.render`); when windows close faster
than reports are drawn, consecutive windows share one report, never dropped. Once a window's HTML exists its
``drift_reports`` message is published keyed by model version, every window in order. A malformed
record goes to ``dead_letter`` (stage ``decode`` or ``validate``) and the agent goes on.

Restarts lose nothing: a record's offset is committed only once every prediction and outcome in it has
been reported, so a restarted monitor reads the open window's records again; the local
:class:`~churnstream.monitoring.state.MonitorState` says how many predictions of a record that straddles two
windows were already reported, so each counts exactly once.

A dead letter's value is cut to fit the ``dead_letter`` topic exactly as the scorer's are
(:func:`~churnstream.streams.ingest.dead_letter_payload`), and dead letters waiting to be acked behind an
uncommitted record are bounded (:data:`MAX_WAITING_ACKS`, :data:`MAX_WAITING_ACK_BYTES`).

Web pages (faust's web server, bound to ``settings.web_host``:``settings.web_port``):
``/`` and ``/reports/`` list the windows with their verdicts, ``/reports/<id>`` is the window's Evidently
HTML report, ``/reports/<id>.json`` its message, ``/metrics`` the counters for Prometheus.

``/health`` is liveness: the monitor's state as JSON, 200 with ``status`` ``ok``, or 503 with ``stuck``
once input has waited :data:`STUCK_SECONDS` for the agent (records on its partitions beyond what it
handled, and no record handled since; or one record in hand that long). An idle topic has nothing
waiting, so it never reads as stuck. ``/ready`` is readiness: 200 while Kafka answers, partitions are
assigned and no input has waited :data:`READY_STALL_SECONDS`, else 503 with ``reasons``; both say how far
behind the monitor is (``lag``, records) and how old its last record is (``last_batch_age_seconds``).
What waits is measured by a Kafka client of the monitor's own (:class:`InputOffsets`), so a stuck faust
consumer cannot hide it.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import json
import logging
import os
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from churnstream.errors import DecodeError, EventError, ValidationError
from churnstream.events import format_time, now_ms
from churnstream.messages import DeadLetter, DriftReport, MonitoringBatch
from churnstream.monitoring.monitor import Added, DriftMonitor, MonitorConfig
from churnstream.monitoring.reference import ReferenceSource, RegistrySource
from churnstream.monitoring.render import Rendered, RenderJob, RenderQueue, ReportRenderer
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.state import MonitorState, Position
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.health import Answer, DependencyProbe
from churnstream.streams.ingest import dead_letter_payload

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_ROWS = 200_000
MAX_FEATURES = 1000
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")
_RESERVED = {
    "as_of",
    "customer_id",
    "trigger",
    "batch_probability",
    "online_probability",
    "churn_probability",
}
# Input left waiting this long without a record handled makes /health say stuck: longer than a faust
# rebalance (60 s) plus one slow broker request (90 s), so neither reads as stuck.
STUCK_SECONDS = 180.0
READY_STALL_SECONDS = 30.0  # input left waiting this long makes the monitor not ready
OBSERVE_SECONDS = 5.0  # the input offsets are measured at most this often
# Dead letters (and records reported before a restart) behind an uncommitted record wait there to be
# acked in offset order, each keeping its bytes (faust's event) until then; beyond these bounds they are
# acked at once: faust still commits offsets only in order.
MAX_WAITING_ACKS = 1000
MAX_WAITING_ACK_BYTES = 16 * 1024 * 1024
_NUMBER = {int, float}
_NULLABLE_NUMBER = {int, float, type(None)}


def decode_batch(value: bytes | None, *, max_as_of: int | None = None) -> MonitoringBatch:
    """A :class:`MonitoringBatch` from a message value; :class:`DecodeError` / :class:`ValidationError`.

    The checks match what the scorer writes: columns are lists of one length, ``as_of`` and
    ``labeled_at`` integer epoch ms (not after ``max_as_of``), every listed feature present as numbers
    or nulls, probabilities in [0, 1], labels 0 or 1.

    >>> decode_batch(b"nope")
    Traceback (most recent call last):
    ...
    churnstream.errors.DecodeError: not JSON: ...
    """
    import orjson

    if value is None:
        raise DecodeError("empty message value")
    if len(value) > MAX_BATCH_BYTES:
        raise DecodeError(f"monitoring batch of {len(value):,} bytes exceeds {MAX_BATCH_BYTES:,}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("a monitoring batch must be a JSON object")
    for name, kind in (
        ("batch_id", str),
        ("created_at", int),
        ("model_version", str),
        ("feature_names", list),
        ("predictions", dict),
        ("outcomes", dict),
    ):
        if name not in obj:
            raise ValidationError(f"monitoring batch lacks {name}")
        if type(obj[name]) is not kind:
            raise ValidationError(f"{name} must be a {kind.__name__}, got {type(obj[name]).__name__}")
    if not 1 <= len(obj["batch_id"]) <= 128:
        raise ValidationError("batch_id must have 1..128 characters")
    if not _VERSION_RE.match(obj["model_version"]):
        raise ValidationError(f"model_version {obj['model_version'][:80]!r} is not a model version name")
    names = obj["feature_names"]
    if not 1 <= len(names) <= MAX_FEATURES or not all(type(n) is str and 0 < len(n) <= 128 for n in names):
        raise ValidationError(f"feature_names must be 1..{MAX_FEATURES} names of 1..128 characters")
    if len(set(names)) != len(names) or _RESERVED & set(names):
        raise ValidationError("feature_names must be distinct and not name a prediction column")
    predictions, outcomes = obj["predictions"], obj["outcomes"]
    rows = _column_length(predictions, "predictions")
    if rows:
        for name in ("as_of", "churn_probability", *names):
            if name not in predictions:
                raise ValidationError(f"predictions lack the column {name}")
        _epoch_ms(predictions["as_of"], "as_of", max_as_of)
        features = [predictions[name] for name in names]
        if not set(map(type, itertools.chain.from_iterable(features))) <= _NULLABLE_NUMBER:  # one C loop
            for name, values in zip(names, features, strict=True):
                _numbers(values, name, nullable=True)  # names the column
        _probabilities(predictions["churn_probability"], "churn_probability", nullable=False)
        for name in ("batch_probability", "online_probability"):
            if name in predictions:
                _probabilities(predictions[name], name, nullable=True)
    labels = _column_length(outcomes, "outcomes")
    if labels:
        for name in ("label", "labeled_at"):
            if name not in outcomes:
                raise ValidationError(f"outcomes lack the column {name}")
        if not all(type(v) is int and v in (0, 1) for v in outcomes["label"]):
            raise ValidationError("outcome labels must be 0 or 1")
        _epoch_ms(outcomes["labeled_at"], "labeled_at", max_as_of)
        for name in ("batch_probability", "online_probability", "churn_probability"):
            if name in outcomes:
                _probabilities(outcomes[name], f"outcome {name}", nullable=True)
    return MonitoringBatch.from_json(obj)


def _column_length(columns: dict[str, Any], part: str) -> int:
    lengths = set()
    for name, values in columns.items():
        if type(values) is not list:
            raise ValidationError(f"{part} column {name[:80]!r} must be a list")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise ValidationError(f"{part} columns have unequal lengths {sorted(lengths)[:5]}")
    rows = lengths.pop() if lengths else 0
    if rows > MAX_BATCH_ROWS:
        raise ValidationError(f"{part} hold {rows:,} rows, more than {MAX_BATCH_ROWS:,}")
    return rows


def _numbers(values: list[Any], name: str, *, nullable: bool) -> None:
    allowed = _NULLABLE_NUMBER if nullable else _NUMBER
    kinds = set(map(type, values))
    if not kinds <= allowed:
        bad = next(type(v).__name__ for v in values if type(v) not in allowed)
        raise ValidationError(f"{name[:80]} must hold numbers{' or nulls' if nullable else ''}, not {bad}")


def _probabilities(values: list[Any], name: str, *, nullable: bool) -> None:
    _numbers(values, name, nullable=nullable)
    array = np.array(values, dtype="float64")
    if np.any((array < 0) | (array > 1)):
        raise ValidationError(f"{name} must lie in [0, 1]")


def _epoch_ms(values: list[Any], name: str, upto: int | None) -> None:
    if values and set(map(type, values)) != {int}:
        raise ValidationError(f"{name} must be epoch milliseconds (integers)")
    if values and (min(values) < 0 or (upto is not None and max(values) > upto)):
        raise ValidationError(f"{name} must lie between 1970 and the wall clock plus the allowed skew")


_IN_FLIGHT = 2**62  # a record being decoded: holds back everything after it


@dataclass(slots=True)
class _Held:
    """A record whose offset is not committed yet: what of it went into which window."""

    offset: int
    ack: Callable[[], Any] | None
    base_rows: int = 0  # predictions reported before a restart
    segments: list[tuple[int, int]] = field(default_factory=list)
    holds: int | None = _IN_FLIGHT  # the last window it fed; None: nothing (a dead letter, or reported)
    waits: int | None = None  # bytes it keeps while it waits to be acked in order (see MAX_WAITING_ACKS)

    def rows_reported(self, done: int) -> int:
        return self.base_rows + sum(rows for seq, rows in self.segments if seq <= done)


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
        from confluent_kafka import TopicPartition

        from churnstream.streams.kafka import make_consumer

        with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(self.settings, self.group)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            if not tps:
                return {}
            marks = {}
            for tp in tps:
                start, end = self._consumer.get_watermark_offsets(tp, timeout=self.timeout, cached=False)
                marks[tp.partition] = (start, end)
            committed = self._consumer.committed(tps, timeout=self.timeout)
            return {tp.partition: Marks(*marks[tp.partition], tp.offset) for tp in committed}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


class MonitorService:
    """State of a running monitor: the drift monitor, the report queue, uncommitted records, counters.

    ``committed(topic, partition)`` tells the consumer group's committed offset (for the state file);
    ``max_jobs`` bounds the jobs waiting for the report worker (see :class:`RenderQueue`); ``offsets``
    measures the input waiting for the agent (for ``/health`` and ``/ready``; none: never measured).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        monitor: DriftMonitor,
        publish_report: Callable[[DriftReport], Awaitable[Any]],
        publish_dead_letter: Callable[[DeadLetter], Awaitable[Any]],
        renderer: ReportRenderer | None = None,
        max_jobs: int = 1,
        committed: Callable[[str, int], int | None] | None = None,
        offsets: InputOffsets | None = None,
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.state = monitor.state
        self.renderer = renderer or ReportRenderer(
            root=monitor.store.root, drift_share=monitor.config.drift_share
        )
        self.queue = RenderQueue(max_jobs=max_jobs, max_rows=max(50_000, 4 * monitor.config.window_rows))
        self._publish_report = publish_report
        self._publish_dead_letter = publish_dead_letter
        self._committed = committed
        self._wakeup: asyncio.Event | None = None
        self._held: dict[tuple[str, int], deque[_Held]] = {}
        self._next_offset: dict[tuple[str, int], int] = {}
        self._skip: dict[tuple[str, int], Position] = {}
        self._done: set[int] = set()
        self._detectors: dict[int, bytes] = {}
        restored = monitor.restored
        self._resume = {_tp_of(key): p for key, p in restored.positions.items()} if restored else {}
        self.done_upto = monitor.windows_closed
        counters = dict(restored.counters) if restored else {}
        self.reports: list[dict[str, Any]] = monitor.store.load_messages()
        self._by_id = {r["report_id"]: r for r in self.reports}
        self.records = 0
        self.lags: deque[float] = deque(maxlen=100_000)
        self.delays: deque[float] = deque(maxlen=100_000)
        self.render_seconds: deque[float] = deque(maxlen=1000)
        self.dead_letters = 0
        self.windows_reported = int(counters.get("windows_reported", 0))
        self.reports_rendered = int(counters.get("reports_rendered", 0))
        self.windows_merged = int(counters.get("windows_merged", 0))
        self.report_errors = int(counters.get("report_errors", 0))
        self.last_report_at: int | None = None
        self.rendering: RenderJob | None = None
        self.warmed_up = False
        self.started_at = now_ms()
        # liveness and readiness (see the module docstring)
        self.stuck_after = STUCK_SECONDS
        self.offsets = offsets
        self.lag: int | None = None  # records on the assigned partitions beyond those handled
        self.partitions: list[int] | None = None
        self.last_batch_at: float | None = None  # wall clock when the agent last handled a record
        self._turned_at = time.monotonic()  # when the agent last handled a record (or the start)
        self._busy: tuple[float, str] | None = None  # since when the agent holds which record
        self._waiting_since: float | None = None  # input seen waiting, and no record handled since
        self._observed_at = -OBSERVE_SECONDS
        self._observing: asyncio.Task[None] | None = None
        self._observe_lock: asyncio.Lock | None = None
        self._waiting_acks = 0
        self._waiting_ack_bytes = 0

    @property
    def wakeup(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    async def on_message(
        self,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int | None,
        offset: int | None,
        timestamp: float | None = None,
        ack: Callable[[], Any] | None = None,
    ) -> None:
        """Decode one record and feed it; a bad record becomes a dead letter.

        ``ack`` marks the record's offset as committable; it is called once every prediction of the
        record has been reported. ``timestamp`` (Kafka's, seconds) measures how late records are seen.
        """
        self._busy = (time.monotonic(), f"{topic}[{partition}]@{offset}")
        try:
            await self._handle(key, value, topic, partition, offset, timestamp, ack)
        finally:
            self._busy, self._waiting_since = None, None
            self._turned_at = time.monotonic()
            self.last_batch_at = time.time()

    async def _handle(
        self,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int | None,
        offset: int | None,
        timestamp: float | None,
        ack: Callable[[], Any] | None,
    ) -> None:
        tp = (topic, partition if partition is not None else -1)
        skip_rows, reported = 0, False
        if offset is not None:
            expected = self._next_offset.get(tp)
            if expected is None:
                self._resume_partition(tp, offset)
            elif offset < expected:
                return  # delivered again after a rebalance: the first delivery is still held
            self._next_offset[tp] = offset + 1
            skip = self._skip.get(tp)
            if skip is not None:
                if offset < skip.offset:
                    reported = True
                else:
                    skip_rows = skip.rows if offset == skip.offset else 0
                    del self._skip[tp]
        held = _Held(offset if offset is not None else -1, ack, base_rows=skip_rows)
        self._held.setdefault(tp, deque()).append(held)
        if reported:
            held.holds = None
        else:
            self.records += 1
            if timestamp:
                self.delays.append(time.time() - timestamp)
            await self._feed(held, key, value, topic, partition, offset, skip_rows)
        self._release(tp)
        if held.holds is None:
            self._wait_for_ack(tp, held, len(key or b"") + len(value or b""))

    def _wait_for_ack(self, tp: tuple[str, int], held: _Held, size: int) -> None:
        """``held`` (a dead letter, or reported before a restart) waits behind an uncommitted record to be
        acked in order, within :data:`MAX_WAITING_ACKS` and :data:`MAX_WAITING_ACK_BYTES`; beyond them it
        is acked now (faust commits in offset order all the same)."""
        queue = self._held.get(tp)
        if not queue or queue[-1] is not held:
            return  # released already
        if self._waiting_acks < MAX_WAITING_ACKS and self._waiting_ack_bytes + size <= MAX_WAITING_ACK_BYTES:
            held.waits = size
            self._waiting_acks += 1
            self._waiting_ack_bytes += size
            return
        queue.pop()
        if held.ack is not None:
            held.ack()

    def _resume_partition(self, tp: tuple[str, int], offset: int) -> None:
        position = self._resume.pop(tp, None)
        if position is None or (offset > position.offset and position.rows == 0):
            return  # nothing of the records from here on was reported
        if position.applies_to(offset):
            if offset < position.offset or position.rows:
                self._skip[tp] = position
                log.info(
                    "%s[%d]: resuming at offset %d, %d predictions of it already reported",
                    tp[0],
                    tp[1],
                    position.offset,
                    position.rows,
                )
        else:
            log.warning(
                "%s[%d]: the group's offset %d is not where reporting stopped (%d): offsets were moved; "
                "reading from %d as they say",
                tp[0],
                tp[1],
                offset,
                position.offset,
                offset,
            )

    async def _feed(
        self,
        held: _Held,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int | None,
        offset: int | None,
        skip_rows: int,
    ) -> None:
        try:
            batch = decode_batch(
                value, max_as_of=now_ms() + int(self.settings.max_future_skew_hours * 3_600_000)
            )
            self.monitor.check(batch)
            added = self.monitor.add(batch, skip_rows=skip_rows)
        except EventError as exc:
            await self._dead_letter(key, value, topic, partition, offset, str(exc), exc.stage)
            held.holds = None
            return
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            error = f"cannot use batch: {exc!r}"
            await self._dead_letter(key, value, topic, partition, offset, error, "process")
            held.holds = None
            return
        self.lags.append(now_ms() - batch.created_at)
        held.segments, held.holds = added.segments, added.holds
        self._take(added)

    def _take(self, added: Added) -> None:
        self._detectors.update(added.detectors)
        for pending in added.pending:
            self.queue.put(pending)
            self.wakeup.set()
        if added.settled:
            self._settle(added.settled)

    def _settle(self, seqs: list[int]) -> None:
        """Windows ``seqs`` are reported (or became a kept reference): move the committable point."""
        self._done.update(seqs)
        before = self.done_upto
        while self.done_upto + 1 in self._done:
            self.done_upto += 1
            self._done.discard(self.done_upto)
        if self.done_upto == before:
            return
        if self.state is not None:
            # partitions not read again since a restart, or not yet up to where reporting stopped,
            # keep their position
            positions = {_key_of(tp): p for tp, p in (*self._resume.items(), *self._skip.items())}
            for tp, queue in self._held.items():
                head = next((h for h in queue if h.holds is not None and h.holds > self.done_upto), None)
                # the first record that stays uncommitted, and how much of it is reported
                if tp in self._skip:
                    continue
                if head is None:
                    positions[_key_of(tp)] = Position(self._next_offset.get(tp, 0), 0, self._committed_at(tp))
                else:
                    rows = head.rows_reported(self.done_upto)
                    positions[_key_of(tp)] = Position(head.offset, rows, self._committed_at(tp))
            self.state.save(
                positions=positions,
                seq=self.done_upto,
                detectors=self._detectors.get(self.done_upto),
                counters=self._counters(),
            )
        for seq in [s for s in self._detectors if s <= self.done_upto]:
            del self._detectors[seq]
        for tp in self._held:
            self._release(tp)

    def _release(self, tp: tuple[str, int]) -> None:
        """Ack the records at the head of ``tp`` that are wholly reported, in offset order."""
        queue = self._held.get(tp)
        while queue and (queue[0].holds is None or queue[0].holds <= self.done_upto):
            held = queue.popleft()
            if held.waits is not None:
                self._waiting_acks -= 1
                self._waiting_ack_bytes -= held.waits
            if held.ack is not None:
                held.ack()

    def _committed_at(self, tp: tuple[str, int]) -> int | None:
        if self._committed is None:
            return None
        try:
            return self._committed(*tp)
        except Exception:  # only a sharper restart check; never worth failing the write
            return None

    def _counters(self) -> dict[str, int]:
        return {
            "windows_reported": self.windows_reported,
            "reports_rendered": self.reports_rendered,
            "windows_merged": self.windows_merged,
            "report_errors": self.report_errors,
        }

    async def _dead_letter(
        self,
        key: bytes | None,
        value: bytes | None,
        topic: str,
        partition: int | None,
        offset: int | None,
        error: str,
        stage: str,
    ) -> None:
        self.dead_letters += 1
        log.warning("dead letter from %s[%s]@%s: %s", topic, partition, offset, error[:300])
        letter = DeadLetter(topic, partition, offset, key, value, error, stage, now_ms())
        await self._publish_dead_letter(letter)

    async def run_reports(self) -> None:
        """Draw queued reports one job at a time in the report worker and publish their windows, forever."""
        warm = asyncio.wrap_future(self.renderer.start())
        warm.add_done_callback(self._warmed)
        while True:
            job = self.queue.take()
            if job is None:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            self.rendering = job
            try:
                rendered = await self._render(job)
                await self._publish(job, rendered)
            finally:
                self.rendering = None

    def _warmed(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.warmed_up = True
            log.info(
                "report worker (%s) ready: Evidently imported in %.1f s", self.renderer.mode, future.result()
            )

    async def _render(self, job: RenderJob) -> Rendered:
        rendered: Rendered | None = None
        for attempt in (1, 2):
            try:
                rendered = await asyncio.wrap_future(self.renderer.submit(job))
                break
            except BrokenProcessPool:
                self.renderer.restart()
                if attempt == 2:
                    rendered = self._error_page(
                        job, "the report worker process died twice drawing this report"
                    )
            except Exception as exc:  # the windows are published all the same, with the reason
                log.exception("drift report %s could not be sent to the report worker", job.job_id)
                rendered = self._error_page(job, f"{type(exc).__name__}: {exc}")
                break
        assert rendered is not None
        self.render_seconds.append(rendered.seconds)
        if rendered.error:
            self.report_errors += 1
        else:
            self.reports_rendered += 1
        return rendered

    def _error_page(self, job: RenderJob, error: str) -> Rendered:
        self.monitor.store.save_error(job.job_id, error)
        return Rendered(job.job_id, str(self.monitor.store.html_path(job.job_id).resolve()), 0.0, error=error)

    async def _publish(self, job: RenderJob, rendered: Rendered) -> None:
        shared = len(job.windows) > 1
        for position, pending in enumerate(job.windows, start=1):
            extra: dict[str, Any] = {
                "evidently_report": {
                    "report_id": job.job_id,
                    "windows": len(job.windows),
                    "window": position,
                    "rows": job.rows,
                    "rendered_rows": job.rendered_rows,
                    "shared": shared,
                },
                "verdict_by": "Evidently's default tests, computed in-process",
            }
            if rendered.error:
                extra["evidently_report"]["error"] = rendered.error
            report = pending.report(
                created_at=now_ms(),
                html_path=rendered.html_path,
                url=self.monitor.url(pending.report_id),
                **extra,
            )
            await self._publish_report(report)
            message = report.to_json()
            self.monitor.store.save_message(report.report_id, message)
            self.windows_reported += 1
            self.last_report_at = report.created_at
            self.reports.append(message)
            self._by_id[report.report_id] = message
            log.info(
                "drift report %s: %d rows %s..%s, dataset drift %s (share %.2f: %s), concept drift %s%s",
                report.report_id,
                report.rows,
                format_time(report.window_start),
                format_time(report.window_end),
                report.dataset_drift,
                report.drift_share,
                ", ".join(report.drifted_columns) or "-",
                (report.concept_drift or {}).get("detected"),
                f"; HTML shared by {len(job.windows)} windows" if shared else "",
            )
        if shared:
            self.windows_merged += len(job.windows)
        if len(self.reports) > 1000:
            for old in self.reports[:-1000]:
                self._by_id.pop(old["report_id"], None)
            del self.reports[:-1000]
        self._settle([pending.window.seq for pending in job.windows])

    def html_for(self, report_id: str) -> Path | None:
        """The HTML file of a window's report (its own or the one it shares), inside the report directory."""
        store = self.monitor.store
        message = self._by_id.get(report_id)
        if message is None:
            saved = store.json_path(report_id)
            if saved.is_file():
                try:
                    message = json.loads(saved.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    message = None
        path = (
            Path(message["html_path"]) if message and message.get("html_path") else store.html_path(report_id)
        )
        root = store.root.resolve()
        try:
            resolved = path.resolve()
        except OSError:
            return None
        return resolved if resolved.parent == root and resolved.is_file() else None

    def health(self) -> dict[str, Any]:
        """The monitor's state; ``ok`` (and ``status``) say whether it is alive (see :meth:`live`)."""
        waiting = self.queue.windows + (len(self.rendering.windows) if self.rendering else 0)
        stalled = self.stalled_seconds()
        alive = stalled < self.stuck_after
        return {
            "ok": alive,
            "status": "ok" if alive else "stuck",
            "stalled_seconds": round(stalled, 3),
            "stuck_after_seconds": self.stuck_after,
            "partitions": self.partitions,
            "lag": self.lag,
            "last_batch_age_seconds": self._last_batch_age(),
            "model_version": self.monitor.model_version,
            "records": self.records,
            "rows_seen": self.monitor.rows_seen,
            "rows_pending": self.monitor.rows_pending,
            "windows_done": self.monitor.windows_closed,
            "windows_reported": self.windows_reported,
            "windows_skipped": 0,  # never: windows that close while reports are drawn share a report
            "windows_merged": self.windows_merged,
            "reports_rendered": self.reports_rendered,
            "reports_pending": waiting,
            "report_errors": self.report_errors,
            "report_worker": {
                "mode": self.renderer.mode,
                "ready": self.warmed_up,
                "restarts": self.renderer.restarts,
                "render_seconds": _percentiles(self.render_seconds, scale=1.0),
            },
            "dead_letters": self.dead_letters,
            "last_report_at": format_time(self.last_report_at) if self.last_report_at else None,
            "started_at": format_time(self.started_at),
            "window_rows": self.monitor.config.window_rows,
            "lag_ms": _percentiles(self.lags, scale=1.0),
            "delay_ms": self.delay_ms(),
            "uncommitted_records": sum(len(q) for q in self._held.values()),
            # how far the monitor has read ("topic/partition" -> next offset): its committed offsets
            # stay behind while records of the open window wait to be reported
            "read_offsets": {_key_of(tp): offset for tp, offset in sorted(self._next_offset.items())},
        }

    def live(self) -> Answer:
        """Liveness for ``/health``: alive unless input has waited ``stuck_after`` seconds for the agent."""
        body = self.health()
        return bool(body["ok"]), body

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
            "last_batch_age_seconds": self._last_batch_age(),
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
        behind = 0
        for partition, m in marks.items():
            handled = self._next_offset.get((self.offsets.topic, partition), 0)
            behind += max(0, m.end - max(m.start, m.committed, handled))
        self.lag = behind
        if not behind:
            self._waiting_since = None
        elif self._waiting_since is None and self._turned_at < started:
            self._waiting_since = finished

    def _last_batch_age(self) -> float | None:
        return None if self.last_batch_at is None else round(time.time() - self.last_batch_at, 3)

    def delay_ms(self) -> dict[str, float] | None:
        """p50/p99/max of how late recent records were seen (Kafka timestamp to agent), in ms."""
        return _percentiles(self.delays, scale=1000.0)

    def metrics(self) -> str:
        """The counters in Prometheus' text format."""
        h = self.health()
        lines = []
        for name, kind, value, text in (
            ("records", "counter", h["records"], "monitoring batch records consumed"),
            ("rows", "counter", h["rows_seen"], "predictions consumed"),
            ("rows_pending", "gauge", h["rows_pending"], "predictions in the open window"),
            ("windows_closed", "counter", h["windows_done"], "drift windows closed"),
            ("windows_reported", "counter", h["windows_reported"], "drift_reports messages published"),
            ("windows_merged", "counter", h["windows_merged"], "windows whose Evidently HTML is shared"),
            ("windows_skipped", "counter", 0, "windows never reported (always 0)"),
            ("reports_rendered", "counter", h["reports_rendered"], "Evidently reports drawn"),
            ("reports_pending", "gauge", h["reports_pending"], "closed windows waiting for their report"),
            ("report_errors", "counter", h["report_errors"], "Evidently reports that could not be drawn"),
            ("dead_letters", "counter", h["dead_letters"], "records sent to dead_letter"),
            ("uncommitted_records", "gauge", h["uncommitted_records"], "records held for the open window"),
        ):
            lines += [
                f"# HELP churnstream_monitor_{name} {text}",
                f"# TYPE churnstream_monitor_{name} {kind}",
                f"churnstream_monitor_{name} {value}",
            ]
        lines += [
            "# HELP churnstream_monitor_stalled_seconds how long input has waited for the agent",
            "# TYPE churnstream_monitor_stalled_seconds gauge",
            f"churnstream_monitor_stalled_seconds {h['stalled_seconds']}",
        ]
        if h["lag"] is not None:
            lines += [
                "# HELP churnstream_monitor_behind_records records on the monitor's partitions not yet read",
                "# TYPE churnstream_monitor_behind_records gauge",
                f"churnstream_monitor_behind_records {h['lag']}",
            ]
        lag = h["lag_ms"] or {}
        lines += [
            "# HELP churnstream_monitor_lag_seconds record created_at to consumption",
            "# TYPE churnstream_monitor_lag_seconds gauge",
        ]
        for q in ("p50", "p99"):
            if q in lag:
                lines.append(f'churnstream_monitor_lag_seconds{{quantile="{q[1:]}"}} {lag[q] / 1000:.3f}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.renderer.close()
        if self.offsets is not None:
            self.offsets.close()


def _percentiles(values: deque[float], *, scale: float) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype="float64") * scale
    p50, p99, top = np.percentile(array, [50, 99, 100])
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "max": round(float(top), 1)}


def _key_of(tp: tuple[str, int]) -> str:
    return f"{tp[0]}/{tp[1]}"


def _tp_of(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)


def app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}churnstream-monitor"


def state_dir(settings: Settings, name: str | None = None) -> Path:
    """Where the monitor of this consumer group keeps its local state (see :class:`MonitorState`)."""
    return settings.var_dir / "monitor" / (name or app_id(settings))


def build_monitor(
    settings: Settings, *, references: ReferenceSource | None = None, name: str | None = None
) -> DriftMonitor:
    """A :class:`DriftMonitor` for these settings; references from the model registry unless given."""
    if references is None:
        references = RegistrySource(_LazyRegistry(settings))
    return DriftMonitor(
        references=references,
        store=ReportStore(settings.report_dir),
        config=MonitorConfig(
            window_rows=settings.drift_window_rows,
            max_span_ms=int(settings.drift_window_days * DAY_MS),
            drift_share=settings.drift_share,
        ),
        url_base=settings.pages_url,
        state=MonitorState(state_dir(settings, name)),
    )


class _LazyRegistry:
    """Opens ``churnstream.models.registry.ModelRegistry`` on first use, so the monitor runs before any model
    exists."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.model_dir
        self._registry: Any = None

    def _open(self) -> Any:
        if self._registry is None:
            try:
                from churnstream.models.registry import ModelRegistry
            except ImportError as exc:
                raise FileNotFoundError(f"no model registry available: {exc}") from None
            self._registry = ModelRegistry(self.root)
        return self._registry

    def load(self, version: str) -> Any:
        return self._open().load(version)

    def versions(self) -> list[str]:
        return list(self._open().versions())


class MonitorApp:
    """The faust app of the monitor and its :class:`MonitorService`; :meth:`build` makes both."""

    def __init__(self, app: Any, service: MonitorService, batches_topic: Any) -> None:
        self.app = app
        self.service = service
        self.batches_topic = batches_topic

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        monitor: DriftMonitor | None = None,
        max_pending: int = 1,
        app_name: str | None = None,
        render_in_thread: bool = False,
        renderer: ReportRenderer | None = None,
    ) -> MonitorApp:
        """The app; ``max_pending`` bounds the reports waiting to be drawn (later windows share them),
        ``render_in_thread`` draws them in a thread of this process instead (the old way; benchmarks),
        ``renderer`` replaces the report worker altogether."""
        import faust

        name = app_name or app_id(settings)
        datadir = (settings.var_dir / "faust" / name).resolve()
        datadir.parent.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            name,
            broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
            broker_credentials=_credentials(settings),
            datadir=str(datadir),
            web_enabled=True,
            web_bind=settings.web_host,
            web_host=settings.web_host,
            web_port=settings.web_port,
            web_router_enabled=False,
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
            topic_allow_declare=False,
            topic_disable_leader=True,
            consumer_auto_offset_reset="earliest",
            autodiscover=False,
            store="memory://",
            stream_wait_empty=False,
            producer_acks=-1,
            producer_max_request_size=8 * 1024 * 1024,
            consumer_max_fetch_size=8 * 1024 * 1024,
            # the open window's records stay uncommitted on purpose, for as long as the window is open
            broker_commit_livelock_soft_timeout=30 * 86_400,
        )
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
        }
        batches = app.topic(settings.topics.monitoring_batches, **raw)
        reports_topic = app.topic(settings.topics.drift_reports, **raw)
        dead_topic = app.topic(settings.topics.dead_letter, **raw)

        async def publish_report(report: DriftReport) -> None:
            value = json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
            delivery = await reports_topic.send(key=report.model_version.encode("utf-8"), value=value)
            await delivery

        async def publish_dead_letter(letter: DeadLetter) -> None:
            # the scorer's cap: a value too large for the topic is cut and marked value_truncated
            delivery = await dead_topic.send(key=letter.key, value=dead_letter_payload(letter))
            await delivery

        def committed(topic: str, partition: int) -> int | None:
            # faust's own record of what it committed (no public accessor)
            offset = getattr(app.consumer, "_committed_offset", {}).get((topic, partition))
            return int(offset) if offset is not None else None

        monitor = monitor or build_monitor(settings, name=name)
        service = MonitorService(
            settings=settings,
            monitor=monitor,
            publish_report=publish_report,
            publish_dead_letter=publish_dead_letter,
            renderer=renderer
            or ReportRenderer(
                root=monitor.store.root,
                drift_share=monitor.config.drift_share,
                workspace=monitor.store.use_workspace,
                in_thread=render_in_thread,
            ),
            max_jobs=max_pending,
            committed=committed,
            offsets=InputOffsets(
                settings,
                group=name,
                assignment=lambda: [(tp.topic, tp.partition) for tp in app.consumer.assignment()],
            ),
        )

        @app.agent(batches, name="monitoring-batches", concurrency=1)
        async def consume(stream: Any) -> None:
            # acks are manual: a record is acked (its offset committable) once all of it is reported
            async for event in stream.noack().events():
                msg = event.message
                await service.on_message(
                    msg.key, msg.value, msg.topic, msg.partition, msg.offset, msg.timestamp, ack=event.ack
                )

        @app.task
        async def reports() -> None:
            await service.run_reports()

        _add_pages(app, service, DependencyProbe(settings, redis=False))
        return cls(app, service, batches)


def _credentials(settings: Settings) -> Any:
    """faust credentials from the pass-through Kafka properties (SASL/TLS), or None for plaintext."""
    import faust

    props = settings.kafka_properties
    protocol = props.get("security.protocol", "PLAINTEXT").upper()
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        ca = props.get("ssl.ca.location")
        is_dir = ca is not None and os.path.isdir(ca)
        context = ssl.create_default_context(cafile=None if is_dir else ca, capath=ca if is_dir else None)
        if props.get("ssl.certificate.location"):
            context.load_cert_chain(
                props["ssl.certificate.location"],
                props.get("ssl.key.location"),
                props.get("ssl.key.password"),
            )
        # librdkafka's switches for the same checks, so the monitor connects exactly when the scorer does
        if props.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
            context.check_hostname = False
        if props.get("enable.ssl.certificate.verification", "true").lower() == "false":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=props.get("sasl.username"),
            password=props.get("sasl.password"),
            mechanism=(props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "PLAIN").upper(),
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def _add_pages(app: Any, service: MonitorService, probe: DependencyProbe) -> None:
    # faust mounts a {"status": "OK"} index at "/"; the report list takes that place.
    blueprints = app.web.blueprints
    blueprints._enabled = [(p, bp) for p, bp in blueprints._enabled if "production_index" not in str(bp)]

    @app.page("/health")
    async def health(self: Any, request: Any) -> Any:
        service.observe_soon()
        ok, body = service.live()
        return self.json(body, status=200 if ok else 503)

    @app.page("/ready")
    async def ready(self: Any, request: Any) -> Any:
        ok, body = await service.ready(probe)
        return self.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return self.text(service.metrics(), content_type="text/plain; version=0.0.4")

    @app.page("/reports/")
    async def report_list(self: Any, request: Any) -> Any:
        return self.html(render_report_list(service.reports, service.health()))

    @app.page("/reports/{report_id}")
    async def report_page(self: Any, request: Any, report_id: str) -> Any:
        as_json = report_id.endswith(".json")
        report_id = report_id.removesuffix(".json").removesuffix(".html")
        if not report_id or any(c in report_id for c in "/\\") or report_id.startswith("."):
            return self.notfound()
        path = service.monitor.store.json_path(report_id) if as_json else service.html_for(report_id)
        if path is None or not path.is_file():
            return self.notfound(f"no report {report_id}")
        data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        return self.bytes(data, content_type="application/json" if as_json else "text/html")

    @app.page("/")
    async def index(self: Any, request: Any) -> Any:
        return self.html(render_report_list(service.reports, service.health()))


def render_report_list(reports: list[dict[str, Any]], health: dict[str, Any]) -> str:
    """The report list page: one row per window with its rows, verdict and report, newest first."""
    rows = []
    for r in reversed(reports):
        rid = html.escape(str(r.get("report_id", "")))
        concept = r.get("concept_drift") or {}
        prediction = r.get("prediction_drift") or {}
        auc = (r.get("model_auc") or {}).get("blend")
        drift = bool(r.get("dataset_drift"))
        evidently = r.get("evidently_report") or {}
        if evidently.get("error"):
            drawn = "not drawn (error)"
        elif evidently.get("shared"):
            drawn = f"shared by {evidently.get('windows')} windows ({evidently.get('window')} of them)"
        else:
            drawn = "own"
        rows.append(
            "<tr class='{cls}'>"
            "<td><a href='/reports/{rid}'>{rid}</a></td>"
            "<td>{start}<br>{end}</td><td class='num'>{rows}</td><td>{model}</td>"
            "<td class='verdict'>{verdict}</td><td class='num'>{share:.0%}</td><td>{cols}</td>"
            "<td>{pred}</td><td>{concept}</td><td class='num'>{auc}</td>"
            "<td><a href='/reports/{rid}'>HTML</a> <a href='/reports/{rid}.json'>JSON</a></td>"
            "<td class='drawn'>{drawn}</td></tr>".format(
                cls="drift" if drift else "ok",
                rid=rid,
                start=html.escape(str(r.get("window_start", ""))),
                end=html.escape(str(r.get("window_end", ""))),
                rows=int(r.get("rows") or 0),
                model=html.escape(str(r.get("model_version", ""))),
                verdict="DRIFT" if drift else "no drift",
                share=float(r.get("drift_share") or 0.0),
                cols=html.escape(", ".join(r.get("drifted_columns") or [])) or "&ndash;",
                pred="drift" if prediction.get("drifted") else "&ndash;",
                concept=(
                    f"detected at {html.escape(str(concept.get('at')))}"
                    if concept.get("detected")
                    else "&ndash;"
                ),
                auc="&ndash;" if auc is None else f"{auc:.3f}",
                drawn=html.escape(drawn),
            )
        )
    body = "".join(rows) or "<tr><td colspan='12'>No reports yet: a window is still filling.</td></tr>"
    status = html.escape(
        f"{health['windows_reported']} windows reported of {health['windows_done']} closed, "
        f"{health['rows_pending']} rows in the open window (of {health['window_rows']}), "
        f"{health['reports_rendered']} Evidently reports drawn, "
        f"{health['windows_merged']} windows sharing a report with others (they closed faster than "
        f"reports are drawn; none is skipped), {health['reports_pending']} windows waiting for their "
        f"report, last report at {health['last_report_at'] or '-'}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>churnstream drift reports</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }} td.num {{ text-align: right; }}
tr.drift td.verdict {{ color: #b00020; font-weight: bold; }} tr.ok td.verdict {{ color: #1b7f3b; }}
</style></head><body>
<h1>churnstream drift reports</h1>
<p id="status">{status} &middot; <a href="/health">health</a> &middot; <a href="/metrics">metrics</a></p>
<table id="drift-reports"><thead><tr>
<th>window</th><th>window (event time)</th><th>rows</th><th>model</th><th>dataset drift</th>
<th>drift share</th><th>drifted columns</th><th>prediction drift</th><th>concept drift</th>
<th>AUC (blend)</th><th>links</th><th>Evidently report</th></tr></thead>
<tbody>{body}</tbody></table>
</body></html>
"""


def cli(args: Any, settings: Settings) -> int:
    """``churnstream monitor``: create the topics, then run the monitor until SIGTERM/SIGINT."""
    import faust

    from churnstream.streams.topics import create_topics

    create_topics(settings)  # faust ignores a source topic that does not exist when it starts
    monitor_app = MonitorApp.build(settings)
    log.info(
        "drift monitor: %s -> %s, windows of %d rows, reports in %s, state in %s, pages at http://%s:%d/",
        settings.topics.monitoring_batches,
        settings.topics.drift_reports,
        settings.drift_window_rows,
        settings.report_dir,
        state_dir(settings),
        settings.web_host,
        settings.web_port,
    )
    worker = faust.Worker(
        monitor_app.app,
        loglevel="DEBUG" if getattr(args, "verbose", False) else "INFO",
        quiet=True,
        redirect_stdouts=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        monitor_app.service.close()
    return 0

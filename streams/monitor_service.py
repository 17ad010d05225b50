"""The running drift monitor between faust's agent and its parts: a record in, windows and dead letters out.

:class:`MonitorService` decodes each record of the monitoring topic
(:func:`~churnstream.streams.monitoring_batches.decode_batch`), feeds it to the
:class:`~churnstream.monitoring.monitor.DriftMonitor` and hands the windows that close to the
:class:`~churnstream.monitoring.publisher.ReportPublisher`. A malformed record goes to ``dead_letter``
(stage ``decode``, ``validate`` or ``process``) and the agent goes on. A record's offset is acked
(committable) only once every prediction in it has been reported
(:class:`~churnstream.streams.monitor_acks.UncommittedRecords`); each time reporting moves on, the
:class:`~churnstream.monitoring.state.MonitorState` saves where (in the monitor's faust table, whose
changelog faust writes before it commits any offset), so a restart counts each prediction once. A state kept
in a table is read back when the first record arrives: faust hands records to the agent only once it has
recovered its tables from their changelog topics.

faust can lose records as it starts: those it fetches while it seeks to the committed offsets after
recovering its tables are cleared unacked from the agent's queue when its flow resumes, and its fetching
goes on past them (faust-streaming issue #596). The monitoring topic has no gaps in its offsets (no
transactions, no compaction), so a record further on than the next one expected (for a partition's first
record: the group's committed offset) means records were lost: ``missed`` reads them and they go first.
The stall clock behind ``/health`` and ``/ready`` is :class:`~churnstream.streams.monitor_health.InputWatch`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from churnstream.dead_letter import DeadLetter, dead_letter_for_bytes
from churnstream.errors import EventError, ProcessingError
from churnstream.events import format_time, now_ms
from churnstream.messages import DriftReport
from churnstream.monitoring.monitor import Added, DriftMonitor
from churnstream.monitoring.publisher import ReportPublisher
from churnstream.monitoring.render import ReportRenderer
from churnstream.settings import Settings
from churnstream.streams.health import Answer
from churnstream.streams.monitor_acks import HeldRecord, PartitionId, UncommittedRecords, key_of
from churnstream.streams.monitor_health import InputOffsets, InputWatch, MonitorMetrics, percentiles
from churnstream.streams.monitoring_batches import decode_batch

# the monitor's log lines keep the name operators know them by
log = logging.getLogger("churnstream.streams.monitor")


class Record(NamedTuple):
    """One record of the monitoring topic as faust's agent hands it over."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int | None
    offset: int | None


# the records of a partition faust lost before stop, from start (None: the partition's first record here):
# (record, Kafka timestamp in s, its ack) each
Missed = Callable[
    [PartitionId, int | None, int], Awaitable[list[tuple[Record, float | None, Callable[[], Any]]]]
]


class MonitorService:
    """State of a running monitor: the drift monitor, its report publisher, uncommitted records, counters.

    ``committed(partitions)`` tells the consumer group's committed offsets of these (topic, partition)
    pairs, as the broker has them (for the saved state: a restart checks its offsets were not moved);
    ``max_jobs`` bounds the jobs waiting for the report worker (see
    :class:`~churnstream.monitoring.render.RenderQueue`); ``offsets`` measures the input waiting for the
    agent (for ``/health`` and ``/ready``; none: never measured); ``evidence`` is the publisher's (the
    shadow's evidence for a window, see :class:`~churnstream.monitoring.publisher.ReportPublisher`);
    ``missed(partition, start, stop)`` gives the records of a partition faust skipped before ``stop``, after
    ``start`` (None: the partition's first record here), each with its ack (none: faust is trusted).
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
        committed: Callable[[list[PartitionId]], Mapping[PartitionId, int]] | None = None,
        offsets: InputOffsets | None = None,
        evidence: Callable[[str | None, str | None, str | None], dict[str, Any] | None] | None = None,
        missed: Missed | None = None,
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.state = monitor.state
        restored = monitor.restored
        self.publisher = ReportPublisher(
            monitor=monitor,
            renderer=renderer
            or ReportRenderer(
                root=monitor.store.root,
                drift_share=monitor.config.drift_share,
                project=monitor.store.project_name,
            ),
            publish_report=publish_report,
            settled=self._settle,
            max_jobs=max_jobs,
            counters=restored.counters if restored else None,
            evidence=evidence,
            recounted=self._save_counters,
        )
        self.uncommitted = UncommittedRecords(
            resume=restored.positions if restored else {}, done_upto=monitor.windows_closed
        )
        self.watch = InputWatch(settings=settings, offsets=offsets, read_offsets=self.uncommitted.next_offset)
        self._publish_dead_letter = publish_dead_letter
        self._committed = committed
        self._missed = missed
        self._detectors: dict[int, bytes] = {}
        self.records = 0
        self.lags: deque[float] = deque(maxlen=100_000)
        self.delays: deque[float] = deque(maxlen=100_000)
        self.dead_letters = 0
        self.records_read_back = 0  # records faust skipped, read by the monitor itself (see ``missed``)
        self.started_at = now_ms()
        # a state kept in a table is known once faust has recovered it, before the first record
        self._resumed = self.state is None or self.state.table is None
        self.prometheus = MonitorMetrics(health=self.health, reports=lambda: self.publisher.reports)

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
        self.watch.handling(f"{topic}[{partition}]@{offset}")
        try:
            await self._handle(Record(key, value, topic, partition, offset), timestamp, ack)
        finally:
            self.watch.handled()

    async def _handle(self, record: Record, timestamp: float | None, ack: Callable[[], Any] | None) -> None:
        if not self._resumed:
            self._resume()
        tp = (record.topic, record.partition if record.partition is not None else -1)
        expected = self.uncommitted.next_offset.get(tp)  # None: the partition's first record here
        if (
            self._missed is not None
            and record.offset is not None
            and (expected is None or expected < record.offset)
        ):
            for missed, missed_at, missed_ack in await self._missed(tp, expected, record.offset):
                self.records_read_back += 1
                await self._take(missed, missed_at, missed_ack)
        await self._take(record, timestamp, ack)

    async def _take(self, record: Record, timestamp: float | None, ack: Callable[[], Any] | None) -> None:
        tp = (record.topic, record.partition if record.partition is not None else -1)
        held = self.uncommitted.admit(tp, record.offset, ack)
        if held is None:
            return  # delivered again after a rebalance: the first delivery is still held
        if held.holds is not None:  # not all of it reported before a restart
            self.records += 1
            if timestamp:
                self.delays.append(time.time() - timestamp)
            await self._feed(held, record)
        self.uncommitted.release(tp)
        if held.holds is None:
            self.uncommitted.wait_for_ack(tp, held, len(record.key or b"") + len(record.value or b""))

    async def _feed(self, held: HeldRecord, record: Record) -> None:
        try:
            batch = decode_batch(
                record.value, max_as_of=now_ms() + int(self.settings.max_future_skew_hours * 3_600_000)
            )
            self.monitor.check(batch)
            added = self.monitor.add(batch, skip_rows=held.base_rows)
        except EventError as exc:
            await self._dead_letter(record, exc)
            held.holds = None
            return
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            await self._dead_letter(record, ProcessingError(f"cannot use batch: {exc!r}"))
            held.holds = None
            return
        self.lags.append(now_ms() - batch.created_at)
        held.segments, held.holds = added.segments, added.holds
        self._use(added)

    def _resume(self) -> None:
        """Continue from the state in the monitor's table, recovered by faust from its changelog topic."""
        self._resumed = True
        assert self.state is not None
        saved = self.state.load()
        self.monitor.restore(saved)
        self.uncommitted.resume_from(saved.positions if saved else {}, self.monitor.windows_closed)
        self.publisher.restore_counters(saved.counters if saved else {})
        if saved is not None:
            log.info("resuming after window %d, from the state in the monitor's table", saved.seq)

    def _use(self, added: Added) -> None:
        self._detectors.update(added.detectors)
        for pending in added.pending:
            self.publisher.put(pending)
        if added.settled:
            self._settle(added.settled)

    def _settle(self, seqs: list[int]) -> None:
        """Windows ``seqs`` are reported (or became a kept reference): move the committable point."""
        if not self.uncommitted.settle(seqs):
            return
        done_upto = self.uncommitted.done_upto
        if self.state is not None:
            committed = self._committed_offsets()
            self.state.save(
                positions=self.uncommitted.positions(committed.get),
                seq=done_upto,
                detectors=self._detectors.get(done_upto),
                counters=self.publisher.counters(),
            )
        for seq in [s for s in self._detectors if s <= done_upto]:
            del self._detectors[seq]
        self.uncommitted.release_all()

    def _save_counters(self) -> None:
        """Save the publisher's counters beside the state (a later draw changes them between windows)."""
        if self.state is not None:
            self.state.save_counters(self.publisher.counters())

    def _committed_offsets(self) -> Mapping[PartitionId, int]:
        if self._committed is None:
            return {}
        try:
            return self._committed(sorted(self.uncommitted.next_offset))
        except Exception:  # only a sharper restart check; never worth failing the write
            return {}

    async def _dead_letter(self, record: Record, error: EventError) -> None:
        self.dead_letters += 1
        topic, partition, offset = record.topic, record.partition, record.offset
        log.warning("dead letter from %s[%s]@%s: %s", topic, partition, offset, str(error)[:300])
        await self._publish_dead_letter(dead_letter_for_bytes(record.value, record, error))

    def health(self) -> dict[str, Any]:
        """The monitor's state; ``ok`` (and ``status``) say whether it is alive (see :meth:`live`)."""
        publisher, watch = self.publisher, self.watch
        stalled = watch.stalled_seconds()
        alive = stalled < watch.stuck_after
        lag_age = watch.lag_age()  # seconds since the lag was measured
        return {
            "ok": alive,
            "status": "ok" if alive else "stuck",
            "stalled_seconds": round(stalled, 3),
            "stuck_after_seconds": watch.stuck_after,
            "partitions": watch.partitions,
            "lag": watch.lag,
            "lag_age_seconds": None if lag_age is None else round(lag_age, 3),
            "last_batch_age_seconds": watch.last_batch_age(),
            "model_version": self.monitor.model_version,
            "records": self.records,
            "rows_seen": self.monitor.rows_seen,
            "rows_pending": self.monitor.rows_pending,
            "rows_straggled": self.monitor.rows_straggled,
            "rows_repeated": self.monitor.rows_repeated,
            "labels_repeated": self.monitor.labels_repeated,
            "windows_done": self.monitor.windows_closed,
            "windows_reported": publisher.windows_reported,
            "windows_skipped": 0,  # never: windows that close while reports are drawn share a report
            "windows_merged": publisher.windows_merged,
            "reports_rendered": publisher.reports_rendered,
            "reports_pending": publisher.waiting(),
            "windows_light": publisher.windows_light,
            "windows_drawn_later": publisher.windows_drawn_later,
            "windows_awaiting_full_report": publisher.awaiting_full_report(),
            "report_errors": publisher.report_errors,
            "report_worker": {
                "mode": publisher.renderer.mode,
                "ready": publisher.warmed_up,
                "restarts": publisher.renderer.restarts,
                "render_seconds": percentiles(publisher.render_seconds, scale=1.0),
            },
            "dead_letters": self.dead_letters,
            "records_read_back": self.records_read_back,
            "last_report_at": format_time(publisher.last_report_at) if publisher.last_report_at else None,
            "started_at": format_time(self.started_at),
            "window_rows": self.monitor.config.window_rows,
            "lag_ms": percentiles(self.lags, scale=1.0),
            "delay_ms": self.delay_ms(),
            "uncommitted_records": self.uncommitted.count(),
            # how far the monitor has read ("topic/partition" -> next offset): its committed offsets
            # stay behind while records of the open window wait to be reported
            "read_offsets": {
                key_of(tp): offset for tp, offset in sorted(self.uncommitted.next_offset.items())
            },
        }

    def live(self) -> Answer:
        """Liveness for ``/health``: alive unless input has waited ``stuck_after`` seconds for the agent."""
        body = self.health()
        return bool(body["ok"]), body

    def delay_ms(self) -> dict[str, float] | None:
        """p50/p99/max of how late recent records were seen (Kafka timestamp to agent), in ms."""
        return percentiles(self.delays, scale=1000.0)

    def metrics(self) -> bytes:
        """The metrics in Prometheus' text format (:class:`MonitorMetrics`)."""
        return self.prometheus.render()

    def close(self) -> None:
        self.publisher.renderer.close()
        self.watch.close()

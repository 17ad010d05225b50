"""``churnstream monitor``: the drift monitor as a faust-streaming app, with its web pages.

One agent reads the scorer's monitoring batches (one record per scored micro-batch) from
``settings.topics.monitoring_batches`` and feeds a :class:`~churnstream.monitoring.monitor.DriftMonitor`,
which judges each window as it closes (Evidently's tests, computed in-process). The Evidently HTML of each
window is drawn in a separate worker process (:mod:`churnstream.monitoring.render`); when windows close faster
than reports are drawn, the others get a light page and Evidently run of their own, never dropped or shared
(drifted windows drawn in full first). Once a window's page exists its
``drift_reports`` message is published keyed by model version, every window in order. A malformed
record goes to ``dead_letter`` (stage ``decode`` or ``validate``) and the agent goes on.

Restarts lose nothing: a record's offset is committed only once every prediction and outcome in it has
been reported, so a restarted monitor reads the open window's records again; the
:class:`~churnstream.monitoring.state.MonitorState` says how many predictions of a record that straddles two
windows were already reported, so each counts exactly once. That state (per-partition progress, detectors,
label book, window number, counters) is one value in a faust table (:data:`STATE_TABLE`) backed by a
compacted changelog topic that faust creates and writes before it commits offsets, so a monitor on a fresh
machine, without its old local directory, resumes exactly where it was; references taken from the stream
are files beside the reports (:func:`references_dir`). faust's exactly-once mode is not used.

A dead letter's value is cut to fit the ``dead_letter`` topic exactly as the scorer's are
(:func:`~churnstream.dead_letter.dead_letter_payload`), and dead letters waiting to be acked behind an
uncommitted record are bounded (:data:`~churnstream.streams.monitor_acks.MAX_WAITING_ACKS`,
:data:`~churnstream.streams.monitor_acks.MAX_WAITING_ACK_BYTES`).

Web pages (:class:`MonitorPages`, an aiohttp server faust runs with the app, bound to
``settings.web_host``:``settings.web_port``): ``/`` and ``/reports/`` list the windows with their verdicts,
``/reports/<id>`` is the window's Evidently HTML report, ``/reports/<id>.json`` its message, ``/metrics``
the metrics for Prometheus (:class:`~churnstream.streams.monitor_health.MonitorMetrics`, ``churn_monitor_*``).
``/alerts`` lists the current top alerts (the latest event-time month's, by priority, one per customer) and
``/report`` the daily report's latest days (``?day=YYYY-MM-DD``: every figure of one day), with
``/alerts.json`` and ``/report.json`` (what ``churnstream report --json`` prints); both are read from the
published topics in a process of their own, on request (:mod:`~churnstream.streams.monitor_views`).

``/health`` is liveness: the monitor's state as JSON, 200 with ``status`` ``ok``, or 503 with ``stuck``
once input has waited :data:`~churnstream.streams.monitor_health.STUCK_SECONDS` for the agent (records on
its partitions beyond what it handled, and no record handled since; or one record in hand that long). An
idle topic has nothing waiting, so it never reads as stuck. ``/ready`` is readiness: 200 while Kafka
answers, partitions are assigned and no input has waited
:data:`~churnstream.streams.monitor_health.READY_STALL_SECONDS`, else 503 with ``reasons``; both say how
far behind the monitor is (``lag``, records) and how old its last record is (``last_batch_age_seconds``).
What waits is measured by a Kafka client of the monitor's own
(:class:`~churnstream.streams.monitor_health.InputOffsets`), so a stuck faust consumer cannot hide it.

The parts, each in its own module: this one wires the faust app, its pages and the CLI;
:mod:`~churnstream.streams.monitor_service` handles each record (:class:`MonitorService`);
:mod:`~churnstream.streams.monitoring_batches` decodes and checks records;
:mod:`~churnstream.streams.monitor_acks` decides which offsets may be committed and where a restart resumes;
:mod:`~churnstream.streams.monitor_health` keeps the stall clock and measures the input;
:mod:`~churnstream.monitoring.publisher` draws and publishes the reports;
:mod:`~churnstream.monitoring.pages` renders the report list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import os
import re
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from churnstream.dead_letter import DeadLetter, dead_letter_payload
from churnstream.errors import ChurnstreamError, InfraError
from churnstream.messages import DriftReport
from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
from churnstream.monitoring.pages import (
    render_alerts_page,
    render_report_list,
    render_report_page,
    render_window_page,
)
from churnstream.monitoring.reference import ReferenceSource, RegistrySource
from churnstream.monitoring.render import ReportRenderer
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.state import MonitorState
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.health import DependencyProbe
from churnstream.streams.monitor_health import InputOffsets
from churnstream.streams.monitor_service import Missed, MonitorService, Record
from churnstream.streams.monitor_views import PublishedViews
from churnstream.streams.reading import read_range
from churnstream.streams.retrain import LoopWatch

log = logging.getLogger(__name__)
# what a report id may look like: report_id() gives "<UTC start>-<version>-<hash>" from these characters
_REPORT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


STATE_TABLE = "monitor-state"  # changelog topic: "<app id>-monitor-state-changelog"


def app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}churnstream-monitor"


def state_dir(settings: Settings, name: str | None = None) -> Path:
    """Where a monitor of this consumer group kept its local state before the state moved into its faust
    table (read once, when the table has none yet; see :class:`MonitorState`)."""
    return settings.var_dir / "monitor" / (name or app_id(settings))


def references_dir(settings: Settings, name: str | None = None) -> Path:
    """Where the monitor keeps the references it took from a model's first windows: beside the reports
    (a volume of its own in ``docker-compose.yml``), since a reference is too large for its table."""
    return settings.report_dir / "references" / (name or app_id(settings))


def later_dir(settings: Settings, name: str | None = None) -> Path:
    """Where the monitor keeps the columns of light windows whose full report is still to be drawn, so a
    restart draws them too: beside the reports, like the references."""
    return settings.report_dir / "later" / (name or app_id(settings))


def build_monitor(
    settings: Settings, *, references: ReferenceSource | None = None, name: str | None = None
) -> DriftMonitor:
    """A :class:`DriftMonitor` for these settings; references from the model registry unless given."""
    if references is None:
        references = RegistrySource(_LazyRegistry(settings))
    return DriftMonitor(
        references=references,
        store=ReportStore(settings.report_dir, topic_prefix=settings.topic_prefix),
        config=MonitorConfig(
            window_rows=settings.drift_window_rows,
            max_span_ms=int(settings.drift_window_days * DAY_MS),
            # workers pick a promoted model up on their own polls: their records disagree that long
            straggle_ms=max(60_000, int(3 * settings.model_poll_seconds * 1000)),
            drift_share=settings.drift_share,
            label_delay_ms=settings.horizon_ms + settings.lateness_ms,
            min_labels=settings.monitor_min_labels,
            auc_drop_watch=settings.monitor_auc_drop_watch,
            auc_drop_retrain=settings.monitor_auc_drop_retrain,
            retrain_on_advice=bool(settings.retrain_on_advice),
        ),
        url_base=settings.pages_url,
        state=MonitorState(
            state_dir(settings, name),
            references=references_dir(settings, name),
            later=later_dir(settings, name),
        ),
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

    def current_version(self) -> str | None:
        """The version served now (the straggler rule asks it at a switch of versions)."""
        return self._open().current_version()  # type: ignore[no-any-return]


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
        replication: int = 1,
    ) -> MonitorApp:
        """The app; ``max_pending`` bounds the reports waiting to be drawn (later windows share them),
        ``render_in_thread`` draws them in a thread of this process instead (the old way; benchmarks),
        ``renderer`` replaces the report worker altogether; ``replication`` is the replication factor faust
        gives the state table's changelog topic when it creates it (:func:`replication_of`)."""
        import faust

        name = app_name or app_id(settings)
        datadir = (settings.var_dir / "faust" / name).resolve()
        datadir.parent.mkdir(parents=True, exist_ok=True)
        app = faust.App(
            name,
            broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
            broker_credentials=_credentials(settings),
            datadir=str(datadir),
            web_enabled=True,  # the pages: MonitorPages, registered with app.web_server
            web_host=settings.web_host,
            web_port=settings.web_port,
            # faust declares only its internal topics, the state table's changelog; the monitor's source
            # topics are created before the worker starts (churnstream topics create, or cli below)
            topic_allow_declare=True,
            topic_replication_factor=replication,
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
            Table=_state_table_class(),
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

        loop_watch = LoopWatch(settings)  # #24: evidence while a model is in shadow, auto-promotion, retrain

        async def publish_report(report: DriftReport) -> None:
            value = json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
            delivery = await reports_topic.send(key=report.model_version.encode("utf-8"), value=value)
            await delivery

        async def publish_dead_letter(letter: DeadLetter) -> None:
            # the scorer's cap: a value too large for the topic is cut and marked value_truncated
            delivery = await dead_topic.send(key=letter.kafka_key, value=dead_letter_payload(letter))
            await delivery

        # the monitor's bookkeeping: one value, in a table whose changelog topic faust creates (compacted)
        # and writes before it commits any offset of the monitoring topic
        bookkeeping = app.Table(
            STATE_TABLE,
            key_type=str,  # keys in JSON
            value_type=bytes,  # values raw: MonitorState's compressed bytes
            partitions=1,
            # set, not left to the broker's default: MonitorState refuses values over 900 KiB, so 1 MiB
            # holds any value it writes, whatever message.max.bytes the broker was given
            extra_topic_configs={"max.message.bytes": str(1024 * 1024)},
            help="the drift monitor's progress per partition, detectors and counters",
        )
        monitor = monitor or build_monitor(settings, name=name)
        if monitor.state is not None:
            monitor.state.table = bookkeeping
        offsets = InputOffsets(
            settings,
            group=name,
            assignment=lambda: [(tp.topic, tp.partition) for tp in app.consumer.assignment()],
        )
        service = MonitorService(
            settings=settings,
            monitor=monitor,
            publish_report=publish_report,
            publish_dead_letter=publish_dead_letter,
            evidence=loop_watch.on_report,  # before the window's page and run are drawn, so they show it
            renderer=renderer
            or ReportRenderer(
                root=monitor.store.root,
                drift_share=monitor.config.drift_share,
                workspace=monitor.store.use_workspace,
                in_thread=render_in_thread,
                project=monitor.store.project_name,
            ),
            max_jobs=max_pending,
            committed=offsets.committed,
            offsets=offsets,
            missed=skipped_records(settings, app, offsets),
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
            await service.publisher.run()

        pages = MonitorPages(
            service,
            DependencyProbe(settings, redis=False),
            host=settings.web_host,
            port=settings.web_port,
            views=PublishedViews(settings),
        )
        app.web_server(pages.as_service())
        return cls(app, service, batches)


def skipped_records(settings: Settings, app: Any, offsets: InputOffsets, *, attempts: int = 10) -> Missed:
    """The records of a partition that faust lost (see
    :class:`~churnstream.streams.monitor_service.MonitorService`) before ``stop``, the record it handed
    over: from ``start``, the record after the last one handed over (None: none yet), or from the group's
    committed offset when that is further on (another member read on; never so with one monitor per
    group), or, without either, from the beginning (faust starts a group without offsets at the earliest).
    They are read by a Kafka client of our own and acked through faust's consumer, so its commits go on
    past them. The committed offset is asked ``attempts`` times, a second each (:class:`InputOffsets`
    holds its lock no longer, so the state saves on the event loop never wait long for it); when Kafka
    never answers, :class:`~churnstream.errors.InfraError`: better no answer than a count short."""
    from faust.types import Message

    async def committed(tp: tuple[str, int]) -> int | None:
        failure: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(1.0)  # Kafka did not answer: give it a moment
            try:
                return (await asyncio.to_thread(offsets.committed, [tp])).get(tp)
            except Exception as exc:
                failure = exc
        topic, partition = tp
        raise InfraError(
            f"{topic}[{partition}]: the group's committed offset is unknown after {attempts} attempts "
            f"({failure}), so the monitor cannot tell whether faust skipped records"
        )

    async def missed(
        tp: tuple[str, int], start: int | None, stop: int
    ) -> list[tuple[Record, float | None, Any]]:
        topic, partition = tp
        group = await committed(tp)
        known = [offset for offset in (start, group) if offset is not None]
        start = max(known) if known else 0
        if start >= stop:
            return []
        found = await asyncio.to_thread(read_range, settings, topic, partition, start, stop)
        if found:
            log.warning(
                "%s[%d]: faust handed over offset %d next, not %d: reading what it skipped from Kafka "
                "(%d record%s; faust-streaming issue #596)",
                topic,
                partition,
                stop,
                start,
                len(found),
                "" if len(found) == 1 else "s",
            )
        records = []
        for msg in found:
            offset, (kind, ms) = msg.offset(), msg.timestamp()
            if offset is None:
                continue
            at = ms / 1000 if ms > 0 else None
            key, value = msg.key(), msg.value()
            message = Message(topic, partition, offset, at or 0.0, kind, None, key, value, None)
            ack = functools.partial(app.consumer.ack, message)
            records.append((Record(key, value, topic, partition, offset), at, ack))
        return records

    return missed


def replication_of(settings: Settings) -> int:
    """The monitoring topic's replication factor (the broker's default, as ``churnstream topics create``
    leaves it), for the changelog topic faust creates beside it."""
    from churnstream.streams.topics import make_admin

    topic = settings.topics.monitoring_batches
    metadata = make_admin(settings).list_topics(topic, timeout=30)
    partitions = metadata.topics[topic].partitions
    return max((len(p.replicas) for p in partitions.values()), default=1)


def _state_table_class() -> Any:
    """faust's ``Table`` whose changes go to partition 0 of its one-partition changelog, from any task
    (faust would otherwise take the partition of the record in hand, and the reports task has none)."""
    import faust

    class StateTable(faust.Table):  # type: ignore[misc]
        def partition_for_key(self, key: Any) -> int | None:
            return 0

    return StateTable


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


class MonitorPages:
    """The monitor's pages on an aiohttp server of their own, which faust starts and stops with the app
    (registered with ``faust.App.web_server``, the public way to replace faust's own web stack, whose index
    page would take ``/``)."""

    def __init__(
        self,
        service: MonitorService,
        probe: DependencyProbe,
        *,
        host: str,
        port: int,
        views: PublishedViews | None = None,
    ) -> None:
        self.service = service
        self.probe = probe
        self.host = host
        self.port = port
        self.views = views or PublishedViews(service.settings)

    def application(self) -> Any:
        from aiohttp import web

        service = self.service
        # the pages' links start with the path they are reached under (CHURN_PUBLIC_URL behind a proxy)
        base = urlsplit(service.settings.pages_url).path.rstrip("/")

        async def health(request: web.Request) -> web.Response:
            await service.watch.fresh()
            ok, body = service.live()
            return web.json_response(body, status=200 if ok else 503)

        async def ready(request: web.Request) -> web.Response:
            ok, body = await service.watch.ready(self.probe)
            return web.json_response(body, status=200 if ok else 503)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=service.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def report_list(request: web.Request) -> web.Response:
            page = render_report_list(service.publisher.reports, service.health(), base=base)
            return web.Response(text=page, content_type="text/html")

        async def report_page(request: web.Request) -> web.Response:
            report_id = request.match_info["report_id"]
            as_json = report_id.endswith(".json")
            report_id = report_id.removesuffix(".json").removesuffix(".html")
            if not _REPORT_ID.fullmatch(report_id):  # not a name report_id() gives (a NUL, 7,000 chars)
                raise web.HTTPNotFound(text=f"no report {report_id[:100]!r}")
            path = (
                service.monitor.store.json_path(report_id)
                if as_json
                else service.publisher.html_for(report_id)
            )
            if path is not None and path.is_file():
                data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
                return web.Response(body=data, content_type="application/json" if as_json else "text/html")
            # a window published without its files (a full report disk): the list links to it all the
            # same, so the link shows the window from its message
            message = service.publisher.message_for(report_id)
            if message is None:
                raise web.HTTPNotFound(text=f"no report {report_id}")
            if as_json:
                return web.json_response(message)
            error = (message.get("evidently_report") or {}).get("error")
            note = (
                f"No page of this window was saved: {error}"
                if error
                else "This window's page is no longer in the report directory."
            )
            return web.Response(text=render_window_page(message, note=note), content_type="text/html")

        views = self.views

        async def alerts_page(request: web.Request) -> web.Response:
            try:
                found = await views.alerts()
            except ChurnstreamError as exc:
                page = render_alerts_page(
                    None, [], scanned=0, error=f"cannot read the alerts: {exc}", base=base
                )
                return web.Response(text=page, content_type="text/html", status=503)
            page = render_alerts_page(found["month"], found["alerts"], scanned=found["scanned"], base=base)
            return web.Response(text=page, content_type="text/html")

        async def alerts_json(request: web.Request) -> web.Response:
            try:
                return web.json_response(await views.alerts())
            except ChurnstreamError as exc:
                return web.json_response({"error": str(exc)}, status=503)

        def asked_day(request: web.Request) -> str | None:
            day = request.query.get("day")
            if day is None:
                return None
            try:  # a real day, as `churnstream report --day` takes it (2024-02-30 is not one)
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
                    raise ValueError(day)
                return dt.date.fromisoformat(day).isoformat()
            except ValueError:
                raise web.HTTPBadRequest(text=f"day must be a day, YYYY-MM-DD, not {day!r}") from None

        async def report_page_(request: web.Request) -> web.Response:
            day = asked_day(request)
            try:
                days = await views.report()
            except ChurnstreamError as exc:
                page = render_report_page([], day=day, error=f"cannot read the report: {exc}", base=base)
                return web.Response(text=page, content_type="text/html", status=503)
            page = render_report_page(days, day=day, base=base)
            return web.Response(text=page, content_type="text/html")

        async def report_json(request: web.Request) -> web.Response:
            day = asked_day(request)
            try:
                days = await views.report()
            except ChurnstreamError as exc:
                return web.json_response({"error": str(exc)}, status=503)
            return web.json_response([d for d in days if day is None or d["day"] == day])

        application = web.Application()
        application.router.add_get("/alerts", alerts_page)
        application.router.add_get("/alerts.json", alerts_json)
        application.router.add_get("/report", report_page_)
        application.router.add_get("/report.json", report_json)
        application.router.add_get("/health", health)
        application.router.add_get("/ready", ready)
        application.router.add_get("/metrics", metrics)
        application.router.add_get("/reports/", report_list)
        application.router.add_get("/reports/{report_id}", report_page)
        application.router.add_get("/", report_list)
        return application

    def as_service(self) -> Any:
        """A ``mode.Service`` serving the pages while it runs (what ``faust.App.web_server`` takes)."""
        from aiohttp import web
        from mode import Service

        pages = self

        class PagesService(Service):
            runner: web.AppRunner | None = None

            async def on_start(self) -> None:
                self.runner = web.AppRunner(pages.application(), access_log=None)
                await self.runner.setup()
                await web.TCPSite(self.runner, pages.host, pages.port).start()

            async def on_stop(self) -> None:
                if self.runner is not None:
                    await self.runner.cleanup()
                pages.views.close()

        return PagesService()


def cli(args: Any, settings: Settings) -> int:
    """``churnstream monitor``: create the topics, then run the monitor until SIGTERM/SIGINT."""
    import faust

    from churnstream.streams.topics import create_topics

    create_topics(settings)  # faust ignores a source topic that does not exist when it starts
    monitor_app = MonitorApp.build(settings, replication=replication_of(settings))
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

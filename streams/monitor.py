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
(:func:`~churnstream.dead_letter.dead_letter_payload`), and dead letters waiting to be acked behind an
uncommitted record are bounded (:data:`~churnstream.streams.monitor_acks.MAX_WAITING_ACKS`,
:data:`~churnstream.streams.monitor_acks.MAX_WAITING_ACK_BYTES`).

Web pages (faust's web server, bound to ``settings.web_host``:``settings.web_port``):
``/`` and ``/reports/`` list the windows with their verdicts, ``/reports/<id>`` is the window's Evidently
HTML report, ``/reports/<id>.json`` its message, ``/metrics`` the counters for Prometheus.

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
import json
import logging
import os
import ssl
from pathlib import Path
from typing import Any

from churnstream.dead_letter import DeadLetter, dead_letter_payload
from churnstream.messages import DriftReport
from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
from churnstream.monitoring.pages import render_report_list
from churnstream.monitoring.reference import ReferenceSource, RegistrySource
from churnstream.monitoring.render import ReportRenderer
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.state import MonitorState
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.health import DependencyProbe
from churnstream.streams.monitor_health import InputOffsets
from churnstream.streams.monitor_service import MonitorService

log = logging.getLogger(__name__)


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
            await service.publisher.run()

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
        service.watch.observe_soon()
        ok, body = service.live()
        return self.json(body, status=200 if ok else 503)

    @app.page("/ready")
    async def ready(self: Any, request: Any) -> Any:
        ok, body = await service.watch.ready(probe)
        return self.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(self: Any, request: Any) -> Any:
        return self.text(service.metrics(), content_type="text/plain; version=0.0.4")

    @app.page("/reports/")
    async def report_list(self: Any, request: Any) -> Any:
        return self.html(render_report_list(service.publisher.reports, service.health()))

    @app.page("/reports/{report_id}")
    async def report_page(self: Any, request: Any, report_id: str) -> Any:
        as_json = report_id.endswith(".json")
        report_id = report_id.removesuffix(".json").removesuffix(".html")
        if not report_id or any(c in report_id for c in "/\\") or report_id.startswith("."):
            return self.notfound()
        path = (
            service.monitor.store.json_path(report_id) if as_json else service.publisher.html_for(report_id)
        )
        if path is None or not path.is_file():
            return self.notfound(f"no report {report_id}")
        data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        return self.bytes(data, content_type="application/json" if as_json else "text/html")

    @app.page("/")
    async def index(self: Any, request: Any) -> Any:
        return self.html(render_report_list(service.publisher.reports, service.health()))


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

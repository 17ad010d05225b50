"""``churnstream monitor``: the drift monitor as a faust-streaming app, with its web pages.

One agent reads the scorer's monitoring batches (one record per scored micro-batch) from
``settings.topics.monitoring_batches`` and feeds a :class:`~monitoring.monitor.DriftMonitor`. When a
window closes, the Evidently report runs in a worker thread (seconds of CPU, off the event loop) and the
``drift_reports`` message is published keyed by model version. A malformed record goes to
``dead_letter`` (stage ``decode`` or ``validate``) and the agent goes on.

Web pages (faust's web server, bound to ``settings.web_host``:``settings.web_port``):
``/`` and ``/reports/`` list the reports with their verdicts, ``/reports/<id>`` is the Evidently HTML
report, ``/reports/<id>.json`` its JSON, ``/health`` the monitor's state as JSON.

The open window lives in memory: a restarted monitor resumes from its committed offsets and starts a
new window, so predictions of a partly filled window at shutdown are not reported.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from churnstream.errors import DecodeError, EventError, ValidationError
from churnstream.events import format_time, now_ms
from churnstream.messages import DeadLetter, DriftReport, MonitoringBatch
from churnstream.settings import DAY_MS, Settings
from monitoring.monitor import DriftMonitor, MonitorConfig, PendingReport
from monitoring.reference import ReferenceSource, RegistrySource
from monitoring.report import ReportStore

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 64 * 1024 * 1024


def decode_batch(value: bytes | None) -> MonitoringBatch:
    """A :class:`MonitoringBatch` from a message value; :class:`DecodeError` / :class:`ValidationError`.

    >>> decode_batch(b"nope")
    Traceback (most recent call last):
    ...
    churnstream.errors.DecodeError: not JSON: ...
    """
    import orjson

    if value is None:
        raise DecodeError("empty message value")
    if len(value) > MAX_BATCH_BYTES:
        raise DecodeError(f"monitoring batch of {len(value)} bytes exceeds {MAX_BATCH_BYTES}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("a monitoring batch must be a JSON object")
    batch = MonitoringBatch.from_json(obj)
    predictions = batch.predictions
    if batch.rows and "as_of" not in predictions:
        raise ValidationError("monitoring batch predictions need an as_of column")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in predictions.get("as_of", ())):
        raise ValidationError("as_of must be epoch milliseconds (integers)")
    for column in ("label",):
        if not all(v in (0, 1) for v in batch.outcomes.get(column, ())):
            raise ValidationError("outcome labels must be 0 or 1")
    for part in (predictions, batch.outcomes):
        for name, values in part.items():
            if name.endswith("probability") and not all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
            ):
                raise ValidationError(f"{name} must hold numbers or nulls")
    return batch


class MonitorService:
    """State of a running monitor: the drift monitor, the queue of reports to render, counters, history."""

    def __init__(
        self,
        *,
        settings: Settings,
        monitor: DriftMonitor,
        publish_report: Callable[[DriftReport], Any],
        publish_dead_letter: Callable[[DeadLetter], Any],
        max_pending: int = 16,
    ) -> None:
        self.settings = settings
        self.monitor = monitor
        self.max_pending = max_pending
        self._publish_report = publish_report
        self._publish_dead_letter = publish_dead_letter
        self._queue: deque[PendingReport] = deque()
        self._wakeup: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-report")
        self.reports: list[dict[str, Any]] = monitor.store.load_messages()
        self.records = 0
        self.delays: deque[float] = deque(maxlen=100_000)
        self.dead_letters = 0
        self.windows_reported = 0
        self.windows_skipped = 0
        self.report_errors = 0
        self.last_report_at: int | None = None
        self.rendering: str | None = None
        self.warmed_up = False
        self.started_at = now_ms()

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
    ) -> None:
        """Decode one record and feed it; a bad record becomes a dead letter.

        ``timestamp`` (the record's Kafka timestamp, seconds) measures how late the monitor sees records.
        """
        self.records += 1
        if timestamp:
            self.delays.append(time.time() - timestamp)
        try:
            batch = decode_batch(value)
            pending = self.monitor.add(batch)
        except EventError as exc:
            await self._dead_letter(key, value, topic, partition, offset, str(exc), exc.stage)
            return
        except (TypeError, ValueError, KeyError) as exc:
            await self._dead_letter(
                key, value, topic, partition, offset, f"cannot use batch: {exc!r}", "process"
            )
            return
        for item in pending:
            self._enqueue(item)

    def _enqueue(self, item: PendingReport) -> None:
        if len(self._queue) >= self.max_pending:
            dropped = self._queue.popleft()
            self.windows_skipped += 1
            log.warning(
                "reports fall behind (%d pending): skipped the window %s..%s",
                len(self._queue) + 1,
                format_time(dropped.window.start),
                format_time(dropped.window.end),
            )
        item.extra["windows_skipped"] = self.windows_skipped
        self._queue.append(item)
        self.wakeup.set()

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
        log.warning("dead letter from %s[%s]@%s: %s", topic, partition, offset, error)
        letter = DeadLetter(topic, partition, offset, key, value, error, stage, now_ms())
        await self._publish_dead_letter(letter)

    async def run_reports(self) -> None:
        """Render pending reports one at a time in the worker thread and publish them, forever."""
        loop = asyncio.get_running_loop()
        # Importing Evidently takes seconds: do it now, in the thread, while the agent starts consuming.
        await loop.run_in_executor(self._executor, _warm_up)
        self.warmed_up = True
        while True:
            while not self._queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            item = self._queue.popleft()
            self.rendering = item.report_id
            try:
                report = await loop.run_in_executor(self._executor, self.monitor.render, item)
            except Exception:
                self.report_errors += 1
                log.exception("drift report %s failed", item.report_id)
                continue
            finally:
                self.rendering = None
            await self._publish_report(report)
            self.windows_reported += 1
            self.last_report_at = report.created_at
            self.reports.append(report.to_json())
            del self.reports[:-1000]
            log.info(
                "drift report %s: %d rows %s..%s, dataset drift %s (share %.2f: %s), concept drift %s",
                report.report_id,
                report.rows,
                format_time(report.window_start),
                format_time(report.window_end),
                report.dataset_drift,
                report.drift_share,
                ", ".join(report.drifted_columns) or "-",
                (report.concept_drift or {}).get("detected"),
            )

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "model_version": self.monitor.model_version,
            "records": self.records,
            "rows_seen": self.monitor.rows_seen,
            "rows_pending": self.monitor.rows_pending,
            "windows_done": self.monitor.windows_closed,
            "windows_reported": self.windows_reported,
            "windows_skipped": self.windows_skipped,
            "reports_pending": len(self._queue) + (1 if self.rendering else 0),
            "report_errors": self.report_errors,
            "dead_letters": self.dead_letters,
            "last_report_at": format_time(self.last_report_at) if self.last_report_at else None,
            "started_at": format_time(self.started_at),
            "window_rows": self.monitor.config.window_rows,
            "delay_ms": self.delay_ms(),
        }

    def delay_ms(self) -> dict[str, float] | None:
        """p50/p99/max of how late recent records were seen (Kafka timestamp to agent), in ms."""
        if not self.delays:
            return None
        values = np.asarray(self.delays) * 1000.0
        p50, p99, top = np.percentile(values, [50, 99, 100])
        return {"p50": round(float(p50), 1), "p99": round(float(p99), 1), "max": round(float(top), 1)}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _warm_up() -> None:
    import evidently  # noqa: F401
    import evidently.presets  # noqa: F401


def app_id(settings: Settings) -> str:
    return f"{settings.topic_prefix}churnstream-monitor"


def build_monitor(settings: Settings, *, references: ReferenceSource | None = None) -> DriftMonitor:
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
        url_base=f"http://{settings.web_host}:{settings.web_port}",
    )


class _LazyRegistry:
    """Opens ``models.registry.ModelRegistry`` on first use, so the monitor runs before any model exists."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.model_dir
        self._registry: Any = None

    def load(self, version: str) -> Any:
        if self._registry is None:
            try:
                from models.registry import ModelRegistry
            except ImportError as exc:
                raise FileNotFoundError(f"no model registry available: {exc}") from None
            self._registry = ModelRegistry(self.root)
        return self._registry.load(version)


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
        max_pending: int = 16,
        app_name: str | None = None,
    ) -> MonitorApp:
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
        )
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
        batches = app.topic(settings.topics.monitoring_batches, **raw)
        reports_topic = app.topic(settings.topics.drift_reports, **raw)
        dead_topic = app.topic(settings.topics.dead_letter, **raw)

        async def publish_report(report: DriftReport) -> None:
            value = json.dumps(report.to_json(), ensure_ascii=False).encode("utf-8")
            delivery = await reports_topic.send(key=report.model_version.encode("utf-8"), value=value)
            await delivery

        async def publish_dead_letter(letter: DeadLetter) -> None:
            value = json.dumps(letter.to_json(), ensure_ascii=False).encode("utf-8")
            delivery = await dead_topic.send(key=letter.key, value=value)
            await delivery

        service = MonitorService(
            settings=settings,
            monitor=monitor or build_monitor(settings),
            publish_report=publish_report,
            publish_dead_letter=publish_dead_letter,
            max_pending=max_pending,
        )

        @app.agent(batches, name="monitoring-batches", concurrency=1)
        async def consume(stream: Any) -> None:
            async for event in stream.events():
                msg = event.message
                await service.on_message(
                    msg.key, msg.value, msg.topic, msg.partition, msg.offset, msg.timestamp
                )

        @app.task
        async def reports() -> None:
            await service.run_reports()

        _add_pages(app, service)
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


def _add_pages(app: Any, service: MonitorService) -> None:
    store = service.monitor.store
    # faust mounts a {"status": "OK"} index at "/"; the report list takes that place.
    blueprints = app.web.blueprints
    blueprints._enabled = [(p, bp) for p, bp in blueprints._enabled if "production_index" not in str(bp)]

    @app.page("/health")
    async def health(self: Any, request: Any) -> Any:
        return self.json(service.health())

    @app.page("/reports/")
    async def report_list(self: Any, request: Any) -> Any:
        return self.html(render_report_list(service.reports, service.health()))

    @app.page("/reports/{report_id}")
    async def report_page(self: Any, request: Any, report_id: str) -> Any:
        as_json = report_id.endswith(".json")
        report_id = report_id.removesuffix(".json").removesuffix(".html")
        if not report_id or any(c in report_id for c in "/\\") or report_id.startswith("."):
            return self.notfound()
        path = store.json_path(report_id) if as_json else store.html_path(report_id)
        if not path.is_file():
            return self.notfound(f"no report {report_id}")
        data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        return self.bytes(data, content_type="application/json" if as_json else "text/html")

    @app.page("/")
    async def index(self: Any, request: Any) -> Any:
        return self.html(render_report_list(service.reports, service.health()))


def render_report_list(reports: list[dict[str, Any]], health: dict[str, Any]) -> str:
    """The report list page: one row per report with its window, rows and verdict, newest first."""
    rows = []
    for r in reversed(reports):
        rid = html.escape(str(r.get("report_id", "")))
        concept = r.get("concept_drift") or {}
        prediction = r.get("prediction_drift") or {}
        auc = (r.get("model_auc") or {}).get("blend")
        drift = bool(r.get("dataset_drift"))
        rows.append(
            "<tr class='{cls}'>"
            "<td><a href='/reports/{rid}'>{rid}</a></td>"
            "<td>{start}<br>{end}</td><td class='num'>{rows}</td><td>{model}</td>"
            "<td class='verdict'>{verdict}</td><td class='num'>{share:.0%}</td><td>{cols}</td>"
            "<td>{pred}</td><td>{concept}</td><td class='num'>{auc}</td>"
            "<td><a href='/reports/{rid}'>HTML</a> <a href='/reports/{rid}.json'>JSON</a></td></tr>".format(
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
            )
        )
    body = "".join(rows) or "<tr><td colspan='11'>No reports yet: a window is still filling.</td></tr>"
    status = html.escape(
        f"{health['windows_reported']} reports, {health['windows_done']} windows closed, "
        f"{health['rows_pending']} rows in the open window (of {health['window_rows']}), "
        f"{health['reports_pending']} reports pending, last report at {health['last_report_at'] or '-'}"
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
<p id="status">{status} &middot; <a href="/health">health</a></p>
<table id="drift-reports"><thead><tr>
<th>report</th><th>window (event time)</th><th>rows</th><th>model</th><th>dataset drift</th>
<th>drift share</th><th>drifted columns</th><th>prediction drift</th><th>concept drift</th>
<th>AUC (blend)</th><th>links</th></tr></thead>
<tbody>{body}</tbody></table>
</body></html>
"""


def cli(args: Any, settings: Settings) -> int:
    """``churnstream monitor``: create the topics, then run the monitor until SIGTERM/SIGINT."""
    import faust

    from streams.topics import create_topics

    create_topics(settings)  # faust ignores a source topic that does not exist when it starts
    monitor_app = MonitorApp.build(settings)
    log.info(
        "drift monitor: %s -> %s, windows of %d rows, reports in %s, pages at http://%s:%d/",
        settings.topics.monitoring_batches,
        settings.topics.drift_reports,
        settings.drift_window_rows,
        settings.report_dir,
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

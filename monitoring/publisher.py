"""The drift monitor's report side: windows waiting for their Evidently report, drawn one window at a time
in the report worker (:mod:`churnstream.monitoring.render`), then published as ``drift_reports`` messages in
order.

:class:`ReportPublisher` owns the queue of closed windows
(:class:`~churnstream.monitoring.render.RenderQueue`: when windows close faster than full reports are drawn,
the others get a light page and run of their own, drifted windows drawn in full first; none is dropped or
shared; once none waits, the latest light windows are drawn in full after all, replacing their light page
and run, and their saved message says so), the messages published so far (the monitor's pages list them)
and the report counters. Each
message names the window's run in the Evidently UI (``evidently_run``). It publishes through an injected
``publish_report`` and tells ``settled`` which windows are reported, so the caller can let their records
be committed. An injected ``evidence`` (the loop's watch, #24) is asked for the window's champion-vs-shadow
evidence before its report is drawn, so the message, the window's page and its run all carry it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from churnstream.events import format_time, now_ms
from churnstream.messages import DriftReport
from churnstream.monitoring.monitor import DriftMonitor, PendingReport
from churnstream.monitoring.render import Rendered, RenderJob, RenderQueue, ReportRenderer
from churnstream.monitoring.ui import window_run

# the monitor's log lines keep the name operators know them by
log = logging.getLogger("churnstream.streams.monitor")

KEPT_MESSAGES = 1000  # the latest drift_reports messages kept in memory for the pages


def unwritable(root: Path, exc: OSError) -> str:
    """What an operator reads when the report directory refuses a write: where, why, which setting."""
    why = exc.strerror or str(exc)
    fix = "free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "check that it is writable"
    return f"cannot write to {root} ({why}): {fix}, or point CHURN_REPORT_DIR elsewhere"


def _shadow_first(evidence: dict[str, Any]) -> str:
    """What a ``retrain`` advice adds while a model is in shadow: a retrain would take its place.

    >>> evidence = {"shadow_version": "v2", "champion_version": "v1",
    ...             "cumulative": {"verdict": "undecided", "labels": 1416}}
    >>> print(_shadow_first(evidence))  # doctest: +NORMALIZE_WHITESPACE
    but v2 is in shadow (undecided against v1 on 1416 labels): a retrain would take its place; promote it
    (churnstream models promote v2) or clear the slot (churnstream models shadow --clear) first
    """
    if evidence.get("left_slot"):
        return str(evidence["left_slot"])
    shadow = evidence["shadow_version"]
    cumulative = evidence.get("cumulative") or {}
    return (
        f"but {shadow} is in shadow ({cumulative.get('verdict') or 'no verdict'} against "
        f"{evidence.get('champion_version')} on {cumulative.get('labels', 0)} labels): a retrain would take "
        f"its place; promote it (churnstream models promote {shadow}) or clear the slot (churnstream models "
        "shadow --clear) first"
    )


class ReportPublisher:
    """Draws the reports of closed windows and publishes each window's message; ``max_jobs`` bounds the
    jobs waiting for the report worker (see :class:`RenderQueue`), ``counters`` are those saved before a
    restart; ``evidence`` (given the window's action; it may block) returns the window's evidence or None;
    ``recounted`` saves the :meth:`counters` once a later draw changed them (no window settles then)."""

    def __init__(
        self,
        *,
        monitor: DriftMonitor,
        renderer: ReportRenderer,
        publish_report: Callable[[DriftReport], Awaitable[Any]],
        settled: Callable[[list[int]], None],
        max_jobs: int = 1,
        counters: Mapping[str, int] | None = None,
        evidence: Callable[[str | None, str | None, str | None], dict[str, Any] | None] | None = None,
        recounted: Callable[[], None] | None = None,
    ) -> None:
        self.monitor = monitor
        self.renderer = renderer
        self.queue = RenderQueue(
            max_jobs=max_jobs,
            max_rows=max(50_000, 4 * monitor.config.window_rows),
            topic_prefix=monitor.store.topic_prefix,
        )
        self._publish_report = publish_report
        self._settled = settled
        self._evidence = evidence
        self._recounted = recounted
        self._wakeup: asyncio.Event | None = None
        self.reports: list[dict[str, Any]] = monitor.store.load_messages()
        self._by_id = {r["report_id"]: r for r in self.reports}
        self.render_seconds: deque[float] = deque(maxlen=1000)
        self.restore_counters(counters or {})
        self.last_report_at: int | None = None
        self.rendering: RenderJob | None = None
        self.warmed_up = False
        self._later_saved: set[str] = set()  # light windows whose columns are saved (see restore_later)
        try:
            self.restore_later()
        except Exception:  # best effort: never keeps the monitor from starting
            log.exception("the light windows saved before the restart could not be restored; they stay light")

    def restore_later(self) -> int:
        """Keep, to draw in full later, the light windows whose columns the monitor saved before a restart
        and whose saved message still says light; returns how many are kept (within the queue's budget).
        The others' files are removed."""
        state = self.monitor.state
        if state is None:
            return 0
        self._later_saved = state.later_ids()
        for report_id, columns, meta in state.load_later():
            message = self.message_for(report_id)
            if (
                not isinstance(message, dict)
                or (message.get("evidently_report") or {}).get("drawn") != "light"
            ):
                continue  # drawn in full since, or gone: its file is removed below
            reference = self.monitor.prepared_reference(str(message.get("model_version")), final=False)
            if reference is None or message.get("reference_source") not in (None, reference.source):
                continue  # not the reference it was judged against: it stays light
            if not columns:
                continue
            try:
                feature_names, seq = [str(c) for c in meta["feature_names"]], int(meta["seq"])
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring the light window %s saved without its feature names", report_id)
                continue
            job = RenderJob(
                pending=None,
                message=message,
                run=window_run(
                    message,
                    topic_prefix=self.queue.topic_prefix,
                    mean_probability=meta.get("mean_probability"),
                ),
                full=False,
                columns={},
                rows=int(message.get("rows") or 0),
                reference=reference,
                feature_names=feature_names,
                seq=seq,
                deferred=columns,
            )
            self.queue.restore(job)
        self._sync_later()
        restored = self.queue.kept
        if restored:
            log.info(
                "%d light window(s) saved before the restart will be drawn in full once caught up", restored
            )
        return restored

    def _sync_later(self) -> None:
        """Save the columns of the published light windows kept to draw in full later, and remove those no
        longer kept (drawn, or left light by the budget): a restart then draws what this monitor would."""
        state = self.monitor.state
        if state is None:
            return
        kept = {job.job_id: job for job in self.queue.kept_jobs()}
        drawing = self.queue.drawing_later
        keep = kept.keys() | ({drawing.job_id} if drawing is not None else set())
        try:
            for report_id in sorted(self._later_saved - keep):
                state.drop_later(report_id)
                self._later_saved.discard(report_id)
            for report_id, job in kept.items():
                if report_id in self._later_saved or report_id not in self._by_id or job.deferred is None:
                    continue  # saved already, or not published yet
                meta = {
                    "feature_names": job.feature_names,
                    "seq": job.seq,
                    "mean_probability": job.mean_probability,
                }
                state.save_later(report_id, job.deferred, meta)
                self._later_saved.add(report_id)
        except OSError as exc:  # the window stays kept in memory; a restart leaves it light
            log.error("light windows to draw later: %s", unwritable(state.later, exc))
        except Exception:  # never stops a window from settling
            log.exception("light windows to draw later could not be saved; a restart leaves them light")

    @property
    def wakeup(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        return self._wakeup

    def put(self, pending: PendingReport) -> None:
        """Queue a closed window for its report (drawn light when ``max_jobs`` full reports wait)."""
        self.queue.put(pending)
        self.wakeup.set()

    def waiting(self) -> int:
        """Closed windows waiting for their report, the one being drawn included."""
        return self.queue.windows + (len(self.rendering.windows) if self.rendering else 0)

    def awaiting_full_report(self) -> int:
        """Light windows whose full report is still to be drawn (kept in memory), the one drawn included."""
        return self.queue.kept + (self.queue.drawing_later is not None)

    def counters(self) -> dict[str, int]:
        """The counters a restart keeps (saved with the monitor's state)."""
        return {
            "windows_reported": self.windows_reported,
            "reports_rendered": self.reports_rendered,
            "windows_merged": self.windows_merged,
            "windows_light": self.windows_light,
            "windows_drawn_later": self.windows_drawn_later,
            "report_errors": self.report_errors,
        }

    def restore_counters(self, counters: Mapping[str, int]) -> None:
        """Take up the :meth:`counters` saved before a restart."""
        self.windows_reported = int(counters.get("windows_reported", 0))
        self.reports_rendered = int(counters.get("reports_rendered", 0))
        self.windows_merged = int(counters.get("windows_merged", 0))  # by monitors before one run per window
        self.windows_light = int(counters.get("windows_light", 0))  # drawn light when published
        self.windows_drawn_later = int(counters.get("windows_drawn_later", 0))  # ... of them in full since
        self.report_errors = int(counters.get("report_errors", 0))

    async def run(self) -> None:
        """Draw queued reports one job at a time in the report worker and publish their windows, forever."""
        warm = asyncio.wrap_future(self.renderer.start())
        warm.add_done_callback(self._warmed)
        while True:
            job = self.queue.take()
            if job is None:
                later = self.queue.take_later()
                if later is not None:  # caught up: a light window's full report, after all
                    await self.draw_later(later)
                    continue
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            self.rendering = job
            try:
                await self.attach_evidence(job)
                rendered = await self.render(job)
                await self.publish(job, rendered)
            finally:
                self.rendering = None

    async def attach_evidence(self, job: RenderJob) -> None:
        """Put the window's evidence (when there is one) in its message and run, before they are drawn."""
        if self._evidence is None:
            return
        try:  # reads churn_outcomes and the registry: off the event loop; never stops the report
            message = job.message
            evidence = await asyncio.get_running_loop().run_in_executor(
                None,
                self._evidence,
                message.get("action"),
                message.get("window_end"),
                message.get("model_version"),
            )
        except Exception:
            log.exception("the shadow evidence, auto-promotion or retrain failed for this report")
            return
        if evidence is None:
            return
        job.message["evidence"] = evidence
        if (
            job.message.get("action") == "retrain"
            and evidence.get("shadow_version")
            and not evidence.get("demoted")
        ):
            job.message["action_reason"] = (
                f"{job.message.get('action_reason') or 'retrain'}; {_shadow_first(evidence)}"
            )
        job.run = window_run(
            job.message,
            topic_prefix=self.queue.topic_prefix,
            mean_probability=job.mean_probability,
        )

    def _warmed(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.warmed_up = True
            log.info(
                "report worker (%s) ready: Evidently imported in %.1f s", self.renderer.mode, future.result()
            )

    async def render(self, job: RenderJob) -> Rendered:
        """The job's report drawn by the report worker (restarted once if its process dies), or an error
        page saying why it could not be."""
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
        elif rendered.drawn == "full":
            self.reports_rendered += 1
        return rendered

    async def draw_later(self, job: RenderJob) -> None:
        """Draw the full report of a window published light: it replaces the window's page and run, and
        its saved message says so (``evidently_report.drawn`` ``full``, ``drawn_later`` true, the new
        ``evidently_run``); the message on drift_reports stays as it was, its link now showing the full
        report. When Evidently fails, the window's page becomes its error page and the message says why
        (``error``; logged and counted)."""
        started = now_ms()
        self.queue.drawing_later = job
        try:
            rendered = await self.render(job)
        finally:
            self.queue.drawing_later = None
        message = self.message_for(job.job_id)
        drawn = not rendered.error and rendered.drawn == "full"
        if drawn:
            self.windows_drawn_later += 1
        if self._recounted is not None:  # reports_rendered, report_errors, windows_drawn_later
            try:
                self._recounted()
            except Exception:
                log.exception("the monitor's counters could not be saved")
        if not drawn:
            log.warning("drift report %s stays light: %s", job.job_id, rendered.error or "not drawn")
        if message is None:  # its saved message is gone (the report directory was emptied): only the page
            self._sync_later()
            return
        evidently = {k: v for k, v in (message.get("evidently_report") or {}).items() if k != "error"}
        if drawn:
            evidently |= {
                "drawn": "full",
                "rendered_rows": job.rendered_rows,
                "sampled": job.sampled,
                "drawn_later": True,
                "drawn_later_at": format_time(started),
            }
        elif rendered.error:  # its page says why now (an error page replaced the light one); so does this
            evidently["error"] = rendered.error
        message["evidently_report"] = evidently
        if rendered.run_id is not None:  # the window's run was replaced
            message["evidently_run"] = rendered.run_id
        self._save_message(job.job_id, message)
        self._sync_later()  # its columns' file goes once the message says what the page shows
        log.info("drift report %s: full Evidently report drawn later, replacing its light page", job.job_id)

    def _error_page(self, job: RenderJob, error: str) -> Rendered:
        """The window's own page, saying why its report is missing (no run: Evidently is in the worker);
        when not even that page can be written (a full disk), the window is published without a page
        (``drawn`` none, no ``url``), saying why."""
        store = self.monitor.store
        note = f"This window's report could not be drawn ({error}); this page is the window's own."
        path = str(store.html_path(job.job_id).resolve())
        try:
            store.save_page(job.job_id, job.light_page(note))
        except OSError as exc:
            said = f"{error}; no page either: {unwritable(store.root, exc)}"
            log.error("drift report %s is published without a page: %s", job.job_id, said)
            return Rendered(job.job_id, path, 0.0, error=said, drawn="none")
        return Rendered(job.job_id, path, 0.0, error=error, drawn="light")

    async def publish(self, job: RenderJob, rendered: Rendered) -> None:
        """Publish the message of the window of ``job`` with its ``rendered`` page and run; then it is
        settled."""
        pending = job.pending
        assert pending is not None, "a window restored after a restart is published already"
        evidently: dict[str, Any] = {"drawn": rendered.drawn, "rows": job.rows}
        if rendered.drawn == "full":
            evidently.update(rendered_rows=job.rendered_rows, sampled=job.sampled)
        if rendered.error:
            evidently["error"] = rendered.error
        report = pending.report(
            created_at=now_ms(),
            html_path=rendered.html_path,
            url=self.monitor.url(pending.report_id) if rendered.drawn != "none" else None,
            evidently_report=evidently,
            evidently_run=rendered.run_id,
            verdict_by="Evidently's default tests, computed in-process",
        )
        if job.message.get("evidence") is not None:
            report.extra["evidence"] = job.message["evidence"]
        await self._publish_report(report)
        message = report.to_json()
        self._save_message(report.report_id, message)  # the message itself is on drift_reports already
        self.windows_reported += 1
        if rendered.drawn == "light":
            self.windows_light += 1
        self.last_report_at = report.created_at
        self.reports.append(message)
        self._by_id[report.report_id] = message
        log.info(
            "drift report %s: %d rows %s..%s, dataset drift %s (share %.2f: %s), concept drift %s, "
            "action %s; %s",
            report.report_id,
            report.rows,
            format_time(report.window_start),
            format_time(report.window_end),
            report.dataset_drift,
            report.drift_share,
            ", ".join(report.drifted_columns) or "-",
            (report.concept_drift or {}).get("detected"),
            message.get("action"),
            {"full": "full Evidently report", "light": "light page and run"}.get(rendered.drawn, "no page"),
        )
        if len(self.reports) > KEPT_MESSAGES:
            for old in self.reports[:-KEPT_MESSAGES]:
                self._by_id.pop(old["report_id"], None)
            del self.reports[:-KEPT_MESSAGES]
        self._sync_later()  # a light window kept for later: its columns saved; windows left light: removed
        self._settled([pending.window.seq])

    def _save_message(self, report_id: str, message: dict[str, Any]) -> None:
        """Save a window's message for the pages after a restart; a refusing directory is logged."""
        try:
            self.monitor.store.save_message(report_id, message)
        except OSError as exc:
            log.error("drift report %s: %s", report_id, unwritable(self.monitor.store.root, exc))

    def message_for(self, report_id: str) -> dict[str, Any] | None:
        """A window's published message: kept in memory, or saved in the report directory (None: unknown)."""
        message = self._by_id.get(report_id)
        if message is None:
            saved = self.monitor.store.json_path(report_id)
            if saved.is_file():
                try:
                    message = json.loads(saved.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    message = None
        return message

    def html_for(self, report_id: str) -> Path | None:
        """The HTML file of a window's page (its Evidently report or its light page), inside the report
        directory."""
        store = self.monitor.store
        message = self.message_for(report_id)
        path = (
            Path(message["html_path"]) if message and message.get("html_path") else store.html_path(report_id)
        )
        root = store.root.resolve()
        try:
            resolved = path.resolve()
        except OSError:
            return None
        return resolved if resolved.parent == root and resolved.is_file() else None

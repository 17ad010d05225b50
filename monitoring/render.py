"""Evidently reports drawn off the event loop, in one long-lived worker process, with a bounded queue.

Drawing an Evidently report takes seconds of CPU and holds the GIL; in a thread it would stall the
monitor's consumption. :class:`ReportRenderer` keeps one worker process (spawned once; it imports
Evidently once and keeps each model version's reference prepared, Evidently datasets and all) and sends
it :class:`RenderJob` objects; ``in_thread=True`` gives the old in-thread rendering (benchmarks only).

When windows close faster than reports are drawn, nothing is dropped and nothing is shared: every window
is a job of its own (:class:`RenderQueue`), and at most ``max_jobs`` of the waiting jobs draw the full
Evidently report; the others are *light*: the window's run in the Evidently UI (the numbers behind its
dashboard, milliseconds) and a page of its own with its verdict and every column's test. Drifted windows
are drawn in full first: a drifted window that closes while the queue is full takes the place of the
latest non-drifted window waiting. Above ``max_rows`` predictions a window's report draws an even sample.
Every window keeps its own verdict, ``drift_reports`` message, page and run. The columns of the latest
light windows are kept, up to ``later_bytes``, and once no window waits (the monitor has caught up) they
are drawn in full after all, drifted ones first, then the newest: the full report replaces the window's
light page and its run (:meth:`RenderQueue.take_later`), so the link a message gave shows the full report.

>>> from monitoring.window import ClosedWindow
>>> from monitoring.stattests import Verdict
>>> import numpy as np
>>> from monitoring.reference import PreparedReference
>>> import pandas as pd
>>> ref = PreparedReference(pd.DataFrame({"x": [1.0, 2.0]}), model_version="v1", source="frame")
>>> def pending(seq, drift):
...     w = ClosedWindow("v1", ["x"], {"x": np.ones(10)}, {}, seq, seq + 1, 10, "rows", seq)
...     verdict = Verdict({}, None, drift, 1.0 if drift else 0.0, ["x"] if drift else [], [])
...     return PendingReport(f"r{seq}", w, ref, verdict, {})
>>> queue = RenderQueue(max_jobs=1)
>>> [queue.put(pending(s, drift)) for s, drift in ((1, False), (2, True), (3, False))]
[False, True, True]
>>> [(job.job_id, job.full) for job in queue.jobs()]
[('r1', False), ('r2', True), ('r3', False)]
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.monitoring.monitor import PendingReport
from churnstream.monitoring.pages import render_window_page, window_banner
from churnstream.monitoring.reference import PreparedReference
from churnstream.monitoring.report import ReportStore, run_drift_report
from churnstream.monitoring.ui import PROJECT, WindowRun, window_run
from churnstream.monitoring.window import PREDICTION_COLUMN

log = logging.getLogger(__name__)

LIGHT_NOTE = (
    "The full Evidently report of this window was not drawn yet: windows closed faster than reports are "
    "drawn, and drifted windows are drawn first. Once the monitor has caught up it draws the latest light "
    "windows in full (drifted ones first), also after a restart, and this page becomes the window's "
    "Evidently report; when many newer windows are light too, it may stay as it is. This page and the "
    "window's run in the Evidently UI are its own; its verdict comes from Evidently's tests, computed "
    "in-process."
)
# the columns of light windows kept to draw them in full later: 64 MiB hold ~55 windows of 5,000 rows (29
# columns of float64, ~1.2 MB each), 5 of the largest a full report draws (50,000 rows)
LATER_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class RenderJob:
    """One window's report: the full Evidently report (``full``), or its light run and page.

    ``pending`` is the judged window, to publish; None for a light window restored after a restart
    (:meth:`RenderQueue.restore`): it is published already and only drawn in full later.
    """

    pending: PendingReport | None
    message: dict[str, Any]
    run: WindowRun
    full: bool
    columns: dict[str, np.ndarray]
    rows: int
    reference: PreparedReference
    feature_names: list[str]
    seq: int  # the window's number: later draws go newest first
    sampled: bool = False
    queued_at: float = field(default_factory=time.monotonic)
    # a light job's columns (sampled as a full job's), kept to draw it in full later; None: not kept
    deferred: dict[str, np.ndarray] | None = None
    later: bool = False  # drawn in full after its light page was published

    @property
    def job_id(self) -> str:
        return str(self.message["report_id"])

    @property
    def windows(self) -> list[PendingReport]:
        return [] if self.pending is None else [self.pending]

    @property
    def mean_probability(self) -> float | None:
        """The window's mean churn probability (its run shows it)."""
        value = self.run.values.get("mean_churn_probability")
        return None if value is None else float(value)

    @property
    def rendered_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def drifted(self) -> bool:
        return bool(self.message.get("dataset_drift"))

    def banner(self) -> str:
        """What the HTML says above the full report: which window it is, and its verdict."""
        sample = (
            f" The report draws an even sample of {self.rendered_rows:,} of them." if self.sampled else ""
        )
        return window_banner(self.message) + sample

    def light_page(self, note: str = LIGHT_NOTE) -> str:
        return render_window_page(self.message, note=note)

    def lighten(self, keep: dict[str, np.ndarray] | None = None) -> None:
        """Draw this window light; ``keep``: its columns, kept to draw it in full later (the window's own
        predictions are dropped either way)."""
        self.full, self.columns, self.sampled, self.deferred = False, {}, False, keep
        if self.pending is not None:
            window = self.pending.window
            self.pending.window = dataclasses.replace(window, predictions={}, outcomes={})


class RenderQueue:
    """Closed windows waiting for Evidently, one job each; at most ``max_jobs`` of them draw the full report.

    A window that closes while ``max_jobs`` full jobs wait is drawn light, unless it drifted and a
    non-drifted window waits in full: that one is drawn light instead. A full job keeps at most
    ``max_rows`` predictions, an even sample beyond that. ``topic_prefix`` tags the windows' runs. The
    columns of light windows are kept up to ``later_bytes`` (beyond that the oldest non-drifted window, or
    else the oldest, is left light), to draw them in full once nothing waits (:meth:`take_later`).
    """

    def __init__(
        self,
        *,
        max_jobs: int = 1,
        max_rows: int = 50_000,
        seed: int = 0,
        topic_prefix: str = "",
        later_bytes: int = LATER_BYTES,
    ) -> None:
        if max_jobs < 1 or max_rows < 1 or later_bytes < 0:
            raise ValueError("max_jobs and max_rows must be positive, later_bytes not negative")
        self.max_jobs = max_jobs
        self.max_rows = max_rows
        self.topic_prefix = topic_prefix
        self.later_bytes = later_bytes
        self.kept_bytes = 0  # the columns kept for later draws
        self.drawing_later: RenderJob | None = None  # set by the publisher while it holds the report worker
        self._jobs: deque[RenderJob] = deque()
        self._kept: list[RenderJob] = []  # light jobs keeping their columns
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def windows(self) -> int:
        """Windows waiting."""
        return len(self._jobs)

    def jobs(self) -> list[RenderJob]:
        """The waiting jobs, oldest first."""
        return list(self._jobs)

    @property
    def kept(self) -> int:
        """Light windows whose columns are kept to draw them in full later."""
        return len(self._kept)

    def put(self, pending: PendingReport) -> bool:
        """Queue a judged window; True when a window (this one or a waiting one) is drawn light for it.
        While a later draw holds the report worker one more full job may wait: it took the place of the
        job that would be drawing."""
        self._forget(pending.report_id)  # rebuilt after a restart: this window replaces the one restored
        message = pending.report(created_at=0, html_path="", url=None).to_json()
        probabilities = pending.window.predictions.get(PREDICTION_COLUMN)
        mean = (
            float(np.nanmean(probabilities))
            if probabilities is not None and len(probabilities) and not np.isnan(probabilities).all()
            else None
        )
        job = RenderJob(
            pending=pending,
            message=message,
            run=window_run(message, topic_prefix=self.topic_prefix, mean_probability=mean),
            full=True,
            columns=pending.window.columns(),
            rows=pending.window.rows,
            reference=pending.reference,
            feature_names=list(pending.window.feature_names),
            seq=pending.window.seq,
        )
        if job.rendered_rows > self.max_rows:
            job.columns, job.sampled = self._sample(job.columns, self.max_rows), True
        full = [j for j in self._jobs if j.full]
        lightened = len(full) >= self.max_jobs + (self.drawing_later is not None)
        if lightened:
            instead = next((j for j in reversed(full) if not j.drifted), None) if job.drifted else None
            self._keep(instead or job)
        self._jobs.append(job)
        return lightened

    def take(self) -> RenderJob | None:
        return self._jobs.popleft() if self._jobs else None

    def take_later(self) -> RenderJob | None:
        """A light window to draw in full now that none waits (drifted first, then the newest), or None.
        Its light page and run are published already; its full report replaces them."""
        if self._jobs or not self._kept:
            return None
        drifted = [j for j in self._kept if j.drifted]
        job = max(drifted or self._kept, key=lambda j: j.seq)
        job.full, job.columns, job.later = True, self._release(job), True
        job.sampled = job.rendered_rows < job.rows
        job.run.realized = None  # added with its light run already
        return job

    def kept_jobs(self) -> list[RenderJob]:
        """The light windows whose columns are kept to draw them in full later."""
        return list(self._kept)

    def restore(self, job: RenderJob) -> bool:
        """Keep a light window published before a restart (its columns in ``job.deferred``) to draw it in
        full later, within ``later_bytes`` as any other; False when it is left light at once."""
        assert job.deferred is not None and not job.full
        if any(j.job_id == job.job_id for j in (*self._jobs, *self._kept)):
            return False
        self._hold(job)
        return job.deferred is not None

    def _forget(self, job_id: str) -> None:
        """Stop keeping the columns of ``job_id``'s window (it is queued again)."""
        for job in [j for j in self._kept if j.job_id == job_id]:
            self._release(job)

    def _keep(self, job: RenderJob) -> None:
        """Draw ``job`` light, keeping its columns for later within ``later_bytes``."""
        job.lighten(keep=job.columns)
        self._hold(job)

    def _hold(self, job: RenderJob) -> None:
        """Keep a light job's columns (``deferred``), the oldest calm ones left light beyond the budget."""
        assert job.deferred is not None
        size = _nbytes(job.deferred)
        if size > self.later_bytes:
            job.deferred = None
            return
        self._kept.append(job)
        self.kept_bytes += size
        while self.kept_bytes > self.later_bytes:
            calm = [j for j in self._kept if not j.drifted]
            self._release(min(calm or self._kept, key=lambda j: j.seq))

    def _release(self, job: RenderJob) -> dict[str, np.ndarray]:
        """Stop keeping a kept job's columns; returns them."""
        self._kept.remove(job)
        columns, job.deferred = job.deferred, None
        assert columns is not None
        self.kept_bytes -= _nbytes(columns)
        return columns

    def _sample(self, columns: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        size = len(next(iter(columns.values())))
        if size <= n:
            return columns
        index = np.sort(self._rng.choice(size, size=n, replace=False))
        return {c: values[index] for c, values in columns.items()}


def _nbytes(columns: dict[str, np.ndarray]) -> int:
    return sum(int(np.asarray(values).nbytes) for values in columns.values())


@dataclass(frozen=True, slots=True)
class Rendered:
    """A drawn window: where its page is, how long it took, its run in the Evidently UI, whether the full
    report (``drawn`` ``full``) or the light page and run (``light``) were drawn, Evidently's verdict."""

    job_id: str
    html_path: str
    seconds: float
    dataset_drift: bool | None = None
    drifted_columns: list[str] = field(default_factory=list)
    error: str | None = None
    run_id: str | None = None
    drawn: str = "full"


class ReportRenderer:
    """Draws :class:`RenderJob` reports in one worker process (or thread), started once and kept.

    :meth:`submit` returns a future of :class:`Rendered`. A worker process that dies is replaced on the
    next job (``restarts`` counts it); a job whose drawing fails gives an error page, never an exception.
    """

    def __init__(
        self,
        *,
        root: Path,
        drift_share: float,
        workspace: bool = True,
        in_thread: bool = False,
        project: str = PROJECT,
    ) -> None:
        self.root = Path(root)
        self.drift_share = drift_share
        self.workspace = workspace
        self.project = project
        self.in_thread = in_thread
        self.restarts = 0
        self._executor: Executor | None = None
        self._sent: set[str] = set()
        self._warm: Future[Any] | None = None

    @property
    def mode(self) -> str:
        return "thread" if self.in_thread else "process"

    def start(self) -> Future[Any]:
        """Start the worker; the future completes once it has imported Evidently."""
        if self._executor is None:
            if self.in_thread:
                self._executor = ThreadPoolExecutor(
                    max_workers=1,
                    thread_name_prefix="drift-report",
                    initializer=_init_worker,
                    initargs=(str(self.root), self.workspace, self.project),
                )
            else:
                # spawn, not fork: the monitor runs threads (Kafka client, web server) a fork would copy
                self._executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(str(self.root), self.workspace, self.project, os.getpid()),
                )
            self._sent = set()
            self._warm = self._executor.submit(_warm_up)
        assert self._warm is not None
        return self._warm

    def submit(self, job: RenderJob) -> Future[Rendered]:
        self.start()
        assert self._executor is not None
        reference = job.reference
        try:
            if not job.full:
                return self._executor.submit(_render_light, job.job_id, job.run, job.light_page())
            if reference.key not in self._sent:
                self._executor.submit(_prepare_reference, reference.key, reference.frame)
                self._sent.add(reference.key)
            return self._executor.submit(
                _render,
                job.job_id,
                reference.key,
                job.columns,
                [c for c in job.feature_names if c != PREDICTION_COLUMN],
                self.drift_share,
                job.banner(),
                job.run,
                job.message,
            )
        except BrokenProcessPool:
            self.restart()
            return self.submit(job)

    def restart(self) -> None:
        """Replace a broken worker (the next :meth:`submit` starts a new one)."""
        self.restarts += 1
        log.warning("the report worker died; starting a new one")
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self._warm = None


# -- the worker side: one per renderer, in its own process (or thread) ------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(root: str, workspace: bool, project: str, parent: int | None = None) -> None:
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
        # reports can wait; the monitor's consumption (and the broker, on a small machine) should not
        with contextlib.suppress(OSError):
            os.nice(10)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s report-worker %(levelname)s %(message)s")
    _WORKER.clear()
    _WORKER.update(store=ReportStore(Path(root), workspace=workspace, project=project), references={})


def _exit_with(parent: int) -> None:
    """End this worker when the monitor that started it is gone (even killed with SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _warm_up() -> float:
    started = time.perf_counter()
    import evidently  # noqa: F401
    import evidently.presets  # noqa: F401

    return time.perf_counter() - started


def _prepare_reference(key: str, frame: Any) -> None:
    references: dict[str, PreparedReference] = _WORKER["references"]
    version = key.split(":", 1)[0]
    references[key] = PreparedReference(
        frame, model_version=version, source="worker", max_rows=len(frame) or 1
    )


def _render(
    job_id: str,
    reference_key: str,
    columns: dict[str, np.ndarray],
    features: list[str],
    drift_share: float,
    banner: str | None,
    run: WindowRun,
    message: dict[str, Any],
) -> Rendered:
    import pandas as pd

    store: ReportStore = _WORKER["store"]
    started = time.perf_counter()
    try:
        result = run_drift_report(
            pd.DataFrame(columns),
            _WORKER["references"][reference_key],
            features,
            prediction_column=PREDICTION_COLUMN,
            drift_share=drift_share,
        )
        run_id = store.save_rendered(job_id, result.snapshot, banner=banner, run=run)
    except Exception as exc:  # a report that cannot be drawn must not stop the reports after it
        logging.getLogger(__name__).exception("drift report %s could not be drawn", job_id)
        error = f"{type(exc).__name__}: {exc}"
        note = f"Evidently could not draw this window's report ({error}); this page is the window's own."
        run_id = store.save_light(job_id, run, render_window_page(message, note=note))
        return Rendered(
            job_id,
            str(store.html_path(job_id).resolve()),
            time.perf_counter() - started,
            error=error,
            run_id=run_id,
            drawn="light",
        )
    return Rendered(
        job_id,
        str(store.html_path(job_id).resolve()),
        time.perf_counter() - started,
        dataset_drift=result.dataset_drift,
        drifted_columns=list(result.drifted_columns),
        run_id=run_id,
    )


def _render_light(job_id: str, run: WindowRun, page: str) -> Rendered:
    store: ReportStore = _WORKER["store"]
    started = time.perf_counter()
    run_id = store.save_light(job_id, run, page)
    return Rendered(
        job_id,
        str(store.html_path(job_id).resolve()),
        time.perf_counter() - started,
        run_id=run_id,
        drawn="light",
    )

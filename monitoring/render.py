"""Evidently reports drawn off the event loop, in one long-lived worker process, with a bounded queue.

Drawing an Evidently report takes seconds of CPU and holds the GIL; in a thread it would stall the
monitor's consumption. :class:`ReportRenderer` keeps one worker process (spawned once; it imports
Evidently once and keeps each model version's reference prepared, Evidently datasets and all) and sends
it :class:`RenderJob` objects; ``in_thread=True`` gives the old in-thread rendering (benchmarks only).

When windows close faster than reports are drawn, nothing is dropped: :class:`RenderQueue` keeps at
most ``max_jobs`` jobs waiting, and a window that closes while the queue is full joins the last waiting
job, so one Evidently report then covers several consecutive windows (its HTML says which; above
``max_rows`` predictions it draws an even sample of them). Every window keeps its own verdict and
``drift_reports`` message (:class:`~churnstream.monitoring.monitor.PendingReport`); only the HTML is shared.

>>> from monitoring.window import ClosedWindow
>>> import numpy as np
>>> from monitoring.reference import PreparedReference
>>> import pandas as pd
>>> ref = PreparedReference(pd.DataFrame({"x": [1.0, 2.0]}), model_version="v1", source="frame")
>>> def pending(seq):
...     w = ClosedWindow("v1", ["x"], {"x": np.ones(10)}, {}, 0, 1, 10, "rows", seq)
...     return PendingReport(f"r{seq}", w, ref, None, {})
>>> queue = RenderQueue(max_jobs=1)
>>> [queue.put(pending(s)) for s in (1, 2, 3)]
[False, True, True]
>>> job = queue.take()
>>> [w.report_id for w in job.windows], job.rows, queue.take() is None
(['r1', 'r2', 'r3'], 30, True)
"""

from __future__ import annotations

import contextlib
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

from churnstream.events import format_time
from churnstream.monitoring.monitor import PendingReport
from churnstream.monitoring.reference import PreparedReference
from churnstream.monitoring.report import ReportStore, run_drift_report
from churnstream.monitoring.window import PREDICTION_COLUMN

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RenderJob:
    """One Evidently report to draw, for one window or several consecutive ones of one model version."""

    job_id: str
    reference: PreparedReference
    feature_names: list[str]
    windows: list[PendingReport]
    columns: dict[str, np.ndarray]
    rows: int
    sampled: bool = False
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def rendered_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def banner(self) -> str | None:
        """What the HTML says above the report when it covers more than one window."""
        if len(self.windows) == 1:
            return None
        first, last = self.windows[0].window, self.windows[-1].window
        sample = f" (an even sample of {self.rendered_rows:,} of them)" if self.sampled else ""
        return (
            f"This Evidently report covers {len(self.windows)} consecutive drift windows "
            f"({format_time(first.start)} .. {format_time(last.end)}, {self.rows:,} predictions{sample}): "
            "they closed faster than reports could be drawn, so they share one report. Each window's own "
            "verdict is in its drift_reports message and on the monitor's report list: "
            + ", ".join(w.report_id for w in self.windows)
        )


class RenderQueue:
    """Closed windows waiting for Evidently, as jobs: at most ``max_jobs`` wait; later windows merge.

    A window joins the last waiting job when the queue is full and the job is for the same reference
    (model version); otherwise it starts a job of its own, so a model change can exceed the bound by one.
    A job keeps at most ``max_rows`` predictions, an even sample of its windows beyond that.
    """

    def __init__(self, *, max_jobs: int = 1, max_rows: int = 50_000, seed: int = 0) -> None:
        if max_jobs < 1 or max_rows < 1:
            raise ValueError("max_jobs and max_rows must be positive")
        self.max_jobs = max_jobs
        self.max_rows = max_rows
        self._jobs: deque[RenderJob] = deque()
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def windows(self) -> int:
        """Windows waiting (in all jobs)."""
        return sum(len(job.windows) for job in self._jobs)

    def put(self, pending: PendingReport) -> bool:
        """Queue a judged window; True when it joined a waiting job instead of starting one."""
        columns = pending.window.columns()
        last = self._jobs[-1] if self._jobs else None
        if (
            last is not None
            and len(self._jobs) >= self.max_jobs
            and last.reference is pending.reference
            and last.feature_names == pending.window.feature_names
        ):
            self._merge(last, pending, columns)
            return True
        job = RenderJob(
            job_id=pending.report_id,
            reference=pending.reference,
            feature_names=list(pending.window.feature_names),
            windows=[pending],
            columns=columns,
            rows=pending.window.rows,
        )
        if job.rendered_rows > self.max_rows:
            job.columns, job.sampled = self._sample(columns, self.max_rows), True
        self._jobs.append(job)
        return False

    def take(self) -> RenderJob | None:
        return self._jobs.popleft() if self._jobs else None

    def _merge(self, job: RenderJob, pending: PendingReport, columns: dict[str, np.ndarray]) -> None:
        total = job.rows + pending.window.rows
        if job.rendered_rows + pending.window.rows <= self.max_rows:
            job.columns = {c: np.concatenate((job.columns[c], columns[c])) for c in job.columns}
        else:  # keep max_rows, each window represented in proportion to its predictions
            keep_new = max(1, round(self.max_rows * pending.window.rows / total))
            keep_old = self.max_rows - keep_new
            old = self._sample(job.columns, keep_old)
            new = self._sample(columns, keep_new)
            job.columns = {c: np.concatenate((old[c], new[c])) for c in job.columns}
            job.sampled = True
        job.windows.append(pending)
        job.rows = total

    def _sample(self, columns: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        size = len(next(iter(columns.values())))
        if size <= n:
            return columns
        index = np.sort(self._rng.choice(size, size=n, replace=False))
        return {c: values[index] for c, values in columns.items()}


@dataclass(frozen=True, slots=True)
class Rendered:
    """A drawn report: where its HTML is, how long it took, and Evidently's own dataset verdict."""

    job_id: str
    html_path: str
    seconds: float
    dataset_drift: bool | None = None
    drifted_columns: list[str] = field(default_factory=list)
    error: str | None = None


class ReportRenderer:
    """Draws :class:`RenderJob` reports in one worker process (or thread), started once and kept.

    :meth:`submit` returns a future of :class:`Rendered`. A worker process that dies is replaced on the
    next job (``restarts`` counts it); a job whose drawing fails gives an error page, never an exception.
    """

    def __init__(
        self, *, root: Path, drift_share: float, workspace: bool = True, in_thread: bool = False
    ) -> None:
        self.root = Path(root)
        self.drift_share = drift_share
        self.workspace = workspace
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
                    initargs=(str(self.root), self.workspace),
                )
            else:
                # spawn, not fork: the monitor runs threads (Kafka client, web server) a fork would copy
                self._executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(str(self.root), self.workspace, os.getpid()),
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


def _init_worker(root: str, workspace: bool, parent: int | None = None) -> None:
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
        # reports can wait; the monitor's consumption (and the broker, on a small machine) should not
        with contextlib.suppress(OSError):
            os.nice(10)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s report-worker %(levelname)s %(message)s")
    _WORKER.clear()
    _WORKER.update(store=ReportStore(Path(root), workspace=workspace), references={})


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
        store.save_rendered(job_id, result.snapshot, banner=banner)
    except Exception as exc:  # a report that cannot be drawn must not stop the reports after it
        logging.getLogger(__name__).exception("drift report %s could not be drawn", job_id)
        error = f"{type(exc).__name__}: {exc}"
        store.save_error(job_id, error)
        return Rendered(
            job_id, str(store.html_path(job_id).resolve()), time.perf_counter() - started, error=error
        )
    return Rendered(
        job_id,
        str(store.html_path(job_id).resolve()),
        time.perf_counter() - started,
        dataset_drift=result.dataset_drift,
        drifted_columns=list(result.drifted_columns),
    )

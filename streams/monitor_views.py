"""What the monitor's pages show besides its drift windows: the current top alerts and the daily report.

Both come from what the service published, read by assignment (:mod:`churnstream.streams.reading`, no
consumer group, no offsets moved): the top alerts are :func:`~churnstream.streams.alerts.top_alerts` of the
last :data:`~churnstream.streams.alerts.ALERTS_SCANNED` messages of each partition of ``churn_alerts``; the
daily report is :func:`~churnstream.streams.report.daily_report`, the very computation of
``churnstream report``. They are read only when a page asks, in one worker process of their own (spawned
on the first request, at a lower priority), so reading and parsing topics never takes the GIL from the
event loop that consumes monitoring batches. A result is kept :data:`FRESH_SECONDS`, and requests that
arrive while one is read wait for that read instead of starting another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from churnstream.settings import Settings

log = logging.getLogger(__name__)

FRESH_SECONDS = 15.0  # a page read again within this long shows what was read last


def alerts_view(settings: Settings) -> dict[str, Any]:
    """The current top alerts: ``{"month", "alerts", "scanned"}`` (month ``None`` when there are none)."""
    from churnstream.streams.alerts import recent_alerts, top_alerts

    alerts = recent_alerts(settings)
    month, top = top_alerts(alerts)
    return {"month": month, "alerts": top, "scanned": len(alerts)}


def report_view(settings: Settings) -> list[dict[str, Any]]:
    """Every day of the daily report, as ``churnstream report --json`` prints it."""
    from churnstream.streams.report import daily_report

    return daily_report(settings)


class PublishedViews:
    """:func:`alerts_view` and :func:`report_view` for the pages, computed off the event loop and cached."""

    def __init__(
        self, settings: Settings, *, fresh_seconds: float = FRESH_SECONDS, in_thread: bool = False
    ) -> None:
        self.settings = settings
        self.fresh_seconds = fresh_seconds
        self.in_thread = in_thread
        self._executor: Executor | None = None
        self._cache: dict[str, tuple[float, Any]] = {}
        self._reading: dict[str, asyncio.Future[Any]] = {}

    async def alerts(self) -> dict[str, Any]:
        return dict(await self._get("alerts", alerts_view))

    async def report(self) -> list[dict[str, Any]]:
        return list(await self._get("report", report_view))

    async def _get(self, name: str, view: Callable[[Settings], Any]) -> Any:
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.fresh_seconds:
            return cached[1]
        reading = self._reading.get(name)
        if reading is None:
            reading = self._reading[name] = asyncio.ensure_future(self._read(name, view))
            reading.add_done_callback(lambda _: self._reading.pop(name, None))
        return await asyncio.shield(reading)

    async def _read(self, name: str, view: Callable[[Settings], Any]) -> Any:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._start(), view, self.settings)
        except BrokenProcessPool:
            log.warning("the pages' reader process died; starting a new one")
            self.close()
            result = await loop.run_in_executor(self._start(), view, self.settings)
        self._cache[name] = (started, result)
        return result

    def _start(self) -> Executor:
        if self._executor is None:
            if self.in_thread:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pages-reader")
            else:
                # spawn, not fork: the monitor runs threads (Kafka client, web server) a fork would copy
                self._executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker,
                    initargs=(os.getpid(),),
                )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None


def _init_worker(parent: int) -> None:
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    with contextlib.suppress(OSError):
        os.nice(10)  # pages can wait; the monitor's consumption should not


def _exit_with(parent: int) -> None:
    """End the reader when the monitor that started it is gone (even killed with SIGKILL)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


__all__ = ["FRESH_SECONDS", "PublishedViews", "alerts_view", "report_view"]

"""What a worker says about itself: liveness, readiness and lag, served on ``/health``, ``/ready`` and
``/metrics`` (:mod:`churnstream.streams.health`).

>>> from churnstream.settings import Settings
>>> status = WorkerStatus(settings=Settings())
>>> alive, body = status.health({0, 1}, {"model_version": "v1"})
>>> alive, body["status"], body["partitions"], body["model_version"]
(True, 'ok', [0, 1], 'v1')
"""

from __future__ import annotations

import time
from collections.abc import Collection
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from churnstream.settings import Settings
from churnstream.streams.health import DependencyProbe, serve_http

if TYPE_CHECKING:
    from churnstream.streams.scorer_metrics import ScorerMetrics
    from churnstream.streams.worker import Worker

READY_LOOP_SECONDS = 30.0  # a loop that has not turned for this long makes the worker not ready


class WorkerStatus:
    """When the worker's loop last turned and finished a batch, and how far behind its inputs it is."""

    def __init__(self, *, settings: Settings, metrics: ScorerMetrics | None = None) -> None:
        self.metrics = metrics
        self.last_loop_at = time.monotonic()  # when the loop last began a turn (liveness)
        # stuck this long: /health says so, and a supervisor restarts the worker
        self.stuck_after = max(60.0, 6 * settings.session_timeout_ms / 1000)
        self.last_batch_at: float | None = None
        self.lag: int | None = None
        self._lag_measured_at = 0.0

    def loop_turned(self) -> None:
        self.last_loop_at = time.monotonic()

    def batch_done(self) -> None:
        self.last_batch_at = time.time()

    def measure_lag(self, consumer: Consumer) -> None:
        """Messages behind the end of the assigned input partitions (from the client's cached ends)."""
        now = time.monotonic()
        if now - self._lag_measured_at < 5.0:
            return
        self._lag_measured_at = now
        behind = 0
        for tp in consumer.position(consumer.assignment()):
            high = consumer.get_watermark_offsets(tp, cached=True)[1]
            if tp.offset >= 0 and high >= 0:
                behind += max(0, high - tp.offset)
        self.lag = behind
        if self.metrics is not None:
            self.metrics.lag.set(behind)

    def health(self, partitions: Collection[int], details: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """Liveness: whether the loop turned within the last ``stuck_after`` seconds, and what it did
        (``details``: the handler's part)."""
        age = time.monotonic() - self.last_loop_at
        alive = age < self.stuck_after
        return alive, {
            "status": "ok" if alive else "stuck",
            "loop_age_seconds": round(age, 3),
            "partitions": sorted(partitions),
            "lag": self.lag,
            "last_batch_at": self.last_batch_at,
            **details,
        }

    def ready(self, probe: DependencyProbe, partitions: Collection[int]) -> tuple[bool, dict[str, Any]]:
        """Readiness: Kafka and Redis answer now, and the loop turned within the last 30 s."""
        problems = [why for why in probe.problems().values() if why]
        age = time.monotonic() - self.last_loop_at
        if age >= READY_LOOP_SECONDS:
            problems.append(f"the worker's loop has not turned for {age:.0f} s")
        last = None if self.last_batch_at is None else round(time.time() - self.last_batch_at, 3)
        return not problems, {
            "status": "ready" if not problems else "not ready",
            "reasons": problems,
            "partitions": sorted(partitions),
            "lag": self.lag,
            "last_batch_age_seconds": last,
        }


def serve(worker: Worker[Any], host: str, port: int, *, name: str = "worker-http") -> ThreadingHTTPServer:
    """The worker's ``/metrics``, ``/health`` and ``/ready`` (:mod:`churnstream.streams.health`)."""
    probe = DependencyProbe(worker.settings, redis=True)
    return serve_http(
        host,
        port,
        metrics=worker.metrics.render,
        health=worker.health,
        ready=lambda: worker.status.ready(probe, worker.assigned),
        name=name,
    )


__all__ = ["READY_LOOP_SECONDS", "WorkerStatus", "serve"]

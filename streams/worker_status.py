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
from collections.abc import Collection, Mapping
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from churnstream.settings import Settings
from churnstream.streams.health import DependencyProbe, serve_http

if TYPE_CHECKING:
    from churnstream.streams.scorer_metrics import ScorerMetrics
    from churnstream.streams.worker import Worker

READY_LOOP_SECONDS = 30.0  # a loop that has not turned for this long makes the worker not ready
# every batch failing on Kafka or Redis for this long (a Redis that answers PING but refuses writes: out of
# memory, read-only after a failover, a full disk) makes it not ready too
READY_FAILING_SECONDS = 30.0


def stuck_after(settings: Settings) -> float:
    """Seconds without progress after which ``/health`` says stuck (503), so a supervisor restarts the
    worker: a loop that stopped turning, or a start that hangs (a Redis or Kafka that never answers)."""
    return max(60.0, 6 * settings.session_timeout_ms / 1000)


class WorkerStatus:
    """When the worker's loop last turned and finished a batch, and how far behind its inputs it is."""

    def __init__(self, *, settings: Settings, metrics: ScorerMetrics | None = None) -> None:
        self.metrics = metrics
        self.last_loop_at = time.monotonic()  # when the loop last began a turn (liveness)
        self.stuck_after = stuck_after(settings)
        self.last_batch_at: float | None = None
        self.lag: int | None = None
        self._lag_measured_at = 0.0
        self.failing_since: float | None = None  # batches have failed since (monotonic), none written
        self.last_failure: str | None = None

    def loop_turned(self) -> None:
        self.last_loop_at = time.monotonic()

    def batch_done(self) -> None:
        self.last_batch_at = time.time()

    def failed(self, exc: BaseException) -> None:
        """A batch failed on Kafka or Redis and will be retried."""
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_failure = str(exc)

    def wrote(self) -> None:
        """A unit's state write is durable, or a turn ended with nothing left to fail: the worker makes
        progress (an idle worker after a passing failure is not failing)."""
        self.failing_since = self.last_failure = None

    def measure_lag(self, consumer: Consumer, applied: Mapping[tuple[str, int], int] | None = None) -> None:
        """Messages behind the end of the assigned input partitions (from the client's cached ends): from
        what is applied in Redis (``applied``: the next offset per partition), not from the consumer's
        position, which runs ahead by everything the reader holds and the batch in hand."""
        now = time.monotonic()
        if now - self._lag_measured_at < 5.0:
            return
        self._lag_measured_at = now
        applied = applied or {}
        behind = 0
        for tp in consumer.position(consumer.assignment()):
            low, high = consumer.get_watermark_offsets(tp, cached=True)
            # a partition nothing was applied of yet: all of it is behind (as far as the client knows)
            at = applied.get((tp.topic, tp.partition), low if low >= 0 else tp.offset)
            if at >= 0 and high >= 0:
                behind += max(0, high - at)
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
        now = time.monotonic()
        age = now - self.last_loop_at
        if age >= READY_LOOP_SECONDS:
            problems.append(f"the worker's loop has not turned for {age:.0f} s")
        failing = None if self.failing_since is None else now - self.failing_since
        if failing is not None and failing >= READY_FAILING_SECONDS:
            problems.append(
                f"no batch written for {failing:.0f} s: every attempt failed, the last with: "
                f"{self.last_failure}"
            )
        last = None if self.last_batch_at is None else round(time.time() - self.last_batch_at, 3)
        return not problems, {
            "status": "ready" if not problems else "not ready",
            "reasons": problems,
            "partitions": sorted(partitions),
            "lag": self.lag,
            "last_batch_age_seconds": last,
        }


BUILDING = "starting: opening the topics and Redis, loading the models"


class Starting:
    """What a worker process says before its worker exists (waiting for a model, opening Redis, loading
    models): alive, not ready, and why. ``worker`` is set once it exists; from then on it answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker: Worker[Any] | None = None
        self.waiting = BUILDING
        self.stuck_after = stuck_after(settings)

    @property
    def waiting(self) -> str:
        """What the worker waits for; setting it starts its clock."""
        return self._waiting

    @waiting.setter
    def waiting(self, what: str) -> None:
        self._waiting = what
        self._since = time.monotonic()

    @classmethod
    def running(cls, worker: Worker[Any]) -> Starting:
        """The answers of a worker that exists already."""
        answers = cls(worker.settings)
        answers.worker = worker
        return answers

    def metrics(self) -> bytes:
        return self.worker.metrics.render() if self.worker is not None else b""

    def health(self) -> tuple[bool, dict[str, Any]]:
        if self.worker is not None:
            return self.worker.health()
        seconds = round(time.monotonic() - self._since, 1)
        # waiting for a model may last (the first-run flow: up, then train); building may not
        if self.waiting == BUILDING and seconds >= self.stuck_after:
            return False, {"status": "stuck", "waiting": self.waiting, "seconds": seconds, "partitions": []}
        return True, {"status": "starting", "waiting": self.waiting, "seconds": seconds, "partitions": []}

    def ready(self, probe: DependencyProbe) -> tuple[bool, dict[str, Any]]:
        if self.worker is not None:
            return self.worker.status.ready(probe, self.worker.assigned)
        return False, {"status": "not ready", "reasons": [self.waiting], "partitions": [], "lag": None}


def serve(
    worker: Worker[Any] | Starting, host: str, port: int, *, name: str = "worker-http"
) -> ThreadingHTTPServer:
    """The worker's ``/metrics``, ``/health`` and ``/ready`` (:mod:`churnstream.streams.health`); given a
    :class:`Starting`, from before the worker exists."""
    answers = worker if isinstance(worker, Starting) else Starting.running(worker)
    probe = DependencyProbe(answers.settings, redis=True)
    return serve_http(
        host,
        port,
        metrics=answers.metrics,
        health=answers.health,
        ready=lambda: answers.ready(probe),
        name=name,
    )


__all__ = ["BUILDING", "READY_FAILING_SECONDS", "READY_LOOP_SECONDS", "Starting", "WorkerStatus", "serve"]

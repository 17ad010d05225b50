"""The worker runtime: consume micro-batches, hand them to a handler, produce, write, commit, rebalance.

A :class:`Worker` runs one :class:`Handler` (the scorer's :class:`~churnstream.streams.scorer.ChurnScorer`,
or ``churnstream rebuild``'s replay of it), in the spirit of Quix Streams' ``Application`` and Kafka
Streams' tasks. The worker owns everything about Kafka and the exactly-once protocol; the handler owns
what a batch means.

Exactly once in effect (:meth:`Worker.write`): a handler's unit of work is one store transaction. Its
outputs are produced only once the previous unit's Redis write is durable, and the unit is written only
once its own outputs are acknowledged, in one atomic write with the applied-offset fences of the
messages it covers. Redis's fences are the truth: after a crash, messages below them are skipped (their
outputs were acknowledged before the state was written); messages above them are recomputed from
unchanged state and re-emitted with the same deterministic ids. Kafka's offsets are committed one unit
late, never waited for, and only say where to start reading.

Ownership: a worker claims the partitions it is assigned in Redis (a fresh claim per assignment), and
every write requires its claims and the fences it wrote last to hold, so a worker that lost partitions
without noticing, or a Redis that lost writes, refuses the write instead of building on it.

Failures (:meth:`Worker.run`): Kafka or Redis failing -> rewind to what Redis holds and retry with
backoff; a batch failing for another reason -> find the one message that fails alone and dead-letter it
(:meth:`Worker._poison`); fenced out of the group -> rejoin once; a producer broken for good -> a fresh
one; a setting, credentials or lost Redis state -> stop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition

from churnstream.errors import (
    ConfigError,
    FencedError,
    InfraError,
    LayoutError,
    PublishError,
    StateLostError,
    StoreError,
)
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.features.store import FeatureStore, Transaction
from churnstream.settings import Settings
from churnstream.streams.handler import Handler
from churnstream.streams.ingest import Batch, InputReader
from churnstream.streams.merge import EventTimeReader
from churnstream.streams.outbox import Outbox
from churnstream.streams.poison import Isolation
from churnstream.streams.scorer_metrics import ScorerMetrics
from churnstream.streams.worker_status import WorkerStatus

log = logging.getLogger(__name__)

# How long a worker that could not go back to Redis's position waits before it asks again, whatever the
# backoff: once Redis takes writes again the worker reads on within this, and serves a rebalance (a
# review waited 25 s after Redis returned, and as long for a departed worker's partitions).
REWIND_RETRY_SECONDS = 5.0

# How often an idle worker checks that Redis still holds the fences it wrote (a busy one finds out at its
# next write, which requires them).
POSITION_CHECK_SECONDS = 10.0


H = TypeVar("H", bound=Handler)


class Worker(Generic[H]):
    """A consumer-group member running ``handler`` (built by ``handler(worker)``) until :meth:`stop`.

    ``group`` overrides the consumer group; ``quiet`` drops every output; ``worker_id`` makes the worker a
    static member of its group under that id (see ``make_consumer``); ``poll_timeout`` bounds each poll.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: FeatureStore,
        handler: Callable[[Worker[H]], H],
        metrics: ScorerMetrics | None = None,
        reader: InputReader | None = None,
        group: str | None = None,
        quiet: bool = False,
        worker_id: str | None = None,
        poll_timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or ScorerMetrics()
        self.outbox = Outbox(settings=settings, quiet=quiet)
        self.emit = self.outbox.emit  # queue one output of the unit being finished (produced by write)
        self.group = group or settings.consumer_group
        self._name = worker_id or settings.worker_name
        self._poll_timeout = poll_timeout
        # partition -> this worker's claim on it in Redis, new with every assignment (see _on_assign)
        self._claims: dict[int, str] = {}
        self.reader = reader or EventTimeReader(
            settings=settings,
            group=self.group,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            # a static member of the group: see make_consumer and docs/operations.md
            worker_id=worker_id,
            config={"on_commit": _log_failed_commit},
        )
        self.assigned: set[int] = set()
        self.applied: dict[tuple[str, int], int] = {}
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._unflushed = 0  # units written since the last flush: durable once it returns
        self._stop = threading.Event()
        self._rewound = True  # False while a rewind could not reach the broker or Redis
        self._fenced_at: float | None = None  # when the broker last fenced this worker out of its group
        self._rewinds_failed = 0  # failed rewinds in a row (Kafka or Redis still down)
        self._position_checked = time.monotonic()  # when an idle turn last checked Redis's fences
        self.isolation = Isolation(settings.batch_size)
        self.status = WorkerStatus(settings=settings, metrics=self.metrics)
        self.handler = handler(self)

    @property
    def producer(self) -> Any:
        return self.outbox.producer

    # -- what a handler uses -----------------------------------------------------------------------
    def written(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the message's effects are already in Redis (below the applied-offset fence)."""
        return offset < self.applied.get((topic, partition), -1)

    def write(
        self,
        tx: Transaction,
        *,
        offsets: Mapping[tuple[str, int], int] | None = None,
        while_delivering: Callable[[], None] | None = None,
    ) -> None:
        """Finish one unit of work: produce its queued outputs, then write ``tx`` (with the fences of
        ``offsets``, the batch's next offsets) once they are acknowledged.

        The previous unit's write must be durable first (:meth:`commit_previous`); ``while_delivering``
        runs while the broker acknowledges (learning: it changes only what later units score, so this
        unit's outputs do not wait for it). The store's writer waits for the acknowledgements, so the
        next batch is computed meanwhile.
        """
        offsets = offsets or {}
        self._expect_position(tx)
        for (topic, partition), offset in offsets.items():
            tx.set_fence(topic, partition, offset)
            if (topic, partition) not in self.applied:
                tx.expect_fence(topic, partition, None)  # a partition this worker has not written yet
        self.commit_previous()
        self.outbox.produce()
        if while_delivering is not None:
            while_delivering()
        self.store.commit(tx, after=self.outbox.acknowledged())
        self.metrics.written(offsets)
        self._unflushed += 1
        self.applied.update(offsets)
        self._uncommitted.update(offsets)

    def _check_position(self) -> None:
        """Idle, every :data:`POSITION_CHECK_SECONDS`: :class:`StoreError` (so: a rewind, and the lost
        events applied again) when Redis no longer holds a fence as this worker wrote it. A Redis restored
        from an older snapshot, or failed over to a replica behind, was found only at the next event: a
        quiet stream's features (and the API's answers) stayed without the lost writes meanwhile, and
        ``/ready`` said ready."""
        now = time.monotonic()
        if now - self._position_checked < POSITION_CHECK_SECONDS or not self.applied:
            return
        self._position_checked = now
        for (topic, partition), offset in self.applied.items():
            stored = self.store.fence(topic, partition)
            if stored != offset:
                raise StoreError(
                    f"Redis no longer holds what this worker expects (found while idle): {topic}/{partition} "
                    f"is applied up to offset {stored} there, this worker wrote {offset}; Redis lost writes "
                    "it had acknowledged (a restore, a failover) or another worker took the partition: "
                    "going back to what Redis holds"
                )

    def _expect_position(self, tx: Transaction) -> None:
        """The write happens only while this worker's claims on its partitions hold (see _on_assign) and
        Redis is where this worker left it: every fence as this worker wrote it last. A sweep builds on
        that position as much as a batch does, so it checks it too."""
        for p, claim in self._claims.items():
            tx.expect_claim(p, claim)
        for (topic, partition), offset in self.applied.items():
            tx.expect_fence(topic, partition, offset)

    def commit_previous(self, *, wait: bool = False) -> None:
        """Once the previous batch's state write is durable, commit its Kafka offsets.

        Deferring this by one batch lets Redis write batch N while this process computes batch N+1.
        The commit itself is not waited for (``wait`` on rebalance and shutdown): the applied-offset
        fence in Redis is what makes a replay harmless, so a lost commit only means re-reading a little.
        """
        written, self._unflushed = self._unflushed, 0
        self.store.flush()
        self.metrics.durable()
        if written:
            self.status.wrote()
        if self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if wait:  # two calls, not `asynchronous=not wait`: the stubs type each literal separately
                self.reader.consumer.commit(offsets=parts, asynchronous=False)
            else:
                self.reader.consumer.commit(offsets=parts, asynchronous=True)

    # -- partitions ------------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take over partitions from what Redis says was applied (not from Kafka's committed offsets).

        Redis is the truth of what was applied: each partition starts at its applied-offset fence, so
        events a Redis that lost its last writes no longer holds are applied again. A partition Kafka
        says was processed but Redis knows nothing of stops the worker (:class:`StateLostError`), before
        anything is written. Then this worker claims the partitions: every later write requires the
        claim to hold, so a worker that lost them without noticing can no longer write.
        """
        self.store.reset()
        fences = self._take_over(consumer, partitions)
        for tp in partitions:
            fence = fences.get((tp.topic, tp.partition))
            if fence is not None:
                tp.offset = fence
        consumer.assign(partitions)  # at the fences
        log.info("assigned %s", sorted({(tp.topic, tp.partition) for tp in partitions}))

    def _take_over(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Claim ``partitions`` and restore their state from Redis; their applied-offset fences.

        When Redis fails here (a stall during a rebalance), the consumer has the partitions all the same:
        the rewind that follows the failure takes over what it finds assigned and not taken over."""
        count = self.store.partitions
        outside = [tp for tp in partitions if count is not None and tp.partition >= count]
        if outside:
            beyond, topics = sorted({tp.partition for tp in outside}), sorted({tp.topic for tp in outside})
            raise LayoutError(
                f"this worker was assigned partition(s) {beyond} of {topics}, but {self.store.where()} holds "
                f"state for {count} partitions: partitions were added to the input topics while scorers ran "
                "(a customer's events now go to another partition than its state). Stop every scorer, then "
                "run `churnstream rebuild`"
            )
        fences = self._fences(consumer, partitions)
        claim = f"{self._name}:{uuid.uuid4().hex[:12]}"
        numbers = sorted({tp.partition for tp in partitions})
        self.store.write_claims(dict.fromkeys(numbers, claim))
        self._claims.update({p: claim for p in numbers})
        for tp in partitions:
            self.assigned.add(tp.partition)
            fence = fences.get((tp.topic, tp.partition))
            if fence is not None:
                self.applied[(tp.topic, tp.partition)] = fence
                # committed with the next commit: a commit lost before (the worker was fenced, the broker
                # away) would otherwise leave the group's offsets behind until new events come
                self._uncommitted[(tp.topic, tp.partition)] = fence
        self.handler.on_assign(numbers)  # its partitions' state restored now, not while events wait
        return fences

    def _fences(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The applied-offset fence in Redis of each partition that has one; :class:`StateLostError` when
        Kafka's committed offsets say partitions were processed that Redis has no fence for."""
        fences = {}
        for tp in partitions:
            stored = self.store.fence(tp.topic, tp.partition)
            if stored is not None:
                fences[(tp.topic, tp.partition)] = stored
        unknown = [
            TopicPartition(tp.topic, tp.partition)
            for tp in partitions
            if (tp.topic, tp.partition) not in fences
        ]
        if unknown:
            committed = consumer.committed(unknown, timeout=30)
            lost = [f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in committed if tp.offset > 0]
            if lost:
                raise StateLostError(
                    f"Redis at {self.settings.redacted_redis_url} has no state for partitions that consumer "
                    f"group {self.group!r} has processed ({', '.join(sorted(lost)[:6])}"
                    f"{', ...' if len(lost) > 6 else ''}): Redis lost its data (a flush, a restart without "
                    "persistence, a failover to an empty replica). Nothing was written. Stop every "
                    "`churnstream score`, run `churnstream rebuild` to restore the state from the input "
                    "topics, then start the scorers again"
                )
        return fences

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            self.commit_previous(wait=True)
        except (StoreError, KafkaException) as exc:
            # Not written, not committed: the partitions' next owner starts from the last commit.
            log.warning("last batch before the rebalance was not committed: %s", exc)
            self._uncommitted = {}
            fences: dict[tuple[str, int], int | None] = {}
            with contextlib.suppress(StoreError):  # Redis may be what failed
                fences = {(t, p): self.store.fence(t, p) for t, p in self.applied}
            self.metrics.rewound(fences)  # applied: counted; not: counted by whoever processes it again
        finally:
            with contextlib.suppress(StoreError):
                self.store.reset()
        for tp in partitions:
            self.applied.pop((tp.topic, tp.partition), None)
            self._claims.pop(tp.partition, None)
        self.assigned -= {tp.partition for tp in partitions}
        self.handler.on_revoke(sorted({tp.partition for tp in partitions}))
        log.info("revoked %s", sorted({(tp.topic, tp.partition) for tp in partitions}))

    # -- the loop --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Process batches until :meth:`stop` (SIGTERM/SIGINT); retries failures with backoff."""
        backoff = 0.5
        batch = Batch()
        handler = self.handler
        isolation = self.isolation
        backing_off = 0.0  # a failed batch's back-off, waited at the next turn (inside the try)
        while not self._stop.is_set():
            self.status.loop_turned()
            try:
                if backing_off:
                    wait, backing_off = backing_off, 0.0
                    self._hold(wait)
                    continue
                if self.outbox.producer_failed is not None:  # reported by librdkafka between batches
                    self._rewind()
                    self.outbox.replace_producer()
                if not self._rewound:  # never read on from where a failed batch left the consumer
                    self._rewind()
                    if not self._rewound:
                        # asked again within seconds: reading on waits for nothing but the next try
                        self._hold(min(backoff, REWIND_RETRY_SECONDS))
                        backoff = min(backoff * 2, 30.0)
                        continue
                # While a poison message is looked for, one message per batch, each committed at once.
                batch = Batch()  # a poll that fails leaves no earlier batch to be blamed
                batch = self.reader.poll_batch(1 if isolation.active else None, timeout=self._poll_timeout)
                handler.before_batch()
                if batch.size:
                    started = time.perf_counter()
                    handler.process(batch)
                    self.status.batch_done()
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
                    if isolation.active:
                        self.commit_previous(wait=True)
                        isolation.passed(batch.offsets)
                else:
                    self.commit_previous()
                    self._check_position()
                handler.after_batch()
                self.status.measure_lag(self.reader.consumer, self.applied)
                if not self._unflushed:  # a turn with nothing left to fail: whatever failed before is over
                    self.status.wrote()
                backoff = 0.5
            except (StoreError, PublishError, KafkaException) as exc:
                self.metrics.retries.inc()
                self.status.failed(exc)
                log.warning(
                    "batch failed, rewinding to the last commit and retrying in %.1fs: %s", backoff, exc
                )
                with contextlib.suppress(KafkaException):  # what is behind keeps counting while it fails
                    self.status.measure_lag(self.reader.consumer, self.applied)
                self._rewind()
                backing_off = backoff if self._rewound else min(backoff, REWIND_RETRY_SECONDS)
                backoff = min(backoff * 2, 30.0)
            except FencedError as exc:
                self._rejoin(exc)
            except (ConfigError, InfraError, StateLostError):  # to fix outside: a setting, credentials, Redis
                raise
            except Exception as exc:  # not the infrastructure: something about the batch's messages
                self._poison(batch, exc)
        self.close()

    def _hold(self, seconds: float) -> None:
        """Wait ``seconds`` (less once stopped) without reading, polling the consumer all the while: a
        worker waiting for Redis stays in its group however long Redis is away (before, past
        ``max.poll.interval.ms``, 5 minutes, every worker left the group, and the partitions went round
        in rebalances once Redis was back). A message the polls hand out is read again after a rewind."""
        deadline = time.monotonic() + seconds
        try:
            while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
                try:
                    if self.reader.hold(min(left, 1.0)):
                        self._rewound = False
                except (StoreError, KafkaException):
                    # a take-over in the poll failed (Redis, or the broker away too): the rewind takes the
                    # partitions the consumer has over
                    self._rewound = False
                    self._stop.wait(min(left, 1.0))
        finally:
            with contextlib.suppress(KafkaException):
                self.reader.release()

    def _rejoin(self, exc: FencedError) -> None:
        """Fenced out of the group: once, rejoin with a fresh consumer (librdkafka fences a static member
        that rejoined after a broker outage while a request of its old session was in flight); fenced
        again within a minute, another process has this worker's id, and the worker stops."""
        now = time.monotonic()
        if self._fenced_at is not None and now - self._fenced_at < 60.0:
            raise exc
        self._fenced_at = now
        log.warning("%s -- rejoining once with a fresh consumer", exc)
        self.reader.reopen()
        self.assigned.clear()
        self._claims.clear()
        self._rewind()

    def _poison(self, batch: Batch, exc: Exception) -> None:
        """A batch failed for a reason that is not Kafka or Redis: find the message and dead-letter it.

        The worker goes back to its last commit and reads on one message at a time (each committed before
        the next) up to the end of the failed batch; the one message that fails alone becomes a dead
        letter (stage ``process``) with the error, its offset is passed, and the events after it are
        processed normally. Retrying the whole batch would fail the same way for ever.
        """
        self._rewind()
        letters = self.isolation.failed(batch, exc)
        if letters is None:  # the failed batch is searched one message at a time
            return
        self.handler.process(Batch(dead_letters=letters, offsets=batch.offsets))
        self.status.batch_done()
        self.commit_previous(wait=True)
        self.isolation.passed(batch.offsets)

    def close(self) -> None:
        try:
            self.commit_previous(wait=True)
        finally:
            self.reader.close()
            if isinstance(self.store, RedisFeatureStore):
                self.store.close()

    def _rewind(self) -> None:
        """Forget cached state and go back to what Redis says was applied (nothing uncommitted is kept).

        Each partition is read again from its applied-offset fence in Redis (from Kafka's committed
        offset where Redis has none yet): after a Redis that came back behind, the events it lost are
        applied again. A claim Redis lost is made again; another worker's claim is left alone (the
        rebalance that moves the partition away is on its way).
        """
        self._rewound = False
        self._uncommitted = {}
        self._unflushed = 0
        self.outbox.abandon()  # failures of the abandoned batch are not the next batch's
        self.applied.clear()  # what was applied is what Redis says, reloaded below
        self.handler.on_rewind()
        with contextlib.suppress(StoreError):  # the failed write is what we are recovering from
            self.store.reset()
        try:
            consumer = self.reader.consumer
            self.reader.rewind()
            assignment = consumer.assignment()
            # assigned by the consumer while Redis failed the take-over (a stall during a rebalance):
            # taken over now, or this worker would read them without its claim, event time or sweeps
            missed = [tp for tp in assignment if tp.partition not in self.assigned]
            if missed:
                log.info(
                    "taking over %s, assigned while Redis failed", sorted({tp.partition for tp in missed})
                )
                self._take_over(consumer, missed)
            for (topic, partition), fence in self._fences(consumer, assignment).items():
                self.applied[(topic, partition)] = fence
                self.reader.seek(topic, partition, fence)
            self.metrics.rewound(self.applied)  # a write Redis applied counts; the others count again
            lost = {p: claim for p, claim in self._claims.items() if self.store.claim(p) is None}
            self.store.write_claims(lost)
            # Reading Redis is not enough: one that answers but refuses writes (out of memory, read-only)
            # would have the batch computed, its outputs produced, and its write refused, again at
            # every retry (a review: one prediction on churn_predictions 12 times in two minutes).
            self.store.probe_write(sorted(self.assigned))
            self.handler.after_rewind()
            self._rewound = True
            if self._rewinds_failed:
                log.info("rewound after %d failed attempts: reading on", self._rewinds_failed)
                self._rewinds_failed = 0
        except (StateLostError, LayoutError):
            raise
        except Exception as exc:  # the broker or Redis may still be down: retried before reading on
            # a retry as much as a failed batch's: churn_retries_total keeps rising while it lasts
            self._rewinds_failed += 1
            self.metrics.retries.inc()
            self.status.failed(exc)
            log.warning("rewind incomplete (%s); retrying before reading on", exc)

    # -- health ----------------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: whether the loop turned within the last ``stuck_after`` seconds, and what it did."""
        return self.status.health(self.assigned, self.handler.describe())


def stop_on_signals(worker: Worker[Any]) -> None:
    """SIGTERM and SIGINT stop ``worker`` once its current batch is finished and committed."""

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: finishing the current batch", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _log_failed_commit(error: Any, partitions: list[TopicPartition]) -> None:
    if error is not None:
        log.warning("committing offsets failed (the Redis fence skips what is re-read): %s", error)


__all__ = ["Handler", "Worker", "stop_on_signals"]

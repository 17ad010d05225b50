"""``churnstream score``: the scoring worker, a consumer-group member over the input topics.

Per micro-batch (:meth:`ChurnScorer.process`):

1. read and validate (bad messages -> ``dead_letter``);
2. apply the events to the customers' feature state (:mod:`churnstream.features.store`) — one transaction;
3. score every event's features with the batch model and the online model, blend, vectorised;
4. resolve labels (a completed order, an explicit label, or event time passing the horizon), emit
   ``churn_outcomes`` and let the online model learn;
5. raise alerts for customers turning HIGH outside the cooldown, with reasons and actions;
6. produce predictions, outcomes, alerts, dead letters and one columnar record for the monitor, and
   wait for the broker's acknowledgements;
7. commit the state transaction (features, pending predictions, alert state, the online model's
   checkpoint and the consumer offsets of the batch, in one atomic Redis write), then the Kafka offsets.

Exactly once in effect: the offsets written with the state fence replays — after a crash, messages
below them are skipped (their outputs were acknowledged before the state was written); messages above
them are recomputed from unchanged state and re-emitted with the same deterministic ids.

Silent customers: event time here is the minimum over this worker's partitions of the latest event time
seen. At every sweep tick (each ``CHURN_SWEEP_INTERVAL_DAYS``, once the allowed lateness has passed),
customers of those partitions whose silence reached one of ``CHURN_SWEEP_MILESTONES_DAYS`` (7, 14, 30,
60, 90, 180 days by default) since the previous tick are rescored as of the tick: a customer who stops
buying is rescored a handful of times as the silence grows, not every day forever.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import logging
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from churnstream.errors import (
    ChurnstreamError,
    ConfigError,
    FencedError,
    InfraError,
    ModelNotFoundError,
    ProcessingError,
    PublishError,
    StateLostError,
    StoreError,
)
from churnstream.events import Event, LabelEvent, OrderEvent, now_ms
from churnstream.features.definitions import FEATURE_NAMES, features_as_of
from churnstream.features.store import FeatureStore, RedisFeatureStore, Transaction
from churnstream.messages import OUTCOME_COLUMNS, Alert, DeadLetter, MonitoringBatch, Outcome, Prediction
from churnstream.models.blend import blend
from churnstream.models.learner import Learner
from churnstream.models.online import OnlineModel, probabilities
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.health import DependencyProbe, serve_http
from churnstream.streams.ingest import Batch, Coordinates, InputReader, dead_letter_payload
from churnstream.streams.kafka import DeliveryTracker, make_producer, refusal
from churnstream.streams.labels import (
    Resolved,
    add_pending,
    due_time,
    next_completed_order,
    resolve_by_event,
    resolve_by_time,
)
from churnstream.streams.merge import EventTimeReader

log = logging.getLogger(__name__)

ID_NAMESPACE = uuid.UUID("6f1c2a3e-7d4b-4c1a-9e8f-3b2d1c0a9f8e")
_NAMESPACE_BYTES = ID_NAMESPACE.bytes
_NEVER = 2**62
READY_LOOP_SECONDS = 30.0  # a loop that has not turned for this long makes the worker not ready
# A partition's learner in Redis (see models.learner): snapshots of both models, and the log since.
ONLINE_BLOB = "online"
BLENDER_BLOB = "blender"
LEARNER_LOG = "learned"


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(ID_NAMESPACE, name))``, without building UUID objects (it runs per message).

    >>> _uuid5("event:e1") == str(uuid.uuid5(ID_NAMESPACE, "event:e1"))
    True
    """
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50
    h[8] = (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def prediction_id_for_event(event_id: str) -> str:
    return _uuid5(f"event:{event_id}")


def prediction_id_for_sweep(customer_id: str, tick: int) -> str:
    return _uuid5(f"sweep:{customer_id}:{tick}")


def alert_id_for(prediction_id: str) -> str:
    return _uuid5(f"alert:{prediction_id}")


@dataclass(slots=True)
class BatchReport:
    """What one processed batch did (for logs, metrics and tests)."""

    events: int = 0
    skipped: int = 0
    duplicates: int = 0
    predictions: int = 0
    sweeps: int = 0
    outcomes: int = 0
    alerts: int = 0
    dead_letters: int = 0


@dataclass(slots=True)
class _Scoring:
    """Predictions of one batch waiting to be produced, and what they need for alerts and learning."""

    customer_ids: list[str] = field(default_factory=list)
    as_of: list[int] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)


class ScorerMetrics:
    """Prometheus metrics of one worker (a registry of its own, so tests can run several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.events = Counter("churn_events", "Input events processed", ["topic"], registry=self.registry)
        self.predictions = Counter(
            "churn_predictions", "Predictions emitted", ["trigger"], registry=self.registry
        )
        self.alerts = Counter("churn_alerts", "Alerts emitted", registry=self.registry)
        self.outcomes = Counter("churn_outcomes", "Outcomes emitted", ["source"], registry=self.registry)
        self.dead_letters = Counter("churn_dead_letters", "Dead letters", ["stage"], registry=self.registry)
        self.duplicates = Counter(
            "churn_duplicate_events", "Redelivered events ignored", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "churn_batch_seconds",
            "Time to process one micro-batch",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.lag = Gauge(
            "churn_consumer_lag", "Messages behind the end of the input topics", registry=self.registry
        )
        self.watermark = Gauge(
            "churn_event_time_watermark_seconds", "Event-time watermark", registry=self.registry
        )
        self.retries = Counter(
            "churn_retries", "Batches retried after a broker or Redis failure", registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class ModelSet:
    """The current batch model (swapped in place on promotion) and one :class:`Learner` per partition.

    The online model's state is partitioned like the data: the labels resolved on partition p teach
    partition p's learner, whose checkpoint (``online:<p>``, ``blender:<p>``) is written in the same atomic
    write as p's customers. When a partition moves to another worker its learner moves with it, so any
    number of workers learn every label exactly once and never overwrite each other's checkpoints.
    """

    def __init__(self, *, registry: Any, load_learner: Callable[[int], Learner]) -> None:
        self.registry = registry
        self.loaded = registry.load()
        self.loaded.model.warm_up()
        self._load_learner = load_learner
        self.learners: dict[int, Learner] = {}

    @property
    def version(self) -> str:
        return str(self.loaded.version)

    def maybe_reload(self) -> bool:
        """Load a newly promoted version; True when the model changed."""
        current = self.registry.current_version()
        if current is None or current == self.loaded.version:
            return False
        self.loaded = self.registry.load(current)
        self.loaded.model.warm_up()
        log.info("now scoring with model version %s", current)
        return True

    def learner(self, partition: int) -> Learner:
        """Partition ``partition``'s learner, restored from its checkpoint the first time it is needed."""
        learner = self.learners.get(partition)
        if learner is None:
            learner = self.learners[partition] = self._load_learner(partition)
        return learner

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Drop learners (all by default): after a failed write or a rebalance they are reloaded."""
        if partitions is None:
            self.learners.clear()
        for p in partitions or ():
            self.learners.pop(p, None)

    def score(
        self, rows: list[dict[str, Any]], partitions: list[int]
    ) -> tuple[np.ndarray, np.ndarray, list[float | None], np.ndarray]:
        """Score rows (each of its partition's learner) with the batch model, the online models and the
        blend: one matrix, and one pass over all partitions' online models (:func:`probabilities`).

        Returns the batch model's matrix, its probabilities, the online ones (None where the partition's
        online model is not ready) and the blended ones.
        """
        model = self.loaded.model
        X = model.vectorize(rows)
        batch_p = np.asarray(model.predict_proba(X), dtype=float)
        online = np.full(len(rows), np.nan)
        weight = np.zeros(len(rows))
        shared: list[tuple[list[int], OnlineModel]] = []
        for p, idx in _by_partition(partitions).items():
            learner = self.learner(p)
            if not learner.online.ready:
                continue
            weight[idx] = learner.blender.online_weight()
            if list(learner.online.feature_names) == list(model.feature_names):  # one matrix serves both
                shared.append((idx, learner.online))
            else:
                online[idx] = learner.online.predict_many([rows[i] for i in idx])
        if shared:
            take = np.concatenate([idx for idx, _ in shared])
            owner = np.repeat(np.arange(len(shared)), [len(idx) for idx, _ in shared])
            means, stds, weights, intercepts = (
                np.stack(c)[owner] for c in zip(*(m.parameters() for _, m in shared), strict=True)
            )
            online[take] = probabilities(shared[0][1].design(X[take]), means, stds, weights, intercepts)
        online_p: list[float | None] = [None if v != v else v for v in online.tolist()]  # NaN: not ready
        return X, batch_p, online_p, blend(batch_p, online, weight)


def _add_to(total: BatchReport, part: BatchReport) -> None:
    for name in BatchReport.__slots__:  # type: ignore[attr-defined]
        setattr(total, name, getattr(total, name) + getattr(part, name))


def _by_partition(partitions: Sequence[int]) -> dict[int, list[int]]:
    """Row indices grouped by partition, in row order."""
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(partitions):
        groups.setdefault(p, []).append(i)
    return groups


class ChurnScorer:
    """The scoring worker: wires the input reader, feature store, models and producers together."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: FeatureStore,
        models: ModelSet,
        reader: InputReader | None = None,
        metrics: ScorerMetrics | None = None,
        group: str | None = None,
        quiet: bool = False,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.store = store
        self.models = models
        self.metrics = metrics or ScorerMetrics()
        self._fenced_at: float | None = None  # when the broker last fenced this worker out of its group
        self._producer_failed: str | None = None  # why librdkafka declared the producer broken for good
        self._replaced_producers: list[float] = []
        self.producer = self._new_producer()
        self.tracker = DeliveryTracker()
        self.quiet = quiet
        self.group = group or settings.consumer_group
        self._worker = worker_id or settings.worker_name
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
        self.horizon = settings.horizon_ms
        self.lateness = settings.lateness_ms
        self.interval = int(settings.sweep_interval_days * DAY_MS)
        self.milestones = settings.sweep_milestones_ms
        self.assigned: set[int] = set()
        self.partition_time: dict[int, int] = {}
        self.applied: dict[tuple[str, int], int] = {}
        self.last_sweep: dict[int, int] = {}
        self._sweep_queue: list[tuple[str, int, int]] = []  # (customer, partition, tick)
        self._sweep_done: dict[int, int] = {}  # partition -> tick to record once its queue is empty
        self._reload_sweeps = False
        self._next_due: int | None = None  # earliest due time of a pending prediction; None: ask Redis
        self.last_batch_at: float | None = None
        self.totals = BatchReport()
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._outbox: list[tuple[str, str | bytes | None, bytes]] = []  # see _emit and _produce
        self._stop = threading.Event()
        self._rewound = True  # False while a rewind could not reach the broker or Redis
        self._last_model_check = time.monotonic()
        self.last_loop_at = time.monotonic()  # when the loop last began a turn (liveness)
        # stuck this long: /health says so, and a supervisor restarts the worker
        self.stuck_after = max(60.0, 6 * settings.session_timeout_ms / 1000)
        self.lag: int | None = None
        self._lag_measured_at = 0.0
        # (topic, partition) -> end offset of a batch that failed: read one message at a time up to there
        self._isolating: dict[tuple[str, int], int] = {}

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
        self._next_due = None
        fences = self._fences(consumer, partitions)
        claim = f"{self._worker}:{uuid.uuid4().hex[:12]}"
        self._claims.update({tp.partition: claim for tp in partitions})
        self.store.write_meta({f"own:{p}": claim for p in {tp.partition for tp in partitions}})
        for tp in partitions:
            self.assigned.add(tp.partition)
            fence = fences.get((tp.topic, tp.partition))
            if fence is not None:
                self.applied[(tp.topic, tp.partition)] = fence
                tp.offset = fence
            wm = self.store.meta(f"wm:{tp.partition}")
            if wm is not None:
                self.partition_time[tp.partition] = max(self.partition_time.get(tp.partition, 0), int(wm))
            sweep = self.store.meta(f"sweep:{tp.partition}")
            if sweep is not None:
                self.last_sweep[tp.partition] = int(sweep)
        consumer.assign(partitions)  # at the fences
        for p in sorted({tp.partition for tp in partitions}):
            self.models.learner(p)  # restored now, not while the first events wait
        log.info("assigned %s", sorted({(tp.topic, tp.partition) for tp in partitions}))

    def _fences(self, consumer: Consumer, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The applied-offset fence in Redis of each partition that has one; :class:`StateLostError` when
        Kafka's committed offsets say partitions were processed that Redis has no fence for."""
        fences = {}
        for tp in partitions:
            stored = self.store.meta(f"off:{tp.topic}:{tp.partition}")
            if stored is not None:
                fences[(tp.topic, tp.partition)] = int(stored)
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
            self._commit_previous(wait=True)
        except (StoreError, KafkaException) as exc:
            # Not written, not committed: the partitions' next owner starts from the last commit.
            log.warning("last batch before the rebalance was not committed: %s", exc)
            self._uncommitted = {}
        finally:
            with contextlib.suppress(StoreError):
                self.store.reset()
        for tp in partitions:
            self.applied.pop((tp.topic, tp.partition), None)
            self._claims.pop(tp.partition, None)
        self.assigned -= {tp.partition for tp in partitions}
        self.models.forget(p for p in list(self.models.learners) if p not in self.assigned)
        self._sweep_queue = [entry for entry in self._sweep_queue if entry[1] in self.assigned]
        for p in set(self.last_sweep) - self.assigned:  # reloaded from Redis if assigned again
            self.last_sweep.pop(p, None)
            self._sweep_done.pop(p, None)
        log.info("revoked %s", sorted({(tp.topic, tp.partition) for tp in partitions}))

    def _reload_per_partition(self, name: str, values: dict[int, int]) -> None:
        """``values[p]`` = what Redis holds as ``name:<p>``, for each assigned partition (dropped if none)."""
        for p in self.assigned:
            stored = self.store.meta(f"{name}:{p}")
            if stored is None:
                values.pop(p, None)
            else:
                values[p] = int(stored)

    def _written(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the message's effects are already in Redis (below the applied-offset fence)."""
        return offset < self.applied.get((topic, partition), -1)

    def watermark(self) -> int | None:
        """Event time this worker is sure about: the minimum over its partitions of their latest event."""
        times = [self.partition_time[p] for p in self.assigned if p in self.partition_time]
        return min(times) if times else None

    # -- the loop --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Process batches until :meth:`stop` (SIGTERM/SIGINT); retries failures with backoff."""
        backoff = 0.5
        batch = Batch()
        while not self._stop.is_set():
            self.last_loop_at = time.monotonic()
            try:
                if self._producer_failed is not None:  # reported by librdkafka between batches
                    self._rewind()
                    self._replace_producer()
                if not self._rewound:  # never read on from where a failed batch left the consumer
                    self._rewind()
                    if not self._rewound:
                        self._stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                # While a poison message is looked for, one message per batch, each committed at once.
                batch = Batch()  # a poll that fails leaves no earlier batch to be blamed
                batch = self.reader.poll_batch(1 if self._isolating else None)
                self._check_model()
                if batch.size:
                    started = time.perf_counter()
                    self.process(batch)
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
                    if self._isolating:
                        self._commit_previous(wait=True)
                        self._isolated(batch.offsets)
                else:
                    self._commit_previous()
                self.sweep()
                self._measure_lag()
                backoff = 0.5
            except (StoreError, PublishError, KafkaException) as exc:
                self.metrics.retries.inc()
                log.warning(
                    "batch failed, rewinding to the last commit and retrying in %.1fs: %s", backoff, exc
                )
                self._rewind()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except FencedError as exc:
                self._rejoin(exc)
            except (ConfigError, InfraError, StateLostError):  # to fix outside: a setting, credentials, Redis
                raise
            except Exception as exc:  # not the infrastructure: something about the batch's messages
                self._poison(batch, exc)
        self.close()

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

    def _new_producer(self) -> Producer:
        # only failures are reported: a Python callback per acknowledged message cost ~6% of the worker
        return make_producer(
            self.settings, delivery_report_only_error=True, config={"error_cb": self._on_producer_error}
        )

    def _on_producer_error(self, error: KafkaError) -> None:
        """librdkafka's error callback: a refused login stops the worker; a fatal error (an idempotent
        producer fenced or out of sequence, e.g. after the broker behind the address was replaced) is
        noted, and the next retry gets a fresh producer (retrying with this one would fail for ever)."""
        refused = refusal(self.settings, error)
        if refused is not None:
            raise refused
        if error.fatal():
            self._producer_failed = self.settings.redact(error.str())

    def _replace_producer(self) -> None:
        """A fresh producer after a fatal error, from the last commit (the rewind has just gone back to it);
        the third within a minute stops the worker for its supervisor, as something is wrong beyond one
        client."""
        now = time.monotonic()
        self._replaced_producers = [t for t in self._replaced_producers if now - t < 60.0] + [now]
        reason, self._producer_failed = self._producer_failed, None
        if len(self._replaced_producers) >= 3:
            raise InfraError(
                f"the Kafka producer failed for good 3 times within a minute (last: {reason}); exiting so "
                "that the worker is restarted (check the brokers behind CHURN_KAFKA_BOOTSTRAP)"
            )
        log.error(
            "the Kafka producer failed for good (%s): starting a fresh one from the last commit", reason
        )
        with contextlib.suppress(Exception):
            self.producer.purge()  # what it still holds belongs to batches the rewind gave up
        self.producer = self._new_producer()

    def _poison(self, batch: Batch, exc: Exception) -> None:
        """A batch failed for a reason that is not Kafka or Redis: find the message and dead-letter it.

        The worker goes back to its last commit and reads on one message at a time (each committed before
        the next) up to the end of the failed batch; the one message that fails alone becomes a dead
        letter (stage ``process``) with the error, its offset is passed, and the events after it are
        processed normally. Retrying the whole batch would fail the same way for ever.
        """
        self._rewind()
        if not self._isolating or batch.size != 1:
            log.warning(
                "a batch failed (%s: %s); looking for the message that causes it", type(exc).__name__, exc
            )
            for key, offset in batch.offsets.items():
                self._isolating[key] = max(offset, self._isolating.get(key, 0))
            return
        if batch.events:
            event, where = batch.events[0]
            error = ProcessingError(f"could not be processed: {type(exc).__name__}: {exc}"[:1000])
            letters = [self._dead_letter(event, where, error)]
        else:
            letters = batch.dead_letters
        log.error(
            "dead-lettering the message that fails alone (%s: %s)", type(exc).__name__, exc, exc_info=exc
        )
        self.process(Batch(dead_letters=letters, offsets=batch.offsets))
        self._commit_previous(wait=True)
        self._isolated(batch.offsets)

    def _isolated(self, offsets: dict[tuple[str, int], int]) -> None:
        """Note progress through the messages of a failed batch; back to whole batches past its end."""
        for key, offset in offsets.items():
            if offset >= self._isolating.get(key, _NEVER):
                del self._isolating[key]
        if not self._isolating:
            log.info("past the failed batch: back to batches of up to %d messages", self.settings.batch_size)

    def close(self) -> None:
        try:
            self._commit_previous(wait=True)
        finally:
            self.reader.close()
            if isinstance(self.store, RedisFeatureStore):
                self.store.close()

    def _check_model(self) -> None:
        now = time.monotonic()
        if now - self._last_model_check >= self.settings.model_poll_seconds:
            self._last_model_check = now
            try:
                self.models.maybe_reload()
            except ChurnstreamError as exc:
                log.error("keeping model %s: the promoted one cannot be loaded: %s", self.models.version, exc)

    def _rewind(self) -> None:
        """Forget cached state and go back to what Redis says was applied (nothing uncommitted is kept).

        Each partition is read again from its applied-offset fence in Redis (from Kafka's committed
        offset where Redis has none yet): after a Redis that came back behind, the events it lost are
        applied again. A claim Redis lost is made again; another worker's claim is left alone (the
        rebalance that moves the partition away is on its way).
        """
        self._rewound = False
        self._uncommitted = {}
        self._outbox = []
        self.applied.clear()  # what was applied is what Redis says, reloaded below
        self.tracker = DeliveryTracker()  # failures of the abandoned batch are not the next batch's
        self.models.forget()  # they may have learned from the batch that was not written
        self._next_due = None
        # a sweep chunk may have been lost with the failed write: sweep from the recorded ticks again
        self._sweep_queue.clear()
        self._sweep_done.clear()
        self._reload_sweeps = True
        with contextlib.suppress(StoreError):  # the failed write is what we are recovering from
            self.store.reset()
        try:
            consumer = self.reader.consumer
            if isinstance(self.reader, EventTimeReader):
                self.reader.rewind()
            else:
                assignment = consumer.assignment()
                if assignment:
                    for tp in consumer.committed(assignment, timeout=10):
                        consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
            assignment = consumer.assignment()
            for (topic, partition), fence in self._fences(consumer, assignment).items():
                self.applied[(topic, partition)] = fence
                if isinstance(self.reader, EventTimeReader):
                    self.reader.seek(topic, partition, fence)
                else:
                    consumer.seek(TopicPartition(topic, partition, fence))
            lost = {
                f"own:{p}": claim for p, claim in self._claims.items() if self.store.meta(f"own:{p}") is None
            }
            self.store.write_meta(lost)
            # Event time goes back with the state: a watermark left ahead by the abandoned batches would
            # sweep a later tick first, so sweep predictions (and outcomes already emitted for them)
            # would differ from the first pass.
            self._reload_per_partition("wm", self.partition_time)
            self._rewound = True
        except StateLostError:
            raise
        except Exception as exc:  # the broker or Redis may still be down: retried before reading on
            log.warning("rewind incomplete (%s); retrying before reading on", exc)

    # -- one batch -------------------------------------------------------------------------------
    def process(self, batch: Batch) -> BatchReport:
        """Apply, score and emit one micro-batch, then commit it (see the module docstring).

        A batch is cut where its events move the watermark past a sweep tick, and the tick is swept
        there: so which customers a tick finds silent depends only on the events, never on where the
        reader happened to end a batch, and a replay after a crash sweeps the same customers.
        """
        total = BatchReport()
        while True:
            k = self._tick_cut(batch)
            if k is None:
                _add_to(total, self._process(batch))
                return total
            head, batch = batch.split(k)
            _add_to(total, self._process(head))
            _add_to(total, BatchReport(sweeps=self.sweep()))

    def _tick(self, watermark: int) -> int:
        """The latest sweep tick that a watermark lets go (the allowed lateness after it has passed)."""
        return (watermark - self.lateness) // self.interval * self.interval

    def _tick_cut(self, batch: Batch) -> int | None:
        """How many events to apply before sweeping a tick that this batch's events reach (None: all)."""
        watermark = self.watermark()
        tick = None if watermark is None else self._tick(watermark)  # None: sweeping starts at the first
        times = dict(self.partition_time)
        assigned = self.assigned
        events = batch.events
        for i, (event, where) in enumerate(events):
            p = where.partition
            if isinstance(event, LabelEvent) or event.timestamp <= times.get(p, event.timestamp - 1):
                continue
            if self._written(where.topic, p, where.offset):
                continue
            times[p] = event.timestamp
            moved = min(times[q] for q in assigned if q in times)
            if tick is None or self._tick(moved) > tick:
                return i + 1 if i + 1 < len(events) else None
        return None

    def _process(self, batch: Batch) -> BatchReport:
        report = BatchReport()
        fresh: list[tuple[Event, Coordinates]] = []
        for event, where in batch.events:
            if self._written(where.topic, where.partition, where.offset):
                report.skipped += 1
                continue
            fresh.append((event, where))
            if not isinstance(event, LabelEvent):
                p = where.partition
                if event.timestamp > self.partition_time.get(p, -(2**62)):
                    self.partition_time[p] = event.timestamp
        letters = [
            d
            for d in batch.dead_letters
            if d.offset is None or not self._written(d.source_topic, d.partition or 0, d.offset)
        ]
        watermark = self.watermark()
        due: dict[str, str] = {}
        if watermark is not None and self.assigned:
            until = watermark - self.lateness
            # this worker writes every due time of its partitions, so it knows when to ask again
            if self._next_due is None or self._next_due <= until:
                shards = [str(p) for p in sorted(self.assigned)]
                found = self.store.due_before(until, shards=shards, limit=5000)
                due = found.customers
                self._next_due = _NEVER if found.next_due is None else found.next_due
        tx = self.store.begin({e.customer_id for e, _ in fresh} | set(due))
        tx.shards.update(due)
        scoring = _Scoring()
        resolved: list[tuple[str, Resolved]] = []
        topic_counts: Counter[str] = Counter()
        for event, where in fresh:
            topic_counts[where.topic] += 1
            report.events += 1
            cid = event.customer_id
            if isinstance(event, LabelEvent):
                tx.shards.setdefault(cid, str(where.partition))  # whose learner learns it, whose index
                resolved += [
                    (cid, r)
                    for r in resolve_by_event(
                        tx.state(cid), event.timestamp, churned=event.churned, horizon_ms=self.horizon
                    )
                ]
                tx.touch(cid)
                continue
            result = tx.apply(event, shard=str(where.partition))
            if result.status == "rejected":
                assert result.error is not None
                letters.append(self._dead_letter(event, where, result.error))
                continue
            if result.status == "duplicate":
                report.duplicates += 1
                self.metrics.duplicates.inc()
                continue
            if isinstance(event, OrderEvent) and event.status == "completed":
                resolved += [
                    (cid, r)
                    for r in resolve_by_event(
                        tx.state(cid), event.timestamp, churned=None, horizon_ms=self.horizon
                    )
                ]
            assert result.features is not None
            scoring.customer_ids.append(cid)
            scoring.as_of.append(result.as_of if result.as_of is not None else event.timestamp)
            scoring.triggers.append("event")
            scoring.event_ids.append(event.event_id)
            scoring.rows.append(result.features)
            scoring.partitions.append(where.partition)
        if watermark is not None:
            for cid in due:
                state = tx.state(cid)
                resolved += [
                    (cid, r)
                    for r in resolve_by_time(
                        state, watermark, horizon_ms=self.horizon, lateness_ms=self.lateness
                    )
                ]
                tx.due[cid] = due_time(state, horizon_ms=self.horizon)
                tx.touch(cid)
        self._expect_position(tx)
        for (topic, partition), offset in batch.offsets.items():
            name = f"off:{topic}:{partition}"
            tx.meta[name] = str(offset)
            tx.expect.setdefault(name, None)  # a partition this worker has not written yet
        for p in self.assigned:
            if p in self.partition_time:
                tx.meta[f"wm:{p}"] = str(self.partition_time[p])
        self._finish(tx, scoring, resolved, letters, report)
        for topic, count in topic_counts.items():
            self.metrics.events.labels(self.topics.kind_of(topic)).inc(count)
        for key, offset in batch.offsets.items():
            self.applied[key] = offset
        self._uncommitted.update(batch.offsets)
        self.last_batch_at = time.time()
        self._add(report)
        return report

    def _expect_position(self, tx: Transaction) -> None:
        """The write happens only while this worker's claims on its partitions hold (see _on_assign) and
        Redis is where this worker left it: every fence as this worker wrote it last. A sweep builds on
        that position as much as a batch does, so it checks it too."""
        for p, claim in self._claims.items():
            tx.expect[f"own:{p}"] = claim
        for (topic, partition), offset in self.applied.items():
            tx.expect[f"off:{topic}:{partition}"] = str(offset)

    def sweep(self) -> int:
        """Rescore the customers whose silence reached a milestone by the latest tick; returns predictions.

        A tick's customers are listed once (every milestone crossed since the partition's last tick) and
        rescored in chunks of at most ``CHURN_BATCH_SIZE``, one transaction each, all before the next event
        batch: so what the online model has learned when an event is scored does not depend on timing,
        and an answer re-emitted after a crash is the same answer. A partition's tick is recorded in Redis
        with its last chunk; after a crash the tick is swept again, with the same prediction ids.
        """
        made = 0
        while True:
            if not self._sweep_queue:
                self._plan_sweep()
            if not self._sweep_queue and not self._sweep_done:
                return made
            made += self._sweep_chunk()

    def _sweep_chunk(self) -> int:
        part = self._sweep_queue[: self.settings.batch_size]
        del self._sweep_queue[: len(part)]
        tx = self.store.begin(cid for cid, *_ in part)
        scoring = _Scoring()
        for cid, p, tick in part:
            tx.shards[cid] = str(p)
            if tx.state(cid)["max"] is None:
                continue
            scoring.customer_ids.append(cid)
            scoring.as_of.append(tick)
            scoring.triggers.append("sweep")
            scoring.event_ids.append(None)
            scoring.rows.append(features_as_of(tx.state(cid), tick))
            scoring.partitions.append(p)
        pending = {p for _, p, _ in self._sweep_queue}
        for p in [p for p in self._sweep_done if p not in pending]:
            tx.meta[f"sweep:{p}"] = str(self._sweep_done.pop(p))
        self._expect_position(tx)
        report = BatchReport()
        self._finish(tx, scoring, [], [], report)
        self._add(report)
        return report.sweeps

    def _plan_sweep(self) -> None:
        """List the customers whose silence reached a milestone between each partition's last tick and now."""
        if self._reload_sweeps:
            self._reload_per_partition("sweep", self.last_sweep)
            self._reload_sweeps = False
        watermark = self.watermark()
        if watermark is None:
            return
        tick = self._tick(watermark)
        due: dict[int, int] = {}
        for p in sorted(self.assigned):
            last = self.last_sweep.get(p)
            if last is None:  # first time: start sweeping from the next tick on, and say so in Redis
                self.last_sweep[p] = tick
                self._sweep_done[p] = tick
            elif tick > last:
                due[p] = last
        if not due:
            return
        for last in sorted(set(due.values())):
            shards = [str(p) for p, at in due.items() if at == last]
            listed: dict[str, str] = {}
            for milestone in self.milestones:  # silence crossed `milestone` in (last, tick]
                listed.update(
                    self.store.active_before(tick - milestone, shards=shards, since=last - milestone)
                )
            self._sweep_queue += [(cid, int(shard), tick) for cid, shard in listed.items()]
        for p in due:
            self.last_sweep[p] = tick
            self._sweep_done[p] = tick

    def _finish(
        self,
        tx: Transaction,
        scoring: _Scoring,
        resolved: list[tuple[str, Resolved]],
        letters: list[DeadLetter],
        report: BatchReport,
    ) -> None:
        resolved = list(resolved)
        models = self.models
        version = models.version
        scored_at = now_ms()
        emit = self._emit
        n = len(scoring.rows)
        monitoring_cols: dict[str, list[Any]] = {}
        if n:
            X, batch_p, online_p, churn_p = models.score(scoring.rows, scoring.partitions)
            # the pending vectors: the batch matrix's rows when it is in FEATURE_NAMES order (NaN -> null)
            if models.loaded.model.feature_names == list(FEATURE_NAMES):
                vectors = X.tolist()
            else:
                vectors = [[row[name] for name in FEATURE_NAMES] for row in scoring.rows]
            alerts_rows: list[int] = []
            predictions: list[Prediction] = []
            for i in range(n):
                cid = scoring.customer_ids[i]
                as_of = scoring.as_of[i]
                event_id = scoring.event_ids[i]
                pid = prediction_id_for_event(event_id) if event_id else prediction_id_for_sweep(cid, as_of)
                bp = round(float(batch_p[i]), 6)
                online_value = online_p[i]
                op = None if online_value is None else round(float(online_value), 6)
                cp = round(float(churn_p[i]), 6)
                risk = self.settings.risk_category(cp)
                prediction = Prediction(
                    prediction_id=pid,
                    customer_id=cid,
                    as_of=as_of,
                    scored_at=scored_at,
                    trigger=scoring.triggers[i],
                    event_id=event_id,
                    model_version=version,
                    batch_probability=bp,
                    online_probability=op,
                    churn_probability=cp,
                    risk_category=risk,
                    features=scoring.rows[i],
                )
                predictions.append(prediction)
                state = tx.state(cid)
                add_pending(
                    state,
                    pid,
                    as_of,
                    bp,
                    op,
                    cp,
                    vectors[i],
                    horizon_ms=self.horizon,
                    lateness_ms=self.lateness,
                    recency_days=scoring.rows[i]["recency_days"],
                )
                # an order already known after as_of (this event arrived late) labels it at once
                later = next_completed_order(state, as_of)
                if later is not None:
                    resolved += [
                        (cid, r)
                        for r in resolve_by_event(state, later, churned=None, horizon_ms=self.horizon)
                    ]
                tx.due[cid] = due_time(state, horizon_ms=self.horizon)
                previous = state.get("risk")
                state["risk"] = risk
                if risk == "HIGH" and previous != "HIGH":
                    last = state.get("alerted")
                    if last is None or as_of - last >= self.settings.cooldown_ms:
                        state["alerted"] = as_of
                        alerts_rows.append(i)
                tx.touch(cid)
            predictions_topic = self.topics.churn_predictions
            for prediction in predictions:
                emit(predictions_topic, prediction.customer_id, prediction.to_json())
                if prediction.trigger == "sweep":
                    report.sweeps += 1
                else:
                    report.predictions += 1
            swept = sum(1 for t in scoring.triggers if t == "sweep")
            if swept:
                self.metrics.predictions.labels("sweep").inc(swept)
            if n - swept:
                self.metrics.predictions.labels("event").inc(n - swept)
            if alerts_rows:
                self._alerts(X, alerts_rows, predictions, scoring, report)
            monitoring_cols = {
                "as_of": list(scoring.as_of),
                "customer_id": list(scoring.customer_ids),
                "trigger": list(scoring.triggers),
                **{name: [row[name] for row in scoring.rows] for name in FEATURE_NAMES},
                "batch_probability": [p.batch_probability for p in predictions],
                "online_probability": [p.online_probability for p in predictions],
                "churn_probability": [p.churn_probability for p in predictions],
            }
        outcome_cols = self._outcomes(tx, resolved, report)
        for letter in letters:
            emit(self.topics.dead_letter, letter.key, dead_letter_payload(letter))
            self.metrics.dead_letters.labels(letter.stage).inc()  # rare: no need to batch
            report.dead_letters += 1
        if n or resolved:
            record = MonitoringBatch(
                batch_id=str(uuid.uuid4()),
                created_at=scored_at,
                model_version=version,
                feature_names=list(FEATURE_NAMES),
                predictions=monitoring_cols,
                outcomes=outcome_cols,
            )
            emit(self.topics.monitoring_batches, version, record.to_json())
        if self._next_due is not None:
            self._next_due = min([self._next_due, *(d for d in tx.due.values() if d is not None)])
        self._commit_previous()
        self._produce()
        # learning changes only what later batches score, so this batch's outputs do not wait for it
        self._learn(tx, resolved)
        # the state may be written only once this batch's outputs are acknowledged: the store's writer
        # waits for that, so the next batch is computed meanwhile
        self.store.commit(tx, after=functools.partial(self.tracker.flush_or_raise, self.producer))

    def _commit_previous(self, *, wait: bool = False) -> None:
        """Once the previous batch's state write is durable, commit its Kafka offsets.

        Deferring this by one batch lets Redis write batch N while this process computes batch N+1.
        The commit itself is not waited for (``wait`` on rebalance and shutdown): the applied-offset
        fence in Redis is what makes a replay harmless, so a lost commit only means re-reading a little.
        """
        self.store.flush()
        if self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            if wait:  # two calls, not `asynchronous=not wait`: the stubs type each literal separately
                self.reader.consumer.commit(offsets=parts, asynchronous=False)
            else:
                self.reader.consumer.commit(offsets=parts, asynchronous=True)

    def _outcomes(
        self, tx: Transaction, resolved: list[tuple[str, Resolved]], report: BatchReport
    ) -> dict[str, list[Any]]:
        cols: dict[str, list[Any]] = {k: [] for k in OUTCOME_COLUMNS}
        if not resolved:
            return cols
        sources: Counter[str] = Counter()
        outcomes_topic = self.topics.churn_outcomes
        for cid, r in resolved:
            outcome = Outcome(
                prediction_id=r.prediction_id,
                customer_id=cid,
                as_of=r.as_of,
                labeled_at=r.labeled_at,
                label=r.label,
                source=r.source,
                batch_probability=r.batch_probability,
                online_probability=r.online_probability,
                churn_probability=r.churn_probability,
            )
            self._emit(outcomes_topic, cid, outcome.to_json())
            sources[r.source] += 1
            report.outcomes += 1
            cols["labeled_at"].append(r.labeled_at)
            cols["label"].append(r.label)
            cols["source"].append(r.source)
            cols["batch_probability"].append(r.batch_probability)
            cols["online_probability"].append(r.online_probability)
            cols["churn_probability"].append(r.churn_probability)
        for cid in {cid for cid, _ in resolved}:
            tx.due[cid] = due_time(tx.state(cid), horizon_ms=self.horizon)
        for source, count in sources.items():
            self.metrics.outcomes.labels(source).inc(count)
        return cols

    def _learn(self, tx: Transaction, resolved: list[tuple[str, Resolved]]) -> None:
        """Teach each partition's learner its resolved labels; its checkpoint goes into ``tx``."""
        partitions = [int(tx.shards.get(cid, "0")) for cid, _ in resolved]
        for p, idx in _by_partition(partitions).items():
            learner = self.models.learner(p)
            done = [resolved[i][1] for i in idx]
            checkpoint = learner.learn(
                [r.features for r in done],
                [r.label for r in done],
                [r.batch_probability for r in done],
                [r.online_probability for r in done],
                feature_names=FEATURE_NAMES,
            )
            log_name = f"{LEARNER_LOG}:{p}"
            if checkpoint.snapshot:
                tx.blobs[f"{ONLINE_BLOB}:{p}"], tx.blobs[f"{BLENDER_BLOB}:{p}"] = learner.snapshot_bytes()
                tx.blobs[log_name] = b""
            else:
                tx.appends[log_name] = checkpoint.log

    def _alerts(
        self,
        X: np.ndarray,
        rows: list[int],
        predictions: list[Prediction],
        scoring: _Scoring,
        report: BatchReport,
    ) -> None:
        from churnstream.models.explain import explain, recommended_actions

        models = self.models
        reasons: dict[int, list[Any]] = {}
        for partition, idx in _by_partition([scoring.partitions[i] for i in rows]).items():
            learner = models.learner(partition)
            which = [rows[j] for j in idx]
            found = explain(
                models.loaded.model,
                learner.online,
                learner.blender,
                X[which],
                [scoring.rows[i] for i in which],
                top_k=3,
            )
            reasons.update(zip(which, found, strict=True))
        for i in rows:
            top = reasons[i]
            p = predictions[i]
            alert = Alert(
                alert_id=alert_id_for(p.prediction_id),
                prediction_id=p.prediction_id,
                customer_id=p.customer_id,
                as_of=p.as_of,
                churn_probability=p.churn_probability,
                risk_category=p.risk_category,
                model_version=p.model_version,
                recommended_actions=recommended_actions(top),
                top_reasons=list(top),
            )
            self._emit(self.topics.churn_alerts, p.customer_id, alert.to_json())
            report.alerts += 1
        self.metrics.alerts.inc(len(rows))

    def _emit(self, topic: str, key: str | bytes | None, value: dict[str, Any] | bytes) -> None:
        """Queue one output of the batch being finished; :meth:`_produce` hands them to the producer."""
        if self.quiet:
            return
        self._outbox.append((topic, key, value if isinstance(value, bytes) else orjson.dumps(value)))

    def _produce(self) -> None:
        """Produce the queued outputs of this batch.

        Called only once the previous batch's write has finished, so the writer's flush, which waits
        for every message in the producer's queue, waits for one batch's outputs and never for the next
        batch's as well (it did: at 2,000 events/s most of a batch's time went to that wait).
        """
        outbox, self._outbox = self._outbox, []
        produce = self.producer.produce
        on_delivery = self.tracker.on_delivery
        for topic, key, payload in outbox:
            while True:
                try:
                    produce(topic, value=payload, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)

    def _dead_letter(self, event: Event, where: Coordinates, error: ProcessingError) -> DeadLetter:
        return DeadLetter(
            source_topic=where.topic,
            partition=where.partition,
            offset=where.offset,
            key=where.key,
            value=json.dumps(event.to_json()).encode(),
            error=str(error),
            stage=error.stage,
            failed_at=now_ms(),
        )

    def _add(self, report: BatchReport) -> None:
        _add_to(self.totals, report)
        wm = self.watermark()
        if wm is not None:
            self.metrics.watermark.set(wm / 1000)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: whether the loop turned within the last ``stuck_after`` seconds, and what it did."""
        age = time.monotonic() - self.last_loop_at
        alive = age < self.stuck_after
        return alive, {
            "status": "ok" if alive else "stuck",
            "loop_age_seconds": round(age, 3),
            "model_version": self.models.version,
            "partitions": sorted(self.assigned),
            "watermark": self.watermark(),
            "lag": self.lag,
            "last_batch_at": self.last_batch_at,
            "online_labels": {
                p: learner.online.n_learned for p, learner in sorted(self.models.learners.items())
            },
            "totals": {name: getattr(self.totals, name) for name in BatchReport.__slots__},  # type: ignore[attr-defined]
        }

    def ready(self, probe: DependencyProbe) -> tuple[bool, dict[str, Any]]:
        """Readiness: Kafka and Redis answer now, and the loop turned within the last 30 s."""
        problems = [why for why in probe.problems().values() if why]
        age = time.monotonic() - self.last_loop_at
        if age >= READY_LOOP_SECONDS:
            problems.append(f"the worker's loop has not turned for {age:.0f} s")
        last = None if self.last_batch_at is None else round(time.time() - self.last_batch_at, 3)
        return not problems, {
            "status": "ready" if not problems else "not ready",
            "reasons": problems,
            "partitions": sorted(self.assigned),
            "lag": self.lag,
            "last_batch_age_seconds": last,
        }

    def _measure_lag(self) -> None:
        """Messages behind the end of the assigned input partitions (from the client's cached ends)."""
        now = time.monotonic()
        if now - self._lag_measured_at < 5.0:
            return
        self._lag_measured_at = now
        consumer = self.reader.consumer
        behind = 0
        for tp in consumer.position(consumer.assignment()):
            high = consumer.get_watermark_offsets(tp, cached=True)[1]
            if tp.offset >= 0 and high >= 0:
                behind += max(0, high - tp.offset)
        self.lag = behind
        self.metrics.lag.set(behind)


def _log_failed_commit(error: Any, partitions: list[TopicPartition]) -> None:
    if error is not None:
        log.warning("committing offsets failed (the Redis fence skips what is re-read): %s", error)


def serve(scorer: ChurnScorer, host: str, port: int) -> ThreadingHTTPServer:
    """The worker's ``/metrics``, ``/health`` and ``/ready`` (:mod:`churnstream.streams.health`)."""
    probe = DependencyProbe(scorer.settings, redis=True)
    return serve_http(
        host,
        port,
        metrics=scorer.metrics.render,
        health=scorer.health,
        ready=functools.partial(scorer.ready, probe),
        name="scorer-http",
    )


def restore_learner(store: FeatureStore, partition: int) -> Learner:
    """Partition ``partition``'s learner as last committed: its snapshot plus the log since."""
    return Learner.restore(
        store.blob(f"{ONLINE_BLOB}:{partition}"),
        store.blob(f"{BLENDER_BLOB}:{partition}"),
        store.blob(f"{LEARNER_LOG}:{partition}"),
    )


def build_scorer(
    settings: Settings, *, group: str | None = None, quiet: bool = False, worker_id: str | None = None
) -> ChurnScorer:
    """Everything a worker needs, from settings: Redis store, models (with restored online state).

    ``group`` overrides the consumer group; ``quiet`` rebuilds state without producing any output;
    ``worker_id`` makes the worker a static member of its group under that id (``churnstream score``
    passes CHURN_WORKER_ID), so a restart under the same id resumes at once. Without it the worker is a
    dynamic member that leaves the group when it closes, as a worker embedded in another process (a
    test, ``churnstream rebuild``) should.
    """
    import redis

    from churnstream.models.registry import ModelRegistry
    from churnstream.streams.topics import create_topics

    create_topics(settings)
    client = redis.Redis.from_url(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    registry = ModelRegistry(settings.model_dir)
    if registry.current_version() is None:
        raise ModelNotFoundError(
            f"no current model in {settings.model_dir}: train one first "
            "(churnstream train --events DIR --out MODEL_DIR) or set CHURN_MODEL_DIR"
        )

    models = ModelSet(registry=registry, load_learner=functools.partial(restore_learner, store))
    scorer = ChurnScorer(
        settings=settings, store=store, models=models, group=group, quiet=quiet, worker_id=worker_id
    )
    return scorer


def cli(args: Any, settings: Settings) -> int:
    """Run the scoring worker until SIGTERM/SIGINT: finish the batch, commit, exit 0."""
    scorer = build_scorer(settings, worker_id=settings.worker_name)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: finishing the current batch", signum)
        scorer.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    if settings.metrics_port >= 0:
        try:
            server = serve(scorer, settings.web_host, settings.metrics_port)
            host, port = server.server_address[:2]
            log.info("metrics on http://%s:%s/metrics, liveness on /health, readiness on /ready", host, port)
        except OSError as exc:
            log.warning("metrics/health endpoint disabled: %s", exc)
    log.info("scoring with model %s; settings %r", scorer.models.version, settings)
    log.info(
        "worker %s (CHURN_WORKER_ID) of consumer group %s, session timeout %d ms",
        settings.worker_name,
        settings.consumer_group,
        settings.session_timeout_ms,
    )
    # What is loaded by now (libraries, models) lives as long as the process: keep it out of the
    # garbage collector's full passes, which otherwise stall a batch by ~90 ms every so often.
    gc.freeze()
    scorer.run()
    if server is not None:
        server.shutdown()
    log.info("stopped: %s", scorer.totals)
    return 0


__all__ = ["ChurnScorer", "ModelSet", "ScorerMetrics", "build_scorer", "cli", "restore_learner", "serve"]

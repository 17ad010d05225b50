"""``churnstream score``: the scoring worker, a consumer-group member over the input topics.

:class:`ChurnScorer` is the handler that a :class:`~churnstream.streams.worker.Worker` runs (the runtime:
polling, rebalancing, rewinds, poison messages, producing, committing); this module wires the two.

Per micro-batch (:meth:`ChurnScorer.process`):

1. read and validate (bad messages -> ``dead_letter``);
2. apply the events to the customers' feature state (:mod:`churnstream.features.store`) — one transaction
   (:mod:`churnstream.streams.apply`);
3. score every event's features with the batch model and the online model, blend, vectorised;
4. resolve labels (a completed order, an explicit label, or event time passing the horizon), emit
   ``churn_outcomes`` and let the online model learn;
5. raise alerts for customers turning HIGH outside the cooldown, with reasons and actions;
6. produce predictions, outcomes, alerts, dead letters and one columnar record for the monitor, and
   wait for the broker's acknowledgements;
7. commit the state transaction (features, pending predictions, alert state, the online model's
   checkpoint and the consumer offsets of the batch, in one atomic Redis write), then the Kafka offsets
   (:meth:`Worker.write <churnstream.streams.worker.Worker.write>`).

Exactly once in effect: the offsets written with the state fence replays (see
:mod:`churnstream.streams.worker`); outputs carry deterministic ids (:mod:`churnstream.ids`).

Silent customers: each partition's event time is the latest event it has carried; at every sweep tick
it reaches, its customers whose silence reached one of ``CHURN_SWEEP_MILESTONES_DAYS`` since its previous
tick are rescored as of the tick (:mod:`churnstream.features.sweep`), its pending predictions overdue by
then are labelled by inactivity, and its learner learns. Each partition goes by its own time, so the
answers do not depend on which partitions share this worker.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

from churnstream.errors import ChurnstreamError
from churnstream.events import Event, LabelEvent
from churnstream.features.labels import Resolved
from churnstream.features.redis_store import RedisFeatureStore, redis_client
from churnstream.features.store import FeatureStore, Transaction
from churnstream.ids import event_fingerprint
from churnstream.messages import DeadLetter
from churnstream.models.serving import ModelSet, load_models, restore_learner
from churnstream.settings import Settings
from churnstream.streams.apply import apply_events, label_overdue
from churnstream.streams.ingest import Batch, Coordinates
from churnstream.streams.scorer_metrics import ScorerMetrics
from churnstream.streams.scoring import BatchReport, BatchScoring, ScoringRows, add_to
from churnstream.streams.sweeper import Sweeper
from churnstream.streams.worker import Worker, stop_on_signals
from churnstream.streams.worker_status import BUILDING, Starting
from churnstream.streams.worker_status import serve as serve_worker
from churnstream.timefmt import format_time

log = logging.getLogger(__name__)

_NEVER = 2**62


class ChurnScorer:
    """The scoring handler: feature state, labels, scores, alerts and sweeps of the worker's partitions."""

    def __init__(
        self,
        *,
        worker: Worker[Any],
        settings: Settings,
        store: FeatureStore,
        models: ModelSet,
        metrics: ScorerMetrics | None = None,
    ) -> None:
        self.worker = worker
        self.settings = settings
        self.topics = settings.topics
        self.store = store
        self.models = models
        self.metrics = metrics or worker.metrics
        self.horizon = settings.horizon_ms
        self.lateness = settings.lateness_ms
        self.partition_time: dict[int, int] = {}
        # partition -> the fingerprint of the event that brought it to its time, if known
        self.reached_by: dict[int, str] = {}
        # read at each scrape: a promotion the workers refused is a page, not a line inside /health
        self.metrics.model_not_served.set_function(lambda: 1.0 if self.models.not_served() else 0.0)
        # partition -> the earliest due time of a pending prediction there (absent: ask the store)
        self._next_due: dict[int, int] = {}
        # partition -> the earliest due time the unit last written set (its write may be in flight)
        self._in_flight_due: dict[int, int] = {}
        self.totals = BatchReport()
        self._last_model_check = time.monotonic()
        self.scoring = BatchScoring(settings=settings, models=models, metrics=self.metrics, worker=worker)
        self.sweeper = Sweeper(
            settings=settings, store=store, assigned=worker.assigned, times=lambda: self.partition_time
        )

    @property
    def assigned(self) -> set[int]:
        return self.worker.assigned

    # -- what the worker tells the handler -------------------------------------------------------
    def on_assign(self, partitions: list[int]) -> None:
        """Partitions taken over: their event time, last sweep tick and learner as Redis holds them."""
        self._next_due.clear()
        self._in_flight_due.clear()
        for p in partitions:
            wm = self.store.partition_time(p)
            if wm is not None and wm > self.partition_time.get(p, -(2**62)):  # another worker's time
                self.partition_time[p] = wm
                self._reached_by_stored(p)
        self.sweeper.assign(partitions)
        for p in partitions:
            self.models.learner(p)  # restored now, not while the first events wait

    def on_revoke(self, partitions: list[int]) -> None:
        self.models.forget(p for p in list(self.models.learners) if p not in self.assigned)
        self.scoring.forget_budgets()
        self.sweeper.revoke()

    def on_rewind(self) -> None:
        self.models.forget()  # they may have learned from the batch that was not written
        self.scoring.forget_budgets()  # they may count alerts of the batch that was not written
        self._next_due.clear()
        self._in_flight_due.clear()
        self.sweeper.rewind()

    def after_rewind(self) -> None:
        """Event time goes back with the state: a watermark left ahead by the abandoned batches would
        sweep a later tick first, so sweep predictions (and outcomes already emitted for them) would
        differ from the first pass."""
        for p in self.assigned:
            stored = self.store.partition_time(p)
            if stored is None:
                self.partition_time.pop(p, None)
            else:
                self.partition_time[p] = stored
            self._reached_by_stored(p)

    def _reached_by_stored(self, p: int) -> None:
        """Which event brought partition ``p`` to its time, as Redis holds it (a tick left half swept
        learns with it, so the learner history says it)."""
        by = self.store.partition_reached_by(p)
        if by is None:
            self.reached_by.pop(p, None)
        else:
            self.reached_by[p] = by

    def before_batch(self) -> None:
        self._check_model()

    def after_batch(self) -> None:
        self.sweep()

    def describe(self) -> dict[str, Any]:
        return {
            "model_version": self.models.version,
            "model_not_served": self.models.not_served(),
            "watermark": self.watermark(),
            "online_labels": {
                p: learner.online.n_learned for p, learner in sorted(self.models.learners.items())
            },
            "totals": {name: getattr(self.totals, name) for name in BatchReport.__slots__},  # type: ignore[attr-defined]
        }

    def watermark(self) -> int | None:
        """The earliest of its partitions' event times (each partition's sweeps and labels go by its own:
        this is what the worker's metrics and ``/health`` show)."""
        times = [self.partition_time[p] for p in self.assigned if p in self.partition_time]
        return min(times) if times else None

    # -- one batch -------------------------------------------------------------------------------
    def process(self, batch: Batch) -> BatchReport:
        """Apply, score and emit one micro-batch, then commit it (see the module docstring).

        A batch is cut where an event moves its partition's event time past a sweep tick, and that
        partition's tick is swept there (its learner learns once every row of the tick is scored): so
        which customers a tick finds silent, and what the online model knows when, depend only on the
        partition's events, never on where the reader happened to end a batch or on which partitions
        share this worker, and a replay after a crash sweeps the same customers.
        """
        # a tick a rewind left half swept is finished first: its partition's learner learns once every
        # sweep row of the tick is scored, and before the events after it (as without the rewind)
        total = BatchReport(sweeps=self.sweep())
        while True:
            in_head = self._tick_cut(batch)
            if in_head is None:
                add_to(total, self._process(batch))
                return total
            # Each partition's events up to the one reaching its tick (every event of a partition that
            # reaches none), and the ticks' first chunk, in one write: the same wherever the reader ended
            # the batch, so each partition's online model learns in the same order.
            last = all(in_head)
            head, batch = (batch, batch) if last else batch.split_by(in_head)
            add_to(total, self._process(head, sweep=True))
            add_to(total, BatchReport(sweeps=self.sweep()))
            if last:
                return total

    def _tick_cut(self, batch: Batch) -> list[bool] | None:
        """Which events to apply before sweeping the ticks this batch's events reach: in each partition,
        the events up to the first that reaches a tick (None: no partition reaches one). Partitions share
        nothing (customers, learners, budgets and due times are each a partition's), so one write serves
        every partition that reaches its tick in the batch, wherever in it."""
        written = self.worker.written
        tick = self.sweeper.tick
        times = self.partition_time
        reached: set[int] = set()
        in_head = []
        for event, where in batch.events:
            p = where.partition
            in_head.append(p not in reached)
            if p in reached:
                continue
            before = times.get(p)
            if isinstance(event, LabelEvent) or (before is not None and event.timestamp <= before):
                continue
            if written(where.topic, p, where.offset):
                continue
            # a partition's first event starts its sweeping; a later one that reaches a new tick sweeps it
            if before is None or tick(event.timestamp) > tick(before):
                reached.add(p)
        return in_head if reached else None

    def _process(self, batch: Batch, *, sweep: bool = False) -> BatchReport:
        """Apply, score and write ``batch``; with ``sweep``, the first chunk of the sweep tick its events
        reached goes into the same transaction, scored after the events (one write, not two)."""
        written = self.worker.written
        report = BatchReport()
        fresh: list[tuple[Event, Coordinates]] = []
        for event, where in batch.events:
            if written(where.topic, where.partition, where.offset):
                report.skipped += 1
                continue
            fresh.append((event, where))
            if not isinstance(event, LabelEvent):
                p = where.partition
                before = self.partition_time.get(p, -(2**62))
                if event.timestamp > before:
                    if event.timestamp - before > self.horizon and p in self.partition_time:
                        self._jumped(event, where, before)
                    self.partition_time[p] = event.timestamp
                    self.reached_by[p] = event_fingerprint(event.event_id)
        letters = [
            d
            for d in batch.dead_letters
            if d.offset is None or not written(d.source_topic, d.partition or 0, d.offset)
        ]
        # per partition: labelled by inactivity as its own time says; this worker writes every due time
        # of its partitions, so it knows when to ask again
        until = {
            p: self.partition_time[p] - self.lateness
            for p in sorted(self.assigned)
            if p in self.partition_time
        }
        ask = {p: t for p, t in until.items() if self._next_due.get(p, t) <= t}
        overdue = self.store.due_before(ask, limit=5000) if ask else {}
        where_of: dict[str, int] = {}  # a customer's partition: whose learner learns it, whose index
        for p, found in overdue.items():
            where_of.update(dict.fromkeys(found.customers, p))
            # the unit in flight may have added a due time this answer does not hold yet
            self._next_due[p] = min(
                _NEVER if found.next_due is None else found.next_due, self._in_flight_due.get(p, _NEVER)
            )
        for e, w in fresh:
            where_of.setdefault(e.customer_id, w.partition)
        tx = self.store.begin(where_of)
        applied = apply_events(tx, fresh, horizon_ms=self.horizon)
        report.events += len(fresh)
        report.duplicates += applied.duplicates
        if applied.duplicates:
            self.metrics.duplicates.inc(applied.duplicates)
        letters += applied.dead_letters
        resolved = applied.resolved
        for p, found in overdue.items():
            t = self.partition_time[p]
            resolved += label_overdue(
                tx, found.customers, t, horizon_ms=self.horizon, lateness_ms=self.lateness
            )
        for p in self.assigned:
            if p in self.partition_time:
                tx.set_partition_time(p, self.partition_time[p], self.reached_by.get(p))
        scoring = applied.scoring
        finished: list[int] = []
        if sweep and self.sweeper.ready(tx):
            _, swept = self.sweeper.chunk(functools.partial(self.store.begin, into=tx))
            finished = self.sweeper.finished
            for name in ScoringRows.__dataclass_fields__:
                getattr(scoring, name).extend(getattr(swept, name))
        for topic, count in applied.per_topic.items():  # counted with the unit, once it is durable
            self.metrics.events.labels(self.topics.kind_of(topic)).inc(count)
        self._finish(tx, scoring, resolved, letters, report, offsets=batch.offsets, ticked=finished)
        self._add(report)
        return report

    def _jumped(self, event: Event, where: Coordinates, before: int) -> None:
        """Say that ``event`` moved its partition's event time forward by more than the horizon at once:
        what a live event does in a partition that a backfill is still loading. Event time is the latest
        event's (as in Kafka Streams), so each pending prediction of the partition due before it is
        labelled churned by inactivity, and the backfill's later events there are late."""
        self.metrics.time_jumps.inc()
        log.warning(
            "event %r (%s partition %d offset %d) moved the partition's event time from %s to %s, more "
            "than the %g-day horizon at once: predictions due before it will be labelled by inactivity "
            "and older events after it are late. If a backfill is still loading, publish live events "
            "after it (or to another CHURN_TOPIC_PREFIX); see the README's 'Backfills and live events'",
            event.event_id,
            where.topic,
            where.partition,
            where.offset,
            format_time(before),
            format_time(event.timestamp),
            self.settings.horizon_days,
        )

    def sweep(self) -> int:
        """Rescore the customers whose silence reached a milestone by the latest tick; returns predictions.

        A tick is swept whole, chunk by chunk, before this returns (see :mod:`churnstream.streams.sweeper`).
        """
        made = 0
        while self.sweeper.pending:
            tx, scoring = self.sweeper.chunk(self.store.begin)
            report = BatchReport()
            self._finish(tx, scoring, [], [], report, ticked=self.sweeper.finished)
            self._add(report)
            made += report.sweeps
        return made

    def _finish(
        self,
        tx: Transaction,
        scoring: ScoringRows,
        resolved: list[tuple[str, Resolved]],
        letters: list[DeadLetter],
        report: BatchReport,
        *,
        offsets: dict[tuple[str, int], int] | None = None,
        ticked: list[int] | None = None,
    ) -> None:
        """Score and queue the unit's outputs, then write it through the worker (learning meanwhile:
        the resolved labels are taken in, and the learners of the partitions whose sweep tick the unit
        finishes, ``ticked``, learn what waits)."""
        resolved = self.scoring.finish(tx, scoring, resolved, letters, report)
        self._in_flight_due = {}
        for cid, d in tx.due.items():
            p = tx.partitions.get(cid)
            if d is not None and p is not None:
                self._in_flight_due[p] = min(self._in_flight_due.get(p, _NEVER), d)
        for p, d in self._in_flight_due.items():
            if p in self._next_due:
                self._next_due[p] = min(self._next_due[p], d)
        self.worker.write(
            tx,
            offsets=offsets,
            while_delivering=functools.partial(
                self.scoring.learn,
                tx,
                resolved,
                partitions=ticked or (),
                times=self.partition_time,
                reached_by=self.reached_by,
            ),
        )

    def _add(self, report: BatchReport) -> None:
        add_to(self.totals, report)
        wm = self.watermark()
        if wm is not None:
            self.metrics.watermark.set(wm / 1000)

    def _check_model(self) -> None:
        now = time.monotonic()
        if now - self._last_model_check >= self.settings.model_poll_seconds:
            self._last_model_check = now
            try:
                if self.models.maybe_reload():
                    warn_model_settings(self.models.loaded.metadata, self.settings)
            except Exception as exc:  # never the batch's fault: the model being served goes on
                log.error(
                    "keeping model %s: the promoted one cannot be loaded: %s (`churnstream models rollback` "
                    "makes the previous version current again)",
                    self.models.version,
                    exc if isinstance(exc, ChurnstreamError) else repr(exc),
                )


ScoringWorker = Worker[ChurnScorer]


def warn_other_horizon(metadata: Mapping[str, Any], settings: Settings) -> bool:
    """Warn (True) when a model was trained for another horizon than ``CHURN_HORIZON_DAYS``: labels,
    outcomes, the online model, value at risk and realized ROC-AUC then all count churn over the
    setting's horizon against probabilities that mean the model's.

    >>> warn_other_horizon({"horizon_days": 30.0}, Settings(horizon_days=30))
    False
    >>> warn_other_horizon({"horizon_days": 30.0}, Settings(horizon_days=90))
    True
    """
    trained = metadata.get("horizon_days")
    if trained is None or float(trained) == float(settings.horizon_days):
        return False
    log.warning(
        "model %(model)s was trained for a churn horizon of %(trained)g days, but CHURN_HORIZON_DAYS is "
        "%(setting)g: its probabilities mean churn within %(trained)g days while labels, outcomes and "
        "value at risk count %(setting)g; set CHURN_HORIZON_DAYS=%(trained)g, or train a model for "
        "%(setting)g days",
        {
            "model": metadata.get("version", "(this one)"),
            "trained": float(trained),
            "setting": settings.horizon_days,
        },
    )
    return True


def warn_no_medium(metadata: Mapping[str, Any], settings: Settings) -> bool:
    """Warn (True) when one of ``CHURN_HIGH_THRESHOLD`` / ``CHURN_MEDIUM_THRESHOLD`` set alone meets the
    model's own other one, so no probability is MEDIUM (medium is capped at high).

    >>> warn_no_medium({"risk_thresholds": {"high": 0.99, "medium": 0.97}}, Settings(high_threshold=0.98))
    False
    >>> warn_no_medium({"risk_thresholds": {"high": 0.99, "medium": 0.97}}, Settings(high_threshold=0.6))
    True
    """
    own = metadata.get("risk_thresholds") or {}
    high, medium = settings.risk_thresholds(own)
    alone = (settings.high_threshold is None) != (settings.medium_threshold is None)
    if medium < high or not alone:
        return False
    log.warning(
        "no prediction will be MEDIUM: CHURN_%s_THRESHOLD=%g is set alone and meets model %s's own %s "
        "threshold %g; set CHURN_HIGH_THRESHOLD and CHURN_MEDIUM_THRESHOLD together",
        "HIGH" if settings.high_threshold is not None else "MEDIUM",
        high if settings.high_threshold is not None else medium,
        metadata.get("version", "(this one)"),
        "medium" if settings.high_threshold is not None else "high",
        own.get("medium", 0.4) if settings.high_threshold is not None else own.get("high", 0.7),
    )
    return True


def warn_model_settings(metadata: Mapping[str, Any], settings: Settings) -> None:
    """Every warning about settings that do not fit the model being served (at start and each switch)."""
    warn_other_horizon(metadata, settings)
    warn_no_medium(metadata, settings)


def serve(worker: ScoringWorker | Starting, host: str, port: int) -> Any:
    """The worker's ``/metrics``, ``/health`` and ``/ready`` (:mod:`churnstream.streams.health`)."""
    return serve_worker(worker, host, port, name="scorer-http")


def open_store(settings: Settings) -> RedisFeatureStore:
    """The scorer's feature store in Redis (creating the topics first), its layout checked."""
    from churnstream.streams.topics import create_topics, input_partitions

    create_topics(settings)
    store = RedisFeatureStore(
        client=redis_client(settings.redis_url),
        namespace=settings.topic_prefix,
        lateness_ms=settings.lateness_ms,
        cache_size=settings.state_cache_customers,
        decoded_size=settings.state_cache_decoded_customers,
    )
    store.check_layout(partitions=input_partitions(settings))
    return store


def build_scorer(
    settings: Settings, *, group: str | None = None, quiet: bool = False, worker_id: str | None = None
) -> ScoringWorker:
    """Everything a worker needs, from settings: Redis store, models (with restored online state).

    ``group`` overrides the consumer group; ``quiet`` rebuilds state without producing any output;
    ``worker_id`` makes the worker a static member of its group under that id (``churnstream score``
    passes CHURN_WORKER_ID), so a restart under the same id resumes at once. Without it the worker is a
    dynamic member that leaves the group when it closes, as a worker embedded in another process (a
    test, ``churnstream rebuild``) should.
    """
    store = open_store(settings)
    models = load_models(settings, store)
    return Worker(
        settings=settings,
        store=store,
        group=group,
        quiet=quiet,
        worker_id=worker_id,
        handler=lambda worker: ChurnScorer(worker=worker, settings=settings, store=store, models=models),
    )


# Container allocations (net of frees) between two young-generation collections; CPython's default is
# 700. A unit of work holds tens of thousands of short-lived objects (decoded states, feature rows,
# outputs) for a few milliseconds: at 700 they are scanned again and again while alive and then
# promoted, which triggers full collections. At 20,000 a unit's garbage is mostly freed by reference
# counting before any collection runs (the 52k-event bench: 4,800 collections, 1.05 s -> 10, 0.07 s).
GC_YOUNG_THRESHOLD = 20_000


def settle_heap() -> None:
    """Set the garbage collector up for a long-running worker, once its models are loaded.

    What is loaded by now (libraries, models) lives as long as the process: it is frozen out of the
    collector's full passes, which otherwise stall a batch by ~90 ms every so often; and young
    collections run every :data:`GC_YOUNG_THRESHOLD` net allocations, not every 700. Reference cycles
    are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def wait_for_model(settings: Settings, stop: threading.Event) -> bool:
    """Wait until the registry has a current model (True), or ``stop`` is set first (False).

    A worker without a model has nothing to do; waiting, rather than exiting, keeps a fresh deployment
    (workers started before the first ``churnstream train``) from restarting in a loop.
    """
    from churnstream.models.registry import ModelRegistry

    registry = ModelRegistry(settings.model_dir)
    if registry.current_version() is not None:
        return True
    log.warning(
        "no current model in %s yet: waiting for one (checking every %.0f s); train and promote one with "
        "`churnstream train --events DIR` or `churnstream train --from-topics`",
        settings.model_dir,
        settings.model_poll_seconds,
    )
    while not stop.wait(settings.model_poll_seconds):
        if registry.current_version() is not None:
            log.info("model %s is current: starting", registry.current_version())
            return True
    return False


def cli(args: Any, settings: Settings) -> int:
    """Run the scoring worker until SIGTERM/SIGINT: finish the batch, commit, exit 0.

    ``/health`` answers from the start (alive, "starting" or waiting for a model), ``/ready`` says 503
    and why until the worker runs; a signal while it starts stops it before it reads anything.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    starting = Starting(settings)
    server = None
    if settings.metrics_port >= 0:
        try:
            server = serve(starting, settings.web_host, settings.metrics_port)
            host, port = server.server_address[:2]
            log.info("metrics on http://%s:%s/metrics, liveness on /health, readiness on /ready", host, port)
        except OSError as exc:
            log.warning("metrics/health endpoint disabled: %s", exc)
    starting.waiting = (
        f"no current model in {settings.model_dir} (CHURN_MODEL_DIR) yet: train and promote one"
    )
    if not wait_for_model(settings, stop):
        return _stopped(server, "stopped while waiting for a model")
    starting.waiting = BUILDING
    worker = build_scorer(settings, worker_id=settings.worker_name)
    scorer = worker.handler
    stop_on_signals(worker)
    if stop.is_set():  # a signal while it was built: leave before joining the group
        worker.close()
        return _stopped(server, "stopped while starting")
    starting.worker = worker
    log.info("scoring with model %s; settings %r", scorer.models.version, settings)
    warn_model_settings(scorer.models.loaded.metadata, settings)
    log.info(
        "worker %s (CHURN_WORKER_ID) of consumer group %s, session timeout %d ms",
        settings.worker_name,
        settings.consumer_group,
        settings.session_timeout_ms,
    )
    settle_heap()
    worker.run()
    return _stopped(server, f"stopped: {scorer.totals}")


def _stopped(server: Any, said: str) -> int:
    """Stop the HTTP server, say why the scorer stopped; exit status 0."""
    if server is not None:
        server.shutdown()
    log.info("%s", said)
    return 0


__all__ = [
    "BatchReport",
    "ChurnScorer",
    "ModelSet",
    "ScorerMetrics",
    "ScoringWorker",
    "build_scorer",
    "cli",
    "load_models",
    "open_store",
    "restore_learner",
    "serve",
    "settle_heap",
]

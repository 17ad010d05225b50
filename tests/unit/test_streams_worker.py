"""The worker runtime's exactly-once bookkeeping, with the in-memory store and a recording consumer.

What crosses Kafka and Redis is tested in tests/integration (test_scorer, test_resume, test_poison); here
the protocol's order: a unit's fences are written with it, Kafka's offsets are committed one unit late,
a write requires this worker's claims and the fences it wrote last.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from churnstream.errors import FencedError, LayoutError, StoreError
from churnstream.events import OrderEvent
from churnstream.features.store import MemoryFeatureStore
from churnstream.settings import Settings
from churnstream.streams.ingest import Batch, Coordinates, InputReader
from churnstream.streams.worker import Worker

T0 = 1_700_000_000_000


class _Consumer:
    def __init__(self) -> None:
        self.commits: list[dict[tuple[str, int], int]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})


class _Reader:
    def __init__(self) -> None:
        self.consumer = _Consumer()


class _Applier:
    """A handler that applies each batch's events to the store, one unit per batch."""

    def __init__(self, worker: Worker[Any]) -> None:
        self.worker = worker
        self.revoked: list[list[int]] = []

    def process(self, batch: Batch) -> object:
        fresh = [(e, w) for e, w in batch.events if not self.worker.written(w.topic, w.partition, w.offset)]
        tx = self.worker.store.begin({e.customer_id: w.partition for e, w in fresh})
        for event, _ in fresh:
            tx.apply(event)
        if fresh:
            self.worker.emit("out", fresh[-1][0].customer_id, b"{}")  # dropped: the worker is quiet
        self.worker.write(tx, offsets=batch.offsets)
        return len(fresh)

    def on_assign(self, partitions: list[int]) -> None: ...
    def on_revoke(self, partitions: list[int]) -> None:
        self.revoked.append(partitions)

    def on_rewind(self) -> None: ...
    def after_rewind(self) -> None: ...
    def before_batch(self) -> None: ...
    def after_batch(self) -> None: ...
    def describe(self) -> dict[str, Any]:
        return {}


def _batch(first: int, n: int, partition: int = 0) -> Batch:
    batch = Batch()
    for offset in range(first, first + n):
        event = OrderEvent(f"e{offset}", f"C{offset % 3}", T0 + offset, f"o{offset}", 5.0)
        batch.events.append((event, Coordinates("orders", partition, offset)))
    batch.offsets[("orders", partition)] = first + n
    return batch


@pytest.fixture
def worker() -> Worker[_Applier]:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1)
    store = MemoryFeatureStore(lateness_ms=0)
    return Worker(settings=settings, store=store, reader=_Reader(), quiet=True, handler=_Applier)  # type: ignore[arg-type]


def test_a_unit_writes_its_fences_and_kafka_offsets_are_committed_one_unit_late(
    worker: Worker[_Applier],
) -> None:
    consumer = worker.reader.consumer
    worker.handler.process(_batch(0, 5))
    assert worker.store.fence("orders", 0) == 5
    assert consumer.commits == []  # not before the write is known durable, i.e. with the next unit
    worker.handler.process(_batch(5, 3))
    assert consumer.commits == [{("orders", 0): 5}]
    worker.commit_previous(wait=True)
    assert consumer.commits[-1] == {("orders", 0): 8}
    assert worker.written("orders", 0, 7) and not worker.written("orders", 0, 8)


def test_messages_below_the_fence_are_not_applied_again(worker: Worker[_Applier]) -> None:
    assert worker.handler.process(_batch(0, 5)) == 5
    assert worker.handler.process(_batch(3, 4)) == 2  # 3 and 4 were written with the first unit
    assert worker.store.fence("orders", 0) == 7


def test_a_write_needs_this_workers_claim(worker: Worker[_Applier]) -> None:
    worker._claims[0] = "me:1"
    worker.store.write_claims({0: "me:1"})
    worker.handler.process(_batch(0, 2))
    worker.store.write_claims({0: "other:2"})  # another worker took the partition over
    with pytest.raises(StoreError):
        worker.handler.process(_batch(2, 2))
        worker.store.flush()
    assert worker.store.fence("orders", 0) == 2


def test_a_write_needs_the_fence_this_worker_wrote_last(worker: Worker[_Applier]) -> None:
    worker.handler.process(_batch(0, 2))
    tx = worker.store.begin({})
    tx.set_fence("orders", 0, 9)  # someone else moved the fence (or Redis came back with other data)
    worker.store.commit(tx)
    with pytest.raises(StoreError):
        worker.handler.process(_batch(2, 2))
        worker.store.flush()
    assert worker.store.fence("orders", 0) == 9


# --- the loop: poison messages and retries, with a scripted partition ---------------------------------


class _Log:
    """One partition of ``orders`` as a list of events; the worker's consumer and reader over it."""

    def __init__(self, events: list[OrderEvent], stop: Any) -> None:
        self.events = events
        self.cursor = 0
        self.committed_at = 0
        self.stop = stop  # called once the reader is at the end and idle
        self.consumer = self
        self.held = 0.0  # seconds the worker waited in its group without reading

    # the reader
    def poll_batch(self, max_messages: int | None = None, timeout: float | None = None) -> Batch:
        n = max_messages or 4
        batch = Batch()
        for offset in range(self.cursor, min(self.cursor + n, len(self.events))):
            batch.events.append((self.events[offset], Coordinates("orders", 0, offset)))
        if batch.events:
            self.cursor += len(batch.events)
            batch.offsets[("orders", 0)] = self.cursor
        else:
            self.stop()
        return batch

    def close(self) -> None: ...

    def rewind(self) -> None:
        self.cursor = self.committed_at

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.cursor = offset

    def hold(self, timeout: float) -> bool:
        self.held += timeout
        time.sleep(timeout)  # a poll of paused partitions: nothing comes
        return False

    def release(self) -> None: ...

    # the consumer
    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.committed_at = max(tp.offset for tp in offsets)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("orders", 0)]

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition("orders", 0, self.committed_at)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return []


class _Failing(_Applier):
    """Raises on one customer's events (an unforeseen bug), and once on the first write (Redis away)."""

    def __init__(self, worker: Worker[Any]) -> None:
        super().__init__(worker)
        self.dead_lettered: list[int] = []
        self.store_failed = False

    def process(self, batch: Batch) -> object:
        written = self.worker.written
        if any(e.customer_id == "poison" and not written(w.topic, 0, w.offset) for e, w in batch.events):
            raise ValueError("cannot take this one")  # read again after its dead letter: skipped
        if not self.store_failed and batch.events:
            self.store_failed = True
            raise StoreError("Redis went away")
        self.dead_lettered += [d.offset for d in batch.dead_letters if d.offset is not None]
        return super().process(batch)


def test_the_loop_dead_letters_the_one_message_that_fails_alone_and_retries_what_redis_refused() -> None:
    store = MemoryFeatureStore(lateness_ms=0)
    events = [OrderEvent(f"e{n}", "poison" if n == 6 else f"C{n}", T0 + n, f"o{n}", 5.0) for n in range(11)]
    worker, log = _looping(events, _Failing, store, lambda w: w.stop())
    worker.run()
    assert worker.handler.dead_lettered == [6]
    assert store.fence("orders", 0) == 11 and log.committed_at == 11
    applied = set(store.customers())
    assert applied == {f"C{n}" for n in range(11) if n != 6}


def _looping(
    events: list[OrderEvent], handler: Any, store: MemoryFeatureStore, at_end: Any
) -> tuple[Worker[Any], _Log]:
    """A worker whose loop reads ``events`` as one partition (4 a batch), rewinding as the real reader
    does; ``at_end(worker)`` is called each time the reader is at the end and idle."""
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1, batch_size=4
    )
    log = _Log(events, stop=lambda: at_end(worker))
    worker: Worker[Any] = Worker(settings=settings, store=store, reader=log, quiet=True, handler=handler)  # type: ignore[arg-type]
    worker._rewind = _seek_back(worker, log)  # type: ignore[method-assign]
    return worker, log


def _seek_back(worker: Worker[Any], log: _Log) -> Any:
    """The worker's rewind, then the reader at the fence as the real reader's rewind puts it."""
    rewind = worker._rewind

    def rewind_and_seek() -> None:
        rewind()
        fence = worker.store.fence("orders", 0)
        log.cursor = 0 if fence is None else fence

    return rewind_and_seek


# --- what /ready and the lag say -----------------------------------------------------------------------


class _Probe:
    def problems(self) -> dict[str, str | None]:
        return {"kafka": None, "redis": None}  # both answer PING


class _Ahead:
    """A consumer whose position runs ahead of what was applied (the reader holds what it fetched)."""

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("orders", 0), TopicPartition("orders", 1)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition("orders", 0, 5000), TopicPartition("orders", 1, 2710)]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return {0: 0, 1: 100}[tp.partition], {0: 5000, 1: 2710}[tp.partition]


def test_a_worker_whose_every_write_fails_is_not_ready_and_counts_what_is_behind() -> None:
    """A Redis that answers PING but refuses writes (out of memory, read-only) kept /ready at 'ready', and
    the lag at 0: the reader had fetched everything, so the consumer's position was at the end."""
    from churnstream.streams.worker_status import READY_FAILING_SECONDS, WorkerStatus

    status = WorkerStatus(settings=Settings())
    status.measure_lag(_Ahead(), {("orders", 0): 2410})  # partition 1: nothing applied yet, all behind
    assert status.lag == 2590 + 2610
    error = StoreError("writing feature state to Redis failed: OOM command not allowed")
    status.failed(error)
    assert status.ready(_Probe(), [0])[0]  # a retry or two is no reason to take the worker out
    assert status.failing_since is not None
    status.failing_since -= READY_FAILING_SECONDS
    status.failed(error)  # the next attempt fails too: still failing since the first
    ok, body = status.ready(_Probe(), [0])  # type: ignore[arg-type]
    assert not ok and body["status"] == "not ready"
    assert body["reasons"] == [f"no batch written for 30 s: every attempt failed, the last with: {error}"]
    status.wrote()
    assert status.ready(_Probe(), [0])[0]  # type: ignore[arg-type]


def test_the_loop_is_failing_while_redis_refuses_and_not_once_a_write_is_durable() -> None:
    store = MemoryFeatureStore(lateness_ms=0)
    events = [OrderEvent(f"e{n}", f"C{n}", T0 + n, f"o{n}", 5.0) for n in range(8)]
    seen: list[bool] = []
    worker, _ = _looping(
        events, _Failing, store, lambda w: (seen.append(w.status.failing_since is None), w.stop())
    )
    worker.run()
    assert worker.handler.store_failed and store.fence("orders", 0) == 8
    assert seen == [True] and worker.status.last_failure is None


class _RefusingStore(MemoryFeatureStore):
    """Redis out of memory: every write is refused when flushed (as the Redis store reports it)."""

    def __init__(self) -> None:
        super().__init__(lateness_ms=0)
        self.refused = 0
        self.written = False

    def commit(self, tx: Any, *, after: Any = None) -> None:
        self.written = True  # not applied: refused at the flush

    def flush(self) -> None:
        if self.written:
            self.written = False
            self.refused += 1
            raise StoreError("writing feature state to Redis failed: OOM command not allowed")


def test_a_worker_whose_writes_are_all_refused_stays_failing_across_its_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each retry's batch is written asynchronously and fails at the next flush: the turns in between end
    without an exception, and must not count as progress, or /ready would never see 30 s of failing."""
    store = _RefusingStore()
    events = [OrderEvent(f"e{n}", f"C{n}", T0 + n, f"o{n}", 5.0) for n in range(8)]
    worker, _ = _looping(events, _Applier, store, lambda w: None)
    first: list[float | None] = []

    def hold(seconds: float) -> None:  # the retry's back-off, without the wait: stop after a few retries
        first.append(worker.status.failing_since)

    monkeypatch.setattr(worker, "_hold", hold)
    monkeypatch.setattr(worker._stop, "is_set", lambda: store.refused >= 4)
    worker.run()
    assert store.refused >= 4 and len(set(first)) == 1 and first[0] is not None  # failing since the first


def test_an_idle_worker_is_not_failing_once_a_passing_failure_is_over() -> None:
    """A sweep (or a poll) that fails once while no input comes: the idle turns after it write nothing,
    and before this they never cleared the failure: /ready said 503 until traffic came (review)."""
    idle_turns = []

    class _SweepFailsOnce(_Applier):
        failed = False

        def after_batch(self) -> None:
            if not self.failed:
                self.failed = True
                raise StoreError("Redis went away (once)")

    store = MemoryFeatureStore(lateness_ms=0)
    worker, _ = _looping(
        [], _SweepFailsOnce, store, lambda w: (idle_turns.append(1), len(idle_turns) >= 3 and w.stop())
    )
    worker.run()
    assert worker.handler.failed and worker.status.failing_since is None


# --- the counters: a unit counts once its write is in Redis ---------------------------------------------


class _DeferredStore(MemoryFeatureStore):
    """Writes land at the flush; ``fail`` makes the next flush lose them (a connection reset)."""

    def __init__(self) -> None:
        super().__init__(lateness_ms=0)
        self.pending: list[tuple[Any, Any, Any]] = []
        self.fail = False

    def _save(self, tx: Any, writes: Any, after: Any) -> None:
        self.pending.append((tx, writes, after))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.fail:
            self.fail = False
            raise StoreError("writing feature state to Redis failed: Connection reset by peer")
        for tx, writes, after in pending:
            MemoryFeatureStore._save(self, tx, writes, after)


class _Assigned(_Consumer):
    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("orders", 0)]

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]


class _Rewinding(_Reader):
    def __init__(self) -> None:
        self.consumer = _Assigned()

    def rewind(self) -> None: ...
    def seek(self, topic: str, partition: int, offset: int) -> None: ...


class _Counting(_Applier):
    def process(self, batch: Batch) -> object:
        fresh = [w for _, w in batch.events if not self.worker.written(w.topic, w.partition, w.offset)]
        self.worker.metrics.events.labels("orders").inc(len(fresh))
        return super().process(batch)


def test_a_unit_lost_in_a_rebalance_is_counted_once_when_processed_again() -> None:
    """Its flush failed in the revoke callback, which goes on: before, the unit stayed 'written' and the
    next flush counted it as durable, then its events counted again when processed again (13 for 8)."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1)
    store = _DeferredStore()
    worker = Worker(settings=settings, store=store, reader=_Rewinding(), quiet=True, handler=_Counting)  # type: ignore[arg-type]

    def counted() -> float | None:
        return worker.metrics.registry.get_sample_value("churn_events_total", {"topic": "orders"})

    worker.handler.process(_batch(0, 5))  # in flight
    store.fail = True  # Redis drops the connection while another partition is revoked
    worker._on_revoke(worker.reader.consumer, [TopicPartition("orders", 1)])  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        worker.handler.process(_batch(5, 3))  # refused: the fence is not where this worker left it
        store.flush()
    worker._rewind()
    worker.handler.process(_batch(0, 8))  # from the fence in Redis: all 8 again
    worker.commit_previous()
    assert store.fence("orders", 0) == 8 and counted() == 8


def test_the_fences_redis_holds_are_committed_to_kafka_after_an_assignment() -> None:
    """A commit lost as the worker was fenced out of its group (CI: a broker outage, then a rejoin) left
    the group's offsets behind what Redis had applied, until new events came: the rejoined worker sought
    to the fences and had nothing to commit (test_faults waited for the offsets 90 s in vain)."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1)
    store = _DeferredStore()
    worker = Worker(settings=settings, store=store, reader=_Rewinding(), quiet=True, handler=_Counting)  # type: ignore[arg-type]
    worker.handler.process(_batch(0, 8))
    store.flush()  # applied in Redis; then the commit of offset 8 is lost, as _on_revoke drops it when
    worker._uncommitted.clear()  # the commit fails (FENCED_INSTANCE_ID)
    consumer = worker.reader.consumer
    worker._on_assign(consumer, [TopicPartition("orders", 0)])  # type: ignore[arg-type]
    worker.commit_previous()
    assert consumer.commits == [{("orders", 0): 8}]


def test_each_failed_rewind_counts_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis down for a while: the batch failed once, then every rewind failed until Redis came back. Only
    the batch counted, so churn_retries_total stayed at 1 through a 90 s outage (an operator review) and
    an alert on its increase cleared while Redis was still down."""

    class _Down(MemoryFeatureStore):
        down = 3  # the next three rewinds fail (at their last step, writing the claims again)
        failing = False

        def write_claims(self, claims: Any) -> None:
            if self.down and self.failing:
                self.down -= 1
                raise StoreError("writing to Redis failed: Connection refused")
            super().write_claims(claims)

    class _FailsOnce(_Applier):
        def process(self, batch: Batch) -> object:
            if not store.failing and batch.events:
                store.failing = True
                raise StoreError("Redis went away")
            return super().process(batch)

    store = _Down(lateness_ms=0)
    events = [OrderEvent(f"e{n}", f"C{n}", T0 + n, f"o{n}", 5.0) for n in range(8)]
    worker, _ = _looping(events, _FailsOnce, store, lambda w: w.stop())
    monkeypatch.setattr(worker._stop, "wait", lambda seconds: worker._stop.is_set())
    worker.run()
    assert store.fence("orders", 0) == 8 and store.down == 0
    assert worker.metrics.registry.get_sample_value("churn_retries_total") == 1 + 3


class _StallingStore(MemoryFeatureStore):
    """Reading fences fails while ``stalled`` (a Redis stopped during a rebalance)."""

    def __init__(self, partitions: int | None = None) -> None:
        super().__init__(lateness_ms=0, partitions=partitions)
        self.stalled = False

    def fence(self, topic: str, partition: int) -> int | None:
        if self.stalled:
            raise StoreError("reading from Redis failed: Timeout reading from socket")
        return super().fence(topic, partition)


class _Recording(_Applier):
    def __init__(self, worker: Worker[Any]) -> None:
        super().__init__(worker)
        self.taken: list[list[int]] = []

    def on_assign(self, partitions: list[int]) -> None:
        self.taken.append(partitions)


def test_partitions_assigned_while_redis_stalls_are_taken_over_by_the_rewind() -> None:
    """An operator review: Redis stopped while the group rebalanced; the take-over failed, the consumer
    read the partitions all the same, and the worker never claimed them, restored their event time or
    swept them (/health: no partitions) until the next rebalance. The rewind after the failure takes
    over what the consumer has and the worker has not."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1)
    store = _StallingStore()
    worker = Worker(settings=settings, store=store, reader=_Rewinding(), quiet=True, handler=_Recording)  # type: ignore[arg-type]
    store.stalled = True
    with pytest.raises(StoreError):  # out of the consumer's poll: the loop rewinds
        worker._on_assign(worker.reader.consumer, [TopicPartition("orders", 0)])  # type: ignore[arg-type]
    assert worker.assigned == set() and worker.handler.taken == []
    worker._rewind()  # Redis still stalled: nothing taken over, retried
    assert worker.assigned == set() and not worker._rewound
    store.stalled = False
    worker._rewind()
    assert worker._rewound and worker.assigned == {0} and worker.handler.taken == [[0]]
    assert store.claim(0) is not None and store.claim(0) == worker._claims[0]
    worker.handler.process(_batch(0, 4))  # the claim holds: the write goes through
    store.flush()
    assert store.fence("orders", 0) == 4


def test_a_partition_beyond_the_count_redis_holds_stops_the_worker_before_it_writes() -> None:
    """Partitions added to the input topics while scorers ran: a review's workers read the new ones into
    empty state without a word (134 of 400 customers with wrong features, ids emitted twice with other
    content). The worker assigned one now stops (exit 2) and says what to do."""
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1)
    store = _StallingStore(partitions=2)
    worker = Worker(settings=settings, store=store, reader=_Rewinding(), quiet=True, handler=_Recording)  # type: ignore[arg-type]
    with pytest.raises(LayoutError, match=r"partition\(s\) \[3\] of \['orders'\].*churnstream rebuild"):
        worker._on_assign(
            worker.reader.consumer,  # type: ignore[arg-type]
            [TopicPartition("orders", 1), TopicPartition("orders", 3)],
        )
    assert worker.assigned == set() and store.claim(1) is None  # nothing claimed, nothing written


class _Librdkafka:
    """A consumer whose pauses live on the partition, not on the assignment (as librdkafka's do)."""

    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.paused: set[tuple[str, int]] = set()
        self.callbacks: dict[str, Any] = {}
        self.polls: list[Any] = []  # what each poll does, then what it hands out

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def assignment(self) -> list[TopicPartition]:
        return list(self.assigned)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)

    def poll(self, timeout: float) -> Any:
        return self.polls.pop(0)(self) if self.polls else None

    def rebalance(self, partitions: list[TopicPartition]) -> None:
        self.callbacks["on_revoke"](self, self.assigned)
        self.assigned = []
        self.callbacks["on_assign"](self, partitions)
        self.assigned = list(partitions)


def _orders(*numbers: int) -> list[TopicPartition]:
    return [TopicPartition("orders", p) for p in numbers]


def test_a_partition_that_moves_away_while_held_is_fetched_again_when_it_comes_back() -> None:
    """A diff review: librdkafka keeps a pause across a revoke and a later assign, so a partition paused
    by a hold and moved away in its poll stayed paused for good once the group handed it back."""
    consumer = _Librdkafka()
    reader = InputReader(
        settings=Settings(),
        consumer=consumer,
        on_assign=lambda c, p: c.assign(p),
        on_revoke=lambda c, p: None,
    )  # type: ignore[arg-type]
    consumer.assigned = _orders(0, 1)
    consumer.polls = [lambda c: c.rebalance(_orders(0))]  # another scorer joins while this one waits
    reader.hold(1.0)
    reader.release()
    consumer.rebalance(_orders(0, 1))  # it leaves again: partition 1 comes back
    assert consumer.paused == set()


class _Holding:
    """A reader whose polls, while the worker holds, do what ``polls`` say (a rebalance, an error)."""

    def __init__(self) -> None:
        self.consumer = _Assigned()
        self.polls: list[Any] = []

    def hold(self, timeout: float) -> bool:
        return bool(self.polls.pop(0)()) if self.polls else False

    def release(self) -> None: ...
    def rewind(self) -> None: ...
    def seek(self, topic: str, partition: int, offset: int) -> None: ...


def test_what_a_hold_s_polls_hand_out_or_fail_at_makes_the_worker_rewind_before_it_reads_on() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", kafka_properties={"log_level": "0"}, metrics_port=-1)
    reader = _Holding()
    worker = Worker(
        settings=settings,
        store=MemoryFeatureStore(lateness_ms=0),
        reader=reader,
        quiet=True,
        handler=_Applier,
    )  # type: ignore[arg-type]

    def take_over_fails() -> None:  # the broker times out the take-over's committed offsets
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "committed timed out"))

    for poll in (lambda: True, take_over_fails):  # a message handed out (dropped), a take-over failed
        worker._rewound = True
        reader.polls = [poll]
        worker._hold(0.01)
        assert not worker._rewound


def test_a_fence_found_while_backing_off_after_a_failed_batch_rejoins_the_group() -> None:
    """A diff review: the back-off after a failed batch held inside the except clause, so a FencedError
    from its poll (a static member fenced after a broker outage) escaped run() instead of rejoining."""
    store = MemoryFeatureStore(lateness_ms=0)
    events = [OrderEvent(f"e{n}", f"C{n}", T0 + n, f"o{n}", 5.0) for n in range(8)]
    worker, log = _looping(events, _Failing, store, lambda w: w.stop())
    holds: list[float] = []

    def hold(timeout: float) -> bool:
        holds.append(timeout)
        if len(holds) == 1:
            raise FencedError("fenced out of the consumer group")
        return False

    log.hold = hold  # type: ignore[method-assign]
    rejoined: list[Exception] = []
    worker._rejoin = rejoined.append  # type: ignore[method-assign]
    worker.run()
    assert len(rejoined) == 1 and store.fence("orders", 0) == 8

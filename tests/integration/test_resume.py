"""Resuming within seconds: the scoring worker (``churnstream score``) is a static member of its consumer
group (``CHURN_WORKER_ID``, docs/operations.md), so a supervisor that restarts it at once loses seconds,
not the 45 s a dead member's session used to hold its partitions.

- killed (SIGKILL) or stopped (SIGTERM) and started again under the same id, the worker scores the next
  event within 10 s of the restart;
- in a group of two, a worker that joins gets its share within 10 s, and the partitions of one that
  leaves for good (SIGTERM, no restart) are scored by the other within 20 s;
- a second process under the same id fences the first, which exits (code 2) naming CHURN_WORKER_ID
  instead of idling.

Each test prints its measured figures (a line starting ``resume |``) before it asserts them. The bounds
are functional (what an operator would notice), far above what a quiet machine needs.
"""

from __future__ import annotations

import dataclasses
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka import KafkaException, TopicPartition

from churnstream.events import now_ms
from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import end_offsets, make_consumer
from churnstream.streams.processes import WorkerProcess
from churnstream.streams.topics import make_admin
from tests.integration.conftest import produce_raw, simulate_world, start_worker, stop_worker, wait_until

PARTITIONS = 2
RESUME_BOUND_S = 10.0  # restart -> the next event's prediction (SIGKILL or SIGTERM, same CHURN_WORKER_ID)
JOIN_BOUND_S = 10.0  # a second worker starts -> it owns its share of the partitions
LEAVE_BOUND_S = 20.0  # a worker stops for good -> an event on each of its partitions is scored


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch model to score with (a small simulated business: the events are the test's own)."""
    root = tmp_path_factory.mktemp("resume-world")
    return simulate_world(root, customers=60, days=200, train_days=180, seed=5)


@pytest.fixture
def settings(settings: Settings, world: Path) -> Settings:
    """The conftest's per-test settings (also used by its ``topics`` and ``redis_client``), for workers."""
    return dataclasses.replace(
        settings, topic_partitions=PARTITIONS, model_dir=world / "models", metrics_port=-1
    )


class Predictions:
    """``churn_predictions`` from its end as of now: when each event's prediction arrived (monotonic)."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.topics.churn_predictions
        self.consumer = make_consumer(settings, f"test-resume-{uuid.uuid4().hex[:10]}", fetch_wait_max_ms=10)
        marks = end_offsets(self.consumer, topic)
        self.consumer.assign([TopicPartition(topic, p, high) for p, (_low, high) in marks.items()])
        self.arrived: dict[str, float] = {}

    def wait_for(self, event_ids: list[str], timeout: float, what: str) -> float:
        """The arrival of the last of ``event_ids``' predictions; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not all(e in self.arrived for e in event_ids):
            if time.monotonic() > deadline:
                missing = [e for e in event_ids if e not in self.arrived]
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}: {missing}")
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error() is not None:
                continue
            prediction = orjson.loads(msg.value() or b"{}")
            if prediction.get("trigger") == "event":
                self.arrived.setdefault(prediction["event_id"], time.monotonic())
        return max(self.arrived[e] for e in event_ids)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def predictions(settings: Settings, topics: Topics) -> Iterator[Predictions]:
    watcher = Predictions(settings)
    yield watcher
    watcher.close()


def produce_orders(settings: Settings, customers: list[str]) -> list[tuple[str, int]]:
    """One order per customer, stamped now; returns ``(event_id, partition)`` per order."""
    ids = [f"resume-{uuid.uuid4().hex[:12]}" for _ in customers]
    records = [
        (
            customer.encode(),
            orjson.dumps(
                {
                    "event_id": event_id,
                    "customer_id": customer,
                    "order_id": f"o-{event_id}",
                    "timestamp": now_ms(),
                    "amount": 42.0,
                }
            ),
        )
        for event_id, customer in zip(ids, customers, strict=True)
    ]
    where = produce_raw(settings, settings.topics.orders, records)
    return [(event_id, partition) for event_id, (partition, _offset) in zip(ids, where, strict=True)]


class Group:
    """The scorers' consumer group as the broker sees it (through the admin API)."""

    def __init__(self, settings: Settings) -> None:
        self.name = settings.consumer_group
        self.admin = make_admin(settings)

    def owned(self, worker_id: str) -> set[tuple[str, int]]:
        """The partitions of the member ``worker_id`` (``CHURN_WORKER_ID``); empty when it has none."""
        try:
            description = self.admin.describe_consumer_groups([self.name], request_timeout=5)[
                self.name
            ].result()
        except KafkaException:  # not created yet, or its coordinator is still loading
            return set()
        instance = f"{self.name}-{worker_id}"
        return {
            (tp.topic, tp.partition)
            for m in description.members
            if m.group_instance_id == instance
            for tp in m.assignment.topic_partitions
        }


def every_input_partition(settings: Settings) -> set[tuple[str, int]]:
    return {(topic, p) for topic in settings.topics.inputs for p in range(PARTITIONS)}


def log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


def stop_quietly(worker: WorkerProcess) -> None:
    """For ``finally`` blocks: end a worker however it is doing, without asserting anything."""
    worker.stop(60)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_worker_restarted_at_once_scores_the_next_event_within_seconds(
    settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    predictions: Predictions,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    log_path = tmp_path / "worker.log"
    same = {"CHURN_WORKER_ID": "resume-1"}
    started = time.monotonic()
    worker = start_worker(settings, log_path, **same)
    try:
        [(first, _)] = produce_orders(settings, ["c-before"])
        cold = predictions.wait_for([first], 120, "the first event's prediction") - started

        worker.send_signal(stop)
        code = worker.wait(60)
        assert code == (0 if stop == signal.SIGTERM else -signal.SIGKILL), log_tail(log_path)
        restarted = time.monotonic()
        worker = start_worker(settings, log_path, **same)
        [(second, _)] = produce_orders(settings, ["c-after"])
        resumed = predictions.wait_for([second], 60, "the prediction after the restart") - restarted
        assert worker.poll() is None, log_tail(log_path)
    finally:
        stop_quietly(worker)
    print(
        f"\nresume | {stop.name} then an immediate restart under the same CHURN_WORKER_ID | next event "
        f"scored {resumed:.1f} s after the restart | a cold start took {cold:.1f} s to its first prediction"
    )
    assert resumed <= RESUME_BOUND_S, f"{resumed:.1f} s from the restart to the next prediction"


def test_a_group_of_two_shares_within_seconds_of_a_join_and_takes_over_a_worker_gone_for_good(
    settings: Settings, topics: Topics, redis_client: redis.Redis, predictions: Predictions, tmp_path: Path
) -> None:
    everything = every_input_partition(settings)
    group = Group(settings)
    a_log, b_log = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    a = start_worker(settings, a_log, CHURN_WORKER_ID="resume-a")
    b: WorkerProcess | None = None
    customers = [f"c-{i}" for i in range(8)]  # their keys hash to both partitions (asserted below)
    try:
        wait_until(
            lambda: a.poll() is not None or group.owned("resume-a") == everything,
            120,
            "worker a to own every input partition",
        )
        assert a.poll() is None, log_tail(a_log)

        joined = time.monotonic()
        b = start_worker(settings, b_log, CHURN_WORKER_ID="resume-b")
        wait_until(
            lambda: b.poll() is not None or " assigned [" in log_tail(b_log),
            60,
            "worker b to log its share of the partitions",
        )
        share = time.monotonic() - joined
        assert b.poll() is None, log_tail(b_log)
        mine, theirs = group.owned("resume-a"), group.owned("resume-b")
        assert mine and theirs and mine | theirs == everything, (mine, theirs)
        orders = produce_orders(settings, customers)
        assert {p for _, p in orders} == set(range(PARTITIONS)), "the keys should cover every partition"
        predictions.wait_for([e for e, _ in orders], 60, "both workers to score their partitions")

        # b stops for good: a static member leaves no word, so its partitions wait for its session to end
        left = time.monotonic()
        stop_worker(b, b_log)
        orders = produce_orders(settings, customers)
        taken_over = predictions.wait_for([e for e, _ in orders], 60, "worker a to score every partition")
        assert a.poll() is None, log_tail(a_log)
        assert group.owned("resume-a") == everything
    finally:
        stop_quietly(a)
        if b is not None:
            stop_quietly(b)
    moved = taken_over - left
    print(
        f"\nresume | group of two | a worker that joins logged its share {share:.1f} s after it was "
        f"started | after SIGTERM to the other for good, an event on each partition was scored {moved:.1f} s "
        "later"
    )
    assert share <= JOIN_BOUND_S, f"{share:.1f} s for a joining worker to get its share"
    assert moved <= LEAVE_BOUND_S, f"{moved:.1f} s for the partitions of a stopped worker to be scored again"


def test_a_second_process_under_the_same_worker_id_stops_the_first_with_a_clear_error(
    settings: Settings, topics: Topics, redis_client: redis.Redis, predictions: Predictions, tmp_path: Path
) -> None:
    """Workers of one group that share an id fence each other (Kafka's FENCED_INSTANCE_ID): the older
    one exits naming CHURN_WORKER_ID rather than sit in the group doing nothing."""
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    everything = every_input_partition(settings)
    group = Group(settings)
    same = {"CHURN_WORKER_ID": "twin"}
    first = start_worker(settings, first_log, **same)
    second: WorkerProcess | None = None
    try:
        wait_until(
            lambda: first.poll() is not None or group.owned("twin") == everything,
            120,
            "the first worker to own every input partition",
        )
        second = start_worker(settings, second_log, **same)
        code = first.wait(60)
        assert code == 2, (
            f"the fenced worker should exit 2 (a setting to fix), got {code}: {log_tail(first_log)}"
        )
        error = log_tail(first_log)
        assert "CHURN_WORKER_ID='twin'" in error and "fenced" in error, error
        [(event, _)] = produce_orders(settings, ["c-twin"])
        predictions.wait_for([event], 60, "the second worker to score")
        assert second.poll() is None, log_tail(second_log)
    finally:
        stop_quietly(first)
        if second is not None:
            stop_quietly(second)

"""Faults while the scoring worker runs: the Kafka broker restarts (also after an outage longer than the
producer's delivery timeout), Redis restarts (append-only file on).

Each test runs the real worker (``churnstream score`` in a subprocess) against a node of its own — a
second broker or a second Redis on a free port with its own data directory, so the shared services are
never touched — and feeds it a simulated business as a live stream (all topics interleaved in event
time). While the worker is in the middle of the stream the node is stopped and started again on the same
data directory; then the rest of the stream is published and the worker must catch up by itself, without
a restart. Afterwards the promises of the kill -9 test hold: every valid event has exactly one answer
(re-emitted only unchanged), the features in Redis equal the offline builder's, and the online model
learned from each label once. Each test prints one line for the fault table (faults injected, events
in, events accounted for, mismatches) before it asserts.

Redis losing data is never silent. Redis is the truth of what was applied: the worker starts (and
rewinds) at the applied-offset fences in Redis, not at Kafka's committed offsets, and every write
requires Redis to still hold the claims and fences this worker wrote last. A Redis that comes back
behind what it acknowledged (a failover to a lagging replica, an ``appendfsync everysec`` crash) makes
the next write fail, and the worker replays from Redis's fences; a Redis that lost everything while
Kafka says the partitions were processed makes the worker stop with a message naming
``churnstream rebuild``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from churnstream import local_infra as infra
from churnstream.features.offline import read_events
from churnstream.settings import Settings, Topics
from churnstream.streams.topics import create_topics
from tests.integration.conftest import (
    account_for_events,
    committed_everything,
    committed_total,
    compare_state,
    event_time_records,
    free_port,
    http_json,
    produce_records,
    simulate_world,
    start_worker,
    stop_worker,
    wait_until,
)

# About 1,400 events on two partitions per topic, in micro-batches of ten: the worker needs ~6 s for
# the stream on two busy cores, so a fault lands while it has work in hand, and a test stays under a
# minute. (On six partitions this sparse a world spends most of its time in the event-time merge's
# waits for idle partitions.)
CUSTOMERS, DAYS, TRAIN_DAYS = 100, 240, 180
PARTITIONS = 2
BATCH_SIZE = "10"
PUBLISHED_FIRST = 0.6  # of the stream, before the faults; the rest after them


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated business and a batch model trained on its first 180 days."""
    root = tmp_path_factory.mktemp("faults-world")
    return simulate_world(root, customers=CUSTOMERS, days=DAYS, train_days=TRAIN_DAYS, seed=21)


@pytest.fixture
def settings(settings: Settings, world: Path) -> Settings:
    """The conftest's per-test settings (also used by its ``topics`` and ``redis_client``), for a worker."""
    return dataclasses.replace(
        settings, topic_partitions=PARTITIONS, model_dir=world / "models", metrics_port=-1
    )


@pytest.fixture
def kafka_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[infra.KafkaNode]:
    """A broker of this test's own (stopped at the end whatever happened)."""
    # A small broker's JVM starts a few seconds sooner without the optimising compiler.
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
    node = infra.KafkaNode(
        data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port(), heap="256m"
    )
    infra.start_kafka(node, timeout=120)
    try:
        yield node
    finally:
        infra.stop_kafka(node)


@pytest.fixture
def redis_node(tmp_path: Path) -> Iterator[infra.RedisNode]:
    """A Redis of this test's own, append-only persistence on (stopped at the end whatever happened)."""
    node = infra.RedisNode(data_dir=tmp_path / "redis", port=free_port())
    infra.start_redis(node)
    try:
        client = redis.Redis(host=node.host, port=node.port)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
        yield node
    finally:
        infra.stop_redis(node)


def log_tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


def run_through_faults(
    settings: Settings,
    world: Path,
    log_path: Path,
    fault: Callable[[], None],
    at: tuple[float, ...],
    name: str,
    replayed_long: bool = False,
    between: int = 0,
    counted_once: bool = False,
    most_reemitted: int | None = None,
    most_retries: int | None = None,
    **worker_env: str,
) -> None:
    """Stream the world through a worker, call ``fault`` once the worker has committed each fraction
    ``at`` of the stream (``between``: publishing that many more records after each fault but the last,
    so the worker has new writes to make before the next), publish the rest, wait until it has committed
    everything, then check. ``counted_once``: the worker's Prometheus counters count each event and
    prediction once, however often a batch was retried (a fault that loses no acknowledged write).
    ``most_reemitted``: at most this many event predictions emitted again, however long the fault;
    ``most_retries``: at most this many batches computed and then refused."""
    if counted_once:
        metrics_port = int(worker_env.setdefault("CHURN_METRICS_PORT", str(free_port())))
    events_dir = world / "events"
    events = read_events(events_dir).events
    records = event_time_records(settings, events_dir)
    total = len(records)
    first = int(total * PUBLISHED_FIRST)
    assert all(f * total < first for f in at)
    group = settings.consumer_group
    produce_records(settings, records[:first])
    worker = start_worker(settings, log_path, CHURN_BATCH_SIZE=BATCH_SIZE, **worker_env)

    def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait_until(lambda: worker.poll() is not None or condition(), timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the worker's log ends:\n{log_tail(log_path)}") from None
        assert worker.poll() is None, f"the worker exited waiting for {what}:\n{log_tail(log_path)}"

    positions = []
    published = first
    try:
        for i, fraction in enumerate(at):
            wait_for(
                lambda f=fraction: committed_total(settings, group) >= f * total,
                120,
                f"the worker to commit {fraction:.0%} of the stream",
            )
            positions.append(committed_total(settings, group))
            fault()
            assert worker.poll() is None, f"the worker exited during the fault:\n{log_tail(log_path)}"
            if between and i < len(at) - 1:
                produce_records(settings, records[published : published + between], as_they_happen=True)
                published += between
        produce_records(settings, records[published:], as_they_happen=True)  # read while it is produced
        wait_for(lambda: committed_everything(settings, group), 90, "the worker to catch up after the faults")
        if counted_once:  # durable units are counted before their offsets are committed
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
                counted = _samples(answer.read().decode())
    finally:
        stop_worker(worker, log_path)

    accounting = account_for_events(settings, events)
    state = compare_state(settings, events)
    monitored = _monitored_once(settings)
    rescored = _rescored_as_streamed(settings)
    retries = log_path.read_text(errors="replace").count("batch failed, rewinding")
    print(
        f"\nfault table | {name} | faults {len(at)}, worker had committed {positions} of {first} published | "
        f"events in {accounting.events} | accounted for {accounting.accounted} "
        f"(scored {accounting.scored}, dead-lettered {accounting.dead_lettered}, "
        f"{accounting.deliveries - accounting.scored} re-emitted, "
        f"{len(accounting.changed)} answers changed; "
        f"{accounting.sweeps} sweeps, {accounting.alerts} alerts) | "
        f"mismatches {len(state.mismatches)} of {state.customers} customers, online model learned "
        f"{state.learned} of {state.labels} labels | worker retries {retries} | monitor rows {monitored[0]} "
        f"delivered, {monitored[1]} distinct, {monitored[2]} kept, {monitored[3]} predictions | API "
        f"re-scored {rescored[0]} as the stream scored them, {len(rescored[1])} not"
    )
    problems = accounting.problems() + state.problems()
    if rescored[1] and not replayed_long:  # a replay far behind may have learned otherwise (see LEARNED)
        problems.append(f"the API re-scored {len(rescored[1])} predictions otherwise, e.g. {rescored[1][:3]}")
    if monitored[2] != monitored[1]:  # a drift window leaves out exactly the rows delivered again
        problems.append(f"the drift monitor kept {monitored[2]} rows of {monitored[1]} distinct on the topic")
    if monitored[2] != monitored[3]:  # ... and so counts each prediction once, however delivered
        problems.append(f"the drift monitor kept {monitored[2]} rows of {monitored[3]} predictions")
    if counted_once:
        events_counted = sum(v for (name, _), v in counted.items() if name == "churn_events_total")
        event_predictions = counted.get(("churn_predictions_total", (("trigger", "event"),)), 0.0)
        # Never counted twice. A Redis stopped mid-pipeline, or out of memory, can apply one partition's
        # write of a unit and refuse another's; that unit then counts short (documented in
        # streams/scorer_metrics.py): at most a batch of events a retry, and only where Redis refused.
        # (Out of memory counted 1,549 of 1,551 with one retry in 1 of 2 runs of session 27.)
        refused = "Redis restart" in name or "out of memory" in name
        short = int(BATCH_SIZE) * retries if refused else 0
        pairs = zip((events_counted, event_predictions), (accounting.events, accounting.scored), strict=True)
        if not all(t - short <= c <= t for c, t in pairs):
            problems.append(
                f"/metrics counted {events_counted:g} events and {event_predictions:g} event predictions "
                f"for {accounting.events} events and {accounting.scored} predictions "
                f"({accounting.deliveries} delivered, {retries} retries)"
            )
    if replayed_long:  # see LEARNED: answers replayed far behind may differ in the online model's part alone
        problems = [p for p in problems if "re-emitted with a different answer" not in p]
        if accounting.changed_beyond_learning:
            changed = accounting.changed_beyond_learning
            problems.append(f"{len(changed)} answers changed beyond learning, e.g. {changed[:3]}")
        # Which customers a sweep tick finds silent can differ by one or two when a customer's event on a
        # partition running ahead is applied before the tick in one pass and after it in the other (the
        # event-time merge's order across partitions is not fixed); a sweep labelled in the first pass is
        # then not made, so not learned, in the replay. Seen in about 1 run in 5 here (1 to 3 labels of
        # about 1,800; known since session 4 at 4 runs in 100 for short replays), so up to a quarter of a
        # percent of the labels is excused; a label learned twice (learned > labels) never is.
        if 0 < state.labels - state.learned <= max(2, state.labels // 400):
            problems = [p for p in problems if "the online model learned from" not in p]
    if most_retries is not None and retries > most_retries:
        problems.append(f"{retries} batches computed and refused, more than {most_retries}")
    if most_reemitted is not None and accounting.deliveries - accounting.scored > most_reemitted:
        problems.append(
            f"{accounting.deliveries - accounting.scored} event predictions emitted again, more than "
            f"{most_reemitted} ({retries} retries)"
        )
    if accounting.dead_lettered:
        problems.append(f"{accounting.dead_lettered} valid events of an in-order stream were dead-lettered")
    assert not problems, "\n".join(problems)


def _rescored_as_streamed(settings: Settings, most: int = 300) -> tuple[int, list[Any]]:
    """The HTTP API's answers as of the times of the stream's latest predictions (up to ``most``): how many
    gave the stream's probabilities, and those that did not. Faults rewind and restart the worker mid-tick
    (batches of ten: a tick is swept in several chunks), and the learner history must still say which
    learner scored what."""
    import orjson

    from churnstream.events import parse_time
    from churnstream.streams.api import build_service
    from churnstream.streams.api_service import AsOfError
    from tests.integration.conftest import consume_all

    latest: dict[str, dict[str, Any]] = {}
    for m in consume_all(settings, settings.topics.churn_predictions):
        p = orjson.loads(m.value() or b"")
        latest[p["prediction_id"]] = p
    names = ("batch_probability", "online_probability", "churn_probability")
    service = build_service(settings)
    same, other = 0, []
    try:
        for p in sorted(latest.values(), key=lambda p: p["prediction_id"])[:most]:
            try:
                got = service.score(p["customer_id"], parse_time(p["as_of"]), reasons=False)
            except AsOfError:  # folded out of the customer's history
                continue
            answer = got.prediction.to_json()
            if answer["features"] != p["features"]:  # several events of one millisecond
                continue
            if all(answer[n] == p[n] for n in names):
                same += 1
            else:
                other.append((p["trigger"], p["as_of"], [(p[n], answer[n]) for n in names]))
    finally:
        service.store.close()
    return same, other


def _monitored_once(settings: Settings) -> tuple[int, int, int, int]:
    """The monitoring records on Kafka through a drift window: rows delivered, distinct (prediction id,
    customer) among them, rows the window kept, and distinct predictions on churn_predictions (a unit the
    worker answered again after a fault comes with the same prediction ids). A prediction may be
    re-emitted without its row: a record the producer gave up on in an outage is not on the topic, and
    the retry delivers it once."""
    import orjson

    from churnstream.messages import MonitoringBatch
    from churnstream.monitoring.window import DriftWindow
    from tests.integration.conftest import consume_all

    records = consume_all(settings, settings.topics.monitoring_batches)
    batches = [MonitoringBatch.from_json(orjson.loads(m.value() or b"")) for m in records]
    window = DriftWindow(max_rows=10**9, max_span_ms=10**15)
    for batch in batches:
        window.add(batch)
    predictions = {
        (p["prediction_id"], p["customer_id"])
        for p in (
            orjson.loads(m.value() or b"") for m in consume_all(settings, settings.topics.churn_predictions)
        )
    }
    rows = [
        (pid, cid)
        for b in batches
        for pid, cid in zip(
            b.predictions.get("prediction_id", []), b.predictions.get("customer_id", []), strict=True
        )
    ]
    return len(rows), len(set(rows)), window.rows, len(predictions)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text: (name, sorted labels) -> value, as prometheus_client's parser reads it."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_kafka_broker_restarting_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings, redis_client: redis.Redis, kafka_node: infra.KafkaNode, tmp_path: Path, world: Path
) -> None:
    own = dataclasses.replace(settings, kafka_bootstrap=kafka_node.address)
    create_topics(own)

    def restart_broker() -> None:
        assert infra.stop_kafka(kafka_node), "the test's broker was not running"
        assert not infra.port_open(kafka_node.host, kafka_node.port)
        assert infra.start_kafka(kafka_node, timeout=120).started_now

    run_through_faults(
        own, world, tmp_path / "worker.log", restart_broker, (0.1,), "Kafka broker restart", counted_once=True
    )


def test_a_broker_outage_longer_than_the_delivery_timeout_loses_nothing_and_counts_nothing_twice(
    settings: Settings, redis_client: redis.Redis, kafka_node: infra.KafkaNode, tmp_path: Path, world: Path
) -> None:
    """The broker stays down until the worker's outputs fail to be delivered (a delivery timeout of 3 s
    stands in for the default 5 minutes), so the worker rewinds while the broker is still down."""
    own = dataclasses.replace(settings, kafka_bootstrap=kafka_node.address)
    create_topics(own)
    log_path = tmp_path / "worker.log"

    def outage() -> None:
        assert infra.stop_kafka(kafka_node), "the test's broker was not running"
        wait_until(
            lambda: "not delivered" in log_tail(log_path), 60, "the worker to report undelivered outputs"
        )
        assert infra.start_kafka(kafka_node, timeout=120).started_now

    run_through_faults(
        own,
        world,
        log_path,
        outage,
        (0.1,),
        "Kafka outage > delivery timeout",
        CHURN_KAFKA_MESSAGE_TIMEOUT_MS="3000",
    )


def test_redis_restarting_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings, topics: Topics, redis_node: infra.RedisNode, tmp_path: Path, world: Path
) -> None:
    """Until 2026-11-24 this failed about once in 31 runs: one label on ``churn_outcomes`` was never
    learned. When write N failed, batch N+1's outputs had often been produced already, so an outcome
    could leave for a prediction the replay then labelled differently. A batch's outputs now leave only
    once every earlier batch's state is written (``ChurnScorer._produce``); 100 runs in a row passed."""
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    own = dataclasses.replace(settings, redis_url=url)

    def restart_redis() -> None:
        assert infra.stop_redis(redis_node), "the test's Redis was not running"
        assert not infra.port_open(redis_node.host, redis_node.port)
        assert infra.start_redis(redis_node, url=url).started_now

    run_through_faults(
        own,
        world,
        tmp_path / "worker.log",
        restart_redis,
        (0.1, 0.25, 0.4),
        "Redis restart (AOF)",
        counted_once=True,
    )


def test_redis_killed_with_sigkill_mid_stream_loses_nothing_and_counts_nothing_twice(
    settings: Settings, topics: Topics, redis_node: infra.RedisNode, tmp_path: Path, world: Path
) -> None:
    """SIGKILL, with ``appendfsync everysec`` (Redis's default): the last second of acknowledged writes
    may be gone when it comes back, and the worker must notice and replay it."""
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    own = dataclasses.replace(settings, redis_url=url)
    client = redis.Redis.from_url(url)
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    client.close()

    def kill_redis() -> None:
        pid = int(redis_node.pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not infra.port_open(redis_node.host, redis_node.port), 10, "Redis to die")
        assert infra.start_redis(redis_node, url=url).started_now

    run_through_faults(own, world, tmp_path / "worker.log", kill_redis, (0.1, 0.3), "Redis SIGKILL (AOF)")


def test_a_redis_out_of_memory_turns_ready_to_503_and_once_it_has_room_nothing_is_lost(
    settings: Settings, topics: Topics, redis_node: infra.RedisNode, tmp_path: Path, world: Path
) -> None:
    """A Redis that answers PING but refuses every write (``maxmemory`` reached under ``noeviction``: the
    same for ``READONLY`` after a failover or ``MISCONF``): the worker retries, ``/ready`` says 503 with
    the refusal once no batch was written for 30 s, and once Redis has room again the worker catches up
    with nothing lost, nothing counted twice, and is ready again. Meanwhile it does not compute the
    refused batches again: before, each retry produced their outputs again (one prediction 12 times in
    two minutes), and the monitor counted every copy; now at most the units in flight when Redis began
    to refuse are emitted twice, however long it refuses."""
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    own = dataclasses.replace(settings, redis_url=url)
    port = free_port()
    seen: dict[str, object] = {}

    def ready() -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def out_of_memory() -> None:
        client = redis.Redis.from_url(url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # below what it uses: every write refused, reads answered
        try:
            assert ready()[0] == 200  # failing for a moment is no reason to leave the load balancer
            wait_until(lambda: ready()[0] == 503, 90, "/ready to say not ready while Redis refuses writes")
            seen["not ready"] = ready()[1]
        finally:
            client.config_set("maxmemory", "0")
            client.close()
        wait_until(lambda: ready()[0] == 200, 90, "/ready to recover once Redis has room")  # a retry's wait

    run_through_faults(
        own,
        world,
        tmp_path / "worker.log",
        out_of_memory,
        (0.1,),
        "Redis out of memory",
        counted_once=True,
        most_reemitted=2 * int(BATCH_SIZE),  # the unit refused (its answers again once it is written)
        most_retries=2,  # then the worker waits for Redis to take a write (before: one per backoff step)
        CHURN_METRICS_PORT=str(port),
        # Redis refuses for longer than this: the worker waits in its group, polling its paused partitions
        # (before, it left the group: an operator review, _MAX_POLL_EXCEEDED, then rebalances)
        CHURN_SESSION_TIMEOUT_MS="6000",
        CHURN_KAFKA_MAX_POLL_INTERVAL_MS="8000",
    )
    reasons = seen["not ready"]["reasons"]  # type: ignore[index]
    assert any("no batch written for" in r and "maxmemory" in r for r in reasons), reasons
    log = tmp_path / "worker.log"
    said = log.read_text(errors="replace")
    assert "MAX_POLL_EXCEEDED" not in said and said.count("assigned [") == 1, log_tail(log)


def _snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key of ``client``'s Redis, consistent as a replica's: no write runs while it is taken."""
    client.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
    try:
        return {key: client.dump(key) for key in client.scan_iter(count=1000)}
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


def _go_back(client: redis.Redis, copy: dict[bytes, bytes]) -> None:
    """Replace everything in ``client``'s Redis with ``copy`` (a failover to a replica that lags)."""
    pipe = client.pipeline(transaction=True)
    pipe.flushall()
    for key, value in copy.items():
        pipe.restore(key, 0, value)
    pipe.execute()


def test_a_redis_that_comes_back_behind_loses_nothing_and_counts_nothing_twice(
    settings: Settings,
    topics: Topics,
    redis_node: infra.RedisNode,
    tmp_path: Path,
    world: Path,
) -> None:
    """A failover to a replica that lags by a fifth of the stream: at 15% every key is copied, at 35%
    Redis is replaced by that copy while the worker runs on. Nothing is lost or counted twice; answers
    replayed over that long a span may differ in what the online model contributes (allowed here; since
    learners learn at sweep ticks they are not expected to), never in features or the batch model's
    probability."""
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    own = dataclasses.replace(settings, redis_url=url)
    client = redis.Redis.from_url(url)
    copy: dict[bytes, bytes] = {}
    went_back: list[bool] = []

    def lag() -> None:
        if not copy:
            copy.update(_snapshot(client))
            assert copy, "nothing in Redis yet"
            return
        # the worker writes Redis before it commits offsets, and may have written all it was given before
        # the copy was taken; events published since give it more: wait until Redis holds writes the copy
        # lacks, so going back to the copy really takes them away
        deadline = time.monotonic() + 60
        while _snapshot(client) == copy:
            assert time.monotonic() < deadline, "Redis never moved past the copy"
            time.sleep(0.2)
        went_back.append(True)
        _go_back(client, copy)

    try:
        run_through_faults(
            own,
            world,
            tmp_path / "worker.log",
            lag,
            (0.15, 0.35),
            "Redis back behind",
            replayed_long=True,
            between=200,  # the worker runs ahead of its commits: new events give it writes the copy lacks
        )
    finally:
        client.close()
    print(f"fault table | Redis back behind | Redis went back: {went_back}")
    assert went_back == [True]  # it held writes the copy lacks: the worker must have found them gone
    assert "Redis no longer holds what this worker expects" in (tmp_path / "worker.log").read_text()


def test_a_redis_that_comes_back_behind_while_the_stream_is_quiet_is_caught_up_without_new_events(
    settings: Settings,
    topics: Topics,
    redis_node: infra.RedisNode,
    tmp_path: Path,
    world: Path,
) -> None:
    """A review restored an older snapshot into Redis while no events came: the workers said ready, lag
    0, and Redis (so the API) lacked the last chunk's events until the next event arrived. An idle worker
    now checks Redis's fences every few seconds, goes back to them, and applies the lost events again."""
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    own = dataclasses.replace(settings, redis_url=url)
    client = redis.Redis.from_url(url)
    events_dir = world / "events"
    events = read_events(events_dir).events
    records = event_time_records(own, events_dir)
    half = len(records) // 2
    log_path = tmp_path / "worker.log"
    group = own.consumer_group
    produce_records(own, records[:half])
    worker = start_worker(own, log_path, CHURN_BATCH_SIZE=BATCH_SIZE)
    try:
        wait_until(lambda: committed_everything(own, group), 120, "the first half to be applied")
        copy = _snapshot(client)
        # read while it is produced: as it happens, or the answers depend on which topic's burst came first
        produce_records(own, records[half:], as_they_happen=True)
        wait_until(lambda: committed_everything(own, group), 120, "the second half to be applied")
        _go_back(client, copy)  # and no event comes after it
        assert compare_state(own, events).problems(), "the copy should lack the second half"
        wait_until(lambda: not compare_state(own, events).problems(), 90, "Redis to be caught up again")
    finally:
        stop_worker(worker, log_path)
        client.close()
    assert "Redis no longer holds what this worker expects (found while idle)" in log_path.read_text()
    assert not account_for_events(own, events).problems()


def test_a_redis_that_lost_everything_stops_the_worker_with_a_clear_message(
    settings: Settings,
    topics: Topics,
    redis_node: infra.RedisNode,
    tmp_path: Path,
    world: Path,
) -> None:
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    own = dataclasses.replace(settings, redis_url=url)
    records = event_time_records(own, world / "events")
    produce_records(own, records[: len(records) // 2])
    log_path = tmp_path / "worker.log"
    worker = start_worker(own, log_path, CHURN_BATCH_SIZE=BATCH_SIZE)
    try:
        wait_until(
            lambda: (
                worker.poll() is not None or committed_total(own, own.consumer_group) >= len(records) // 5
            ),
            120,
            "the worker to commit a fifth of the stream",
        )
        assert worker.poll() is None, log_tail(log_path)
        redis.Redis.from_url(url).flushall()
        produce_records(own, records[len(records) // 2 :])
        code = worker.wait(120)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
    log = log_path.read_text(errors="replace")
    assert code == 1, log[-3000:]
    error = log.strip().splitlines()[-1]
    assert error.startswith("churnstream score: error: Redis"), error
    assert "churnstream rebuild" in error and "has no state" in error

    # and a worker started afterwards refuses at once, before it changes anything
    again = start_worker(own, log_path)
    assert again.wait(120) == 1
    assert "churnstream rebuild" in log_path.read_text(errors="replace").strip().splitlines()[-1]
    assert redis.Redis.from_url(url).dbsize() == 0  # refused before writing anything, claims included


def test_ready_turns_not_ready_within_seconds_while_redis_hangs(
    settings: Settings, topics: Topics, redis_node: infra.RedisNode, tmp_path: Path, world: Path
) -> None:
    url = f"redis://{redis_node.host}:{redis_node.port}/0"
    port = free_port()
    own = dataclasses.replace(settings, redis_url=url, metrics_port=port)
    log_path = tmp_path / "worker.log"
    worker = start_worker(own, log_path)

    def get(path: str) -> tuple[int, dict[str, Any]]:
        return http_json(port, path)

    try:
        wait_until(lambda: worker.poll() is not None or get("/ready")[0] == 200, 60, "the worker to be ready")
        assert worker.poll() is None, log_tail(log_path)
        # Redis hangs (stopped, not gone: connections stay open, nothing answers) until the check is done,
        # however long a loaded machine takes to notice; a CLIENT PAUSE would end on its own timer
        pid = int(redis_node.pid_file.read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            paused = time.monotonic()
            wait_until(lambda: get("/ready")[0] == 503, 60, "/ready to say not ready")
            noticed = time.monotonic() - paused
            status, ready = get("/ready")
            live, _ = get("/health")
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: get("/ready")[0] == 200, 30, "/ready to recover once Redis answers again")
    finally:
        stop_worker(worker, log_path)
    print(f"\nready turned 503 {noticed:.1f} s after Redis stopped answering")
    assert status == 503 and any("Redis at" in str(r) for r in ready["reasons"])  # type: ignore[union-attr]
    assert live == 200  # hung for seconds: not ready, but not stuck

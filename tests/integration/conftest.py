"""Fixtures for tests against the real Kafka broker and Redis server (start them with ``./run infra up``).

Every test in this directory is marked ``integration``. Nothing is skipped: when Kafka or Redis is not
reachable, every test here fails with a message saying so.

Fixtures and helpers, for anyone adding integration tests:

``settings``
    :class:`Settings` from the environment (``CHURN_KAFKA_BOOTSTRAP``, ``CHURN_REDIS_URL``, ...) with a
    unique ``topic_prefix`` per test (``t<hex>.``), so tests never see each other's messages.
``topics``
    Creates every contract topic under that prefix (6 partitions each) and returns ``settings.topics``;
    the topics are deleted after the test.
``redis_client``
    A ``redis.Redis`` for ``settings.redis_url``. Put your keys under ``settings.topic_prefix``; keys
    under it are deleted after the test.
``consume_all(settings, topic, expected=None, timeout=30.0)``
    Every message of ``topic`` from the beginning (``confluent_kafka.Message`` objects, in partition and
    offset order). With ``expected`` it waits until that many have arrived, then drains to the end offsets
    of that moment so extra messages show up too; without it, it reads up to the end offsets as they were
    when called. Import it with ``from tests.integration.conftest import consume_all``.
``produce_raw(settings, topic, records)``
    Produces ``(key, value)`` byte pairs exactly as given and returns their ``(partition, offset)``.

For tests that run the scoring worker (``test_scorer``, ``test_faults``, ``test_hostile_input``):

``simulate_world(root, customers=, days=, train_days=, seed=)``
    A simulated business in ``root/events`` and a batch model trained on its first ``train_days`` in
    ``root/models``. ``publish_world`` publishes it topic by topic; ``event_time_records`` and
    ``produce_records`` publish it as a live stream (all topics interleaved in event-time order).
``wait_until(condition, timeout, what)``, ``committed_everything``, ``committed_total``
    Wait on real conditions: the worker group's committed offsets against the input topics' end offsets
    (:func:`churnstream.streams.kafka.group_offsets`).
``start_worker(settings, log_path, **env)``, ``stop_worker(worker, log_path)``
    ``churnstream score`` as a subprocess with ``settings`` (plus ``CHURN_*`` overrides in ``env``),
    launched by :mod:`churnstream.streams.processes`; each call is a new worker with a ``CHURN_WORKER_ID``
    of its own unless ``env`` names one (pass the same id to restart a worker as a supervisor would).
    ``stop_worker`` sends SIGTERM, which must finish the batch and exit 0.
``check_every_event_accounted_for(settings, events)``, ``check_state_equals_offline(settings, events)``
    The end-to-end promises after a run, however it was interrupted: one answer per valid event (its
    ``event`` prediction, re-emitted only unchanged, or a dead letter), and the features, outcomes and
    online model in Redis equal to an uninterrupted offline replay. ``account_for_events`` and
    ``compare_state`` return the same findings as counts without asserting (for reports).
``free_port()``
    A TCP port nobody listens on right now (for a second broker, Redis or web server).
``redis_cluster(root, ports)``
    A context manager: a real Redis Cluster (one ``redis-server`` per port in cluster mode), its
    ``redis+cluster://`` URL while the block runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from churnstream.events import Event, LabelEvent, parse_time
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams import kafka
from churnstream.streams.kafka import end_offsets, group_offsets, make_consumer, make_producer
from churnstream.streams.processes import WorkerProcess
from churnstream.streams.processes import start_worker as launch_worker
from churnstream.streams.topics import create_topics, topic_specs

HINT = "start them with: ./run infra up"
CHURNSTREAM = str(Path(sys.executable).with_name("churnstream"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """Settings from the environment, checked once: Kafka must serve metadata and Redis must PING."""
    settings = Settings.from_env()
    try:
        AdminClient(settings.kafka_config()).list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(
            f"Kafka at {settings.kafka_bootstrap} is not reachable ({exc.args[0]}); {HINT}", pytrace=False
        )
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {settings.redacted_redis_url} is not reachable ({exc}); {HINT}", pytrace=False)
    finally:
        client.close()
    return settings


@pytest.fixture(autouse=True)
def _services_up(base_settings: Settings) -> None:
    """Makes every integration test fail (not skip) when the services are down."""


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return dataclasses.replace(base_settings, topic_prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def topics(settings: Settings) -> Iterator[Topics]:
    create_topics(settings)
    yield settings.topics
    admin = AdminClient(settings.kafka_config())
    names = {spec.name for spec in topic_specs(settings)}
    if settings.topic_prefix:  # and those the workers made under the test's prefix (faust's changelogs)
        names |= {t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)}
    for future in admin.delete_topics(sorted(names), operation_timeout=10).values():
        with contextlib.suppress(KafkaException):  # already gone: nothing to clean
            future.result()


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    yield client
    for pattern in (f"{settings.topic_prefix}*", f"churn:{settings.topic_prefix}*"):  # the feature store's
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


def produce_raw(
    settings: Settings, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Produce each ``(key, value)`` unchanged; returns ``(partition, offset)`` per record, in order."""
    producer = make_producer(settings)
    where: list[Any] = []
    failures: list[str] = []

    def report(index: int) -> Any:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"record {index}: {err}")
            else:
                where[index] = (msg.partition(), msg.offset())

        return on_delivery

    for index, (key, value) in enumerate(records):
        where.append(None)
        producer.produce(topic, key=key, value=value, on_delivery=report(index))
    remaining = producer.flush(30)
    assert remaining == 0 and not failures, f"produce failed: {failures[:3]} ({remaining} undelivered)"
    return where


def consume_all(
    settings: Settings, topic: str, expected: int | None = None, timeout: float = 30.0
) -> list[Message]:
    """Read ``topic`` from the beginning; see the module docstring."""
    # Partition-EOF events tell when a partition is drained without asking the broker for watermarks,
    # which would queue behind in-flight fetches.
    consumer = make_consumer(
        settings, f"test-reader-{uuid.uuid4().hex[:10]}", **{"enable.partition.eof": True}
    )
    try:
        marks = end_offsets(consumer, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in marks])
        received: list[Message] = []
        targets = {p: hi for p, (lo, hi) in marks.items()}
        position = {p: lo for p, (lo, _hi) in marks.items()}
        at_end = dict.fromkeys(marks, False)
        deadline = time.monotonic() + timeout

        def done() -> bool:
            if expected is None:
                return all(position[p] >= hi for p, hi in targets.items())
            return len(received) >= expected and all(at_end.values())

        while not done() and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            partition, error = msg.partition(), msg.error()
            assert partition is not None
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end[partition] = True
                elif error.fatal():
                    raise KafkaException(error)
                continue
            received.append(msg)
            at_end[partition] = False
            position[partition] = (msg.offset() or 0) + 1
        received.sort(key=lambda m: (m.partition() or 0, m.offset() or 0))
        return received
    finally:
        consumer.close()


# --- running the scoring worker -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """``(status, JSON body)`` of a GET on this machine's ``port``; ``(0, {})`` when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def redis_cluster(root: Path, ports: Sequence[int]) -> Iterator[str]:
    """A Redis Cluster of one ``redis-server`` per port in cluster mode (no replicas, no persistence, its
    files and logs under ``root``), stopped on leaving; yields its ``redis+cluster://`` URL. Each port's
    cluster bus port (port + 10000) must be free too. Skips where redis-server is not installed."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.skip("redis-server (and redis-cli) are not installed")

    def up(port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def ready(port: int) -> bool:
        return redis.Redis(port=port).cluster("INFO").get("cluster_state") == "ok"

    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            with (root / f"node-{port}.log").open("wb") as log:
                nodes.append(
                    subprocess.Popen(
                        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
                        + [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            str(root / f"nodes-{port}.conf"),
                        ]
                        + ["--save", "", "--appendonly", "no"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        for port in ports:
            wait_until(lambda port=port: up(port), 30, f"redis-server on {port}")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in ports:
            wait_until(lambda port=port: ready(port), 60, f"the cluster to be ready on {port}")
        yield f"redis+cluster://127.0.0.1:{ports[0]}/0"
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


def committed_everything(settings: Settings, group: str) -> bool:
    return kafka.committed_everything(settings, group, settings.topics.inputs)


def committed_total(settings: Settings, group: str) -> int:
    return sum(done for done, _ in group_offsets(settings, group, settings.topics.inputs).values())


def simulate_world(root: Path, *, customers: int, days: int, train_days: int, seed: int = 21) -> Path:
    """``root/events`` simulated (as ``churnstream simulate`` does) and, in ``root/models``, a batch model
    trained on the first ``train_days`` days; returns ``root``."""
    from churnstream.features.offline import read_events
    from churnstream.models.train import train
    from churnstream.sources.simulate import SimulationConfig, simulate

    events = root / "events"
    simulate(SimulationConfig(customers=customers, days=days, seed=seed), events, progress_bar=False)
    start = read_events(events).start
    until = start + train_days * DAY_MS
    train(events, root / "models", settings=Settings.from_env(), until=until, progress=False)
    return root


def publish_world(settings: Settings, events_dir: Path) -> None:
    from churnstream.streams.publish import publish_file

    for name in ("customer_profiles", "orders", "support_tickets"):
        assert publish_file(events_dir / f"{name}.jsonl", settings).ok


def event_time_records(settings: Settings, events_dir: Path) -> list[tuple[int, str, str, bytes]]:
    """Every event of ``events_dir`` as ``(timestamp, topic, key, value)``, all topics interleaved in
    event-time order, as a live business would produce them."""
    records = []
    for name in ("customer_profiles", "orders", "support_tickets"):
        for line in (events_dir / f"{name}.jsonl").read_bytes().splitlines():
            obj = json.loads(line)
            records.append(
                (parse_time(obj["timestamp"]), getattr(settings.topics, name), obj["customer_id"], line)
            )
    records.sort()
    return records


def produce_records(
    settings: Settings, records: Sequence[tuple[int, str, str, bytes]], *, as_they_happen: bool = False
) -> None:
    """Produce :func:`event_time_records` (or a slice of them) in order, and wait for every ack.

    ``as_they_happen``: each record is in the broker before a record of another topic is produced, as when
    producers publish events as they happen (a profile minutes before the first order). Otherwise a burst
    lets a later order of one topic reach the broker before the earlier profile of another, and a worker
    reading meanwhile may apply them in either order: its answer then depends on what it read first."""
    producer = make_producer(settings)
    topic_before = None
    for _, topic, key, value in records:
        if as_they_happen and topic != topic_before:
            assert producer.flush(30) == 0
            topic_before = topic
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def start_worker(settings: Settings, log_path: Path, **env: str) -> WorkerProcess:
    """``churnstream score`` in a subprocess, with ``settings`` and the ``CHURN_*`` overrides in ``env``.

    Without ``CHURN_WORKER_ID`` in ``env`` the worker gets an id of its own: workers of one group that
    share an id (by default the host name) fence each other out. Its stderr goes to ``log_path``
    (appended): a file, since a full pipe could block the worker.
    """
    worker_id = env.pop("CHURN_WORKER_ID", f"test-worker-{uuid.uuid4().hex[:8]}")
    return launch_worker(
        "score", settings, log=log_path, worker_id=worker_id, env=env, program=[CHURNSTREAM], stdout="discard"
    )


def stop_worker(worker: WorkerProcess, log_path: Path, timeout: float = 60.0) -> None:
    """SIGTERM: the worker must finish its batch, commit and exit 0 (killed if it does not stop)."""
    code = worker.stop(timeout)
    if worker.killed:
        raise AssertionError(f"the worker did not stop within {timeout:.0f}s of SIGTERM")
    tail = log_path.read_text(errors="replace")[-3000:]
    assert code == 0, f"SIGTERM should finish the batch and exit 0, got {code}; log ends:\n{tail}"


@dataclasses.dataclass(frozen=True, slots=True)
class Accounting:
    """What became of a run's valid input events (see :func:`account_for_events`)."""

    events: int  # valid events published
    accounted: int  # of them, those with one answer: an `event` prediction or a dead letter
    scored: int  # answered by a prediction
    dead_lettered: int  # answered by a dead letter
    deliveries: int  # `event` predictions on the topic, re-emissions included
    sweeps: int  # distinct sweep predictions
    alerts: int  # distinct alerts
    changed: list[str]  # prediction (event or sweep) and alert ids re-emitted with a different answer
    changed_beyond_learning: list[str]  # of them, those that differ in more than the online model's part
    several: list[str]  # events with more than one prediction id
    unknown: list[str]  # predictions for events never published
    both: list[str]  # events scored and dead-lettered
    missing: list[str]  # valid events without an answer

    def problems(self) -> list[str]:
        found = [
            (self.changed, "predictions or alerts re-emitted with a different answer"),
            (self.several, "events with more than one prediction id"),
            (self.unknown, "predictions for events never published"),
            (self.both, "events both scored and dead-lettered"),
            (self.missing, "valid events without an answer"),
        ]
        return [f"{len(ids)} {what}, e.g. {ids[:3]}" for ids, what in found if ids]


# What the online model contributes to an answer. It learns at the end of batches, so an answer replayed
# over a long span, batched differently (after Redis came back far behind), may differ in these alone.
LEARNED = frozenset({"online_probability", "churn_probability", "risk_category", "top_reasons"})


def account_for_events(settings: Settings, events: Sequence[Event]) -> Accounting:
    """Read predictions and dead letters back and say what became of every valid event in ``events``.

    An event's one answer is its ``event`` prediction (delivered more than once only after a failure,
    and then with the same id and numbers: consumers may see a message twice, never two different
    answers) or, never both, a dead letter naming it.
    """
    valid = {e.event_id for e in events}
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    answers: dict[str, dict[str, Any]] = {}
    ids: dict[str, set[str]] = {}
    changed: set[str] = set()
    deliveries = 0
    beyond: set[str] = set()
    for p in predictions:  # every answer, sweeps included, is re-emitted only unchanged
        body = {k: v for k, v in p.items() if k != "scored_at"}
        first = answers.setdefault(p["prediction_id"], body)
        if first != body:
            changed.add(p["prediction_id"])
            fields = sorted(
                k for k in first.keys() | body.keys() if k not in LEARNED and first.get(k) != body.get(k)
            )
            if fields:
                why = ", ".join(fields)
                if "features" in fields:  # which features, first answer -> second
                    a, b = first.get("features") or {}, body.get("features") or {}
                    why += "; " + ", ".join(
                        f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(a) if a.get(k) != b.get(k)
                    )
                beyond.add(
                    f"{p['prediction_id']} ({p['trigger']} of {p['customer_id']} as of {p['as_of']}: {why})"
                )
        if p["trigger"] != "event":
            continue
        deliveries += 1
        ids.setdefault(p["event_id"], set()).add(p["prediction_id"])
    sweeps = len({p["prediction_id"] for p in predictions if p["trigger"] == "sweep"})
    alerts: dict[str, dict[str, Any]] = {}
    for m in consume_all(settings, settings.topics.churn_alerts):
        alert = orjson.loads(m.value())
        first_alert = alerts.setdefault(alert["alert_id"], alert)
        if first_alert != alert:
            changed.add(f"alert {alert['alert_id']}")
            fields = sorted(
                k
                for k in first_alert.keys() | alert.keys()
                if k not in LEARNED and first_alert.get(k) != alert.get(k)
            )
            if fields:
                beyond.add(f"alert {alert['alert_id']} ({', '.join(fields)})")
    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    lettered: set[str] = set()
    for d in letters:
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            lettered.add(json.loads(d["value"])["event_id"])
    scored = set(ids)
    return Accounting(
        events=len(valid),
        accounted=len(valid & (scored | lettered)),
        scored=len(valid & scored),
        dead_lettered=len(valid & lettered),
        deliveries=deliveries,
        sweeps=sweeps,
        alerts=len(alerts),
        changed=sorted(changed),
        changed_beyond_learning=sorted(beyond),
        several=sorted(eid for eid, pids in ids.items() if len(pids) > 1),
        unknown=sorted(scored - valid),
        both=sorted(scored & lettered),
        missing=sorted(valid - scored - lettered),
    )


def check_every_event_accounted_for(settings: Settings, events: Sequence[Event]) -> Accounting:
    """Assert every valid event has exactly one answer and nothing else was answered (see
    :func:`account_for_events`)."""
    accounting = account_for_events(settings, events)
    assert not accounting.problems(), "; ".join(accounting.problems())
    return accounting


@dataclasses.dataclass(frozen=True, slots=True)
class StateCheck:
    """How the state in Redis compared with an uninterrupted offline replay (see :func:`compare_state`)."""

    watermark: int | None  # the store's
    end: int  # the log's last event time
    customers: int  # in the offline replay
    mismatches: dict[str, tuple[Any, Any]]  # customer -> (online features, offline features)
    labels: int  # predictions with an outcome
    changed_labels: list[str]  # prediction ids whose outcome was emitted with two labels
    learned: int  # labels the online model learned from

    def problems(self) -> list[str]:
        out = []
        if self.watermark != self.end:
            out.append(f"the store's watermark {self.watermark} is not the log's last event time {self.end}")
        if self.mismatches:
            cid, (online, offline) = next(iter(self.mismatches.items()))
            out.append(
                f"{len(self.mismatches)} of {self.customers} customers' features differ from the offline "
                f"builder's, e.g. {cid}: online {online} != offline {offline}"
            )
        if self.changed_labels:
            out.append(
                f"{len(self.changed_labels)} predictions got two labels, e.g. {self.changed_labels[:3]}"
            )
        if self.learned != self.labels:
            out.append(
                f"the online model learned from {self.learned} labels, "
                f"but {self.labels} predictions were labelled"
            )
        return out


def compare_state(settings: Settings, events: Sequence[Event]) -> StateCheck:
    """Compare the state in Redis with what an uninterrupted run gives: at the store's watermark (which
    should be the log's end) every customer's features equal the offline builder's
    (:func:`churnstream.features.offline.snapshot`), outcomes never disagree, and the online model learned
    from each labelled prediction once."""
    from churnstream.features.offline import snapshot
    from churnstream.features.redis_store import RedisFeatureStore, redis_client
    from churnstream.streams.scorer import restore_learner

    client = redis_client(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        t = store.watermark()
        end = max(e.timestamp for e in events if not isinstance(e, LabelEvent))
        offline = snapshot(events, end if t is None else t, lateness_ms=settings.lateness_ms)
        online = store.features_many(offline, end if t is None else t)
        mismatches = {cid: (online.get(cid), f) for cid, f in offline.items() if online.get(cid) != f}
        outcomes = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_outcomes)]
        labels: dict[str, int] = {}
        changed = set()
        for o in outcomes:
            if labels.setdefault(o["prediction_id"], o["label"]) != o["label"]:
                changed.add(o["prediction_id"])
        learned = 0  # every partition's online model (models.serving.ModelSet), each label taken in once:
        for partition in range(settings.topic_partitions):  # learned, or waiting for the next sweep tick
            learner = restore_learner(store, partition)
            learned += learner.online.n_learned + len(learner.waiting)
        return StateCheck(
            watermark=t,
            end=end,
            customers=len(offline),
            mismatches=mismatches,
            labels=len(labels),
            changed_labels=sorted(changed),
            learned=learned,
        )
    finally:
        store.close()
        client.close()


def check_state_equals_offline(settings: Settings, events: Sequence[Event]) -> StateCheck:
    """Assert the state in Redis is what an uninterrupted run gives (see :func:`compare_state`)."""
    check = compare_state(settings, events)
    assert not check.problems(), "; ".join(check.problems())
    return check

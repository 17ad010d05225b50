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
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from churnstream.settings import Settings, Topics
from streams.kafka import end_offsets, make_consumer, make_producer
from streams.topics import create_topics, topic_specs

HINT = "start them with: ./run infra up"


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
    names = [spec.name for spec in topic_specs(settings)]
    for future in admin.delete_topics(names, operation_timeout=10).values():
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

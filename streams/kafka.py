"""Small factories for Kafka clients configured the churnstream way, and delivery-report bookkeeping.

Every client gets ``settings.kafka_config()`` (bootstrap plus pass-through properties such as SASL/TLS),
then the churnstream defaults, then the caller's ``extra`` properties, which win.

A broker that refuses the client's credentials or TLS certificate makes the client raise
:class:`InfraError` ("authentication failed", "TLS certificate verification failed") from its next
``poll``/``flush``/``consume``, like the Java client does, instead of librdkafka's endless retries.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from churnstream.dead_letter import TOPIC_MAX_BYTES as DEAD_LETTER_TOPIC_MAX_BYTES
from churnstream.errors import ChurnstreamError, ConfigError, FencedError, InfraError, PublishError
from churnstream.settings import Settings

# Input topics accept messages somewhat above the contract's 1 MiB so that oversized ones reach the
# workers and are dead-lettered; dead letters (base64 can grow a value by a third) get more room still.
INPUT_TOPIC_MAX_BYTES = 2 * 1024 * 1024
PRODUCER_MAX_BYTES = DEAD_LETTER_TOPIC_MAX_BYTES + 64 * 1024


def make_producer(settings: Settings, **extra: Any) -> Producer:
    """An idempotent producer: ``acks=all``, no duplicates on retry, lz4 batches lingering ~5 ms, keys
    hashed to partitions like the Java client (murmur2).

    ``extra`` uses librdkafka property names with underscores for dots (``linger_ms=50``) or a
    ``config`` dict with dotted names.
    """
    config = settings.kafka_config(
        **{
            "error_cb": raise_on_refusal(settings),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": PRODUCER_MAX_BYTES,
            # The Java client's key hashing, so a customer's events share a partition whichever client
            # (Java, Connect, librdkafka with this setting) produced them.
            "partitioner": "murmur2_random",
        }
    )
    config.update(_props(extra))
    return Producer(config)


def make_consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    """A consumer in ``group`` that commits only explicitly and starts from the earliest offset.

    ``extra`` as for :func:`make_producer`; ``worker_id`` (a string) makes it a long-lived worker of the
    group (the scorer passes ``CHURN_WORKER_ID``). On the classic group protocol, librdkafka's default,
    it is then a static member (``group.instance.id`` ``<group>-<worker_id>``) with a session of
    ``CHURN_SESSION_TIMEOUT_MS``, heartbeats every third of it: restarted under the same id, after SIGKILL
    or SIGTERM alike, it gets its partitions back at once, without a rebalance; gone for good, it keeps
    them until the session times out. When another process joins under the same id, the broker fences
    this one, and its next ``poll``/``consume`` raises :class:`ConfigError` naming ``CHURN_WORKER_ID``
    (librdkafka reports the fence once and then stops consuming without a word).

    With ``CHURN_KAFKA_GROUP_PROTOCOL=consumer`` (KIP-848) the broker sets the session timeout
    (``group.consumer.session.timeout.ms``, 45 s at least by default) and refuses a static member
    restarted after a crash until then, so the worker joins as a dynamic member, with the broker's range
    assignor (partition p of every input topic to one member, as the classic default does). See
    docs/operations.md.
    """
    defaults: dict[str, Any] = {
        "error_cb": raise_on_refusal(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    worker_id: str | None = extra.pop("worker_id", None)
    if worker_id is None:
        config = settings.kafka_config(**defaults)
        config.update(_props(extra))
        return Consumer(config)
    if str(settings.kafka_properties.get("group.protocol", "classic")).lower() == "consumer":
        defaults["group.remote.assignor"] = "range"
    else:
        instance = re.sub(r"[^A-Za-z0-9._-]", "_", group)[: 248 - len(worker_id)] + "-" + worker_id
        defaults["group.instance.id"] = instance
        defaults["session.timeout.ms"] = settings.session_timeout_ms
        defaults["heartbeat.interval.ms"] = max(1, settings.session_timeout_ms // 3)
    config = settings.kafka_config(**defaults)
    config.update(_props(extra))
    return _GroupWorker(config, settings=settings, worker_id=worker_id)


class _GroupWorker(Consumer):
    """A group worker's consumer (:func:`make_consumer`): raises from ``poll``/``consume``, then on every
    later call, once librdkafka reports a group error that no retry can mend."""

    def __init__(self, config: dict[str, Any], *, settings: Settings, worker_id: str) -> None:
        super().__init__(config)
        self._settings = settings
        self._group = str(config["group.id"])
        self._instance = config.get("group.instance.id")
        self._worker_id = worker_id
        self._failed: ChurnstreamError | None = None

    def poll(self, timeout: float = -1) -> Message | None:
        self._raise_if_failed()
        msg = super().poll(timeout)
        if msg is not None and msg.error() is not None:
            self._check(msg.error())
        return msg

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self._raise_if_failed()
        messages = super().consume(num_messages, timeout)
        for msg in messages:
            if msg.error() is not None:
                self._check(msg.error())
        return messages

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _check(self, error: KafkaError | None) -> None:
        """Raise (and remember) the error to end the worker with when ``error`` is one no retry mends."""
        if error is None:
            return
        text = self._settings.redact(error.str())
        if error.code() == KafkaError._FATAL and "fenced" in text.lower():
            self._failed = FencedError(
                f"fenced out of consumer group {self._group!r}: another process joined it as the same "
                f"static member {self._instance!r}. Two workers share CHURN_WORKER_ID={self._worker_id!r} "
                "(the host name unless set), or a replacement was started while this worker still ran; "
                "give every worker of a group its own CHURN_WORKER_ID, e.g. scorer-1 and scorer-2 on one host"
            )
        elif error.code() == KafkaError.INVALID_SESSION_TIMEOUT:
            self._failed = ConfigError(
                f"the broker refuses CHURN_SESSION_TIMEOUT_MS={self._settings.session_timeout_ms}: it "
                "must lie between the broker's group.min.session.timeout.ms and "
                "group.max.session.timeout.ms (6000 and 1800000 by default)"
            )
        elif error.code() == KafkaError._FATAL:
            self._failed = InfraError(f"the Kafka consumer of group {self._group!r} failed for good: {text}")
        self._raise_if_failed()


def refusal(settings: Settings, error: KafkaError) -> InfraError | None:
    """The :class:`InfraError` to raise when ``error`` says the broker refused our credentials or our
    TLS check failed (settings must change; retrying cannot help), else None.

    >>> s = Settings(kafka_bootstrap="k:9093", kafka_properties={"sasl.password": "hunter2"})
    >>> str(refusal(s, KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: hunter2?")))[:44]
    'Kafka at k:9093: authentication failed (SASL'
    >>> "hunter2" in str(refusal(s, KafkaError(KafkaError._AUTHENTICATION, "hunter2")))
    False
    >>> refusal(s, KafkaError(KafkaError._TRANSPORT, "connection refused")) is None
    True
    """
    text = settings.redact(error.str())
    if error.code() == KafkaError._AUTHENTICATION:
        return InfraError(
            f"Kafka at {settings.kafka_bootstrap}: authentication failed ({text}); check "
            "CHURN_KAFKA_SASL_MECHANISM, CHURN_KAFKA_SASL_USERNAME and CHURN_KAFKA_SASL_PASSWORD"
        )
    if error.code() == KafkaError._SSL and "verify failed" in text:
        return InfraError(
            f"Kafka at {settings.kafka_bootstrap}: TLS certificate verification failed ({text}); "
            "check CHURN_KAFKA_SSL_CA_LOCATION"
        )
    return None


def raise_on_refusal(settings: Settings) -> Callable[[KafkaError], None]:
    """An ``error_cb`` that raises :func:`refusal`'s error; other client errors stay librdkafka's to retry."""

    def on_error(error: KafkaError) -> None:
        refused = refusal(settings, error)
        if refused is not None:
            raise refused

    return on_error


def _props(extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(extra.pop("config", None) or {})
    out.update({name.replace("_", "."): value for name, value in extra.items()})
    return out


class DeliveryTracker:
    """Counts delivery reports of a producer; pass :meth:`on_delivery` as the ``on_delivery`` callback.

    >>> t = DeliveryTracker()
    >>> t.on_delivery(None, None); t.acked, t.failed
    (1, 0)
    """

    def __init__(self, *, keep_errors: int = 20) -> None:
        self.acked = 0
        self.failed = 0
        self.errors: list[str] = []
        self._keep = keep_errors
        self._lock = threading.Lock()

    def on_delivery(self, err: KafkaError | None, msg: Message | None) -> None:
        with self._lock:
            if err is None:
                self.acked += 1
                return
            self.failed += 1
            if len(self.errors) < self._keep:
                where = msg.topic() if msg is not None else "?"
                self.errors.append(f"{where}: {err.str() if hasattr(err, 'str') else err}")

    @property
    def reported(self) -> int:
        return self.acked + self.failed

    def flush_or_raise(self, producer: Producer, timeout: float = 30.0) -> None:
        """Wait for all outstanding deliveries; raise :class:`PublishError` if any failed or timed out."""
        remaining = flush(producer, timeout)
        if remaining:
            raise PublishError(f"{remaining} message(s) still undelivered after {timeout:g} s")
        if self.failed:
            raise PublishError(f"{self.failed} message(s) were not delivered: " + "; ".join(self.errors[:5]))


def flush(producer: Producer, timeout: float) -> int:
    """``producer.flush(timeout)`` in slices of a second, so that an error raised by a callback (a refused
    login, see :func:`raise_on_refusal`) surfaces within a second instead of after ``timeout``; returns
    the number of messages still undelivered."""
    deadline = time.monotonic() + timeout
    while True:
        remaining: int = producer.flush(max(0.0, min(1.0, deadline - time.monotonic())))
        if remaining == 0 or time.monotonic() >= deadline:
            return remaining


def end_offsets(consumer: Consumer, topic: str, timeout: float = 15.0) -> dict[int, tuple[int, int]]:
    """Partition -> (low, high) watermark of ``topic``, retrying while a fresh topic elects its leaders.

    Raises :class:`KafkaException` when the topic does not exist or the broker keeps failing.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            meta = consumer.list_topics(topic, timeout=max(1.0, deadline - time.monotonic())).topics.get(
                topic
            )
            if meta is None or meta.error is not None:
                raise KafkaException(
                    meta.error if meta is not None else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
                )
            marks = watermarks(consumer, [TopicPartition(topic, p) for p in sorted(meta.partitions)])
            return {partition: mark for (_topic, partition), mark in marks.items()}
        except KafkaException as exc:
            error = exc.args[0]
            retriable = isinstance(error, KafkaError) and (error.retriable() or error.code() in _SETTLING)
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def watermarks(
    consumer: Consumer, partitions: Iterable[TopicPartition], *, timeout: float = 5.0, cached: bool = False
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (low, high) watermark offsets of ``partitions``, in their order: each asked of
    the broker within ``timeout`` seconds, or with ``cached`` the values the client last fetched (no
    request; negative before its first fetch). The one place end offsets are read; raises
    ``KafkaException`` when the broker does not answer in time."""
    return {
        (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=timeout, cached=cached)
        for tp in partitions
    }


def records_behind(
    marks: Mapping[tuple[str, int], tuple[int, int]], read: Mapping[tuple[str, int], int]
) -> int:
    """How many records lie past where each partition was read: ``high - max(low, read)`` summed over the
    partitions of ``marks`` (:func:`watermarks`) that have a position in ``read`` and a known end.

    >>> marks = {("t", 0): (0, 10), ("t", 1): (5, 8), ("t", 2): (0, -1001), ("t", 3): (0, 7)}
    >>> records_behind(marks, {("t", 0): 4, ("t", 1): 2, ("t", 2): 0})
    9
    """
    behind = 0
    for key, (low, high) in marks.items():
        position = read.get(key)
        if position is not None and high >= 0:
            behind += max(0, high - max(low, position))
    return behind


_SETTLING = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
)
_COORDINATOR_SETTLING = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
)


def group_offsets(
    settings: Settings, group: str, topics: Iterable[str], timeout: float = 30.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (offset ``group`` committed, 0 when none; end offset) of every partition of
    ``topics``: how far a consumer group is, the one answer to "has it committed everything?".

    Asks without joining the group, so its members keep their partitions. Retries while fresh topics elect
    their leaders and while the group's coordinator settles (a fresh or just restarted broker).
    """
    deadline = time.monotonic() + timeout
    while True:
        consumer = make_consumer(settings, group)
        try:
            out: dict[tuple[str, int], tuple[int, int]] = {}
            for topic in topics:
                marks = end_offsets(consumer, topic)
                parts = [TopicPartition(topic, p) for p in marks]
                for tp in consumer.committed(parts, timeout=10):
                    out[(topic, tp.partition)] = (max(tp.offset, 0), marks[tp.partition][1])
            return out
        except KafkaException as exc:
            error = exc.args[0]
            settling = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _COORDINATOR_SETTLING
            )
            if not settling or time.monotonic() >= deadline:
                raise
        finally:
            consumer.close()
        time.sleep(0.2)


def committed_everything(settings: Settings, group: str, topics: Iterable[str]) -> bool:
    """Whether ``group`` committed every offset of ``topics`` up to their end (:func:`group_offsets`)."""
    return all(done >= end for done, end in group_offsets(settings, group, topics).values())


def commit_group_offsets(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` ((topic, partition) -> offset) for ``group``, which must have no members, like
    ``kafka-consumer-groups --reset-offsets``."""
    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()

"""The validation edge every worker reads through: Kafka messages in, typed events or dead letters out.

- :func:`decode_message` turns one message into an :class:`~churnstream.events.Event` or a
  :class:`~churnstream.messages.DeadLetter` (stage ``decode`` or ``validate``); it never raises for bad data.
- :class:`InputReader` consumes the input topics in micro-batches (:meth:`InputReader.poll_batch`) and
  commits only when told (:meth:`InputReader.commit`), so a worker commits after it has applied a batch.
- :class:`DeadLetterWriter` produces dead letters to ``dead_letter``, keyed by the original key (they are
  made and serialised in :mod:`churnstream.dead_letter`, whichever worker finds them).

A worker's loop, at-least-once::

    reader = InputReader(settings=settings, group=settings.consumer_group)
    dead = DeadLetterWriter(settings=settings)
    while running:
        batch = reader.poll_batch()
        for event, where in batch.events:
            apply(event)
        for letter in batch.dead_letters:
            dead.write(letter)
        dead.flush()                 # dead letters are safe before the offsets move on
        reader.commit(batch.offsets)
    reader.close()
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from churnstream.dead_letter import DeadLetter, RawMessage, dead_letter_for_message, dead_letter_payload
from churnstream.errors import EventError, ValidationError
from churnstream.events import KINDS, Event, decode_json, now_ms, parse_event
from churnstream.settings import Settings
from churnstream.streams.kafka import DeliveryTracker, make_consumer, make_producer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where an event came from: topic, partition, offset, the message key, and the message's bytes (what
    the event's dead letter carries if it cannot be processed, as the contract asks: the original)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = field(default=None, compare=False, repr=False)


def decode_message(
    msg: RawMessage, settings: Settings, *, now: int | None = None
) -> tuple[Event | None, DeadLetter | None]:
    """``(event, None)`` for a valid input message, ``(None, dead_letter)`` for anything else.

    The topic decides the event type (``settings.topics.kind_of``); the key, when present, must equal
    ``customer_id``; timestamps may be at most ``settings.max_future_skew_hours`` ahead of ``now``.

    >>> class M:
    ...     def __init__(self, v): self.v = v
    ...     def topic(self): return "orders"
    ...     def partition(self): return 0
    ...     def offset(self): return 7
    ...     def key(self): return b"c1"
    ...     def value(self): return self.v
    >>> ok = b'{"event_id":"e","customer_id":"c1","order_id":"o","timestamp":0,"amount":1}'
    >>> decode_message(M(ok), Settings())[0].order_id
    'o'
    >>> letter = decode_message(M(b"{oops"), Settings())[1]
    >>> letter.stage, letter.offset, letter.error
    ('decode', 7, 'invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2')
    """
    topic = msg.topic() or ""
    key = msg.key()
    value = msg.value()
    current = now_ms() if now is None else now
    try:
        kind = settings.topics.kind_of(topic)
        obj = decode_json(value)
        if kind not in KINDS:
            raise ValidationError(f"{topic!r} is not an input topic (expected one of {', '.join(KINDS)})")
        event = parse_event(
            kind, obj, key=key, now_ms=current, max_future_skew_hours=settings.max_future_skew_hours
        )
    except EventError as exc:
        error = exc
    except Exception as exc:  # a case the rules did not foresee: still this message's, never the worker's
        error = ValidationError(f"could not be validated: {type(exc).__name__}: {exc}"[:1000])
    else:
        return event, None
    return None, dead_letter_for_message(msg, error, failed_at=current)


@dataclass(slots=True)
class Batch:
    """One micro-batch: valid events with their coordinates, dead letters, and the offsets to commit.

    ``offsets`` maps ``(topic, partition)`` to the next offset to read, covering every message of the
    batch, valid or not; pass it to :meth:`InputReader.commit` once the batch has been applied.
    """

    events: list[tuple[Event, Coordinates]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.events) + len(self.dead_letters)

    def __len__(self) -> int:
        return self.size

    def split(self, k: int) -> tuple[Batch, Batch]:
        """The first ``k`` events and the rest, as two batches to be applied one after the other."""
        return self.split_by([i < k for i in range(len(self.events))])

    def split_by(self, in_head: list[bool]) -> tuple[Batch, Batch]:
        """The events marked in ``in_head`` and the rest, as two batches to be applied one after the other
        (in each partition, no event of the head may come after one of the tail).

        Each dead letter goes with the events around it, and each part's offsets cover exactly its own
        messages, so committing the first part never skips a message of the second.
        """
        head = Batch(events=[e for e, first in zip(self.events, in_head, strict=True) if first])
        tail = Batch(events=[e for e, first in zip(self.events, in_head, strict=True) if not first])
        first_left: dict[tuple[str, int], int] = {}  # per partition, the first offset left for the tail
        for _, where in tail.events:
            key = (where.topic, where.partition)
            first_left[key] = min(where.offset, first_left.get(key, where.offset))
        for letter in self.dead_letters:
            key = (letter.source_topic, letter.partition or 0)
            later = key in first_left and letter.offset is not None and letter.offset > first_left[key]
            (tail if later else head).dead_letters.append(letter)
        for part in (head, tail):
            keys = {(w.topic, w.partition) for _, w in part.events}
            keys |= {(d.source_topic, d.partition or 0) for d in part.dead_letters}
            for key in keys:
                if key in self.offsets:
                    part.offsets[key] = self.offsets[key]
        for key in head.offsets:
            if key in first_left:
                head.offsets[key] = first_left[key]
        return head, tail


def consume_messages(consumer: Consumer, limit: int, timeout: float) -> Iterator[Message]:
    """Up to ``limit`` messages: waits at most ``timeout`` seconds for the first, then takes what else has
    arrived, without waiting for more. Transient consumer errors are logged and skipped, fatal ones raise
    :class:`KafkaException`.

    ``Consumer.consume`` alone waits the whole timeout unless ``limit`` messages arrive, so a steady
    trickle paid the full batch timeout on every batch. This way a batch is whatever arrived while the
    previous one was processed: small and quick when traffic is light, large when the worker is behind.
    """
    first = consumer.poll(timeout) if timeout > 0 else None
    messages = [] if first is None else [first]
    if first is not None or timeout <= 0:
        messages += consumer.consume(num_messages=max(1, limit - len(messages)), timeout=0)
    for msg in messages:
        error = msg.error()
        if error is None:
            yield msg
        elif error.fatal():
            raise KafkaException(error)
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error (will retry): %s", error)


class InputReader:
    """A consumer-group member over the input topics that hands out validated micro-batches.

    Offsets are never committed automatically: call :meth:`commit` with ``batch.offsets`` after the
    batch's effects (state, outputs, dead letters) are durable.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        group: str | None = None,
        topics: Iterable[str] | None = None,
        consumer: Consumer | None = None,
        on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        **consumer_config: Any,
    ) -> None:
        self.settings = settings
        self.topics = list(topics) if topics is not None else list(settings.topics.inputs)
        self._group = group or settings.consumer_group
        self._consumer_config = dict(consumer_config)  # make_consumer takes from it; reopen needs it whole
        self.consumer = consumer or make_consumer(settings, self._group, **dict(consumer_config))
        self._callbacks: dict[str, Any] = {}
        self._held = False  # partitions paused by hold()
        if on_assign is not None:
            self._callbacks["on_assign"] = on_assign

        def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            # librdkafka keeps a pause across a revoke and a later assign: a partition paused here (held,
            # or its queue full) would never be fetched again once the group hands it back
            with contextlib.suppress(KafkaException):
                consumer.resume(partitions)
            if on_revoke is not None:
                on_revoke(consumer, partitions)

        self._callbacks["on_revoke"] = revoked
        self.consumer.subscribe(self.topics, **self._callbacks)

    def reopen(self) -> None:
        """A fresh consumer in place of one librdkafka gave up on (fenced): the same group, settings and
        callbacks. Its partitions are revoked first (``on_revoke``), as in a rebalance."""
        revoke = self._callbacks.get("on_revoke")
        with contextlib.suppress(Exception):
            partitions = self.consumer.assignment()
            if revoke is not None and partitions:
                revoke(self.consumer, partitions)
        with contextlib.suppress(Exception):  # it may refuse everything now
            self.consumer.close()
        self.consumer = make_consumer(self.settings, self._group, **dict(self._consumer_config))
        self.consumer.subscribe(self.topics, **self._callbacks)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``partition`` of ``topic`` from ``offset`` on."""
        self.consumer.seek(TopicPartition(topic, partition, offset))

    def rewind(self) -> None:
        """Seek each assigned partition back to its last committed offset (its start when none)."""
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=10):
                self.seek(tp.topic, tp.partition, max(tp.offset, 0))

    def hold(self, timeout: float) -> bool:
        """Stay in the group for ``timeout`` seconds without reading: pause every assigned partition and
        poll (rebalance callbacks run; the consumer's ``max.poll.interval.ms`` counts from the last poll).
        True when the poll handed out a message anyway, which is dropped: read it again by rewinding before
        reading on. :meth:`release` resumes the partitions."""
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self._held = True
        return self.consumer.poll(timeout) is not None

    def release(self) -> None:
        """Resume what :meth:`hold` paused."""
        if self._held:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(self._to_resume(assignment))
            self._held = False  # only once resumed: a resume that failed is tried again

    def _to_resume(self, assignment: list[TopicPartition]) -> list[TopicPartition]:
        return assignment

    def poll_batch(self, max_messages: int | None = None, timeout: float | None = None) -> Batch:
        """Up to ``max_messages`` messages (default ``CHURN_BATCH_SIZE``), waiting at most ``timeout`` seconds
        (default ``CHURN_BATCH_TIMEOUT_MS``); an empty batch when nothing arrived."""
        limit = max_messages or self.settings.batch_size
        wait = self.settings.batch_timeout_ms / 1000 if timeout is None else timeout
        batch = Batch()
        now = now_ms()
        for msg in consume_messages(self.consumer, limit, wait):
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            event, letter = decode_message(msg, self.settings, now=now)
            if event is not None:
                batch.events.append((event, Coordinates(topic, partition, offset, msg.key(), msg.value())))
            elif letter is not None:
                batch.dead_letters.append(letter)
            position = batch.offsets.get((topic, partition), -1)
            batch.offsets[(topic, partition)] = max(position, offset + 1)
        return batch

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit ``offsets`` (``(topic, partition) -> next offset``) synchronously; no-op when empty."""
        if not offsets:
            return
        parts = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        self.consumer.commit(offsets=parts, asynchronous=False)

    def close(self) -> None:
        """Leave the group (partitions move to other members at once)."""
        self.consumer.close()

    def __enter__(self) -> InputReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeadLetterWriter:
    """Produces :class:`DeadLetter` records as JSON to ``dead_letter``, keyed by the original key."""

    def __init__(self, *, settings: Settings, producer: Producer | None = None) -> None:
        self.topic = settings.topics.dead_letter
        self.producer = producer or make_producer(settings)
        self.tracker = DeliveryTracker()
        self.written = 0

    def write(self, letter: DeadLetter) -> None:
        """Queue one dead letter; :meth:`flush` waits for it."""
        payload = dead_letter_payload(letter)
        while True:
            try:
                self.producer.produce(
                    self.topic, value=payload, key=letter.kafka_key, on_delivery=self.tracker.on_delivery
                )
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)
        self.written += 1

    def write_all(self, letters: Iterable[DeadLetter]) -> int:
        n = 0
        for letter in letters:
            self.write(letter)
            n += 1
        return n

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued dead letter is acknowledged; :class:`PublishError` if any was lost."""
        self.tracker.flush_or_raise(self.producer, timeout)

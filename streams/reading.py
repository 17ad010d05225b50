"""Reading topics by assignment, leaving no consumer group state behind.

Commands that look at what the service published (``churnstream alerts``, ``churnstream report``, the
monitor's pages) read this way, so they never move a worker's offsets. :func:`read_to_end` reads every
partition up to the end it had when reading started, from its beginning or just its last messages;
:func:`read_messages` can also go on following new messages, like ``tail -f``; :func:`read_range` reads one
partition between two offsets.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from churnstream.errors import InfraError
from churnstream.settings import Settings
from churnstream.streams.kafka import end_offsets, make_consumer

log = logging.getLogger(__name__)

# Without progress for this long while a topic still has unread messages, something is wrong; following a
# topic, the broker is then asked whether it still answers (and again every so long).
STALL_SECONDS = 30.0

Start = Literal["beginning", "end"] | int


def read_to_end(
    settings: Settings, topics: Sequence[str], *, last: int | None = None, poll_timeout: float = 0.5
) -> Iterator[Message]:
    """Every message of ``topics`` up to their current ends (per partition in offset order); with ``last``,
    only the last ``last`` offsets of each partition (fewer messages where some are transaction markers)."""
    start: Start = "beginning" if last is None else max(0, last)
    return read_messages(settings, topics, start=start, poll_timeout=poll_timeout)


def read_messages(
    settings: Settings,
    topics: Sequence[str],
    *,
    start: Start = "beginning",
    follow: bool = False,
    poll_timeout: float = 0.5,
) -> Iterator[Message]:
    """The messages of ``topics`` from ``start`` (``"beginning"``, ``"end"``, or a count: that many offsets
    before each partition's end), up to the ends they had when reading started; with ``follow``, on and on.

    Raises :class:`~churnstream.errors.InfraError` when a topic does not exist, or when, not following,
    messages known to be there stop coming for :data:`STALL_SECONDS`.
    """
    with _reader(settings) as consumer:
        stops: dict[tuple[str, int], int] = {}
        assignment = []
        for topic in topics:
            for p, (low, high) in sorted(_end_offsets(consumer, topic).items()):
                if start == "beginning":
                    first, offset = low, OFFSET_BEGINNING
                elif start == "end":
                    first = offset = high
                else:
                    first = offset = max(low, high - start)
                if high > first:
                    stops[(topic, p)] = high
                if high > first or follow:
                    assignment.append(TopicPartition(topic, p, offset))
        yield from _read(
            consumer, assignment, stops, follow=follow, poll_timeout=poll_timeout, what=", ".join(topics)
        )


def read_range(settings: Settings, topic: str, partition: int, start: int, stop: int) -> list[Message]:
    """The messages of ``topic``'s ``partition`` at offsets ``start <= offset < stop`` (fewer than
    ``stop - start`` where some are transaction markers or were compacted away), in offset order.

    Raises :class:`~churnstream.errors.InfraError` when messages known to be there stop coming for
    :data:`STALL_SECONDS`.
    """
    if stop <= start:
        return []
    with _reader(settings) as consumer:
        return list(
            _read(
                consumer,
                [TopicPartition(topic, partition, start)],
                {(topic, partition): stop},
                follow=False,
                poll_timeout=0.5,
                what=f"{topic}[{partition}] at offsets {start}..{stop - 1}",
            )
        )


@contextlib.contextmanager
def _reader(settings: Settings) -> Iterator[Consumer]:
    """A consumer of its own (a throwaway group, never committing) that reports partition EOF: the last
    offsets below a high watermark may be transaction markers, never delivered."""
    consumer = make_consumer(
        settings, f"churnstream-reader-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": True}
    )
    try:
        yield consumer
    finally:
        consumer.close()


def _read(
    consumer: Consumer,
    assignment: list[TopicPartition],
    stops: dict[tuple[str, int], int],
    *,
    follow: bool,
    poll_timeout: float,
    what: str,
) -> Iterator[Message]:
    """The messages of ``assignment``: those of each partition in ``stops`` below its stop offset, until
    every such partition reached its stop or its end; with ``follow``, every message on and on.

    A message at or past its partition's stop (the offsets before it were markers) is not handed out
    unless following: the monitor's read-back relies on it (a record faust does deliver must not come
    twice).
    """
    if not assignment:
        return
    pending = dict(stops)
    consumer.assign(assignment)
    last_progress = last_check = time.monotonic()
    unreachable = False  # following: said that Kafka does not answer (and not yet that it does again)
    while follow or pending:
        msg = consumer.poll(poll_timeout)
        if msg is None:
            now = time.monotonic()
            if not follow and now - last_progress > STALL_SECONDS:
                raise InfraError(f"no progress reading {what} for {STALL_SECONDS:.0f} s; is Kafka still up?")
            if follow and now - max(last_progress, last_check) > STALL_SECONDS:
                # a quiet topic and a broker gone look the same from here: ask the broker
                last_check = now
                answers = _answers(consumer)
                if unreachable == answers:
                    unreachable = not answers
                    if unreachable:
                        log.warning("Kafka does not answer; still waiting for %s", what)
                    else:
                        log.warning("Kafka answers again; waiting for %s", what)
            continue
        error = msg.error()
        key = (msg.topic() or "", msg.partition() or 0)
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.pop(key, None)
                continue
            if error.fatal():
                raise KafkaException(error)
            continue
        last_progress = time.monotonic()
        at = msg.offset()
        stop = pending.get(key)
        if stop is None:
            if not follow:
                continue
        elif at is None or at >= stop:
            del pending[key]
            if not follow:
                continue
        elif at + 1 >= stop:
            del pending[key]
        yield msg


def _answers(consumer: Consumer) -> bool:
    """Whether the cluster answers a metadata request within a few seconds."""
    try:
        consumer.list_topics(timeout=5)
    except KafkaException:
        return False
    return True


def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool = False,
    from_beginning: bool = True,
    poll_timeout: float = 0.5,
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """``(key, value)`` of each message of ``topic``; stops at the end unless ``follow``.

    ``from_beginning=False`` (only with ``follow``) starts at the end, so only new messages come.
    """
    start: Start = "end" if follow and not from_beginning else "beginning"
    for msg in read_messages(settings, [topic], start=start, follow=follow, poll_timeout=poll_timeout):
        yield msg.key(), msg.value()


def _end_offsets(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    try:
        return end_offsets(consumer, topic)
    except KafkaException as exc:
        error = exc.args[0]
        if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise InfraError(
                f"topic {topic} does not exist; create it with: churnstream topics create"
            ) from None
        raise InfraError(f"cannot read the end offsets of {topic}: {error}") from None


__all__ = ["STALL_SECONDS", "read_messages", "read_to_end", "read_topic"]

"""Reading topics to their end by assignment, leaving no consumer group state behind.

Commands that look at what the service published (``churnstream alerts``, ``churnstream report``) read
this way, so they never move a worker's offsets: every partition from its beginning up to the end it had
when reading started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from churnstream.errors import InfraError
from churnstream.settings import Settings
from churnstream.streams.kafka import end_offsets, make_consumer

# Without progress for this long while a topic still has unread messages, something is wrong.
STALL_SECONDS = 30.0


def read_to_end(settings: Settings, topics: Sequence[str], *, poll_timeout: float = 0.5) -> Iterator[Message]:
    """Every message of ``topics`` up to their current ends (per partition in offset order)."""
    # partition EOF: the last offsets below a high watermark may be transaction markers, never delivered
    consumer = make_consumer(
        settings, f"churnstream-reader-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": True}
    )
    try:
        pending: dict[tuple[str, int], int] = {}
        assignment = []
        for topic in topics:
            try:
                marks = end_offsets(consumer, topic)
            except KafkaException as exc:
                error = exc.args[0]
                if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise InfraError(
                        f"topic {topic} does not exist; create it with: churnstream topics create"
                    ) from None
                raise InfraError(f"cannot read the end offsets of {topic}: {error}") from None
            for p, (low, high) in marks.items():
                if high > low:
                    pending[(topic, p)] = high
                    assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        if not assignment:
            return
        consumer.assign(assignment)
        last_progress = time.monotonic()
        while pending:
            msg = consumer.poll(poll_timeout)
            if msg is None:
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise InfraError(
                        f"no progress reading {', '.join(topics)} for {STALL_SECONDS:.0f} s; "
                        "is Kafka still up?"
                    )
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.pop((msg.topic() or "", msg.partition() or 0), None)
                    continue
                if error.fatal():
                    raise KafkaException(error)
                continue
            last_progress = time.monotonic()
            key = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset()
            if key not in pending:
                continue
            if offset is not None and offset + 1 >= pending[key]:
                del pending[key]
            yield msg
    finally:
        consumer.close()


__all__ = ["STALL_SECONDS", "read_to_end"]

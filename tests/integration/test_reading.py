"""Reading topics by assignment (``streams.reading``) on a real broker, around transaction markers: a
committed transaction leaves a marker at an offset no consumer is ever handed, so an end offset or a stop
offset can sit on a marker, and the reader must neither wait for it nor hand out what comes after it."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import end_offsets, make_consumer
from churnstream.streams.reading import read_messages, read_range, read_to_end
from tests.integration.conftest import wait_until


def produce(settings: Settings, topic: str, values: list[bytes], *, transaction: bool) -> None:
    """``values`` to partition 0 of ``topic``, in one committed transaction or plainly. A transaction's
    commit marker reaches the partition after the commit returns (the coordinator writes it): this waits
    until it is there, so what is produced next comes after it."""
    start = end_offset(settings, topic)
    config = settings.kafka_config()
    if transaction:
        config["transactional.id"] = f"test-{uuid.uuid4().hex[:8]}"
    producer = Producer(config)
    if transaction:
        producer.init_transactions(30)
        producer.begin_transaction()
    for value in values:
        producer.produce(topic, partition=0, value=value)
    if transaction:
        producer.commit_transaction(30)
    assert producer.flush(30) == 0
    expected = start + len(values) + (1 if transaction else 0)
    wait_until(lambda: end_offset(settings, topic) == expected, 30, f"{topic}[0] to end at {expected}")


def end_offset(settings: Settings, topic: str) -> int:
    consumer = make_consumer(settings, f"test-ends-{uuid.uuid4().hex[:8]}")
    try:
        return end_offsets(consumer, topic)[0][1]
    finally:
        consumer.close()


def offsets(messages: object) -> list[int]:
    return [m.offset() for m in messages]  # type: ignore[attr-defined]


def test_reads_stop_at_their_offsets_whatever_markers_hide(settings: Settings, topics: Topics) -> None:
    topic = topics.monitoring_batches
    partition = 0
    produce(settings, topic, [b"t0", b"t1"], transaction=True)  # offsets 0, 1; the commit marker at 2
    produce(settings, topic, [b"p3"], transaction=False)  # offset 3
    produce(settings, topic, [b"t4"], transaction=True)  # offset 4; the marker at 5 is the end's last offset

    # a stop on the marker: what is below it, never the record after it
    assert offsets(read_range(settings, topic, partition, 0, 3)) == [0, 1]
    assert offsets(read_range(settings, topic, partition, 1, 4)) == [1, 3]
    assert offsets(read_range(settings, topic, partition, 2, 3)) == []
    # up to an end that is a marker: done at the partition's end, not stalled waiting for offset 5
    assert offsets(read_range(settings, topic, partition, 0, 6)) == [0, 1, 3, 4]
    assert [m.value() for m in read_to_end(settings, [topic])] == [b"t0", b"t1", b"p3", b"t4"]
    assert offsets(read_to_end(settings, [topic], last=3)) == [3, 4]  # offsets 3..5: two records
    assert offsets(read_messages(settings, [topic], start="end")) == []

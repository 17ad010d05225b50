"""What the monitor's /health and /ready say about input waiting, measured on a real broker: the input
offsets its own Kafka client reads (end offsets through ``streams.kafka.watermarks``, the one place they are
read) and the lag computed from them. ``tests/unit/test_monitor_health.py`` drives the stall clock with
offsets given by hand; ``tests/integration/test_monitor.py`` runs the whole monitor."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition

from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import end_offsets, make_consumer, records_behind, watermarks
from churnstream.streams.monitor_health import InputOffsets, InputWatch, Marks
from tests.integration.conftest import produce_raw


def test_input_offsets_and_lag_come_from_the_broker(settings: Settings, topics: Topics) -> None:
    topic = topics.monitoring_batches
    where = produce_raw(settings, topic, [(b"v1", b"record %d" % i) for i in range(5)])
    partition = where[0][0]
    assert [offset for _, offset in where] == [0, 1, 2, 3, 4]  # one key: one partition
    group = f"{settings.topic_prefix}monitor-offsets"
    committer = make_consumer(settings, group)
    try:
        committer.commit(offsets=[TopicPartition(topic, partition, 2)], asynchronous=False)
        ends = end_offsets(committer, topic)
        asked = watermarks(committer, [TopicPartition(topic, p) for p in sorted(ends)])
    finally:
        committer.close()
    assert ends[partition] == (0, 5) and asked[(topic, partition)] == (0, 5)
    assert sum(high for _, high in asked.values()) == 5 and len(asked) == len(ends) > 1

    offsets = InputOffsets(settings, group=group, assignment=lambda: [(topic, p) for p in ends])
    try:
        partitions = offsets.partitions()
        assert partitions == sorted(ends)
        marks = offsets.measure(partitions)
    finally:
        offsets.close()
    assert marks[partition] == Marks(0, 5, 2)
    assert all(m.end == 0 and m.committed < 0 for p, m in marks.items() if p != partition)

    # records 2..4 wait beyond the group's commit; the agent has handled up to offset 3 of them
    watch = InputWatch(settings=settings, offsets=offsets, read_offsets={(topic, partition): 4})
    now = time.monotonic()
    watch.note_input(marks, started=now, finished=now)
    assert watch.lag == 1
    assert records_behind(asked, {(topic, partition): 2}) == 3

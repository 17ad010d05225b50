"""How long an empty partition holds the others back in :class:`EventTimeReader` (no Kafka needed).

A worker that takes a partition over, or starts on a backlog, may wait seconds for the first fetch of
one topic while another topic's messages are already queued. Releasing those first would apply months
of one topic before the other's older events, which then arrive too late to apply (dead letters).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from confluent_kafka import TopicPartition

from churnstream.settings import Settings
from churnstream.streams.merge import EventTimeReader
from churnstream.timefmt import now_ms

DAY = 86_400_000


class _Broker:
    """The consumer calls the reader makes, answered from fixed end offsets."""

    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        pass

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return 0, self.ends[(tp.topic, tp.partition)]

    def committed(self, tps: list[TopicPartition], **_: Any) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in tps]


def _reader(ends: dict[tuple[str, int], int]) -> EventTimeReader:
    reader = EventTimeReader(settings=Settings(), consumer=_Broker(ends), idle_ms=2000, fetch_wait_ms=15_000)
    for key in ends:
        reader._queues[key] = deque()
    return reader


def test_a_partition_with_unread_messages_waits_past_the_idle_time() -> None:
    reader = _reader({("orders", 3): 100, ("profiles", 3): 14})
    profiles = ("profiles", 3)
    ts = 180 * DAY
    assert reader._blocks(profiles, ts, now=0.0)
    assert reader._blocks(profiles, ts, now=5.0)  # past idle_ms: still waits, the messages are there
    assert not reader._blocks(profiles, ts, now=15.5)  # a fetch this slow: read on (with a warning)


def test_after_a_quiet_spell_a_partition_with_new_unread_messages_still_waits_for_them() -> None:
    """The fetch wait is timed from when the messages were found waiting. It was timed from an idle
    spell before them: the first events published after 100 quiet seconds went on without the other
    topic's at once, with a warning of 104 s of waiting that never happened."""
    reader = _reader({("orders", 3): 100, ("profiles", 3): 14})
    key = ("profiles", 3)
    reader._next[key] = 14
    reader._last_ts[key] = 0
    assert reader._blocks(key, reader.max_skew_ms + 1, now=0.0)  # caught up and behind: idle after 2 s
    assert not reader._blocks(key, reader.max_skew_ms + 1, now=2.5)
    reader.consumer.ends[key] = 20  # 100 s later, new messages for it are published
    assert reader._blocks(key, 180 * DAY, now=100.0)
    assert reader._blocks(key, 180 * DAY, now=110.0)
    assert not reader._blocks(key, 180 * DAY, now=115.5)
    assert reader._gave_up == {key}


def test_a_caught_up_partition_that_never_delivered_holds_a_backlog_only_the_idle_time() -> None:
    """Its first events may be produced a moment after the other topics' (Kafka does not order
    partitions): a backlog's event waits idle_ms for it; a live event (stamped about now) does not."""
    reader = _reader({("orders", 3): 100, ("profiles", 3): 14})
    reader._next[("profiles", 3)] = 14  # everything read
    assert reader._blocks(("profiles", 3), 180 * DAY, now=0.0)
    assert not reader._blocks(("profiles", 3), 180 * DAY, now=2.5)
    fresh = _reader({("orders", 3): 100, ("profiles", 3): 14})
    fresh._next[("profiles", 3)] = 14
    assert not fresh._blocks(("profiles", 3), now_ms(), now=0.0)


def test_a_caught_up_partition_far_behind_waits_only_the_idle_time() -> None:
    reader = _reader({("orders", 3): 100, ("profiles", 3): 14})
    key = ("profiles", 3)
    reader._next[key] = 14
    reader._last_ts[key] = 0
    ts = reader.max_skew_ms + 1
    assert reader._blocks(key, ts, now=0.0)
    assert not reader._blocks(key, ts, now=2.5)


def test_the_position_a_partition_was_assigned_at_counts_not_the_older_commit() -> None:
    """A worker placed at Redis' applied-offset fence (ahead of Kafka's commit) must not wait for
    messages before the fence, which it will never read."""
    reader = _reader({("orders", 3): 100})
    reader._queues.clear()
    reader._assigned(reader.consumer, [TopicPartition("orders", 3, 100)])
    assert reader._blocks(("orders", 3), 180 * DAY, now=0.0)  # a backlog: the idle time, as above
    assert not reader._blocks(("orders", 3), 180 * DAY, now=2.5)  # not the 15 s of unread messages

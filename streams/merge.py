"""Reading the input topics in event-time order across partitions and topics.

A customer's orders, tickets and profile updates travel on different topics. When those topics are
consumed at different speeds — a backfill, a replay, a worker catching up after downtime — one topic can
run months ahead of another, and every event of the slower topic would then look late. This reader
merges its partitions the way Kafka Streams does: each assigned partition is a queue of decoded
messages, and the batch takes the queue head with the smallest event time next, but only while every
partition that still has unread messages has something queued (otherwise it fetches more first).
Partitions whose queue is full are paused, so memory stays bounded. Within a partition, messages are
released in offset order, so the offsets committed are always contiguous.

Dead letters (no event time) are released as soon as they reach the head of their queue.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from churnstream.events import Event, now_ms
from churnstream.messages import DeadLetter
from churnstream.settings import Settings
from churnstream.streams.ingest import Batch, Coordinates, InputReader, consume_messages, decode_message

log = logging.getLogger(__name__)

_Item = tuple[int, Event | None, DeadLetter | None, Coordinates]
_NO_TIME = -(2**62)  # the sort key of a dead letter: released as soon as it is at the head
_NEVER = 2**62
# How long the end offset the broker gave for a partition not fetched yet is trusted: an end asked for
# before the partition's first messages were produced would otherwise let the other topics run ahead of it.
KNOWN_END_SECONDS = 0.5


def _size(where: Coordinates) -> int:
    return len(where.value or b"") + len(where.key or b"")


class EventTimeReader(InputReader):
    """An :class:`InputReader` whose batches follow event time across all assigned partitions.

    ``max_queued`` bounds the messages held per partition, and ``max_queued_bytes`` their bytes over all
    partitions (each partition its share: the contract lets a message carry fields it ignores, up to the
    broker's limit, so a count alone bounds nothing); ``idle_ms`` is how long an empty partition
    that may merely be behind holds the others back (see :meth:`_blocks`) before it counts as idle;
    ``fetch_wait_ms`` is how long one that the broker says holds unread messages may (a fetch that slow
    means the broker or the machine is overloaded: waiting is still better than reading months ahead).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        group: str | None = None,
        on_assign: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        on_revoke: Callable[[Consumer, list[TopicPartition]], None] | None = None,
        max_queued: int = 5000,
        max_queued_bytes: int = 64 * 1024 * 1024,
        idle_ms: int = 2000,
        fetch_wait_ms: int = 15_000,
        **consumer_config: Any,
    ) -> None:
        self._queues: dict[tuple[str, int], deque[_Item]] = {}
        self._bytes: dict[tuple[str, int], int] = {}  # what a partition's queue holds of message bytes
        self._next: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._gave_up: set[tuple[str, int]] = set()  # warned: it held the others back for fetch_wait_ms
        self._waiting_since: dict[tuple[str, int], float] = {}  # empty and behind: since when (idle_ms)
        # empty while the broker holds unread messages for it: since when (fetch_wait_ms)
        self._unread_since: dict[tuple[str, int], float] = {}
        # the end the broker gave for a partition not fetched yet, and when it was asked
        self._known_end: dict[tuple[str, int], tuple[int, float] | None] = {}
        self._last_ts: dict[tuple[str, int], int] = {}
        # when a partition that has not delivered since it was assigned first held back a backlog's event
        self._backlog_since: dict[tuple[str, int], float] = {}
        self.max_skew_ms = settings.lateness_ms // 2
        self._user_assign = on_assign
        self._user_revoke = on_revoke
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        # bytes a message, as read lately; at first the broker's default limit, so the first fill fits too
        self._message_size = 1024 * 1024
        self.idle_ms = idle_ms
        self.fetch_wait_ms = fetch_wait_ms
        consumer_config.setdefault("config", {}).setdefault("fetch.wait.max.ms", 50)
        super().__init__(
            settings=settings,
            group=group,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            **consumer_config,
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._queues[(tp.topic, tp.partition)] = deque()
            self._bytes[(tp.topic, tp.partition)] = 0
            self._known_end[(tp.topic, tp.partition)] = None
        if self._user_assign is not None:
            self._user_assign(consumer, partitions)
        for tp in partitions:  # where the callback placed them (e.g. at an applied-offset fence)
            if tp.offset >= 0:
                self._next[(tp.topic, tp.partition)] = tp.offset

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._queues.pop(key, None)
            self._bytes.pop(key, None)
            self._next.pop(key, None)
            self._paused.discard(key)
            self._waiting_since.pop(key, None)
            self._unread_since.pop(key, None)
            self._known_end.pop(key, None)
            self._last_ts.pop(key, None)
            self._backlog_since.pop(key, None)
            self._gave_up.discard(key)
        if self._user_revoke is not None:
            self._user_revoke(consumer, partitions)

    def reopen(self) -> None:
        super().reopen()
        for state in (
            self._queues,
            self._bytes,
            self._next,
            self._waiting_since,
            self._unread_since,
            self._known_end,
            self._last_ts,
        ):
            state.clear()
        self._backlog_since.clear()
        self._paused.clear()
        self._gave_up.clear()

    def rewind(self) -> None:
        """Drop everything queued and seek each partition back to its last committed offset."""
        for queue in self._queues.values():
            queue.clear()
        self._bytes = dict.fromkeys(self._bytes, 0)
        self._next.clear()
        if self._paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self._paused])
            self._paused.clear()
        super().rewind()

    def _to_resume(self, assignment: list[TopicPartition]) -> list[TopicPartition]:
        return [tp for tp in assignment if (tp.topic, tp.partition) not in self._paused]  # full: stay

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``partition`` of ``topic`` from ``offset`` on, dropping what was queued of it."""
        key = (topic, partition)
        if key in self._queues:
            self._queues[key].clear()
            self._bytes[key] = 0
        super().seek(topic, partition, offset)
        self._next[key] = offset

    def _fill(self, timeout: float) -> None:
        now = now_ms()
        room = max(1, self.max_queued * max(1, len(self._queues)) - self.queued())
        # as many as the bytes left take at the messages' size so far: what is consumed must be queued
        free = max(0, self.max_queued_bytes - self.queued_bytes())
        room = max(1, min(room, free // self._message_size))
        for msg in consume_messages(self.consumer, min(room, self.settings.batch_size * 4), timeout):
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            key = (topic, partition)
            queue = self._queues.get(key)
            if queue is None:  # a message for a partition revoked meanwhile
                continue
            event, letter = decode_message(msg, self.settings, now=now)
            where = Coordinates(topic, partition, offset, msg.key(), msg.value())
            ts = event.timestamp if event is not None else _NO_TIME
            queue.append((ts, event, letter, where))
            size = _size(where)
            self._bytes[key] += size
            self._message_size = max(1, (7 * self._message_size + size) // 8)  # a moving average
            self._next[key] = offset + 1
            self._waiting_since.pop(key, None)
            self._unread_since.pop(key, None)
            self._backlog_since.pop(key, None)
            self._gave_up.discard(key)
            full = len(queue) >= self.max_queued or self._bytes[key] >= self._byte_share()
            if full and key not in self._paused:
                self.consumer.pause([TopicPartition(topic, partition)])
                self._paused.add(key)

    def _has_more(self, key: tuple[str, int]) -> bool:
        """Whether the broker holds messages of this partition that are not queued yet."""
        tp = TopicPartition(*key)
        try:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:  # not fetched yet: ask the broker, again after a while (it may have grown since)
                known = self._known_end.get(key)
                if known is None or time.monotonic() - known[1] > KNOWN_END_SECONDS:
                    low, high = self.consumer.get_watermark_offsets(tp, timeout=5)
                    self._known_end[key] = (high, time.monotonic())
                else:
                    low, high = 0, known[0]
        except KafkaException:
            return True
        position = self._next.get(key)
        if position is None:
            committed = self.consumer.committed([tp], timeout=5)[0].offset
            position = committed if committed >= 0 else low
            self._next[key] = position
        return position < high

    def _blocks(self, key: tuple[str, int], ts: int, now: float) -> bool:
        """Whether releasing an event at ``ts`` must wait for the empty partition ``key``.

        It must while the broker says the partition holds unread messages: they are on their way, and
        may be older than ``ts`` (a worker that took the partition over, or caught up after downtime,
        would otherwise read another topic months ahead and find these events too late to apply). Only
        a fetch that delivers nothing for ``fetch_wait_ms`` ends that wait, with a warning. It must also
        wait while the partition's last event is more than ``max_skew_ms`` behind ``ts`` (its next event
        may be older than ``ts`` and merely not produced yet); that wait ends after ``idle_ms``: a
        partition silent that long is idle, and holds nobody back until it delivers again.
        """
        if self._queues[key]:
            return False
        if self._has_more(key):
            # timed from when the messages were first found waiting, not from an idle spell before them:
            # after a quiet hour the first publish's other topics would otherwise not wait at all
            waited_ms = (now - self._unread_since.setdefault(key, now)) * 1000
            if waited_ms < self.fetch_wait_ms:
                return True
            if key not in self._gave_up:
                self._gave_up.add(key)
                log.warning(
                    "%s/%d holds unread messages but delivered none for %.0f s: reading the other "
                    "partitions on without it (its events may arrive too late to apply)",
                    *key,
                    waited_ms / 1000,
                )
            return False
        self._unread_since.pop(key, None)
        since = self._waiting_since.setdefault(key, now)
        waited_ms = (now - since) * 1000
        last = self._last_ts.get(key)
        if last is None:
            # Nothing known of it: its first events may be on their way (produced a moment after the
            # other topics' events, which Kafka does not order across partitions). An event of a backlog
            # (older than max_skew_ms by the clock) waits idle_ms from the first that had to; a live one
            # does not wait.
            if ts >= now_ms() - self.max_skew_ms:
                return False
            return (now - self._backlog_since.setdefault(key, now)) * 1000 < self.idle_ms
        if last + self.max_skew_ms >= ts:
            self._waiting_since.pop(key, None)
            return False
        return waited_ms < self.idle_ms

    def _release_bound(self, key: tuple[str, int], now: float) -> int:
        """The latest event time that the empty partition ``key`` surely lets go (:meth:`_blocks`).

        Cheap enough to call once per batch and partition, so releasing a message costs O(1) rather
        than a look at every empty partition: only a message past the bound takes the exact check.
        """
        if self._has_more(key):
            return _NO_TIME
        last = self._last_ts.get(key)
        if last is None:  # see _blocks: live events go, a backlog's wait a while for it: ask per event
            backlog = self._backlog_since.get(key)
            if backlog is not None and (now - backlog) * 1000 >= self.idle_ms:
                return _NEVER
            return _NO_TIME
        since = self._waiting_since.get(key)
        if since is not None and (now - since) * 1000 >= self.idle_ms:
            return _NEVER  # idle: holds nobody back
        return last + self.max_skew_ms

    def _blocking(self, ts: int | None = None) -> list[tuple[str, int]]:
        """Empty partitions that must deliver before events at ``ts`` (default: the oldest queued) go."""
        if ts is None:
            heads = [q[0][0] for q in self._queues.values() if q]
            if not heads:
                return []
            ts = min(heads)
        now = time.monotonic()
        return [key for key in self._queues if self._blocks(key, ts, now)]

    def poll_batch(self, max_messages: int | None = None, timeout: float | None = None) -> Batch:
        limit = max_messages or self.settings.batch_size
        wait = self.settings.batch_timeout_ms / 1000 if timeout is None else timeout
        deadline = time.monotonic() + wait
        self._fill(0 if self.queued() >= limit else wait)
        while self._blocking() and time.monotonic() < deadline:
            self._fill(max(0.0, min(0.02, deadline - time.monotonic())))
        batch = Batch()
        heap = [(q[0][0], key) for key, q in self._queues.items() if q]
        heapq.heapify(heap)
        now = time.monotonic()
        empty = [key for key, q in self._queues.items() if not q]
        # Events up to `bound` can go without asking the empty partitions again (see _release_bound).
        bound = min((self._release_bound(k, now) for k in empty), default=_NEVER)
        while heap and batch.size < limit:
            ts, key = heap[0]
            if _NO_TIME < ts > bound:
                if any(self._blocks(k, ts, now) for k in empty):
                    break  # a partition that may hold older events has nothing queued: wait for it
                bound = min((self._release_bound(k, now) for k in empty), default=_NEVER)
                bound = max(bound, ts)  # every empty partition said yes to ts (some are idle)
            heapq.heappop(heap)
            queue = self._queues[key]
            _, event, letter, where = queue.popleft()
            self._bytes[key] -= _size(where)
            if event is not None:
                batch.events.append((event, where))
                self._last_ts[key] = max(self._last_ts.get(key, ts), ts)
            elif letter is not None:
                batch.dead_letters.append(letter)
            batch.offsets[key] = where.offset + 1
            if queue:
                heapq.heappush(heap, (queue[0][0], key))
            else:
                empty.append(key)
                bound = min(bound, self._release_bound(key, now))
            if (
                key in self._paused
                and len(queue) < self.max_queued // 2
                and self._bytes[key] < self._byte_share() // 2
            ):
                self.consumer.resume([TopicPartition(*key)])
                self._paused.discard(key)
        return batch

    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued_bytes(self) -> int:
        return sum(self._bytes.values())

    def _byte_share(self) -> int:
        """The bytes one partition may queue: its share of ``max_queued_bytes``."""
        return self.max_queued_bytes // max(1, len(self._queues))

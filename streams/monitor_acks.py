"""Which monitoring records the monitor may let faust commit, and where a restarted monitor resumes.

A record's offset is committable (acked) once every prediction in it has been reported, and records are
acked in offset order per partition, so the open window's records stay uncommitted and a restarted monitor
reads them again. :class:`UncommittedRecords` keeps, per partition, the records not acked yet and what of
each went into which window (a record can straddle two), moves the committable point as windows are
reported, and gives the :class:`~churnstream.monitoring.state.Position` of each partition to save.

A record that feeds no window (a dead letter, or one reported before a restart) waits behind an
uncommitted record to be acked in order, keeping its bytes (faust's event) until then; beyond
:data:`MAX_WAITING_ACKS` and :data:`MAX_WAITING_ACK_BYTES` it is acked at once (faust still commits
offsets only in order).

>>> records = UncommittedRecords(resume={}, done_upto=0)
>>> acked = []
>>> first = records.admit(("t", 0), 0, lambda: acked.append(0))
>>> first.segments, first.holds = [(1, 10)], 1  # fed window 1, still open
>>> letter = records.admit(("t", 0), 1, lambda: acked.append(1))
>>> letter.holds = None  # a dead letter: waits behind record 0
>>> records.release(("t", 0)); records.wait_for_ack(("t", 0), letter, 7); acked, records.count()
([], 2)
>>> records.settle([1]), records.positions(lambda tp: None)
(True, {'t/0': Position(offset=2, rows=0, committed=None)})
>>> records.release_all(); acked, records.count()
([0, 1], 0)
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from churnstream.monitoring.state import Position

# the monitor's log lines keep the name operators know them by
log = logging.getLogger("churnstream.streams.monitor")

MAX_WAITING_ACKS = 1000
MAX_WAITING_ACK_BYTES = 16 * 1024 * 1024
_IN_FLIGHT = 2**62  # a record being decoded: holds back everything after it

PartitionId = tuple[str, int]  # (topic, partition)


@dataclass(slots=True)
class HeldRecord:
    """A record whose offset is not committed yet: what of it went into which window."""

    offset: int
    ack: Callable[[], Any] | None
    base_rows: int = 0  # predictions reported before a restart
    segments: list[tuple[int, int]] = field(default_factory=list)
    holds: int | None = _IN_FLIGHT  # the last window it fed; None: nothing (a dead letter, or reported)
    waits: int | None = None  # bytes it keeps while it waits to be acked in order (see MAX_WAITING_ACKS)

    def rows_reported(self, done: int) -> int:
        return self.base_rows + sum(rows for seq, rows in self.segments if seq <= done)


class UncommittedRecords:
    """The records of each partition not acked yet, and the committable point: every window up to
    ``done_upto`` is reported. ``resume`` holds the saved positions ("topic/partition" keys) of a restart."""

    def __init__(self, *, resume: Mapping[str, Position], done_upto: int) -> None:
        self.done_upto = done_upto
        self.next_offset: dict[PartitionId, int] = {}  # how far each partition has been read
        self.waiting_acks = 0
        self.waiting_ack_bytes = 0
        self._held: dict[PartitionId, deque[HeldRecord]] = {}
        self._skip: dict[PartitionId, Position] = {}
        self._done: set[int] = set()
        self._resume = {tp_of(key): p for key, p in resume.items()}

    def resume_from(self, resume: Mapping[str, Position], done_upto: int) -> None:
        """Start again from ``resume`` and ``done_upto`` (the state read back from the monitor's table once
        faust recovered it); only before the first record is admitted."""
        if self.next_offset or self._held:
            raise RuntimeError("the monitor's state can only be restored before its first record")
        self.done_upto = done_upto
        self._done.clear()
        self._skip.clear()
        self._resume = {tp_of(key): p for key, p in resume.items()}

    def admit(self, tp: PartitionId, offset: int | None, ack: Callable[[], Any] | None) -> HeldRecord | None:
        """Hold the record at ``offset`` of ``tp``; None when it was delivered again after a rebalance
        (the first delivery is still held). Its ``base_rows`` predictions were reported before a restart;
        ``holds`` is None when all of it was."""
        skip_rows, reported = 0, False
        if offset is not None:
            expected = self.next_offset.get(tp)
            if expected is None:
                self._resume_partition(tp, offset)
            elif offset < expected:
                return None
            self.next_offset[tp] = offset + 1
            skip = self._skip.get(tp)
            if skip is not None:
                if offset < skip.offset:
                    reported = True
                else:
                    skip_rows = skip.rows if offset == skip.offset else 0
                    del self._skip[tp]
        held = HeldRecord(offset if offset is not None else -1, ack, base_rows=skip_rows)
        self._held.setdefault(tp, deque()).append(held)
        if reported:
            held.holds = None
        return held

    def wait_for_ack(self, tp: PartitionId, held: HeldRecord, size: int) -> None:
        """``held`` (a dead letter, or reported before a restart) waits behind an uncommitted record to be
        acked in order, within :data:`MAX_WAITING_ACKS` and :data:`MAX_WAITING_ACK_BYTES`; beyond them it
        is acked now (faust commits in offset order all the same)."""
        queue = self._held.get(tp)
        if not queue or queue[-1] is not held:
            return  # released already
        if self.waiting_acks < MAX_WAITING_ACKS and self.waiting_ack_bytes + size <= MAX_WAITING_ACK_BYTES:
            held.waits = size
            self.waiting_acks += 1
            self.waiting_ack_bytes += size
            return
        queue.pop()
        if held.ack is not None:
            held.ack()

    def _resume_partition(self, tp: PartitionId, offset: int) -> None:
        position = self._resume.pop(tp, None)
        if position is None or (offset > position.offset and position.rows == 0):
            return  # nothing of the records from here on was reported
        if position.applies_to(offset):
            if offset < position.offset or position.rows:
                self._skip[tp] = position
                log.info(
                    "%s[%d]: resuming at offset %d, %d predictions of it already reported",
                    tp[0],
                    tp[1],
                    position.offset,
                    position.rows,
                )
        else:
            log.warning(
                "%s[%d]: the group's offset %d is not where reporting stopped (%d): offsets were moved; "
                "reading from %d as they say",
                tp[0],
                tp[1],
                offset,
                position.offset,
                offset,
            )

    def settle(self, seqs: Iterable[int]) -> bool:
        """Windows ``seqs`` are reported (or became a kept reference): move the committable point; whether
        it moved. The records it frees are acked by :meth:`release_all`."""
        self._done.update(seqs)
        before = self.done_upto
        while self.done_upto + 1 in self._done:
            self.done_upto += 1
            self._done.discard(self.done_upto)
        return self.done_upto != before

    def positions(self, committed_at: Callable[[PartitionId], int | None]) -> dict[str, Position]:
        """Per partition ("topic/partition"), the first record that stays uncommitted and how much of it is
        reported, with the offset ``committed_at`` says the group committed: what a restart resumes from."""
        # partitions not read again since a restart, or not yet up to where reporting stopped,
        # keep their position
        positions = {key_of(tp): p for tp, p in (*self._resume.items(), *self._skip.items())}
        for tp, queue in self._held.items():
            head = next((h for h in queue if h.holds is not None and h.holds > self.done_upto), None)
            if tp in self._skip:
                continue
            if head is None:
                positions[key_of(tp)] = Position(self.next_offset.get(tp, 0), 0, committed_at(tp))
            else:
                rows = head.rows_reported(self.done_upto)
                positions[key_of(tp)] = Position(head.offset, rows, committed_at(tp))
        return positions

    def release(self, tp: PartitionId) -> None:
        """Ack the records at the head of ``tp`` that are wholly reported, in offset order."""
        queue = self._held.get(tp)
        while queue and (queue[0].holds is None or queue[0].holds <= self.done_upto):
            held = queue.popleft()
            if held.waits is not None:
                self.waiting_acks -= 1
                self.waiting_ack_bytes -= held.waits
            if held.ack is not None:
                held.ack()

    def release_all(self) -> None:
        for tp in self._held:
            self.release(tp)

    def count(self) -> int:
        """How many records are held (not acked yet)."""
        return sum(len(q) for q in self._held.values())


def key_of(tp: PartitionId) -> str:
    return f"{tp[0]}/{tp[1]}"


def tp_of(key: str) -> PartitionId:
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)

"""The feature store: per-customer state behind one small interface, in memory or in Redis.

A micro-batch is one :class:`Transaction`: :meth:`FeatureStore.begin` loads the customers it touches,
:meth:`Transaction.apply` applies each event and returns the customer's features as of that event's
time, and :meth:`FeatureStore.commit` writes everything back. Updates are

* idempotent per ``event_id`` — a redelivered event changes nothing (its features are recomputed, so a
  re-emitted prediction carries the same numbers);
* correct for out-of-order events within the allowed lateness — features as of t use only events <= t;
* atomic per input partition — the store owns each partition's customers, applied-offset fences, event
  time, sweep tick, claim and learner checkpoint; a transaction writes each partition it touches in one
  atomic step that first checks every customer's version and the partition's expected claim and fences
  (compare-and-set), so a stale worker after a rebalance cannot overwrite newer state.

A transaction can carry more than features: the scoring worker keeps per-customer data of its own in
the scoring part of the same state (:class:`~churnstream.features.state.ScoringState`: pending
predictions, last alert) and a ``due`` index, and sets its partitions' fences, event time, sweep tick
and learner checkpoint through named methods — all committed with the customers of the same partition,
so a crash can never leave them disagreeing.

Memory stays bounded: old events are folded into totals (see :mod:`churnstream.features.state`).
The implementations are :class:`churnstream.features.redis_store.RedisFeatureStore` and, in process,
:class:`churnstream.features.memory_store.MemoryFeatureStore`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from churnstream.events import Event, LabelEvent
from churnstream.features import layout
from churnstream.features.definitions import features_as_of
from churnstream.features.layout import check_layout, fence_field, partition_of
from churnstream.features.state import CustomerState
from churnstream.features.transaction import (
    Features,
    LearnerRecord,
    PartitionWrite,
    Transaction,
    UpdateResult,
    check_servable,
    is_servable,
)

__all__ = [
    "Due",
    "FeatureStore",
    "Features",
    "LearnerCheckpoint",
    "LearnerHistory",
    "LearnerRecord",
    "PartitionWrite",
    "Transaction",
    "UpdateResult",
    "check_servable",
    "is_servable",
]


@dataclass(slots=True)
class Due:
    """What :meth:`FeatureStore.due_before` found in one partition: the customers due now, and when the
    next one is due (None: nobody; the bound itself when more were due than listed)."""

    customers: list[str]
    next_due: int | None


@dataclass(slots=True)
class LearnerCheckpoint:
    """A partition's online learner as committed: its snapshot (model, blender) and the log since."""

    online: bytes | None
    blender: bytes | None
    learned: bytes | None


@dataclass(frozen=True, slots=True)
class LearnerHistory:
    """The latest records of a partition's learner history before a time, newest first (at most two),
    and the time its records are kept from (None: every record since the learner knew nothing)."""

    records: list[LearnerRecord]
    known_from: int | None

    def served(self, *, before_latest: bool = False) -> tuple[bool, bytes | None]:
        """``(known, state)``: the learner's serving state before the time asked (``before_latest``: before
        the latest record's own time); state None: the learner had learned nothing yet. ``known`` False:
        the history kept does not reach back so far."""
        i = 1 if before_latest else 0
        if i < len(self.records):
            return True, self.records[i].state
        return self.known_from is None, None


class FeatureStore(ABC):
    """Per-customer feature state and per-partition records; subclasses load and atomically save them.

    ``partitions``: how many partitions the input topics have, to find a customer's partition for reads
    that name only the customer (:meth:`features`); None: as recorded with the layout (1 if none).
    """

    # whether the store writes states as JSON: its transactions then keep the feature parts' JSON as
    # events change them (Transaction.feature_parts)
    keeps_feature_parts = False

    def __init__(self, *, lateness_ms: int, partitions: int | None = None) -> None:
        self.lateness_ms = lateness_ms
        self.partitions = partitions
        self._unrecorded_layout: dict[str, Any] | None = None  # checked, written with the first write

    def partition_of(self, customer_id: str) -> int:
        """The input partition of a customer, as producers choose it (see :func:`layout.partition_of`)."""
        return partition_of(customer_id, self.partitions or 1)

    # -- writing ---------------------------------------------------------------------------------
    def begin(
        self, customers: Mapping[str, int] | Iterable[str], *, into: Transaction | None = None
    ) -> Transaction:
        """Load the given customers (``{customer: partition}``; a plain list: located by
        :meth:`partition_of`) into a new transaction; unknown ones start empty.

        ``into``: load those not in that open transaction into it instead (a unit of work that grows:
        the scorer sweeps a tick in the transaction of the events that reached it)."""
        where = (
            dict(customers)
            if isinstance(customers, Mapping)
            else {cid: self.partition_of(cid) for cid in customers}
        )
        if into is not None:
            where = {cid: p for cid, p in where.items() if cid not in into.states}
            loaded = self._load(where)
            into.versions.update({cid: v for cid, (v, _) in loaded.items()})
            into.states.update({cid: s for cid, (_, s) in loaded.items()})
            into.partitions.update(where)
            return into
        loaded = self._load(where)
        return Transaction(
            lateness_ms=self.lateness_ms,
            versions={cid: v for cid, (v, _) in loaded.items()},
            states={cid: s for cid, (_, s) in loaded.items()},
            partitions=where,
            feature_parts={} if self.keeps_feature_parts else None,
        )

    def commit(self, tx: Transaction, *, after: Callable[[], None] | None = None) -> None:
        """Write the transaction, each partition all or nothing. It may still be in flight: :meth:`flush`
        waits.

        The transaction is finished once committed: a store may keep its state objects (the Redis
        store hands them to the next transaction instead of parsing the JSON again), so nothing may
        change ``tx`` after this call.

        ``after`` runs first and the write happens only if it returns: the scorer passes "every output
        of this batch is acknowledged by Kafka", which an asynchronous store waits for off the caller's
        thread. An exception from it is raised again by :meth:`flush`, and nothing is written.

        Crash safety: each partition is written in one atomic step with its own applied-offset fences,
        claim check, event time, sweep tick and learner checkpoint, and a worker resumes every partition
        from its own fence. A crash (or a refusal) between two partitions' steps leaves one partition
        written and the other not: the first resumes after the batch, the second reads its part again
        and re-emits the same outputs (same prediction ids), as after a crash before any write.
        """
        writes = tx.writes()
        if writes:
            self._before_write()
            self._save(tx, writes, after)
        elif after is not None:
            after()

    def update(self, events: Sequence[Event], *, partition: int | None = None) -> list[UpdateResult]:
        """Apply a micro-batch in one transaction; per event, its features as of its own time.

        ``partition``: where the events were read (None: each customer's :meth:`partition_of`)."""
        ids = {e.customer_id for e in events if not isinstance(e, LabelEvent)}
        tx = self.begin({cid: self.partition_of(cid) if partition is None else partition for cid in ids})
        try:
            results = [tx.apply(e) for e in events]
        except BaseException:
            self.reset()  # cached states may be half-updated in place
            raise
        self.commit(tx)
        return results

    def flush(self) -> None:
        """Block until every commit so far is durable; :class:`StoreError` if any write was refused."""
        return None  # synchronous stores are durable on return

    def reset(self) -> None:
        """Forget anything cached in this process (after a rebalance or a failed write)."""
        return None  # nothing cached by default

    def probe_write(self, partitions: Iterable[int]) -> None:
        """A write that no reader sees, where ``partitions`` are kept: :class:`StoreError` while the store
        refuses writes (Redis out of memory, a read-only replica after a failover). A worker asks before
        it reads on after a failed write, so that it does not compute a batch again, and re-emit its
        outputs, for every retry of a write Redis would refuse."""
        return None  # a store in this process always takes writes

    def write_claims(self, claims: Mapping[int, str]) -> None:
        """Claim partitions (``{partition: claim}``) outside any transaction (see
        :meth:`Transaction.expect_claim`)."""
        self._before_write()
        self._write_fields({p: {layout.CLAIM: claim} for p, claim in claims.items()})

    # -- reading ---------------------------------------------------------------------------------
    def locate(self, customer_ids: Iterable[str]) -> dict[str, int]:
        """Each customer's partition: where its state is. Where producers' murmur2 puts it
        (:meth:`partition_of`), or, from a producer with another partitioner that keeps each customer on
        one partition (librdkafka's default, CRC32), whichever partition holds it; an unknown customer's
        murmur2 one. Readers (the API, ``features``, ``forget``) look here; the scorer files a customer
        under the partition its events arrive on."""
        at = {cid: self.partition_of(cid) for cid in customer_ids}
        count = self.partitions or 1
        if count > 1 and at:
            held = self._holders(set(at.items()))
            missing = [cid for cid, p in at.items() if (cid, p) not in held]
            found: dict[str, int] = {}
            if missing:
                for cid, p in sorted(self._holders({(cid, p) for cid in missing for p in range(count)})):
                    found.setdefault(cid, p)  # the lowest partition holding it
            at.update(found)
        return at

    def _partitions_of(self, customer_id: str) -> list[int]:
        """Every partition holding a state of ``customer_id`` (its murmur2 one first; that one alone when
        none does): ``forget`` removes them all, even the copies producers with two partitioners made."""
        home = self.partition_of(customer_id)
        count = self.partitions or 1
        held = self._holders({(customer_id, p) for p in range(count)}) if count > 1 else set()
        return [home] + sorted(p for _, p in held if p != home)

    def features(self, customer_id: str, as_of: int | None = None) -> Features | None:
        """Features of one customer as of ``as_of`` (default: the latest event time seen); None if unknown."""
        version, state = self._load(self.locate([customer_id]))[customer_id]
        if version == 0:
            return None
        t = self.watermark() if as_of is None else as_of
        if t is None:
            return None
        check_servable(state, t)
        return features_as_of(state, t)

    def features_many(self, customer_ids: Iterable[str], as_of: int) -> dict[str, Features]:
        """Features of several known customers as of one time (for comparisons)."""
        loaded = self._load(self.locate(customer_ids))
        return {cid: features_as_of(state, as_of) for cid, (v, state) in loaded.items() if v > 0}

    def states(
        self, customer_ids: Iterable[str], at: Mapping[str, int] | None = None
    ) -> dict[str, CustomerState]:
        """Raw states of known customers (read-only use); ``at``: their partitions, when located already."""
        loaded = self._load(self.locate(customer_ids) if at is None else at)
        return {cid: state for cid, (v, state) in loaded.items() if v > 0}

    def fence(self, topic: str, partition: int) -> int | None:
        """The applied-offset fence of ``topic``/``partition`` (None: nothing applied yet)."""
        return _int(self._field(partition, fence_field(topic)))

    def partition_time(self, partition: int) -> int | None:
        """The event time last recorded with :meth:`Transaction.set_partition_time`."""
        return _int(self._field(partition, layout.TIME))

    def partition_reached_by(self, partition: int) -> str | None:
        """The fingerprint of the event that brought ``partition`` to its time (see
        :meth:`Transaction.set_partition_time`; None: not known)."""
        return self._field(partition, layout.TIME_BY) or None

    def sweep_tick(self, partition: int) -> int | None:
        """The sweep tick last recorded with :meth:`Transaction.set_sweep_tick`."""
        return _int(self._field(partition, layout.SWEEP))

    def alert_budget(self, partition: int) -> str | None:
        """The alert budget counts last recorded with :meth:`Transaction.set_alert_budget`."""
        return self._field(partition, layout.ALERT_BUDGET)

    def claim(self, partition: int) -> str | None:
        """Who holds ``partition`` (see :meth:`write_claims`)."""
        return self._field(partition, layout.CLAIM)

    def erased_count(self, partition: int) -> int | None:
        """How many customers ``churnstream forget`` has removed from ``partition`` so far, as this store
        last learned it (with its latest write there); None while it does not know."""
        return None

    def learner_erased(self, partition: int) -> int:
        """The count of forgotten customers ``partition``'s learner checkpoint was last written at (see
        :meth:`Transaction.set_learner_erased`): its log holds no raw row of them."""
        return int(self._field(partition, layout.LEARNER_ERASED) or 0)

    def learner_checkpoint(self, partition: int) -> LearnerCheckpoint:
        """``partition``'s learner as last committed (see :meth:`Transaction.save_learner`)."""
        online, blender, learned = self._blobs(
            partition, [layout.LEARNER_ONLINE, layout.LEARNER_BLENDER, layout.LEARNER_LOG]
        )
        return LearnerCheckpoint(online, blender, learned)

    def learner_history(
        self, wanted: Iterable[tuple[int, int]]
    ) -> dict[tuple[int, int], LearnerHistory | None]:
        """For each ``(partition, before)``, the latest records of the partition's learner history from
        before ``before`` (:meth:`Transaction.record_learner`), in one round trip: what the stream served
        predictions with then. None where the partition has no history (nothing learned yet, or a store
        written by a release before histories): its current learner serves.
        """
        pairs = sorted(set(wanted))
        return {
            pair: None if records is None else LearnerHistory(records, known_from)
            for pair, (records, known_from) in zip(pairs, self._learner_history(pairs), strict=True)
        }

    def check_layout(self, *, partitions: int | None = None) -> None:
        """Refuse (:class:`LayoutError`) state in another layout or for another partition count. When
        nothing is recorded yet, this layout (with ``partitions``, the input topics' count) is recorded
        with the first write, never by the check itself: a worker that then refuses to start (Redis lost
        the state Kafka says was processed) leaves Redis as it found it."""
        found = self._layout()
        check_layout(found, legacy=self._legacy(), partitions=partitions, where=self.where())
        recorded = None if found is None else found.get("partitions")
        if found is None or recorded is None and partitions is not None:
            self._unrecorded_layout = {"version": layout.LAYOUT_VERSION, "partitions": partitions}
        self.partitions = partitions or recorded or self.partitions

    def _before_write(self) -> None:
        """Record the layout :meth:`check_layout` found missing, once, before the first write."""
        if self._unrecorded_layout is not None:
            self._write_layout(self._unrecorded_layout)
            self._unrecorded_layout = None

    def layout_version(self) -> int | None:
        """The stored layout's version: None when nothing is stored, 1 for the layout without hash tags."""
        found = self._layout()
        if found is not None:
            return int(found.get("version", 0))
        return 1 if self._legacy() else None

    @abstractmethod
    def watermark(self) -> int | None:
        """The latest event time this store has applied (over all partitions)."""

    def active_before(
        self, before: int, *, partitions: Sequence[int], since: int | None = None, wait: bool = True
    ) -> dict[str, int]:
        """``{customer: partition}`` of ``partitions`` whose latest event time is in [``since``, ``before``),
        oldest first: :meth:`active_in` of one window."""
        return self.active_in([(since, before)], partitions=partitions, wait=wait)

    def active_in(
        self,
        windows: Sequence[tuple[int | None, int]],
        *,
        partitions: Sequence[int],
        wait: bool = True,
        pending: Transaction | None = None,
    ) -> dict[str, int]:
        """``{customer: partition}`` of ``partitions`` whose latest event time is in one of the
        ``[since, before)`` windows: each window's customers oldest first, windows in turn (a customer in
        two where the first put it).

        Sees every commit so far: it waits for the write in flight unless ``wait`` is False, and then lays
        what that write changes over what the store answers, so the answer is the same, sooner. With
        ``pending``, that open transaction's changes are laid over too (as if it were written).
        """
        overlay: dict[int, dict[str, int | None]] = {}
        for p, latest in () if wait else self._in_flight_active().items():
            overlay.setdefault(p, {}).update(latest)
        if pending is not None:
            for cid in pending.changed:
                overlay.setdefault(pending.partitions[cid], {})[cid] = pending.states[cid]["max"]
        found = self._active_rows(windows, partitions, wait=wait)
        out: dict[str, int] = {}
        for (since, before), rows in zip(windows, found, strict=True):
            lo = -(2**62) if since is None else since
            kept = [(ts, cid, p) for ts, cid, p in rows if cid not in overlay.get(p, {})]
            for p in partitions:
                kept += [
                    (ts, cid, p)
                    for cid, ts in overlay.get(p, {}).items()
                    if ts is not None and lo <= ts < before
                ]
            for _, cid, p in sorted(kept):
                out.setdefault(cid, p)
        return out

    @abstractmethod
    def _active_rows(
        self, windows: Sequence[tuple[int | None, int]], partitions: Sequence[int], *, wait: bool
    ) -> list[list[tuple[int, str, int]]]:
        """Per window, ``(latest event time, customer, partition)`` of ``partitions`` in it, as committed
        (``wait``: after the write in flight)."""

    def _in_flight_active(self) -> dict[int, dict[str, int | None]]:
        """Partition -> customer -> latest event time (None: none) as the write in flight leaves them."""
        return {}

    @abstractmethod
    def due_before(self, until: Mapping[int, int], *, limit: int) -> dict[int, Due]:
        """Per partition ``p`` of ``until``: its customers whose ``due`` time is <= ``until[p]`` (at most
        ``limit``), and its earliest due time after that.

        May miss a commit still in flight (it does not wait): callers ask again with the next batch.
        """

    @abstractmethod
    def customers(self) -> list[str]:
        """Every known customer (for comparisons and rebuild checks; not for hot paths)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget everything, layout included (for rebuilds)."""

    @abstractmethod
    def forget(self, customer_id: str) -> bool:
        """Remove everything kept about ``customer_id``: its state (features, remembered event ids, pending
        predictions, risk and alert cooldown) and its entries in its partition's activity and due indexes,
        in one atomic step. True when there was something to remove.

        Safe while scorers run: a scorer holding the customer in its cache sees the partition's count of
        forgotten customers change (with its next write there, or read before use after a pause) and
        reads the customer afresh, so a later event of the customer starts from nothing. A forgetting
        while a unit is computed has that unit's write refused (the version it expects is gone): the
        scorer rewinds and answers the unit again.
        """

    # -- what subclasses provide -----------------------------------------------------------------
    @abstractmethod
    def _holders(self, places: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """Those ``(customer, partition)`` whose state the store holds (as written: not a cache)."""

    @abstractmethod
    def _load(self, customers: Mapping[str, int]) -> dict[str, tuple[int, CustomerState]]:
        """``{customer_id: (version, state)}``, version 0 and a new state for unknown customers."""

    @abstractmethod
    def _save(
        self, tx: Transaction, writes: dict[int, PartitionWrite], after: Callable[[], None] | None
    ) -> None:
        """Run ``after``, then write each partition if its customers' stored versions are still as loaded
        and its expectations hold; :class:`StoreError` (now or from :meth:`flush`) if any was refused."""

    @abstractmethod
    def _field(self, partition: int, name: str) -> str | None:
        """A field of a partition's meta record (sees every commit so far)."""

    @abstractmethod
    def _write_fields(self, values: Mapping[int, Mapping[str, str]]) -> None:
        """Set meta fields of several partitions at once, outside any transaction."""

    @abstractmethod
    def _blobs(self, partition: int, names: Sequence[str]) -> list[bytes | None]:
        """Blobs of a partition (sees every commit so far)."""

    @abstractmethod
    def _learner_history(
        self, pairs: Sequence[tuple[int, int]]
    ) -> list[tuple[list[LearnerRecord] | None, int | None]]:
        """Per ``(partition, before)``: the latest two learner records before ``before``, newest first
        (None: the partition has none at all), and the time the history is known from (see
        :data:`layout.LEARNER_HISTORY_FROM`; None: from the start)."""

    @abstractmethod
    def _layout(self) -> dict[str, Any] | None:
        """The stored layout record, None if none."""

    @abstractmethod
    def _write_layout(self, record: dict[str, Any]) -> None: ...

    def _legacy(self) -> bool:
        """Whether state of layout 1 (which recorded no layout) is stored."""
        return False

    def where(self) -> str:
        """Where this store keeps its state, for messages."""
        return "the feature store"


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


CONFLICT = (
    "Redis no longer holds what this worker expects: another writer changed its customers or claimed its "
    "partitions (a rebalance), or Redis lost writes it had acknowledged (a restart, a failover, a flush); "
    "the batch was not written"
)


def __getattr__(name: str) -> Any:
    # the implementations live in their own modules (which import this one)
    if name == "MemoryFeatureStore":
        from churnstream.features.memory_store import MemoryFeatureStore

        return MemoryFeatureStore
    if name == "RedisFeatureStore":
        from churnstream.features.redis_store import RedisFeatureStore

        return RedisFeatureStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""One micro-batch's reads and pending writes: :class:`Transaction` (see :mod:`.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from churnstream.errors import ProcessingError
from churnstream.events import Event, LabelEvent, format_time
from churnstream.features import layout
from churnstream.features.definitions import features_as_of
from churnstream.features.layout import fence_field
from churnstream.features.state import (
    DUPLICATE,
    LONGEST_WINDOW_MS,
    CustomerState,
    FeatureState,
    apply_event,
    dump_feature_part,
)

Features = dict[str, float | int | None]


@dataclass(slots=True)
class UpdateResult:
    """What one event did: ``status`` is ``applied``, ``duplicate`` or ``rejected`` (see ``error``)."""

    event: Event
    status: str
    features: Features | None
    error: ProcessingError | None = None
    as_of: int | None = None  # the time ``features`` are valid at: the event's own time when exact


@dataclass(frozen=True, slots=True)
class LearnerRecord:
    """A learner's serving state (``Learner.serving_bytes``) from its partition's event time ``at`` on: it
    learned at a sweep tick once the event of fingerprint ``reached_by`` (:func:`churnstream.ids.
    event_fingerprint`; None: not known) brought the partition there, after that event was scored. Its
    partition's history keeps the latest ``keep`` records. ``complete``: the learner had learned nothing
    before, so before the history's first record the learner knew nothing (else the history is known from
    its first record on)."""

    at: int
    reached_by: str | None
    state: bytes
    keep: int = 1
    complete: bool = True

    def payload(self) -> bytes:
        """The fingerprint and the state as one value (what a store keeps beside the time)."""
        return orjson.dumps(self.reached_by) + b"\n" + self.state

    @classmethod
    def of_payload(cls, at: int, payload: bytes) -> LearnerRecord:
        event, _, state = payload.partition(b"\n")  # JSON escapes a newline
        return cls(at, orjson.loads(event), state)


@dataclass(slots=True)
class PartitionWrite:
    """What a transaction writes to one partition, and what must still hold there for it to happen."""

    customers: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    expect: dict[str, str | None] = field(default_factory=dict)  # None: absent
    blobs: list[tuple[str, bytes, bool]] = field(default_factory=list)  # (name, value, append)
    history: list[LearnerRecord] = field(default_factory=list)
    due: dict[str, int | None] = field(default_factory=dict)
    latest: int | None = None
    scoring_only: set[str] = field(default_factory=set)  # customers whose feature part is as loaded
    # customers an event was applied to -> their feature part's JSON (dump_feature_part), when kept
    feature_parts: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Transaction:
    """The reads and pending writes of one micro-batch; commit it with :meth:`FeatureStore.commit`."""

    lateness_ms: int
    versions: dict[str, int]
    states: dict[str, CustomerState]
    partitions: dict[str, int]  # customer -> input partition (given to begin)
    changed: set[str] = field(default_factory=set)
    # customers an event was applied to: their feature part may differ from what was loaded. Only
    # ``apply`` changes a feature part; every other writer (labels, pending predictions) the scoring part.
    applied: set[str] = field(default_factory=set)
    due: dict[str, int | None] = field(default_factory=dict)  # customer -> next due time (None: none)
    # None, or customer -> the JSON of its feature part, serialized by ``apply`` as it changes it: a store
    # that writes JSON asks for it (see FeatureStore.keeps_feature_parts). The state was just read to
    # compute its features, so it is in the CPU's caches; at the write, after scoring and learning, it is
    # not: ~9 us a state there against ~3 us here (bench/bench_scorer.py's drain).
    feature_parts: dict[str, bytes] | None = None
    _writes: dict[int, PartitionWrite] = field(default_factory=dict)

    def apply(self, event: Event) -> UpdateResult:
        """Apply one event to its customer's state (loaded by ``begin``)."""
        if isinstance(event, LabelEvent):
            return UpdateResult(event, "applied", None)
        state = self.states[event.customer_id]
        self.applied.add(event.customer_id)
        try:
            status = apply_event(state, event, lateness_ms=self.lateness_ms)
        except ProcessingError as exc:
            if self.feature_parts is not None:  # serialized again at the write, whatever it holds
                self.feature_parts.pop(event.customer_id, None)
            return UpdateResult(event, "rejected", None, exc)
        if status != DUPLICATE:
            self.changed.add(event.customer_id)
            w = self._write(self.partitions[event.customer_id])
            if w.latest is None or event.timestamp > w.latest:
                w.latest = event.timestamp
        # A very late event is applied, but features as of its own time can no longer be rebuilt
        # exactly: it is then scored as of the customer's latest event instead.
        latest = state["max"]
        t = event.timestamp if latest is None or is_servable(state, event.timestamp) else latest
        features = features_as_of(state, t)
        if self.feature_parts is not None and status != DUPLICATE:
            self.feature_parts[event.customer_id] = dump_feature_part(state)
        return UpdateResult(event, status, features, as_of=t)

    def state(self, customer_id: str) -> CustomerState:
        """A customer's state as loaded by ``begin``; written back once the customer is marked changed
        (an applied event, or :meth:`touch`)."""
        return self.states[customer_id]

    def touch(self, customer_id: str) -> None:
        """Mark a customer's scoring part as changed by the caller (e.g. pending predictions added).

        Only :meth:`apply` changes a feature part: a store may write the feature part of a customer
        without applied events as it was loaded, without serializing it again."""
        self.changed.add(customer_id)

    def known(self, customer_id: str) -> bool:
        """Whether the customer existed before this transaction or has had an event applied in it."""
        return self.versions.get(customer_id, 0) > 0 or self.states[customer_id]["max"] is not None

    # -- what a partition records beside its customers ------------------------------------------------
    def set_fence(self, topic: str, partition: int, offset: int) -> None:
        """Record that messages of ``topic``/``partition`` before ``offset`` are applied."""
        self._write(partition).meta[fence_field(topic)] = str(offset)

    def expect_fence(self, topic: str, partition: int, offset: int | None) -> None:
        """Write ``partition`` only if its fence of ``topic`` is still ``offset`` (None: none yet): the fence
        this writer wrote last, so a Redis that lost writes refuses the batch instead of building on them."""
        self._write(partition).expect[fence_field(topic)] = None if offset is None else str(offset)

    def expect_claim(self, partition: int, claim: str) -> None:
        """Write ``partition`` only while ``claim`` holds it (see :meth:`FeatureStore.write_claims`)."""
        self._write(partition).expect[layout.CLAIM] = claim

    def set_partition_time(self, partition: int, t: int, reached_by: str | None = None) -> None:
        """Record the caller's latest event time of ``partition``, and the fingerprint of the event that
        brought it there (:func:`churnstream.ids.event_fingerprint`; None: not known)."""
        meta = self._write(partition).meta
        meta[layout.TIME] = str(t)
        meta[layout.TIME_BY] = reached_by or ""

    def set_sweep_tick(self, partition: int, t: int) -> None:
        """Record the last sweep tick done in ``partition``."""
        self._write(partition).meta[layout.SWEEP] = str(t)

    def set_alert_budget(self, partition: int, text: str) -> None:
        """Record ``partition``'s alert budget counts (:class:`churnstream.models.alert_policy.Budget`)."""
        self._write(partition).meta[layout.ALERT_BUDGET] = text

    def set_learner_erased(self, partition: int, count: int) -> None:
        """Record that ``partition``'s learner checkpoint holds no raw row of the first ``count`` customers
        forgotten in it (see :meth:`FeatureStore.erased_count`)."""
        self._write(partition).meta[layout.LEARNER_ERASED] = str(count)

    def save_learner(self, partition: int, online: bytes, blender: bytes) -> None:
        """Replace ``partition``'s learner snapshot; its log of learned labels starts empty again."""
        self._write(partition).blobs += [
            (layout.LEARNER_ONLINE, online, False),
            (layout.LEARNER_BLENDER, blender, False),
            (layout.LEARNER_LOG, b"", False),
        ]

    def record_learner(self, partition: int, record: LearnerRecord) -> None:
        """Add ``record`` to ``partition``'s learner history (replacing one at the same time): what
        :meth:`FeatureStore.learner_history` reads."""
        self._write(partition).history.append(record)

    def log_learned(self, partition: int, log: bytes) -> None:
        """Append to ``partition``'s log of what its learner learned since the snapshot."""
        self._write(partition).blobs.append((layout.LEARNER_LOG, log, True))

    def _write(self, partition: int) -> PartitionWrite:
        w = self._writes.get(partition)
        if w is None:
            w = self._writes[partition] = PartitionWrite()
        return w

    def writes(self) -> dict[int, PartitionWrite]:
        """Everything to write, by partition (what a store commits; one atomic step per partition)."""
        for cid in self.changed:
            w = self._write(self.partitions[cid])
            w.customers.append(cid)
            if cid not in self.applied:
                w.scoring_only.add(cid)
            elif self.feature_parts and cid in self.feature_parts:
                w.feature_parts[cid] = self.feature_parts[cid]
        for cid, due in self.due.items():
            self._write(self.partitions[cid]).due[cid] = due
        writes, self._writes = self._writes, {}
        self.changed, self.applied, self.due = set(), set(), {}
        if self.feature_parts is not None:
            self.feature_parts = {}
        return writes


def is_servable(state: FeatureState, t: int) -> bool:
    """Whether features as of ``t`` can still be computed exactly (nothing folded lies in a window)."""
    return state["fu"] is None or t >= state["fu"] + LONGEST_WINDOW_MS


def check_servable(state: FeatureState, t: int) -> None:
    """Raise :class:`ProcessingError` when features as of ``t`` can no longer be computed exactly."""
    fu = state["fu"]
    if fu is not None and t < fu + LONGEST_WINDOW_MS:
        raise ProcessingError(
            f"{format_time(t)} is before the retained history of this customer "
            f"(exact from {format_time(fu + LONGEST_WINDOW_MS)} on)"
        )

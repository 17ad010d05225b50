"""What a batch's events do to its customers, inside one state transaction: the scorer's first step.

- :func:`apply_events` applies each event to its customer's feature state (an order, profile or ticket;
  a ``churn_labels`` event is remembered instead), collects the rows to score, and resolves the pending
  predictions that each answering event labels (:func:`~churnstream.features.labels.answer_of`: a
  completed order or an explicit label);
- :func:`label_overdue` labels by inactivity the pending predictions whose horizon event time has passed.

Neither does I/O: both work on a :class:`~churnstream.features.store.Transaction`, whichever store began it.

>>> from churnstream.events import LabelEvent, OrderEvent
>>> from churnstream.features.store import MemoryFeatureStore
>>> from churnstream.streams.ingest import Coordinates
>>> tx = MemoryFeatureStore(lateness_ms=0).begin({"c1": 0})
>>> order = OrderEvent("e1", "c1", 5, "o1", 12.5)
>>> events = [order, order, LabelEvent("e2", "c1", 8, True)]
>>> where = [Coordinates("orders", 0, 0), Coordinates("orders", 0, 1), Coordinates("churn_labels", 0, 0)]
>>> applied = apply_events(tx, zip(events, where, strict=True), horizon_ms=10)
>>> applied.scoring.event_ids, applied.duplicates, dict(applied.per_topic)
(['e1'], 1, {'orders': 2, 'churn_labels': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from churnstream.dead_letter import DeadLetter, dead_letter_for_event
from churnstream.errors import ProcessingError
from churnstream.events import Event, LabelEvent
from churnstream.features.labels import (
    Resolved,
    answer_of,
    due_time,
    remember_label,
    resolve_by_event,
    resolve_by_time,
)
from churnstream.features.store import Transaction
from churnstream.streams.ingest import Coordinates
from churnstream.streams.scoring import ScoringRows


@dataclass(slots=True)
class Applied:
    """What applying a batch's events gave: the rows to score, the labels they resolved, dead letters of
    events that could not be applied, duplicates (already applied: neither scored nor answered), and
    how many events each topic had."""

    scoring: ScoringRows = field(default_factory=ScoringRows)
    resolved: list[tuple[str, Resolved]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)


def apply_events(tx: Transaction, events: Iterable[tuple[Event, Coordinates]], *, horizon_ms: int) -> Applied:
    """Apply ``events`` in order to their customers in ``tx`` (see the module docstring).

    An event is scored as of the time its features are exact at (``as_of``); a label event is not scored.
    """
    applied = Applied()
    scoring = applied.scoring
    for event, where in events:
        applied.per_topic[where.topic] += 1
        cid = event.customer_id
        if isinstance(event, LabelEvent):
            try:
                fresh = remember_label(tx.state(cid), event)
            except ProcessingError as exc:
                applied.dead_letters.append(dead_letter_for_event(event, where, exc))
                continue
            if not fresh:
                applied.duplicates += 1
                continue
            tx.touch(cid)
        else:
            result = tx.apply(event)
            if result.status == "rejected":
                assert result.error is not None
                applied.dead_letters.append(dead_letter_for_event(event, where, result.error))
                continue
            if result.status == "duplicate":
                applied.duplicates += 1
                continue
            assert result.features is not None
            scoring.customer_ids.append(cid)
            scoring.as_of.append(result.as_of if result.as_of is not None else event.timestamp)
            scoring.triggers.append("event")
            scoring.event_ids.append(event.event_id)
            scoring.rows.append(result.features)
            scoring.partitions.append(where.partition)
        answer = answer_of(event)
        if answer is not None:
            ts, churned = answer
            found = resolve_by_event(tx.state(cid), ts, churned=churned, horizon_ms=horizon_ms)
            applied.resolved += [(cid, r) for r in found]
    return applied


def label_overdue(
    tx: Transaction, customers: Iterable[str], watermark: int, *, horizon_ms: int, lateness_ms: int
) -> list[tuple[str, Resolved]]:
    """Label by inactivity the pending predictions of ``customers`` whose horizon plus ``lateness_ms``
    ended by event time ``watermark``; each customer's next due time goes into ``tx``."""
    resolved: list[tuple[str, Resolved]] = []
    for cid in customers:
        state = tx.state(cid)
        found = resolve_by_time(state, watermark, horizon_ms=horizon_ms, lateness_ms=lateness_ms)
        resolved += [(cid, r) for r in found]
        tx.due[cid] = due_time(state, horizon_ms=horizon_ms)
        tx.touch(cid)
    return resolved


__all__ = ["Applied", "apply_events", "label_overdue"]

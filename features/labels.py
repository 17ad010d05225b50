"""The label rule, once: for the scoring worker's pending predictions and for the training table.

A prediction for customer c as of t is answered by c's first *answering event* in (t, t + H]: a completed
order labels it 0 (``order``), a ``churn_labels`` event labels it with its own value (``explicit``); at
the same instant an explicit label comes first. Unanswered, it is labelled 1 (``inactivity``, labelled at
t + H) once event time has passed t + H plus the lateness an answer may still arrive with.
:func:`label_by_event` and :func:`label_by_time` are that rule for one prediction; two drivers apply it:

- online, the worker keeps each customer's pending predictions in its state (:func:`add_pending`) and
  labels them as answering events arrive (:func:`resolve_by_event`) and as the watermark passes their
  horizon (:func:`resolve_by_time`);
- offline, :class:`AnswerLog` labels a training row from the whole event log, which is complete up to its
  last event (no lateness), and leaves out a row whose horizon runs past it (censored).

With events in event-time order and each prediction made before the events after it, both give the same
labels (tests/unit/test_features_labels.py). Online, a prediction made after its answer arrived (a late
event, a sweep, an event in the same batch as the label) is answered by the first answering event the
state holds (:func:`next_answer`): its completed orders, and the explicit labels it remembers
(:func:`remember_label`), so the labels never depend on where batches end.

>>> label_by_event(0, 5, churned=None, horizon_ms=10)
Label(label=0, source='order', labeled_at=5)
>>> label_by_event(0, 11, churned=True, horizon_ms=10) is None  # after the horizon
True
>>> label_by_time(0, 17, horizon_ms=10, lateness_ms=7)
Label(label=1, source='inactivity', labeled_at=10)

Pending predictions live in the scoring part of the customer's state
(:class:`~churnstream.features.state.ScoringState`, ``"pend"``) as
``[prediction_id, as_of, batch_p, online_p, churn_p, features]`` (features in FEATURE_NAMES order; the
worker that made the prediction keeps them as their JSON text, :class:`~churnstream.features.state.Packed`,
a state read back from the store as a list), so they are written atomically with the features that
produced them.

A customer keeps a bounded number of them (:func:`add_pending`): a prediction is kept while fewer than
:data:`OPEN_LIMIT` of the customer's kept predictions are still *open* — not yet answered by a completed
order and less than H plus the allowed lateness old — and, once half that many are, only when none of
them is closer in time than (H + lateness) / OPEN_LIMIT, so a burst of events is thinned evenly. The open
ones are counted from the customer's own history (``"kept"``: their ``as_of`` times, and the last
completed order as the new prediction's features see it), never from what happens to have been labelled
already, so the same events keep the same predictions however the stream is cut into batches, and a
replay teaches the online model the same labels. A prediction not kept is still emitted; it simply never
gets an outcome. The kept ones are labelled exactly by the rule above.

>>> from churnstream.features.state import new_state
>>> H = 10
>>> state = new_state()
>>> add_pending(state, "p1", 0, 0.2, None, 0.2, [1.0], horizon_ms=H, lateness_ms=0, recency_days=None)
True
>>> add_pending(state, "p1", 0, 0.2, None, 0.2, [1.0], horizon_ms=H, lateness_ms=0, recency_days=None)
False
>>> [(r.prediction_id, r.label, r.source) for r in resolve_by_event(state, 5, churned=None, horizon_ms=H)]
[('p1', 0, 'order')]
>>> due_time(state, horizon_ms=H) is None
True
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from churnstream.errors import ProcessingError
from churnstream.events import Event, LabelEvent, OrderEvent
from churnstream.features.state import (
    O_STATUS,
    O_TS,
    STATUS_CODE,
    CustomerState,
    FeatureState,
    Packed,
    entry_time,
    event_used_at,
    id_conflict,
    new_state,
    scoring_state,
    unpacked,
)
from churnstream.settings import DAY_MS
from churnstream.timefmt import format_time

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

P_ID, P_AS_OF, P_BATCH, P_ONLINE, P_CHURN, P_FEATURES, P_SHADOW, P_MODEL = range(8)
# The customer's latest prediction, kept after its label is known (ScoringState "last"): id, as_of and
# the three probabilities at a pending one's places, then its model version, the risk category the
# stream gave it, and whether it is followed to an outcome (add_pending kept it).
LATEST_MODEL, LATEST_RISK, LATEST_FOLLOWED = 5, 6, 7

# Kept predictions open at once per customer (see add_pending); from half of it on, they are spaced.
OPEN_LIMIT = 16
# Pending predictions per customer, never more. Only reached when event time stalls for more than the
# horizon plus the allowed lateness (a partition without events holds back the watermark, so nothing is
# labelled by inactivity): the oldest pending prediction is then dropped.
MAX_PENDING = 2 * OPEN_LIMIT

_COMPLETED = STATUS_CODE["completed"]


def note_latest(
    state: CustomerState,
    prediction_id: str,
    as_of: int,
    batch: float,
    online: float | None,
    churn: float,
    model_version: str | None,
    risk: str,
    *,
    followed: bool,
) -> None:
    """Keep ``prediction_id`` as the customer's latest prediction unless a later one is kept: the API
    answers with it also once its label is known and it has left the pending ones. ``followed``: whether
    it is followed to an outcome (:func:`add_pending` kept it; a burst's predictions are thinned).

    >>> s = {}
    >>> note_latest(s, "p2", 20, 0.5, None, 0.5, "v1", "LOW", followed=True)
    >>> note_latest(s, "p1", 10, 0.9, None, 0.9, "v1", "HIGH", followed=True)  # an earlier one, scored late
    >>> s["scoring"]["last"]
    ['p2', 20, 0.5, None, 0.5, 'v1', 'LOW', True]
    """
    held = scoring_state(state)
    last = held.get("last")
    if last is None or as_of >= last[P_AS_OF]:
        held["last"] = [prediction_id, as_of, batch, online, churn, model_version, risk, followed]


# -- the rule ------------------------------------------------------------------------------------------


class Label(NamedTuple):
    """A prediction's label, why it is known (``order``, ``explicit`` or ``inactivity``) and since when."""

    label: int
    source: str
    labeled_at: int


def label_by_event(as_of: int, ts: int, *, churned: bool | None, horizon_ms: int) -> Label | None:
    """The label an answering event at ``ts`` gives a prediction as of ``as_of``: a completed order
    (``churned=None``) 0, an explicit label its own value; None when ``ts`` is not in (as_of, as_of + H].

    >>> label_by_event(0, 10, churned=True, horizon_ms=10)
    Label(label=1, source='explicit', labeled_at=10)
    >>> label_by_event(0, 0, churned=None, horizon_ms=10) is None  # not after the prediction
    True
    """
    if not as_of < ts <= as_of + horizon_ms:
        return None
    if churned is None:
        return Label(0, "order", ts)
    return Label(int(churned), "explicit", ts)


def label_by_time(as_of: int, until: int, *, horizon_ms: int, lateness_ms: int) -> Label | None:
    """Churned by inactivity, labelled at as_of + H, for a prediction no event answered, once the horizon
    plus the lateness an answer may still arrive with has ended by event time ``until``; None before.

    >>> label_by_time(0, 16, horizon_ms=10, lateness_ms=7) is None
    True
    """
    end = as_of + horizon_ms
    if end + lateness_ms <= until:
        return Label(1, "inactivity", end)
    return None


def answer_of(event: Event) -> tuple[int, bool | None] | None:
    """``(timestamp, churned)`` of an answering event (``churned`` None for a completed order, the value
    of an explicit label); None for an event that answers no prediction.

    >>> answer_of(OrderEvent("e1", "c", 5, "o1", 9.5)), answer_of(LabelEvent("e2", "c", 6, True))
    ((5, None), (6, True))
    >>> answer_of(OrderEvent("e3", "c", 7, "o2", 9.5, status="cancelled")) is None
    True
    """
    if isinstance(event, LabelEvent):
        return event.timestamp, event.churned
    if isinstance(event, OrderEvent) and event.status == "completed":
        return event.timestamp, None
    return None


# -- offline: labels of training rows, from a whole event log ----------------------------------------


@dataclass(slots=True)
class AnswerLog:
    """Every customer's answering events of an event log in event time, and where the log ends.

    >>> log = AnswerLog.from_events([OrderEvent("e1", "c", 5, "o1", 9.5), LabelEvent("e2", "c", 8, True),
    ...                              OrderEvent("e3", "d", 40, "o2", 9.5)])
    >>> log.label("c", 0, horizon_ms=10), log.label("c", 5, horizon_ms=10)
    (Label(label=0, source='order', labeled_at=5), Label(label=1, source='explicit', labeled_at=8))
    >>> log.label("c", 20, horizon_ms=10), log.label("c", 35, horizon_ms=10)  # unanswered; censored
    (Label(label=1, source='inactivity', labeled_at=30), None)
    """

    times: dict[str, list[int]] = field(default_factory=dict)
    churned: dict[str, list[bool | None]] = field(default_factory=dict)
    end: int = 0

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> AnswerLog:
        """The answers in ``events`` (sorted by event time; the last one's time is where the log ends).

        A label the workers would dead-letter is left out (:func:`remember_label`'s rules, in log order: an
        ``event_id`` reused by another label or another event of the customer, a label contradicting the
        one at the same instant), so training and the stream read the same labels.

        >>> log = AnswerLog.from_events([OrderEvent("e1", "c", 5, "o1", 9.5), LabelEvent("l1", "c", 8, False),
        ...                              LabelEvent("l2", "c", 8, True), LabelEvent("e1", "c", 9, True)])
        >>> log.times["c"], log.churned["c"]
        ([5, 8], [None, False])
        """
        events = events if isinstance(events, Sequence) else list(events)  # read twice: no copy of a list
        labelled = {e.customer_id for e in events if isinstance(e, LabelEvent)}
        checked: dict[str, CustomerState] = {}  # the label rules' view of a labelled customer
        answers: dict[str, list[tuple[int, bool, bool | None]]] = {}
        end = 0
        for event in events:
            end = event.timestamp
            if event.customer_id in labelled:
                state = checked.get(event.customer_id)
                if state is None:
                    state = checked[event.customer_id] = new_state()
                if isinstance(event, LabelEvent):
                    try:
                        if not remember_label(state, event):
                            continue  # the same label again
                    except ProcessingError:
                        continue
                else:
                    state["seen"].setdefault(event.event_id, event.timestamp)  # ids the labels may not take
            answer = answer_of(event)
            if answer is not None:
                ts, churned = answer
                # an explicit label sorts before an order at the same instant
                answers.setdefault(event.customer_id, []).append((ts, churned is None, churned))
        log = cls(end=end)
        for cid, entries in answers.items():
            entries.sort(key=lambda a: a[:2])
            log.times[cid] = [a[0] for a in entries]
            log.churned[cid] = [a[2] for a in entries]
        return log

    def label(self, customer_id: str, as_of: int, *, horizon_ms: int) -> Label | None:
        """The label of a prediction as of ``as_of``; None while the log does not tell it yet (censored)."""
        times = self.times.get(customer_id, ())
        i = bisect_right(times, as_of)
        if i < len(times):
            known = label_by_event(
                as_of, times[i], churned=self.churned[customer_id][i], horizon_ms=horizon_ms
            )
            if known is not None:
                return known
        # the log holds every event up to its end: no answer can still arrive late
        return label_by_time(as_of, self.end, horizon_ms=horizon_ms, lateness_ms=0)


# -- online: the worker's pending predictions, in the customer's state ---------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    """A prediction whose label became known."""

    prediction_id: str
    as_of: int
    labeled_at: int
    label: int
    source: str
    batch_probability: float
    online_probability: float | None
    churn_probability: float
    features: list[float | None]
    shadow: list[Any] | None = None  # [shadow_model_version, shadow_probability] while a model is in shadow
    model_version: str | None = None  # the model that made it (None: pending since before this was kept)


def add_pending(
    state: CustomerState,
    prediction_id: str,
    as_of: int,
    batch_p: float,
    online_p: float | None,
    churn_p: float,
    features: Sequence[float | None] | NDArray[np.float64],
    *,
    horizon_ms: int,
    lateness_ms: int,
    recency_days: float | None,
    shadow: list[Any] | None = None,
    model_version: str | None = None,
) -> bool:
    """Remember a prediction until its label is known; False when it is already pending or not kept.
    ``shadow`` ([version, probability], while a model is in shadow) and ``model_version`` (the model that
    made it) are kept for its outcome.

    ``recency_days`` is the prediction's own feature (days from the customer's last completed order to
    ``as_of``): kept predictions that order answered are no longer open. Whether a prediction is kept
    depends only on the predictions added before it and on its own features, never on which labels are
    already resolved (that depends on where batches end and on the watermark of other partitions).

    A ticket an hour for 30 days and no order: 8 are kept at once, then one every 45 hours up to 16.

    >>> from churnstream.features.state import new_state
    >>> s, hour, h = new_state(), 3_600_000, 30 * DAY_MS
    >>> kept = [add_pending(s, f"t{i}", i * hour, 0.5, None, 0.5, [], horizon_ms=h, lateness_ms=0,
    ...                     recency_days=None) for i in range(30 * 24)]
    >>> kept.count(True), [p[P_AS_OF] // hour for p in s["scoring"]["pend"]][6:11]
    (16, [6, 7, 52, 97, 142])

    An order answers them all; its own prediction (recency 0) sees that none is open any more.

    >>> len(resolve_by_event(s, 720 * hour, churned=None, horizon_ms=h))
    16
    >>> add_pending(s, "o1", 720 * hour, 0.5, None, 0.5, [], horizon_ms=h, lateness_ms=0, recency_days=0.0)
    True
    >>> s["scoring"]["kept"] == [720 * hour]
    True
    """
    scoring = scoring_state(state)
    pend = scoring.setdefault("pend", [])
    if prediction_id in [p[P_ID] for p in pend]:
        return False
    window = horizon_ms + lateness_ms
    last_order = None if recency_days is None else as_of - round(recency_days * DAY_MS)
    kept = [
        t
        for t in scoring.get("kept", ())
        if t > as_of - window and not (last_order is not None and t < last_order <= t + horizon_ms)
    ]
    spacing = window // OPEN_LIMIT
    take = len(kept) < OPEN_LIMIT and (
        len(kept) < OPEN_LIMIT // 2 or all(abs(as_of - t) >= spacing for t in kept)
    )
    if take:
        insort(kept, as_of)
        pend.append([prediction_id, as_of, batch_p, online_p, churn_p, Packed(features)])
        # optional seventh and eighth items (the shadow, or None; the model): pending lists written
        # before either existed stay valid
        if shadow is not None or model_version is not None:
            pend[-1].append(shadow)
        if model_version is not None:
            pend[-1].append(model_version)
        while len(pend) > MAX_PENDING:
            pend.remove(min(pend, key=_as_of))
    if kept:
        scoring["kept"] = kept
    else:
        scoring.pop("kept", None)
    return take


def _as_of(p: list[Any]) -> int:
    return p[P_AS_OF]  # type: ignore[no-any-return]


def _resolved(p: list[Any], known: Label) -> Resolved:
    return Resolved(
        p[P_ID],
        p[P_AS_OF],
        known.labeled_at,
        known.label,
        known.source,
        p[P_BATCH],
        p[P_ONLINE],
        p[P_CHURN],
        unpacked(p[P_FEATURES]),
        p[P_SHADOW] if len(p) > P_SHADOW else None,
        p[P_MODEL] if len(p) > P_MODEL else None,
    )


def resolve_by_event(
    state: CustomerState, ts: int, *, churned: bool | None, horizon_ms: int
) -> list[Resolved]:
    """Labels known from an answering event at ``ts``: a completed order (``churned=None``) or an explicit
    label (see :func:`label_by_event`). The pending predictions it answers leave the state."""
    return _take_answered(
        state, lambda as_of: label_by_event(as_of, ts, churned=churned, horizon_ms=horizon_ms)
    )


def resolve_by_time(
    state: CustomerState, watermark: int, *, horizon_ms: int, lateness_ms: int
) -> list[Resolved]:
    """Pending predictions whose horizon plus the allowed lateness ended by ``watermark``: churned, by
    inactivity (see :func:`label_by_time`). They leave the state."""
    return _take_answered(
        state, lambda as_of: label_by_time(as_of, watermark, horizon_ms=horizon_ms, lateness_ms=lateness_ms)
    )


def _take_answered(state: CustomerState, answer: Callable[[int], Label | None]) -> list[Resolved]:
    """The pending predictions ``answer`` (as of -> label or None) labels; they leave the state."""
    scoring = state.get("scoring")
    pend = None if scoring is None else scoring.get("pend")
    if scoring is None or not pend:
        return []
    done, keep = [], []
    for p in pend:
        known = answer(p[P_AS_OF])
        if known is not None:
            done.append(_resolved(p, known))
        else:
            keep.append(p)
    scoring["pend"] = keep
    return done


def next_completed_order(state: FeatureState, t: int) -> int | None:
    """Time of the customer's first completed order after ``t`` that the state already holds, if any.

    >>> next_completed_order({"o": [[1, "a", 5, 0], [3, "b", 5, 1], [3, "c", 5, 0], [9, "d", 5, 0]]}, 1)
    3
    """
    orders = state["o"]  # in time order: the search starts after t (mostly at the end: t is the latest)
    for i in range(bisect_right(orders, t, key=entry_time), len(orders)):
        if orders[i][O_STATUS] == _COMPLETED:
            return int(orders[i][O_TS])
    return None


LABELS_KEPT = 8  # explicit labels a customer's state remembers (the latest by event time)


def remember_label(state: CustomerState, label: LabelEvent) -> bool:
    """Keep an explicit label in the scoring state (``"lab"``: ``[ts, 0 or 1, event_id]`` sorted, the
    latest :data:`LABELS_KEPT`), so a prediction made after it arrived gets the same first answer as one
    made before it (:func:`next_answer`). False when it changes nothing: a redelivery (the same
    ``event_id`` and content), or another label saying the same at the same instant.

    Raises :class:`ProcessingError` (the caller dead-letters the label) for an ``event_id`` the customer
    used for another label or another event, and for a label contradicting the one the customer already
    has at that instant: the first one answered the predictions pending then, so the second would change
    nothing but what later predictions read.

    >>> from churnstream.features.state import new_state
    >>> s = new_state()
    >>> [remember_label(s, LabelEvent(f"l{t}", "c", t, t > 15)) for t in (30, 10, 30, 20)]
    [True, True, False, True]
    >>> s["scoring"]["lab"]
    [[10, 0, 'l10'], [20, 1, 'l20'], [30, 1, 'l30']]
    >>> remember_label(s, LabelEvent("l-fix", "c", 20, False))
    Traceback (most recent call last):
    ...
    churnstream.errors.ProcessingError: customer 'c' already has a churn label at 1970-01-01T00:00:00.020Z \
(event_id 'l20', churned true): a label at the same instant that says otherwise is not applied
    """
    labels = scoring_state(state).setdefault("lab", [])
    ts, value, event_id, customer = label.timestamp, int(label.churned), label.event_id, label.customer_id
    for entry in labels:
        if len(entry) > 2 and entry[2] == event_id:
            if entry[0] == ts and entry[1] == value:
                return False
            raise id_conflict(label, f"a churn label at {format_time(entry[0])}")
    for entry in labels:
        if entry[0] == ts:
            if entry[1] == value:
                return False  # another label saying the same (or this one, kept before ids were)
            by = f"event_id {entry[2]!r}, " if len(entry) > 2 else ""
            raise ProcessingError(
                f"customer {customer!r} already has a churn label at {format_time(ts)} ({by}churned "
                f"{'true' if entry[1] else 'false'}): a label at the same instant that says otherwise is "
                "not applied"
            )
    used = event_used_at(state, event_id)
    if used is not None:
        raise id_conflict(label, f"an event at {format_time(used)}")
    insort(labels, [ts, value, event_id])
    del labels[:-LABELS_KEPT]
    return True


def next_answer(state: CustomerState, t: int) -> tuple[int, bool | None] | None:
    """The first answering event after ``t`` the state holds, as ``(timestamp, churned)``: ``churned`` is
    None for a completed order; at the same instant an explicit label comes first (the rule above).

    >>> from churnstream.features.state import new_state
    >>> s = new_state()
    >>> remember_label(s, LabelEvent("l1", "c", 5, True))
    True
    >>> next_answer(s, 0), next_answer(s, 5)
    ((5, True), None)
    """
    order = next_completed_order(state, t)
    best: tuple[int, bool | None] | None = None if order is None else (order, None)
    for entry in state.get("scoring", {}).get("lab", ()):
        ts, churned = entry[0], entry[1]
        if ts > t:
            if best is None or ts <= best[0]:
                best = (int(ts), bool(churned))
            break
    return best


def due_time(state: CustomerState, *, horizon_ms: int) -> int | None:
    """When the earliest pending prediction's horizon ends (None when nothing is pending)."""
    pend = state.get("scoring", {}).get("pend")
    if not pend:
        return None
    return min(p[P_AS_OF] for p in pend) + horizon_ms

"""The label rule applied to pending predictions, kept in each customer's state.

A prediction for customer c as of t is labelled 0 when a completed order of c arrives in (t, t + H],
1 when event time passes t + H without one (``inactivity``), and an explicit ``churn_labels`` event in
(t, t + H] overrides either. Pending predictions live in the customer's state under ``"pend"`` as
``[prediction_id, as_of, batch_p, online_p, churn_p, features]`` (features in FEATURE_NAMES order), so
they are written atomically with the features that produced them.

A customer keeps a bounded number of them (:func:`add_pending`): a prediction is kept while fewer than
:data:`OPEN_LIMIT` of the customer's kept predictions are still *open* — not yet answered by a completed
order and less than H plus the allowed lateness old — and, once half that many are, only when none of
them is closer in time than (H + lateness) / OPEN_LIMIT, so a burst of events is thinned evenly. The open
ones are counted from the customer's own history (``"kept"``: their ``as_of`` times, and the last
completed order as the new prediction's features see it), never from what happens to have been labelled
already, so the same events keep the same predictions however the stream is cut into batches, and a
replay teaches the online model the same labels. A prediction not kept is still emitted; it simply never
gets an outcome. The kept ones are labelled exactly by the rule above.

>>> H = 10
>>> state = {"pend": []}
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

from bisect import insort
from dataclasses import dataclass
from typing import Any

from churnstream.settings import DAY_MS

P_ID, P_AS_OF, P_BATCH, P_ONLINE, P_CHURN, P_FEATURES = range(6)

# Kept predictions open at once per customer (see add_pending); from half of it on, they are spaced.
OPEN_LIMIT = 16
# Pending predictions per customer, never more. Only reached when event time stalls for more than the
# horizon plus the allowed lateness (a partition without events holds back the watermark, so nothing is
# labelled by inactivity): the oldest pending prediction is then dropped.
MAX_PENDING = 2 * OPEN_LIMIT


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


def add_pending(
    state: dict[str, Any],
    prediction_id: str,
    as_of: int,
    batch_p: float,
    online_p: float | None,
    churn_p: float,
    features: list[float | None],
    *,
    horizon_ms: int,
    lateness_ms: int,
    recency_days: float | None,
) -> bool:
    """Remember a prediction until its label is known; False when it is already pending or not kept.

    ``recency_days`` is the prediction's own feature (days from the customer's last completed order to
    ``as_of``): kept predictions that order answered are no longer open. Whether a prediction is kept
    depends only on the predictions added before it and on its own features, never on which labels are
    already resolved (that depends on where batches end and on the watermark of other partitions).

    A ticket an hour for 30 days and no order: 8 are kept at once, then one every 45 hours up to 16.

    >>> s, hour, h = {}, 3_600_000, 30 * DAY_MS
    >>> kept = [add_pending(s, f"t{i}", i * hour, 0.5, None, 0.5, [], horizon_ms=h, lateness_ms=0,
    ...                     recency_days=None) for i in range(30 * 24)]
    >>> kept.count(True), [p[P_AS_OF] // hour for p in s["pend"]][6:11]
    (16, [6, 7, 52, 97, 142])

    An order answers them all; its own prediction (recency 0) sees that none is open any more.

    >>> len(resolve_by_event(s, 720 * hour, churned=None, horizon_ms=h))
    16
    >>> add_pending(s, "o1", 720 * hour, 0.5, None, 0.5, [], horizon_ms=h, lateness_ms=0, recency_days=0.0)
    True
    >>> s["kept"] == [720 * hour]
    True
    """
    pend = state.setdefault("pend", [])
    if prediction_id in [p[P_ID] for p in pend]:
        return False
    window = horizon_ms + lateness_ms
    last_order = None if recency_days is None else as_of - round(recency_days * DAY_MS)
    kept = [
        t
        for t in state.get("kept", ())
        if t > as_of - window and not (last_order is not None and t < last_order <= t + horizon_ms)
    ]
    spacing = window // OPEN_LIMIT
    take = len(kept) < OPEN_LIMIT and (
        len(kept) < OPEN_LIMIT // 2 or all(abs(as_of - t) >= spacing for t in kept)
    )
    if take:
        insort(kept, as_of)
        pend.append([prediction_id, as_of, batch_p, online_p, churn_p, features])
        while len(pend) > MAX_PENDING:
            pend.remove(min(pend, key=_as_of))
    if kept:
        state["kept"] = kept
    else:
        state.pop("kept", None)
    return take


def _as_of(p: list[Any]) -> int:
    return p[P_AS_OF]  # type: ignore[no-any-return]


def _resolved(p: list[Any], labeled_at: int, label: int, source: str) -> Resolved:
    return Resolved(
        p[P_ID], p[P_AS_OF], labeled_at, label, source, p[P_BATCH], p[P_ONLINE], p[P_CHURN], p[P_FEATURES]
    )


def resolve_by_event(
    state: dict[str, Any], ts: int, *, churned: bool | None, horizon_ms: int
) -> list[Resolved]:
    """Labels known from an event at ``ts``: a completed order (``churned=None``) or an explicit label."""
    pend = state.get("pend")
    if not pend:
        return []
    done, keep = [], []
    for p in pend:
        if p[P_AS_OF] < ts <= p[P_AS_OF] + horizon_ms:
            if churned is None:
                done.append(_resolved(p, ts, 0, "order"))
            else:
                done.append(_resolved(p, ts, int(churned), "explicit"))
        else:
            keep.append(p)
    state["pend"] = keep
    return done


def resolve_by_time(
    state: dict[str, Any], watermark: int, *, horizon_ms: int, lateness_ms: int
) -> list[Resolved]:
    """Predictions whose horizon plus the allowed lateness ended by ``watermark``: churned, by inactivity."""
    pend = state.get("pend")
    if not pend:
        return []
    done, keep = [], []
    for p in pend:
        end = p[P_AS_OF] + horizon_ms
        if end + lateness_ms <= watermark:
            done.append(_resolved(p, end, 1, "inactivity"))
        else:
            keep.append(p)
    state["pend"] = keep
    return done


def next_completed_order(state: dict[str, Any], t: int) -> int | None:
    """Time of the customer's first completed order after ``t`` that the state already holds, if any."""
    for entry in state.get("o", ()):
        if entry[0] > t and entry[3] == 0:  # [ts, event_id, amount, status], status 0 = completed
            return int(entry[0])
    return None


def due_time(state: dict[str, Any], *, horizon_ms: int) -> int | None:
    """When the earliest pending prediction's horizon ends (None when nothing is pending)."""
    pend = state.get("pend")
    if not pend:
        return None
    return min(p[P_AS_OF] for p in pend) + horizon_ms

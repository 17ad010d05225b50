"""The label rule applied to pending predictions, kept in each customer's state.

A prediction for customer c as of t is labelled 0 when a completed order of c arrives in (t, t + H],
1 when event time passes t + H without one (``inactivity``), and an explicit ``churn_labels`` event in
(t, t + H] overrides either. Pending predictions live in the customer's state under ``"pend"`` as
``[prediction_id, as_of, batch_p, online_p, churn_p, features]`` (features in FEATURE_NAMES order), so
they are written atomically with the features that produced them.

>>> state = {"pend": []}
>>> add_pending(state, "p1", 0, 0.2, None, 0.2, [1.0])
True
>>> add_pending(state, "p1", 0, 0.2, None, 0.2, [1.0])
False
>>> [(r.prediction_id, r.label, r.source) for r in resolve_by_event(state, 5, churned=None, horizon_ms=10)]
[('p1', 0, 'order')]
>>> due_time(state, horizon_ms=10) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

P_ID, P_AS_OF, P_BATCH, P_ONLINE, P_CHURN, P_FEATURES = range(6)


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
) -> bool:
    """Remember a prediction until its label is known; False when it is already pending."""
    pend = state.setdefault("pend", [])
    if prediction_id in [p[P_ID] for p in pend]:
        return False
    pend.append([prediction_id, as_of, batch_p, online_p, churn_p, features])
    return True


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

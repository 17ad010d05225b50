"""The one definition of every feature: pure functions from a customer's state to features as of t.

The online store and the offline training builder both call :func:`features_as_of`, so what a model is
trained on and what it is served are computed by the same code.

>>> from churnstream.events import OrderEvent
>>> from features.state import new_state, apply_event
>>> s = new_state()
>>> for i, day in enumerate([0, 10, 30]):
...     _ = apply_event(s, OrderEvent(event_id=f"e{i}", customer_id="c", timestamp=day * DAY_MS,
...                                   order_id=f"o{i}", amount=10.0), lateness_ms=0)
>>> f = features_as_of(s, 40 * DAY_MS)
>>> f["orders_total"], f["spent_total"], f["recency_days"], f["orders_30d"], f["mean_days_between_orders"]
(3, 30.0, 10.0, 1, 15.0)
>>> round(f["order_gap_cv"], 4), f["recency_gap_z"]  # gaps of 10 and 20 days: sd 5; (10 - 15) / 5
(0.3333, -1.0)
"""

from __future__ import annotations

import math
from typing import Any

from churnstream.features.state import (
    DAY_MS,
    MICRO,
    FeatureState,
    gap_minutes,
    merge_ticket_summaries,
    ticket_summaries,
)
from churnstream.messages import REQUIRED_FEATURES

EXTRA_FEATURES = (
    "recency_ratio",  # recency relative to the customer's own rhythm: recency_days / mean_days_between_orders
    "orders_trend",  # orders in the last 30 d minus the monthly average of the 60 d before
    "spent_30d",
    "tickets_30d",
    "days_since_last_ticket",
    "negative_ticket_share",  # negative_tickets_total / tickets with a satisfaction score
    "avg_satisfaction",
    "open_tickets",  # tickets without a resolution yet
    "return_rate",  # returns_total / (orders_total + returns_total)
    "age",
    "email_verified",
    "phone_verified",
    "order_gap_cv",  # regularity: std / mean of the days between consecutive completed orders (>= 2 gaps)
    "recency_gap_z",  # silence in the customer's own rhythm: (recency - mean gap) / max(std of gaps, 1 day)
)

FEATURE_NAMES = REQUIRED_FEATURES + EXTRA_FEATURES

_D30 = 30 * DAY_MS
_D90 = 90 * DAY_MS


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or not den:
        return None
    return num / den


def features_as_of(state: FeatureState, t: int) -> dict[str, float | int | None]:
    """Every feature of :data:`FEATURE_NAMES` from the events with timestamp <= ``t`` (epoch ms).

    Exact for ``t`` at or after the state's folded-until time plus the longest window; the store
    guarantees that for every t it serves.
    """
    f = state["f"]
    n = f["n"]
    spent = f["s"]
    returns = f["r"]
    first_order = f["fo"]
    last_order = f["lo"]
    gap_sq = f.get("gq")  # None: folded before this total existed (see state._fold_gap)
    n30 = n90 = s30 = s90 = 0
    lo30, lo90 = t - _D30, t - _D90
    for ts, _, amount, status in state["o"]:
        if ts > t:
            break
        if status == 0:
            n += 1
            spent += amount
            if first_order is None or ts < first_order:
                first_order = ts
            if last_order is None or ts > last_order:
                if last_order is not None and gap_sq is not None:
                    gap_sq += gap_minutes(last_order, ts) ** 2
                last_order = ts
            if ts > lo90:
                n90 += 1
                s90 += amount
                if ts > lo30:
                    n30 += 1
                    s30 += amount
        elif status == 1:
            returns += 1

    tickets = f["tn"]
    negative = f["tneg"]
    res_sum, res_count = f["rs"], f["rc"]
    sat_sum, sat_count = f["ss"], f["sc"]
    last_ticket = f["lt"]
    t30 = t90 = 0
    open_tickets = f["op"]
    folded_tickets = state["ft"]
    for tid, summary in ticket_summaries(state["t"], t).items():
        old = folded_tickets.get(tid)
        if old is not None:  # an update of a folded ticket: replace its folded values, count it once
            if old[2] is None:
                open_tickets -= 1
            else:
                res_sum -= old[2]
                res_count -= 1
            if old[3] is not None:
                sat_sum -= old[3]
                sat_count -= 1
                negative -= old[3] <= 2
            summary = merge_ticket_summaries(old, summary)
        else:
            tickets += 1
        opened, _, res, sat = summary
        if last_ticket is None or opened > last_ticket:
            last_ticket = opened
        if opened > lo90:
            t90 += 1
            if opened > lo30:
                t30 += 1
        if res is None:
            open_tickets += 1
        else:
            res_sum += res
            res_count += 1
        if sat is not None:
            sat_sum += sat
            sat_count += 1
            if sat <= 2:
                negative += 1

    profile: dict[str, Any] = f["prof"]
    if state["p"]:
        profile = dict(profile)
        for ts, _, fields in state["p"]:
            if ts > t:
                break
            profile.update(fields)

    first = state["first"]
    days = DAY_MS
    recency = (t - last_order) / days if last_order is not None else None
    mean_gap = (last_order - first_order) / (n - 1) / days if n > 1 else None  # type: ignore[operator]
    gap_sd = _gap_sd(gap_sq, n - 1, mean_gap)
    spent_total = spent / MICRO
    prev60_monthly = (n90 - n30) / 2
    return {
        "orders_total": n,
        "spent_total": spent_total,
        "avg_order_value": spent_total / n if n else None,
        "recency_days": recency,
        "tenure_days": (t - first) / days if first is not None and first <= t else None,
        "orders_30d": n30,
        "orders_90d": n90,
        "spent_90d": s90 / MICRO,
        "mean_days_between_orders": mean_gap,
        "returns_total": returns,
        "tickets_total": tickets,
        "tickets_90d": t90,
        "negative_tickets_total": negative,
        "avg_resolution_hours": res_sum / res_count / MICRO if res_count else None,
        "recency_ratio": _ratio(recency, mean_gap),
        "orders_trend": n30 - prev60_monthly,
        "spent_30d": s30 / MICRO,
        "tickets_30d": t30,
        "days_since_last_ticket": (t - last_ticket) / days if last_ticket is not None else None,
        "negative_ticket_share": negative / sat_count if sat_count else None,
        "avg_satisfaction": sat_sum / sat_count if sat_count else None,
        "open_tickets": open_tickets,
        "return_rate": returns / (n + returns) if n + returns else None,
        "age": profile.get("age"),
        "email_verified": _flag(profile.get("email_verified")),
        "phone_verified": _flag(profile.get("phone_verified")),
        "order_gap_cv": gap_sd / mean_gap if gap_sd is not None and mean_gap else None,
        "recency_gap_z": (recency - mean_gap) / max(gap_sd, 1.0)  # type: ignore[operator]
        if gap_sd is not None and recency is not None
        else None,
    }


def _gap_sd(gap_sq_minutes: int | None, gaps: int, mean_gap_days: float | None) -> float | None:
    """Standard deviation (days) of ``gaps`` gaps between orders, from their sum of squared whole minutes."""
    if gap_sq_minutes is None or gaps < 2 or mean_gap_days is None:
        return None
    mean_square = gap_sq_minutes / gaps / (24 * 60) ** 2
    return math.sqrt(max(mean_square - mean_gap_days**2, 0.0))


def _flag(value: Any) -> int | None:
    return None if value is None else int(bool(value))

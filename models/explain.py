"""Why a customer is at risk, and what to do about it.

:func:`explain` measures each feature's contribution to the *blended* probability by occlusion in log-odds:
feature j is replaced by its reference median (a typical customer's value) in the inputs of both the batch
and the online model, the blend is recomputed, and ``d_j = logit p(x) - logit p(x with j typical)``. The
log-odds effects are turned into probability with the secant slope between the customer and the fully
typical customer ``t``::

    contribution_j = d_j * (p(x) - p(t)) / (logit p(x) - logit p(t))

(the slope ``p(1 - p)`` when the two log-odds coincide). So a positive contribution means the feature's
value pushes this customer's risk up; for a model additive in log-odds the contributions add up exactly to
``p(x) - p(t)``, and unlike differences of probabilities they do not vanish for a customer whose risk is
saturated by several reasons at once. Each feature costs one vectorised ``predict_proba`` over all rows.

:func:`recommended_actions` turns the reasons that raise risk into retention actions.

>>> from churnstream.messages import Reason
>>> for action in recommended_actions([Reason("recency_ratio", 3.2, 0.21), Reason("open_tickets", 2, 0.08)]):
...     print(action)
win-back offer timed to their usual order rhythm
apologise and expedite open tickets
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from churnstream.messages import Reason
from churnstream.models.batch import BatchModel
from churnstream.models.blend import Blender
from churnstream.models.online import OnlineModel

MIN_REASONS = 3


def explain(
    model: BatchModel,
    online: OnlineModel | None,
    blender: Blender,
    X: np.ndarray,
    rows: Sequence[Mapping[str, Any]],
    top_k: int = 3,
) -> list[list[Reason]]:
    """The ``top_k`` (at least 3) features that move each row's blended probability most, largest first."""
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        return []
    k = min(max(top_k, MIN_REASONS), d)
    if online is not None and not (online.ready and blender.online_weight() > 0.0):
        online = None  # the blend is the batch probability alone
    medians = model.median_vector()

    # One stacked batch: the rows as they are, d blocks with feature j made typical, the typical customer.
    stacked = np.repeat(X[None, :, :], d + 2, axis=0)
    stacked[1 + np.arange(d), :, np.arange(d)] = medians[:, None]
    stacked[d + 1] = medians
    stacked_online = None
    if online is not None:
        X_online = online.vectorize(rows)
        stacked_online = np.repeat(X_online[None, :, :], d + 2, axis=0)
        position = {name: i for i, name in enumerate(online.feature_names)}
        for j, name in enumerate(model.feature_names):
            i = position.get(name)
            if i is not None:
                stacked_online[1 + j, :, i] = medians[j]
                stacked_online[d + 1, :, i] = medians[j]
        stacked_online = stacked_online.reshape((d + 2) * n, -1)
    p = _blended(model, online, blender, stacked.reshape((d + 2) * n, d), stacked_online).reshape(d + 2, n)
    base, p_occluded, p_typical = p[0], p[1 : d + 1], p[d + 1]

    logit_gap = _logit(base) - _logit(p_typical)
    close = np.abs(logit_gap) <= 1e-6
    slope = np.where(close, base * (1 - base), (base - p_typical) / np.where(close, 1.0, logit_gap))
    contributions = (_logit(base)[None, :] - _logit(p_occluded)) * slope[None, :]  # (d, n)

    explanations: list[list[Reason]] = []
    for r in range(n):
        order = np.argsort(-contributions[:, r], kind="stable")[:k]
        explanations.append(
            [
                Reason(
                    feature=model.feature_names[j],
                    value=_value(X[r, j]),
                    contribution=round(float(contributions[j, r]), 4),
                )
                for j in order
            ]
        )
    return explanations


def _blended(
    model: BatchModel,
    online: OnlineModel | None,
    blender: Blender,
    X: np.ndarray,
    X_online: np.ndarray | None,
) -> np.ndarray:
    batch_p = model.predict_proba(X)
    if online is None or X_online is None:
        return batch_p
    return blender.blend(batch_p, online.predict_matrix(X_online))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def _value(x: float) -> float | None:
    if math.isnan(x):
        return None
    return int(x) if float(x).is_integer() else round(float(x), 4)


WIN_BACK = "win-back offer timed to their usual order rhythm"
SENIOR_SUPPORT = "call from a senior support agent about their recent tickets"
EXPEDITE = "apologise and expedite open tickets"
DISCOUNT = "personalised discount on their usual category"
RETURNS = "review their recent returns and offer a hassle-free exchange"
ONBOARDING = "onboarding follow-up: a welcome offer on their next order"
VERIFY = "ask them to confirm their contact details so offers reach them"
CHECK_IN = "personal check-in from customer success to ask how we can help"

ACTION_FOR_FEATURE = {
    "recency_days": WIN_BACK,
    "recency_ratio": WIN_BACK,
    "mean_days_between_orders": WIN_BACK,
    "orders_30d": WIN_BACK,
    "orders_90d": WIN_BACK,
    "orders_trend": WIN_BACK,
    "order_gap_cv": WIN_BACK,
    "recency_gap_z": WIN_BACK,
    "negative_tickets_total": SENIOR_SUPPORT,
    "negative_ticket_share": SENIOR_SUPPORT,
    "avg_satisfaction": SENIOR_SUPPORT,
    "tickets_total": SENIOR_SUPPORT,
    "tickets_90d": SENIOR_SUPPORT,
    "tickets_30d": SENIOR_SUPPORT,
    "days_since_last_ticket": SENIOR_SUPPORT,
    "avg_resolution_hours": EXPEDITE,
    "open_tickets": EXPEDITE,
    "spent_90d": DISCOUNT,
    "spent_30d": DISCOUNT,
    "spent_total": DISCOUNT,
    "avg_order_value": DISCOUNT,
    "returns_total": RETURNS,
    "return_rate": RETURNS,
    "tenure_days": ONBOARDING,
    "orders_total": ONBOARDING,
    "email_verified": VERIFY,
    "phone_verified": VERIFY,
}


def recommended_actions(reasons: Sequence[Reason]) -> list[str]:
    """Actions for the reasons that raise risk, most important first; always at least one.

    >>> recommended_actions([])
    ['personal check-in from customer success to ask how we can help']
    """
    actions: list[str] = []
    for reason in reasons:
        if reason.contribution <= 0:
            continue
        action = ACTION_FOR_FEATURE.get(reason.feature)
        if action is not None and action not in actions:
            actions.append(action)
    return actions or [CHECK_IN]

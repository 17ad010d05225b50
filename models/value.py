"""What a customer is worth and what their churn would cost: the one definition of ``value_at_risk``.

A customer's *value over the horizon* is what they are expected to spend in the next ``H`` days if they
stay: their spend rate over their own history, ``spent_total / max(tenure_days, 365)`` per day, times
``H``. Spreading spend over at least a year keeps a new customer's first order from counting as a daily
habit, and for customers of a year or less it is their past year's spend scaled to the horizon. The
*value at risk* is that value times the churn probability: the expected loss, in the unit of order
amounts, the quantity retention teams rank by (probability alone ranks one-time small buyers first).

Both read only the features every prediction carries, so the online scorer, training and the
benchmarks compute the same number from the same features.

>>> features = {"spent_total": 120.0, "tenure_days": 200.0}
>>> value_over_horizon(features, horizon_days=90)  # 120 over a year, scaled to 90 days
29.59
>>> value_at_risk(0.5, features, horizon_days=90)
14.79
>>> value_at_risk(0.9, {"spent_total": 0.0, "tenure_days": None}, horizon_days=90)
0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

YEAR_DAYS = 365.0


def value_over_horizon(features: Mapping[str, Any], *, horizon_days: float) -> float:
    """The spend expected from this customer over the next ``horizon_days`` if they stay (rounded to
    cents), from ``spent_total`` and ``tenure_days`` (see the module docstring)."""
    spent = features.get("spent_total") or 0.0
    if spent <= 0.0:
        return 0.0
    tenure = features.get("tenure_days") or 0.0
    return round(float(spent) * horizon_days / max(float(tenure), YEAR_DAYS), 2)


def value_at_risk(probability: float, features: Mapping[str, Any], *, horizon_days: float) -> float:
    """The value expected to be lost: ``probability`` times :func:`value_over_horizon` (rounded to cents)."""
    return round(probability * value_over_horizon(features, horizon_days=horizon_days), 2)


__all__ = ["YEAR_DAYS", "value_at_risk", "value_over_horizon"]

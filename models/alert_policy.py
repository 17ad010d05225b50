"""The alert policy: when a prediction raises an alert.

A customer raises an alert when their risk turns ``HIGH`` (it was not HIGH at their previous
prediction) and their last alert is at least the cooldown (``CHURN_ALERT_COOLDOWN_DAYS``) behind, in
event time. A customer who stays HIGH is not alerted again, nor one who flickers back to HIGH within
the cooldown.

>>> DAY = 86_400_000
>>> should_alert("HIGH", previous_risk="MEDIUM", last_alerted=None, as_of=DAY, cooldown_ms=7 * DAY)
True
>>> should_alert("HIGH", previous_risk="HIGH", last_alerted=None, as_of=DAY, cooldown_ms=7 * DAY)
False
"""

from __future__ import annotations


def should_alert(
    risk: str, *, previous_risk: str | None, last_alerted: int | None, as_of: int, cooldown_ms: int
) -> bool:
    """Whether a prediction of risk ``risk`` as of ``as_of`` raises an alert (see the module docstring).

    >>> DAY = 86_400_000
    >>> [should_alert("HIGH", previous_risk="LOW", last_alerted=0, as_of=t * DAY, cooldown_ms=7 * DAY)
    ...  for t in (6, 7)]
    [False, True]
    >>> should_alert("MEDIUM", previous_risk="LOW", last_alerted=None, as_of=DAY, cooldown_ms=0)
    False
    """
    if risk != "HIGH" or previous_risk == "HIGH":
        return False
    return last_alerted is None or as_of - last_alerted >= cooldown_ms


__all__ = ["should_alert"]

"""The alert policy as a plain function: a customer turning HIGH, once per cooldown."""

from __future__ import annotations

import pytest

from churnstream.models.alert_policy import should_alert
from churnstream.settings import DAY_MS

COOLDOWN = 7 * DAY_MS


@pytest.mark.parametrize(
    ("risk", "previous", "last_alerted", "as_of", "alert"),
    [
        ("HIGH", None, None, 0, True),  # the first prediction of a customer is HIGH
        ("HIGH", "MEDIUM", None, 0, True),
        ("HIGH", "LOW", 0, COOLDOWN, True),  # the cooldown has passed, to the millisecond
        ("HIGH", "LOW", 0, COOLDOWN - 1, False),
        ("HIGH", "HIGH", None, 0, False),  # staying HIGH is not turning HIGH
        ("MEDIUM", "LOW", None, 0, False),
        ("LOW", "HIGH", None, 0, False),
    ],
)
def test_a_customer_turning_high_outside_the_cooldown_is_alerted(
    risk: str, previous: str | None, last_alerted: int | None, as_of: int, alert: bool
) -> None:
    assert (
        should_alert(
            risk, previous_risk=previous, last_alerted=last_alerted, as_of=as_of, cooldown_ms=COOLDOWN
        )
        is alert
    )


def test_a_flickering_customer_is_alerted_once_per_cooldown() -> None:
    risks = ["LOW", "HIGH", "MEDIUM", "HIGH", "HIGH", "LOW", "HIGH", "LOW", "HIGH"]
    days = [0, 1, 2, 3, 5, 7, 8, 10, 14]
    previous, last, alerted = None, None, []
    for risk, day in zip(risks, days, strict=True):
        if should_alert(
            risk, previous_risk=previous, last_alerted=last, as_of=day * DAY_MS, cooldown_ms=COOLDOWN
        ):
            last = day * DAY_MS
            alerted.append(day)
        previous = risk
    assert alerted == [1, 8]  # days 3 and 14 turn HIGH again within 7 days of the last alert

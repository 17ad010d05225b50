"""The alert policies as plain functions: by priority under a budget (once per month, outside the cooldown,
deterministic), and the original rule (a customer turning HIGH, once per cooldown)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from churnstream.models.alert_policy import (
    Budget,
    fit_priority_thresholds,
    is_holdout,
    month_of,
    pick_under_budget,
    picks_by_priority,
    risk_thresholds,
    should_alert,
    threshold_for,
)
from churnstream.settings import DAY_MS, Settings

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


# -- value_at_risk: by priority under a budget --------------------------------------------------------

JAN, FEB = 0, 31 * DAY_MS  # 1970-01-01 and 1970-02-01


def _picks(priority: float, last: int | None, as_of: int, *, active: bool = True) -> bool:
    return picks_by_priority(
        priority, threshold=10.0, active=active, last_alerted=last, as_of=as_of, cooldown_ms=COOLDOWN
    )


def test_priority_policy_picks_active_customers_at_or_above_the_threshold() -> None:
    assert _picks(10.0, None, JAN)
    assert not _picks(9.99, None, JAN)
    assert not _picks(50.0, None, JAN, active=False)  # not in the active base


def test_priority_policy_alerts_a_customer_once_per_month_and_never_inside_the_cooldown() -> None:
    assert not _picks(50.0, JAN, JAN + 20 * DAY_MS)  # same month
    assert not _picks(50.0, FEB - DAY_MS, FEB + DAY_MS)  # next month, but 2 days after the last alert
    assert _picks(50.0, FEB - DAY_MS, FEB - DAY_MS + COOLDOWN)  # next month, cooldown over to the ms


def test_fitted_thresholds_keep_every_month_within_the_budget() -> None:
    rng = np.random.default_rng(3)
    ids, times, prios = [], [], []
    for month in range(4):
        for c in range(500):
            for _ in range(int(rng.integers(1, 4))):  # several predictions per customer and month
                ids.append(f"C{c}")
                times.append(month * 31 * DAY_MS + int(rng.integers(0, 28)) * DAY_MS)
                prios.append(float(rng.gamma(1.0 + month, 10.0)))  # later months score higher
    fit = fit_priority_thresholds(ids, times, prios, [True] * len(ids), shares=(0.05, 0.1, 0.2))
    for share, threshold in fit["thresholds"].items():
        for month in range(4):
            best: dict[str, float] = {}
            for cid, t, p in zip(ids, times, prios, strict=True):
                if month_of(t) == month_of(month * 31 * DAY_MS):
                    best[cid] = max(best.get(cid, 0.0), p)
            over = sum(p >= threshold for p in best.values())
            assert over <= float(share) * len(best)
    # the bound is tight for the month that sets it
    assert fit["thresholds"]["0.1"] < fit["thresholds"]["0.05"]
    assert threshold_for(fit, 0.12) == fit["thresholds"]["0.1"]


def test_the_decisions_do_not_depend_on_the_order_customers_interleave_in() -> None:
    rng = np.random.default_rng(5)
    rows = [
        (f"C{int(rng.integers(0, 40))}", int(rng.integers(0, 90)) * DAY_MS, float(rng.gamma(2.0, 8.0)))
        for _ in range(600)
    ]

    def run(order: list[tuple[str, int, float]]) -> set[tuple[str, int]]:
        last: dict[str, int] = {}
        alerted = set()
        for cid, t, p in order:
            if _picks(p, last.get(cid), t):
                last[cid] = t
                alerted.add((cid, t))
        return alerted

    by_time = sorted(rows, key=lambda r: r[1])
    # another interleaving of customers, each customer's own predictions still in time order
    shuffled = sorted(by_time, key=lambda r: (r[1] // (7 * DAY_MS), hash(r[0]) % 7, r[1]))
    per_customer = {c: [r for r in shuffled if r[0] == c] for c in {r[0] for r in rows}}
    assert all(v == sorted(v, key=lambda r: r[1]) for v in per_customer.values())
    assert run(by_time) == run(shuffled)
    assert run(by_time)  # some were picked


def test_the_holdout_is_deterministic_close_to_its_share_and_the_customers_for_good() -> None:
    picked = [is_holdout(f"C{i}", 0.1) for i in range(20_000)]
    assert picked == [is_holdout(f"C{i}", 0.1) for i in range(20_000)]
    assert 0.09 < sum(picked) / len(picked) < 0.11
    assert not any(is_holdout(f"C{i}", 0.0) for i in range(1000))
    # a larger share keeps every control customer a control: only adds to the group
    assert all(is_holdout(f"C{i}", 0.2) for i in range(20_000) if picked[i])


def test_risk_thresholds_from_held_out_scores() -> None:
    p = np.random.default_rng(1).beta(5, 2, 10_000)
    fitted = risk_thresholds(p)
    assert abs(float((p >= fitted["high"]).mean()) - 0.1) < 0.01
    assert abs(float(((p >= fitted["medium"]) & (p < fitted["high"])).mean()) - 0.2) < 0.01
    assert Settings().risk_category(fitted["high"], fitted) == "HIGH"
    assert Settings(high_threshold=0.99, medium_threshold=0.5).risk_category(fitted["high"], fitted) != "HIGH"


def test_the_cap_holds_however_high_the_scores_run() -> None:
    """Every candidate passes the threshold (scores far above training's): the cap still bounds each month
    to the share of the customers active in it, and counts survive a round trip through their text."""
    rng = np.random.default_rng(11)
    last_order = {f"C{c}": -int(rng.integers(0, 300)) * DAY_MS for c in range(300)}
    held: dict[str, dict[str, int]] = {c: {} for c in last_order}
    text = None
    alerts: dict[str, set[str]] = {}
    for day in range(0, 120):
        budget = Budget.from_text(text)  # as the scorer reads it back each batch
        t = day * DAY_MS
        for cid in rng.permutation(sorted(last_order)).tolist():  # not hash(): salted per process
            if rng.random() < 0.05:
                last_order[cid] = t
            recency = (t - last_order[cid]) / DAY_MS
            if pick_under_budget(
                held[cid], budget, priority=99.0, as_of=t, recency_days=recency, threshold=1.0,
                share=0.1, cooldown_ms=COOLDOWN,
            ):  # fmt: skip
                held[cid]["alerted"] = t
                alerts.setdefault(month_of(t), set()).add(cid)
        budget.prune(month_of(t))
        text = budget.to_text()
    assert len(alerts) == 4
    for month, customers in alerts.items():
        start = [d for d in range(120) if month_of(d * DAY_MS) == month][0] * DAY_MS
        active = sum(1 for cid in last_order if last_order[cid] > start - 365 * DAY_MS)
        # the cap is the share rounded up: 30 of 299 active customers is within it
        assert 0.05 * active < len(customers) <= math.ceil(0.1 * active), (month, len(customers), active)


def test_a_partition_of_a_few_active_customers_still_gets_an_alert_a_month() -> None:
    """The cap is the share of the partition's active base rounded up. Rounded down, a pilot with fewer
    than ten active customers in a partition (the README's sample file: at most five) got no alert at 10 %,
    whatever their value at risk."""
    budget = Budget()
    held: list[dict[str, int]] = [{} for _ in range(5)]
    picked = [
        pick_under_budget(
            h, budget, priority=99.0, as_of=DAY_MS, recency_days=1.0, threshold=1.0, share=0.1,
            cooldown_ms=COOLDOWN,
        )
        for h in held
    ]  # fmt: skip
    assert picked == [True, False, False, False, False]
    assert not Budget().allows("1970-01", 0.1)  # no active customer: no alert


def test_risk_deciles_step_past_a_mass_of_scores_at_the_cap() -> None:
    """A third of a simulated shop's held-out scores sat at the model's cap (long-gone customers): HIGH
    and MEDIUM were both 0.999, and a customer at 0.95 read LOW (a review)."""
    scores = np.concatenate([np.linspace(0.0, 0.99, 1000), np.full(500, 0.999)])
    fitted = risk_thresholds(scores)
    assert fitted["medium"] < fitted["high"] < 0.95  # a customer at 0.95 reads HIGH
    assert fitted["chosen_from"].startswith("held-out scores below the highest (33% of them sit at 0.999)")
    few = risk_thresholds(np.concatenate([np.linspace(0.0, 0.99, 20), np.full(500, 0.999)]))
    assert few["high"] == few["medium"] == 0.999  # too few below the cap to take deciles of
    assert risk_thresholds(np.linspace(0.0, 1.0, 101))["chosen_from"].startswith("held-out scores:")

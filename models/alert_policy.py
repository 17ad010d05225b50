"""The alert policies: which predictions raise an alert. Plain functions; the scorer applies them.

``value_at_risk`` (the default, ``CHURN_ALERT_POLICY=value_at_risk``) picks by *priority* — the
prediction's value at risk (:mod:`churnstream.models.value`) — under a budget: at most
``CHURN_ALERT_BUDGET_SHARE`` (10 %) of the active customers (a completed order in the past 365 days) per
period (a calendar month of event time, UTC), never a customer inside their cooldown. Two parts:

1. *Which* (a priority threshold learned at training). Training scores the rows the scorer would have
   served over the held-out period (every event and every silence milestone,
   :func:`~churnstream.features.offline.serving_rows`), takes each active customer's highest priority in
   each calendar month and, for each budget share, keeps the threshold that lets at most that share of
   the month's active customers through in every held-out month (:func:`fit_priority_thresholds`; the
   table is the model's metadata ``alert_policy``). Online, a prediction is a candidate when
   (:func:`picks_by_priority`) the customer is active, its priority reaches the threshold, the customer
   has no alert yet in the prediction's month and their last alert is at least the cooldown
   (``CHURN_ALERT_COOLDOWN_DAYS``) behind.
2. *How many* (a hard cap per input partition). Each partition counts its active customers by the month
   they leave the active base and the alerts it sent per month (:class:`Budget`); a candidate becomes an
   alert only while the month's alerts stay below the share of the customers the partition counts active
   in that month so far (:func:`pick_under_budget`). The threshold does the choosing; the cap makes the
   bound hold when scores run above the training period's (the simulated business in the integration
   tests does). The counts live in the partition's meta record and are written in the same transaction
   as the customers' states, the learner's checkpoint and the offsets, so kill -9 keeps exactly-once; a
   partition's decisions follow its own order of predictions (by event time, sweeps at their tick), so a
   replay of the same log makes the same ones.

Delay: none. An alert goes out with the prediction that qualifies; a candidate refused by a spent cap is
dropped, not queued (the customer can qualify again at a later prediction of the month, while budget is
left). The price of deciding at once: early in a month the cap is a share of the customers counted so far,
and a customer who qualifies after the month's budget is spent waits for the next month.

``high_risk`` (``CHURN_ALERT_POLICY=high_risk``, the original rule, :func:`should_alert`): a customer
raises an alert when their risk turns ``HIGH`` (it was not HIGH at their previous prediction) and their
last alert is at least the cooldown behind, in event time; a turn held back by the cooldown raises the
alert at their first HIGH prediction after it (:func:`step_high_risk`). A model trained before value
thresholds existed has none, and then the scorer uses this rule, saying so in the alerts' ``policy``.

A control group (``CHURN_ALERT_HOLDOUT_SHARE``, default 0): a deterministic share of the picked customers
(by a hash of the customer id, theirs for good, :func:`is_holdout`) is published with ``holdout: true``
and no action; held-back alerts count against the budget like the others. The online model and
retraining label contacted and held-back customers alike, by what they then do, so a contact that keeps
a customer teaches the model that such customers stay; comparing the two groups' outcomes measures that
effect.

>>> DAY = 86_400_000
>>> should_alert("HIGH", previous_risk="MEDIUM", last_alerted=None, as_of=DAY, cooldown_ms=7 * DAY)
True
>>> should_alert("HIGH", previous_risk="HIGH", last_alerted=None, as_of=DAY, cooldown_ms=7 * DAY)
False
>>> picks_by_priority(50.0, threshold=40.0, active=True, last_alerted=None, as_of=DAY, cooldown_ms=0)
True
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from churnstream.features.state import ScoringState

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
ACTIVE_DAYS = 365.0
"""A customer is active while their last completed order is at most this many days old."""
SHARES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
"""The budget shares training records a priority threshold for."""
HIGH_VALUE_AT_RISK = 50.0
"""The value at risk (in the unit of order amounts) from which a customer is worth a person's time, when
the model says nothing better: the scorer uses the model's priority threshold of the top
:data:`PERSONAL_SHARE` of customers, in the shop's own unit and horizon."""
PERSONAL_SHARE = 0.01
"""The share of active customers a month worth a person's time: a value at risk at or above the model's
priority threshold for it gets a personal call among the recommended actions (in the shop's own unit of
order amounts and horizon; 40.96 on the CDNOW demo)."""
POLICIES = ("value_at_risk", "high_risk")


def month_of(ms: int) -> str:
    """The period of an event time: its calendar month in UTC.

    >>> month_of(0), month_of(886_291_199_000), month_of(-1)
    ('1970-01', '1998-01', '1969-12')
    """
    return _month_of_day(ms // DAY_MS)


@functools.lru_cache(maxsize=4096)
def _month_of_day(day: int) -> str:
    """The calendar month of a UTC day number (the scorer asks for every prediction and alert: a cache,
    not a date formatted each time, which took 2% of a worker)."""
    return datetime.fromtimestamp(day * DAY_MS // 1000, tz=UTC).strftime("%Y-%m")


def is_active(recency_days: float | None) -> bool:
    """Whether a customer with this ``recency_days`` counts in the active base.

    >>> is_active(10.0), is_active(400.0), is_active(None)
    (True, False, False)
    """
    return recency_days is not None and recency_days <= ACTIVE_DAYS


def should_alert(
    risk: str, *, previous_risk: str | None, last_alerted: int | None, as_of: int, cooldown_ms: int
) -> bool:
    """The ``high_risk`` policy: whether a prediction of risk ``risk`` as of ``as_of`` raises an alert.

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


def step_high_risk(held: ScoringState, risk: str, *, as_of: int, cooldown_ms: int) -> bool:
    """The ``high_risk`` policy over one customer's predictions in time order: whether this one (of risk
    ``risk`` as of ``as_of``) raises an alert, remembering its risk in ``held`` (the customer's scoring
    state: ``risk``, and ``alerted``, the last alert's time, which the caller sets).

    A turn to HIGH inside the cooldown is not forgotten: the risk stays remembered as before it, so the
    customer's first HIGH prediction after the cooldown raises the alert. Before, the turn counted as seen
    and a customer who stayed HIGH was never alerted again.

    >>> DAY = 86_400_000
    >>> held = {}
    >>> alerted = []
    >>> for day, risk in [(0, "HIGH"), (2, "MEDIUM"), (4, "HIGH"), (6, "HIGH"), (8, "HIGH"), (9, "HIGH")]:
    ...     if step_high_risk(held, risk, as_of=day * DAY, cooldown_ms=7 * DAY):
    ...         held["alerted"] = day * DAY
    ...         alerted.append(day)
    >>> alerted
    [0, 8]
    """
    previous = held.get("risk")
    picked = should_alert(
        risk, previous_risk=previous, last_alerted=held.get("alerted"), as_of=as_of, cooldown_ms=cooldown_ms
    )
    if risk == "HIGH" and previous != "HIGH" and not picked:
        return False  # a turn held back by the cooldown: still to be alerted
    held["risk"] = risk
    return picked


def picks_by_priority(
    priority: float,
    *,
    threshold: float,
    active: bool,
    last_alerted: int | None,
    as_of: int,
    cooldown_ms: int,
) -> bool:
    """The ``value_at_risk`` policy: an active customer whose priority reaches ``threshold``, not alerted
    yet in ``as_of``'s month and outside the cooldown (see the module docstring).

    >>> DAY = 86_400_000
    >>> jan_30, feb_2 = 29 * DAY, 32 * DAY
    >>> picks_by_priority(9.0, threshold=5.0, active=True, last_alerted=DAY, as_of=jan_30, cooldown_ms=0)
    False
    >>> picks_by_priority(9.0, threshold=5.0, active=True, last_alerted=jan_30, as_of=feb_2,
    ...                   cooldown_ms=7 * DAY)
    False
    >>> picks_by_priority(9.0, threshold=5.0, active=False, last_alerted=None, as_of=feb_2, cooldown_ms=0)
    False
    """
    if not active or priority < threshold or priority <= 0.0:
        return False
    if last_alerted is None:
        return True
    return month_of(last_alerted) != month_of(as_of) and as_of - last_alerted >= cooldown_ms


def active_until(as_of: int, recency_days: float | None) -> int | None:
    """When a customer scored as of ``as_of`` leaves the active base: last completed order + 365 days.

    >>> active_until(10 * 86_400_000, 4.0) == (6 + 365) * 86_400_000, active_until(0, None)
    (True, None)
    """
    if recency_days is None:
        return None
    return as_of - round(recency_days * DAY_MS) + YEAR_MS


class Budget:
    """One partition's hard cap: its active customers by the month they leave the active base, and the
    alerts sent per month. An alert in month m is allowed while fewer than ``share`` of the partition's
    customers active in m (as counted so far) have had one: the cap is ``share`` of the base rounded up,
    so a partition of a few customers still gets one alert a month (rounded down, a pilot of fewer than
    ten active customers a partition got none at 10 %). Kept in the partition's meta record and written in
    the batch's transaction (:meth:`to_text` / :meth:`from_text`).

    >>> b = Budget.from_text(None)
    >>> for cid in range(20):
    ...     b.count_active(None, active_until(0, 1.0))  # 20 customers, active until Dec 1970
    >>> b.base("1970-01"), b.allows("1970-01", 0.1), b.allows("1970-01", 0.04), b.allows("1970-01", 0.0)
    (20, True, True, False)
    >>> b.spend("1970-01"); b.spend("1970-01")
    >>> b.allows("1970-01", 0.1), b.allows("1970-01", 0.11), Budget.from_text(b.to_text()).sent
    (False, True, {'1970-01': 2})
    >>> b = Budget({"1970-02": 100}, {"1970-01": 7})
    >>> b.allows("1970-01", 0.07)  # 0.07 * 100 is 7.000000000000001 in floats: the cap is still 7
    False
    """

    def __init__(self, active: dict[str, int] | None = None, sent: dict[str, int] | None = None) -> None:
        self.active = active or {}  # month the customers leave the active base -> how many
        self.sent = sent or {}  # month -> alerts sent

    @classmethod
    def from_text(cls, text: str | None) -> Budget:
        if not text:
            return cls()
        record = json.loads(text)
        return cls(dict(record.get("active", {})), dict(record.get("sent", {})))

    def to_text(self) -> str:
        return json.dumps({"active": self.active, "sent": self.sent}, sort_keys=True, separators=(",", ":"))

    def count_active(self, previous_until: int | None, until: int) -> None:
        """A customer now active until ``until`` (was ``previous_until``, None: not counted yet)."""
        if previous_until is not None:
            old = month_of(previous_until)
            if self.active.get(old, 0) > 0:
                self.active[old] -= 1
                if not self.active[old]:
                    del self.active[old]
        new = month_of(until)
        self.active[new] = self.active.get(new, 0) + 1

    def base(self, month: str) -> int:
        """Customers counted active at some instant of ``month``: still active after it began."""
        return sum(n for m, n in self.active.items() if m >= month)

    def allows(self, month: str, share: float) -> bool:
        # rounded up, but 0.07 * 100 (7.000000000000001 in floats) is a cap of 7, not 8
        return self.sent.get(month, 0) < math.ceil(share * self.base(month) - 1e-9)

    def spend(self, month: str) -> None:
        self.sent[month] = self.sent.get(month, 0) + 1

    def prune(self, month: str) -> None:
        """Forget what no decision from ``month`` on needs (sent counts a year old)."""
        year_before = f"{int(month[:4]) - 1}{month[4:]}"
        self.active = {m: n for m, n in self.active.items() if m >= year_before}
        self.sent = {m: n for m, n in self.sent.items() if m >= year_before}


def pick_under_budget(
    held: ScoringState,
    budget: Budget,
    *,
    priority: float,
    as_of: int,
    recency_days: float | None,
    threshold: float,
    share: float,
    cooldown_ms: int,
) -> bool:
    """The ``value_at_risk`` policy's whole decision for one prediction, in the order the scorer makes
    them: count the customer in their partition's active base (``held`` is the customer's scoring state,
    ``budget`` their partition's), then :func:`picks_by_priority` within the month's cap; a pick is spent
    from the budget (the caller records the alert in ``held``).

    >>> budget, DAY = Budget(), 86_400_000
    >>> people = [{} for _ in range(30)]
    >>> [pick_under_budget(h, budget, priority=50.0, as_of=DAY, recency_days=1.0, threshold=10.0,
    ...                    share=0.1, cooldown_ms=0) for h in people].count(True)
    3
    """
    until = active_until(as_of, recency_days)
    if until is not None and until > held.get("au", -1):
        budget.count_active(held.get("au"), until)
        held["au"] = until
    month = month_of(as_of)
    picked = picks_by_priority(
        priority,
        threshold=threshold,
        active=is_active(recency_days),
        last_alerted=held.get("alerted"),
        as_of=as_of,
        cooldown_ms=cooldown_ms,
    ) and budget.allows(month, share)
    if picked:
        budget.spend(month)
    return picked


def is_holdout(customer_id: str, share: float) -> bool:
    """Whether a picked customer is held back as a control: a hash of the customer id below ``share``.

    The assignment is the customer's for good, not redrawn per period: a customer contacted in January and
    held back in February would carry January's contact into the control group's outcomes and pull the
    measured difference toward zero.

    >>> is_holdout("C1", 0.0), is_holdout("C1", 1.0)
    (False, True)
    >>> sum(is_holdout(f"C{i}", 0.2) for i in range(10_000)) / 10_000
    0.199
    """
    if share <= 0.0:
        return False
    digest = hashlib.sha256(f"holdout|{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def fit_priority_thresholds(
    customer_ids: Sequence[str],
    as_of: Sequence[int],
    priority: Sequence[float],
    active: Sequence[bool],
    *,
    shares: Sequence[float] = SHARES,
) -> dict[str, Any]:
    """The priority threshold of each budget share, from rows the scorer would serve (see the module
    docstring): for each month, each active customer's highest priority; for each share, the largest
    over the months of the threshold that lets at most ``share`` of the month's active customers through.

    >>> DAY = 86_400_000
    >>> ids = [f"C{i}" for i in range(10)] * 2
    >>> t = [DAY] * 10 + [40 * DAY] * 10  # January and February
    >>> pr = [float(i) for i in range(10)] + [float(2 * i) for i in range(10)]
    >>> fit = fit_priority_thresholds(ids, t, pr, [True] * 20, shares=(0.1, 0.2))
    >>> fit["thresholds"], fit["months"]
    ({'0.1': 18.0, '0.2': 16.0}, 2)
    """
    best: dict[tuple[str, str], float] = {}
    for cid, t, p, a in zip(customer_ids, as_of, priority, active, strict=True):
        if not a:
            continue
        key = (month_of(int(t)), cid)
        if p > best.get(key, float("-inf")):
            best[key] = float(p)
    by_month: dict[str, list[float]] = {}
    for (month, _), p in best.items():
        by_month.setdefault(month, []).append(p)
    thresholds: dict[str, float] = {}
    for share in shares:
        per_month = []
        for values in by_month.values():
            ranked = np.sort(np.asarray(values))[::-1]
            allowed = int(share * len(ranked))
            # the smallest priority above the first one left out (ties left out with it)
            per_month.append(float(np.nextafter(ranked[allowed], np.inf)) if allowed < len(ranked) else 0.0)
            if allowed and ranked[allowed - 1] > ranked[allowed]:
                per_month[-1] = float(ranked[allowed - 1])
        if per_month:
            thresholds[str(share)] = round(max(per_month), 6)
    return {
        "thresholds": thresholds,
        "months": len(by_month),
        "customers_per_month": round(float(np.mean([len(v) for v in by_month.values()])), 1)
        if by_month
        else 0.0,
    }


def threshold_for(fitted: Mapping[str, Any] | None, share: float) -> float | None:
    """The threshold of the largest recorded share not above ``share`` (None: nothing recorded fits).

    >>> threshold_for({"thresholds": {"0.05": 30.0, "0.1": 20.0}}, 0.12)
    20.0
    >>> threshold_for({"thresholds": {"0.05": 30.0}}, 0.01) is None
    True
    """
    if not fitted:
        return None
    fitting = [(float(s), t) for s, t in fitted.get("thresholds", {}).items() if float(s) <= share + 1e-12]
    return max(fitting)[1] if fitting else None


MIN_RISK_ROWS = 50
"""Held-out scores below the model's cap needed to take risk deciles of them (see :func:`risk_thresholds`)."""


def risk_thresholds(probabilities: np.ndarray) -> dict[str, Any]:
    """Risk categories that mean something on the data a model was trained on: ``HIGH`` is the riskiest
    decile of held-out scores (from their 90th percentile), ``MEDIUM`` the two deciles below (from the
    70th).

    When more than a decile of the scores sits at the highest score (customers long gone, whom the model
    is all but certain of, at its cap), the deciles are those of the scores below it: HIGH then holds
    the cap and the riskiest decile of the rest. Taken over every score, HIGH and MEDIUM both sat at the
    cap (a simulated shop: 0.999 and 0.999, a third of the scores there), and a customer at 0.95 read
    ``LOW``.

    >>> fitted = risk_thresholds(np.linspace(0.0, 1.0, 101))
    >>> fitted["high"], fitted["medium"]
    (0.9, 0.7)
    >>> gone = np.concatenate([np.linspace(0.0, 0.99, 100), np.full(300, 0.999)])
    >>> fitted = risk_thresholds(gone)
    >>> fitted["high"], fitted["medium"], fitted["chosen_from"].split(":")[0]
    (0.891, 0.693, 'held-out scores below the highest (75% of them sit at 0.999)')
    """
    p = np.asarray(probabilities, dtype=float)
    p = p[~np.isnan(p)]
    if not len(p):
        return {}
    chosen_from = "held-out scores"
    top = float(p.max())
    if float(np.quantile(p, 0.9)) >= top:
        below = p[p < top]
        if below.size >= MIN_RISK_ROWS:
            chosen_from = (
                f"held-out scores below the highest ({1 - below.size / p.size:.0%} of them sit at {top:g})"
            )
            p = below
    high = round(float(np.quantile(p, 0.9)), 6)
    medium = round(min(float(np.quantile(p, 0.7)), high), 6)
    if medium <= 0.0:
        medium = min(high, 1e-6)
    return {
        "high": max(high, 1e-6),
        "medium": medium,
        "chosen_from": f"{chosen_from}: HIGH the riskiest decile, MEDIUM the next two",
    }


__all__ = [
    "ACTIVE_DAYS",
    "Budget",
    "active_until",
    "POLICIES",
    "SHARES",
    "fit_priority_thresholds",
    "is_active",
    "is_holdout",
    "pick_under_budget",
    "month_of",
    "picks_by_priority",
    "risk_thresholds",
    "should_alert",
    "step_high_risk",
    "threshold_for",
    "HIGH_VALUE_AT_RISK",
    "PERSONAL_SHARE",
]

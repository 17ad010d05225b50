"""A generative online shop whose customers buy, complain and quietly leave, with the hidden truth.

``churnstream simulate --customers N --days D --seed S --out DIR [--drift-at DAY [--drift-kind K]]
[--start T]`` writes
``orders.jsonl``, ``support_tickets.jsonl``, ``customer_profiles.jsonl`` (contract events sorted by event
time), ``truth.jsonl`` (one line per customer: signup, true dropout time or null, its parameters) and
``manifest.json`` (arguments, counts, the model's parameters and what drift changes).

The world (numpy, independent seeded streams; orders and tickets are drawn as whole Poisson processes
and cut at the customer's dropout, which is drawn day by day for all customers at once):

- Customers: 30 % are already customers at the start (signed up up to two years before); the rest sign
  up uniformly over the period and 75 % of them order within half an hour of signing up.
- Buying: each customer orders as a Poisson process with a gamma-distributed rate (mean one order per
  14 days, heavy-tailed). Items are 1 + Poisson with a per-customer mean; the amount is items times a
  lognormal per-customer unit price times lognormal noise. 4 % of orders are cancelled and a
  per-customer share (mean 5 %) returned; the rest are completed.
- Support: tickets arrive as a Poisson process whose rate is a gamma-distributed part (mean one per 60
  days) plus half a ticket per order the customer places on average (frequent buyers ask more). Each
  customer gets service of a hidden quality (beta(2, 2)); poor service means slow resolution and low
  satisfaction. A ticket is written as an opening event (``resolution_time_hours`` null) and, if it is
  resolved before the end, a resolution event with the hours and the score (null when not rated).
- Dropout: each customer leaves for good at a hidden time, with a daily hazard of
  ``base + link * frustration``. ``base`` is lognormal (median 0.04 % a day, 1.6x for unverified
  e-mail); ``frustration`` rises, at a ticket's resolution, by 2 for a score <= 2 and by 1 for a
  resolution over 48 h, and decays with a 15-day time constant; ``link`` is 0.05 a day, so a badly
  handled ticket is the commonest reason to leave, and a model learns to read the ticket features. A
  customer who left places no more orders and files no more routine tickets; 30 % file one last
  complaint within three days after leaving.

With ``--drift-at DAY``, from that day on (see :data:`DRIFT_CHANGES`): order amounts are 1.4x, tickets
arrive 2x as often, and the link between frustration and dropout is 0.25x as strong (so a model trained
before the drift overrates tickets). Before that day the world is identical to the run without drift.
``--drift-kind`` picks what shifts (:data:`DRIFT_KINDS`): ``both`` (the default, all of the above),
``inputs`` (amounts and ticket rates alone: the features move, the relation between them and churn does
not, so a model trained before still ranks well), ``link`` (the frustration-to-dropout link alone, times
``--link-factor``, default 0.25, while the rest of that hazard follows what the features do not show: the
same tickets handled with another, hidden quality; customers keep leaving after contacts, but the
ratings and resolution times no longer say who, so a model trained before ranks worse; the inputs keep
their distribution) or ``loyalty`` (frequent buyers start to leave: the hazard rises by
:data:`LOYALTY_LINK` times the order rate, so the model's main signal, that customers who buy often
stay, breaks). Each kind draws the same random numbers (``link`` draws its hidden ticket outcomes from a
stream of its own).

Ids: customers ``c000000``...; events ``sim-<seed>-o-<n>`` (orders, order id ``sim-<seed>-order-<n>``),
``sim-<seed>-s-<n>`` (ticket events, ticket id ``sim-<seed>-ticket-<k>``) and ``sim-<seed>-p-<n>``
(profiles), numbered in event-time order.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.errors import ConfigError
from churnstream.events import format_time, now_ms, parse_time
from churnstream.settings import DAY_MS, Settings
from churnstream.sources._output import (
    CHANNEL_SHARES,
    prepare_out_dir,
    progress,
    rfc3339_seconds,
    ticket_lines,
    ticket_outcomes,
    write_json,
    write_lines,
)

DAY_S = 86_400
CATEGORIES = ("electronics", "books", "home", "fashion", "beauty", "toys", "grocery", "sports")
CITIES = ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Stuttgart", "Leipzig", "Dresden")
CITY_SHARES = (0.24, 0.16, 0.15, 0.11, 0.1, 0.09, 0.08, 0.07)

DRIFT_CHANGES = {
    "order_amount_factor": 1.4,
    "ticket_rate_factor": 2.0,
    "ticket_dropout_link_factor": 0.25,
}

MODEL: dict[str, Any] = {
    "present_at_start_share": 0.3,
    "first_order_at_signup_share": 0.75,
    "order_rate_per_day": {"distribution": "gamma", "shape": 0.8, "mean": 1 / 14, "max": 2.0},
    "extra_items_mean": {"distribution": "gamma", "shape": 1.2, "mean": 1.2},
    "unit_price": {"distribution": "lognormal", "median": 17.0, "sigma": 0.45, "order_noise_sigma": 0.3},
    "cancelled_share": 0.04,
    "returned_share": {"distribution": "beta", "a": 1.0, "b": 19.0},
    "ticket_rate_per_day": {"distribution": "gamma", "shape": 0.8, "mean": 1 / 60, "per_order": 0.5},
    "service_quality": {"distribution": "beta", "a": 2.0, "b": 2.0},
    "satisfaction_rated_share": 0.7,
    "base_hazard_per_day": {"distribution": "lognormal", "median": 0.0004, "sigma": 0.6},
    "unverified_email_hazard_factor": 1.6,
    "frustration": {
        "per_opened_ticket": 0.0,
        "per_resolved_ticket": 0.0,
        "score_le_2": 2.0,
        "resolution_over_48h": 1.0,
        "decay_time_constant_days": 15.0,
    },
    "ticket_dropout_link_per_day": 0.05,
    "last_complaint_share": 0.3,
}

DRIFT_KINDS = {
    "both": tuple(DRIFT_CHANGES),
    "inputs": ("order_amount_factor", "ticket_rate_factor"),
    "link": ("ticket_dropout_link_factor", "hidden_dropout_link_share"),
    "loyalty": ("order_rate_dropout_link",),
}
# ``--drift-kind loyalty``: from the drift day a customer's daily dropout hazard rises by this times their
# order rate (a competitor takes the best buyers), so buying often no longer means staying.
LOYALTY_LINK = 0.5


# Day 0 of a simulation unless ``--start`` says otherwise.
DEFAULT_START = "2024-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate: ``customers`` over ``days`` from ``start_ms``, seeded, with optional drift."""

    customers: int
    days: int
    seed: int
    start_ms: int = parse_time(DEFAULT_START)
    drift_at: int | None = None
    drift_kind: str = "both"
    link_factor: float | None = None  # replaces DRIFT_CHANGES' link factor (negative: tickets keep customers)

    def check(self, *, wall_clock_ms: int) -> None:
        """Raise :class:`ConfigError` for a configuration that cannot give valid contract events."""
        if self.customers <= 0:
            raise ConfigError(f"--customers must be positive, got {self.customers}")
        if self.days <= 0:
            raise ConfigError(f"--days must be positive, got {self.days}")
        if self.seed < 0:
            raise ConfigError(f"--seed must not be negative, got {self.seed}")
        if self.drift_at is not None and not 0 <= self.drift_at < self.days:
            raise ConfigError(f"--drift-at must be a day in 0..{self.days - 1}, got {self.drift_at}")
        if self.drift_kind not in DRIFT_KINDS:
            raise ConfigError(
                f"--drift-kind must be one of {', '.join(DRIFT_KINDS)}, got {self.drift_kind!r}"
            )
        if self.start_ms % 1000:
            raise ConfigError("--start must be a whole second")
        if self.start_ms < 0:
            raise ConfigError("--start must not be before 1970-01-01")
        if self.end_ms > wall_clock_ms:
            raise ConfigError(
                f"the simulated period ends at {format_time(self.end_ms)}, after the wall clock; "
                "events must lie in the past: choose an earlier --start or fewer --days"
            )

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.days * DAY_MS

    @property
    def drift_ms(self) -> int | None:
        return None if self.drift_at is None else self.start_ms + self.drift_at * DAY_MS

    @property
    def drift_changes(self) -> dict[str, float]:
        """The changes of :data:`DRIFT_CHANGES` this run makes from the drift day (none without one)."""
        if self.drift_at is None:
            return {}
        known = {**DRIFT_CHANGES, "order_rate_dropout_link": LOYALTY_LINK, "hidden_dropout_link_share": 0.0}
        changes = {name: known[name] for name in DRIFT_KINDS[self.drift_kind]}
        if self.link_factor is not None and "ticket_dropout_link_factor" in changes:
            changes["ticket_dropout_link_factor"] = self.link_factor
        if "hidden_dropout_link_share" in changes:
            changes["hidden_dropout_link_share"] = max(1.0 - changes["ticket_dropout_link_factor"], 0.0)
        return changes

    def factor(self, name: str) -> float:
        return self.drift_changes.get(name, 1.0)


# Independent random streams, so that e.g. drawing drift-only tickets does not shift anything else.
_CUSTOMERS, _ORDERS, _TICKETS, _DRIFT_TICKETS, _DROPOUT, _LAST_COMPLAINT, _HIDDEN = range(7)


def _rng(config: SimulationConfig, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([config.seed, stream]))


@dataclass(slots=True)
class _Customers:
    signup_ms: np.ndarray
    signup_date_ms: np.ndarray
    present: np.ndarray
    first_order: np.ndarray
    first_order_delay_s: np.ndarray
    order_rate: np.ndarray
    extra_items: np.ndarray
    unit_price: np.ndarray
    returned_share: np.ndarray
    ticket_rate: np.ndarray
    quality: np.ndarray
    base_hazard: np.ndarray
    favourite: np.ndarray
    age: np.ndarray
    city: np.ndarray
    email_verified: np.ndarray
    phone_verified: np.ndarray


def _draw_customers(config: SimulationConfig) -> _Customers:
    rng = _rng(config, _CUSTOMERS)
    n = config.customers
    present = rng.random(n) < MODEL["present_at_start_share"]
    signup_day = np.where(present, 0, rng.integers(0, config.days, n))
    signup_s = np.where(present, rng.integers(0, 3600, n), rng.integers(0, DAY_S - 3600, n))
    signup_ms = config.start_ms + signup_day * DAY_MS + signup_s * 1000
    before_s = rng.integers(DAY_S, 730 * DAY_S, n)
    email_verified = rng.random(n) < 0.85
    first_order = ~present & (rng.random(n) < MODEL["first_order_at_signup_share"])
    first_order_delay_s = rng.integers(60, 1800, n)
    order_rate = np.minimum(rng.gamma(0.8, (1 / 14) / 0.8, n), 2.0)
    return _Customers(
        signup_ms=signup_ms,
        signup_date_ms=np.where(present, config.start_ms - before_s * 1000, signup_ms),
        present=present,
        first_order=first_order,
        first_order_delay_s=first_order_delay_s,
        order_rate=order_rate,
        extra_items=rng.gamma(1.2, 1.0, n),
        unit_price=np.exp(np.log(17.0) + rng.normal(0.0, 0.45, n)),
        returned_share=rng.beta(1.0, 19.0, n),
        ticket_rate=rng.gamma(
            MODEL["ticket_rate_per_day"]["shape"],
            MODEL["ticket_rate_per_day"]["mean"] / MODEL["ticket_rate_per_day"]["shape"],
            n,
        )
        + MODEL["ticket_rate_per_day"]["per_order"] * order_rate,
        quality=rng.beta(MODEL["service_quality"]["a"], MODEL["service_quality"]["b"], n),
        base_hazard=np.exp(np.log(MODEL["base_hazard_per_day"]["median"]) + rng.normal(0.0, 0.6, n))
        * np.where(email_verified, 1.0, 1.6),
        favourite=rng.integers(0, len(CATEGORIES), n),
        age=np.clip(np.rint(rng.normal(38.0, 12.0, n)), 18, 90).astype(np.int64),
        city=rng.choice(len(CITIES), n, p=CITY_SHARES),
        email_verified=email_verified,
        phone_verified=rng.random(n) < 0.5,
    )


@dataclass(slots=True)
class _Orders:
    customer: np.ndarray
    ms: np.ndarray
    items: np.ndarray
    amount: np.ndarray
    status: np.ndarray  # 0 completed, 1 returned, 2 cancelled
    category: np.ndarray

    def select(self, keep: np.ndarray) -> _Orders:
        return _Orders(*(getattr(self, name)[keep] for name in self.__slots__))


@dataclass(slots=True)
class _Tickets:
    customer: np.ndarray
    ms: np.ndarray  # opened
    hours: np.ndarray  # resolution time
    score: np.ndarray  # 1..5, 0 = not rated
    channel: np.ndarray

    def select(self, keep: np.ndarray) -> _Tickets:
        return _Tickets(*(getattr(self, name)[keep] for name in self.__slots__))

    @staticmethod
    def concat(parts: list[_Tickets]) -> _Tickets:
        return _Tickets(*(np.concatenate([getattr(p, name) for p in parts]) for name in _Tickets.__slots__))


def _uniform_times(
    rng: np.random.Generator, counts: np.ndarray, lo_ms: np.ndarray, hi_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Customer index and whole-second time, uniform in [lo, hi), of ``counts[i]`` events per customer."""
    idx = np.repeat(np.arange(counts.size), counts)
    span_s = (hi_ms - lo_ms[idx]) // 1000
    return idx, lo_ms[idx] + (rng.random(idx.size) * span_s).astype(np.int64) * 1000


def _draw_orders(config: SimulationConfig, c: _Customers) -> _Orders:
    """Every order each customer would place if they never left (dropout removes the later ones)."""
    rng = _rng(config, _ORDERS)
    span_days = (config.end_ms - c.signup_ms) / DAY_MS
    idx, ms = _uniform_times(rng, rng.poisson(c.order_rate * span_days), c.signup_ms, config.end_ms)
    first = np.flatnonzero(c.first_order)
    idx = np.concatenate([idx, first])
    ms = np.concatenate([ms, c.signup_ms[first] + c.first_order_delay_s[first] * 1000])
    m = idx.size
    items = 1 + rng.poisson(c.extra_items[idx])
    amount = items * c.unit_price[idx] * np.exp(rng.normal(0.0, 0.3, m))
    if config.drift_ms is not None:
        amount *= np.where(ms >= config.drift_ms, config.factor("order_amount_factor"), 1.0)
    u = rng.random(m)
    cancelled = MODEL["cancelled_share"]
    status = np.where(u < cancelled, 2, np.where(u < cancelled + c.returned_share[idx], 1, 0))
    category = np.where(rng.random(m) < 0.55, c.favourite[idx], rng.integers(0, len(CATEGORIES), m))
    return _Orders(idx, ms, items, np.rint(amount * 100.0) / 100.0, status, category)


def _draw_tickets(
    rng: np.random.Generator, c: _Customers, rate: np.ndarray, lo_ms: np.ndarray, hi_ms: int
) -> _Tickets:
    span_days = np.maximum(hi_ms - lo_ms, 0) / DAY_MS
    idx, ms = _uniform_times(rng, rng.poisson(rate * span_days), lo_ms, hi_ms)
    hours, score = ticket_outcomes(rng, c.quality[idx], rated_share=MODEL["satisfaction_rated_share"])
    channel = rng.choice(len(CHANNEL_SHARES), idx.size, p=np.asarray(CHANNEL_SHARES))
    return _Tickets(idx, ms, hours, score, channel)


def _all_tickets(config: SimulationConfig, c: _Customers) -> _Tickets:
    """Routine tickets of customers who never left; after the drift day, extra ones from their own stream."""
    parts = [_draw_tickets(_rng(config, _TICKETS), c, c.ticket_rate, c.signup_ms, config.end_ms)]
    if config.drift_ms is not None and config.factor("ticket_rate_factor") != 1.0:
        extra = c.ticket_rate * (config.factor("ticket_rate_factor") - 1.0)
        lo = np.maximum(c.signup_ms, config.drift_ms)
        parts.append(_draw_tickets(_rng(config, _DRIFT_TICKETS), c, extra, lo, config.end_ms))
    return _Tickets.concat(parts)


def _frustration_steps(
    config: SimulationConfig, tickets: _Tickets, hours: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per day (``bounds[d - 1]:bounds[d]``), the customers whose frustration rises and by how much, for
    tickets resolved after ``hours`` with ``score``."""
    f = MODEL["frustration"]
    resolved_ms = tickets.ms + np.round(hours * 3600.0).astype(np.int64) * 1000
    bad = (score > 0) & (score <= 2)
    weight_resolved = (
        f["per_resolved_ticket"] + f["score_le_2"] * bad + f["resolution_over_48h"] * (hours > 48.0)
    )
    day = np.concatenate([tickets.ms, resolved_ms]) - config.start_ms
    day //= DAY_MS
    customer = np.concatenate([tickets.customer, tickets.customer])
    weight = np.concatenate([np.full(tickets.ms.size, f["per_opened_ticket"]), weight_resolved])
    order = np.argsort(day, kind="stable")
    bounds = np.searchsorted(day[order], np.arange(config.days + 1), side="left")
    return customer[order], weight[order], bounds


def _hidden_outcomes(
    config: SimulationConfig, c: _Customers, tickets: _Tickets
) -> tuple[np.ndarray, np.ndarray]:
    """What ``--drift-kind link`` makes drive dropout after the drift day instead of the tickets' visible
    outcomes: the same tickets handled with another, hidden quality (its own random stream)."""
    rng = _rng(config, _HIDDEN)
    quality = rng.beta(MODEL["service_quality"]["a"], MODEL["service_quality"]["b"], config.customers)
    return ticket_outcomes(rng, quality[tickets.customer], rated_share=MODEL["satisfaction_rated_share"])


def _dropouts(
    config: SimulationConfig, c: _Customers, tickets: _Tickets, *, progress_bar: bool
) -> np.ndarray:
    """Each customer's dropout time (-1 = stays), drawn day by day from the frustration-driven hazard."""
    rng = _rng(config, _DROPOUT)
    n = config.customers
    base_link = MODEL["ticket_dropout_link_per_day"]
    decay = float(np.exp(-1.0 / MODEL["frustration"]["decay_time_constant_days"]))
    customer, weight, bounds = _frustration_steps(config, tickets, tickets.hours, tickets.score)
    hidden = config.drift_changes.get("hidden_dropout_link_share", 0.0)
    steps = [(customer, weight, bounds)]
    if hidden:
        steps.append(_frustration_steps(config, tickets, *_hidden_outcomes(config, c, tickets)))

    signup_day = (c.signup_ms - config.start_ms) // DAY_MS
    frustration = np.zeros((len(steps), n))  # row 0: from what the tickets show; row 1: hidden
    alive = np.ones(n, dtype=bool)
    dropout_ms = np.full(n, -1, dtype=np.int64)
    bar = progress(config.days, "simulate", "day", enabled=progress_bar)
    for d in range(config.days):
        frustration *= decay
        if d:
            for row, (who, how_much, at) in zip(frustration, steps, strict=True):
                sl = slice(at[d - 1], at[d])
                np.add.at(row, who[sl], how_much[sl])
        drifted = config.drift_at is not None and d >= config.drift_at
        link = base_link * (config.factor("ticket_dropout_link_factor") if drifted else 1.0)
        at_risk = np.flatnonzero(alive & (signup_day < d))
        hazard = np.maximum(c.base_hazard[at_risk] + link * frustration[0, at_risk], 0.0)
        if drifted:
            hazard += config.drift_changes.get("order_rate_dropout_link", 0.0) * c.order_rate[at_risk]
            if hidden:
                hazard += base_link * hidden * frustration[1, at_risk]
        leaving = at_risk[rng.random(at_risk.size) < -np.expm1(-hazard)]
        dropout_ms[leaving] = config.start_ms + d * DAY_MS + rng.integers(1, DAY_S, leaving.size) * 1000
        alive[leaving] = False
        bar.update(1)
    bar.close()
    return dropout_ms


def _last_complaints(config: SimulationConfig, c: _Customers, dropout_ms: np.ndarray) -> _Tickets:
    rng = _rng(config, _LAST_COMPLAINT)
    n = config.customers
    u = rng.random(n)
    delay_s = rng.integers(600, 3 * DAY_S, n)
    hours, score = ticket_outcomes(rng, c.quality * 0.5, rated_share=MODEL["satisfaction_rated_share"])
    channel = rng.choice(len(CHANNEL_SHARES), n, p=np.asarray(CHANNEL_SHARES))
    pick = np.flatnonzero((dropout_ms >= 0) & (u < MODEL["last_complaint_share"]))
    return _Tickets(pick, dropout_ms[pick] + delay_s[pick] * 1000, hours[pick], score[pick], channel[pick])


def _before_dropout(customer: np.ndarray, ms: np.ndarray, dropout_ms: np.ndarray) -> np.ndarray:
    leave = dropout_ms[customer]
    return (leave < 0) | (ms < leave)


def _customer_ids(n: int) -> list[str]:
    width = max(6, len(str(n - 1)))
    return [f"c{i:0{width}d}" for i in range(n)]


def _order_lines(seed: int, cids: list[str], orders: _Orders) -> list[str]:
    order = np.lexsort((np.arange(orders.ms.size), orders.ms))
    o = orders.select(order)
    statuses = ("completed", "returned", "cancelled")
    return [
        f'{{"event_id":"sim-{seed}-o-{n}","customer_id":"{cids[ci]}","order_id":"sim-{seed}-order-{n}",'
        f'"timestamp":"{ts}","amount":{am:.2f},"items":{it},"category":"{CATEGORIES[cat]}",'
        f'"status":"{statuses[st]}"}}\n'
        for n, (ci, ts, am, it, cat, st) in enumerate(
            zip(
                o.customer.tolist(),
                rfc3339_seconds(o.ms),
                o.amount.tolist(),
                o.items.tolist(),
                o.category.tolist(),
                o.status.tolist(),
                strict=True,
            ),
            1,
        )
    ]


def _profile_lines(seed: int, cids: list[str], c: _Customers) -> list[str]:
    order = np.lexsort((np.arange(c.signup_ms.size), c.signup_ms))
    flag = ("false", "true")
    return [
        f'{{"event_id":"sim-{seed}-p-{n}","customer_id":"{cids[i]}","timestamp":"{ts}",'
        f'"signup_date":"{sd}","age":{ag},"city":"{CITIES[ci]}",'
        f'"email_verified":{flag[ev]},"phone_verified":{flag[pv]}}}\n'
        for n, (i, ts, sd, ag, ci, ev, pv) in enumerate(
            zip(
                order.tolist(),
                rfc3339_seconds(c.signup_ms[order]),
                rfc3339_seconds(c.signup_date_ms[order]),
                c.age[order].tolist(),
                c.city[order].tolist(),
                c.email_verified[order].tolist(),
                c.phone_verified[order].tolist(),
                strict=True,
            ),
            1,
        )
    ]


def _truth_lines(cids: list[str], c: _Customers, dropout_ms: np.ndarray) -> list[str]:
    dropped = dropout_ms >= 0
    dropout = [
        f'"{ts}"' if dr else "null"
        for ts, dr in zip(rfc3339_seconds(np.where(dropped, dropout_ms, 0)), dropped.tolist(), strict=True)
    ]
    columns = zip(
        cids,
        rfc3339_seconds(c.signup_ms),
        rfc3339_seconds(c.signup_date_ms),
        c.present.tolist(),
        dropout,
        np.round(c.order_rate, 6).tolist(),
        np.round(c.extra_items, 6).tolist(),
        np.round(c.unit_price, 4).tolist(),
        np.round(c.returned_share, 6).tolist(),
        np.round(c.ticket_rate, 6).tolist(),
        np.round(c.quality, 6).tolist(),
        np.round(c.base_hazard, 8).tolist(),
        strict=True,
    )
    flag = ("false", "true")
    return [
        f'{{"customer_id":"{cid}","signup":"{su}","signup_date":"{sd}","present_at_start":{flag[pr]},'
        f'"dropout":{do},"order_rate_per_day":{orate!r},'
        f'"extra_items_mean":{xi!r},"unit_price":{up!r},"returned_share":{rs!r},'
        f'"ticket_rate_per_day":{tr!r},"service_quality":{q!r},"base_hazard_per_day":{bh!r}}}\n'
        for cid, su, sd, pr, do, orate, xi, up, rs, tr, q, bh in columns
    ]


def simulate(
    config: SimulationConfig, out: str | Path, *, progress_bar: bool = True, wall_clock_ms: int | None = None
) -> dict[str, Any]:
    """Simulate the world of ``config`` and write its files to ``out``; returns the manifest."""
    config.check(wall_clock_ms=now_ms() if wall_clock_ms is None else wall_clock_ms)
    out_dir = prepare_out_dir(out)
    customers = _draw_customers(config)
    routine = _all_tickets(config, customers)
    dropout_ms = _dropouts(config, customers, routine, progress_bar=progress_bar)
    orders = _draw_orders(config, customers)
    in_period = orders.ms < config.end_ms
    orders = orders.select(_before_dropout(orders.customer, orders.ms, dropout_ms) & in_period)
    routine = routine.select(_before_dropout(routine.customer, routine.ms, dropout_ms))
    tickets = _Tickets.concat([routine, _last_complaints(config, customers, dropout_ms)])

    cids = _customer_ids(config.customers)
    order_lines = _order_lines(config.seed, cids, orders)
    ticket_events, n_tickets, still_open = ticket_lines(
        prefix=f"sim-{config.seed}",
        customer_ids=cids,
        customer=tickets.customer,
        opened_ms=tickets.ms,
        hours=tickets.hours,
        score=tickets.score,
        channel=tickets.channel,
        end_ms=config.end_ms,
    )
    profiles = _profile_lines(config.seed, cids, customers)
    write_lines(out_dir / "orders.jsonl", order_lines)
    write_lines(out_dir / "support_tickets.jsonl", ticket_events)
    write_lines(out_dir / "customer_profiles.jsonl", profiles)
    write_lines(out_dir / "truth.jsonl", _truth_lines(cids, customers, dropout_ms))
    manifest = {
        "generator": "churnstream.sources.simulate",
        "args": {
            "customers": config.customers,
            "days": config.days,
            "seed": config.seed,
            "start": format_time(config.start_ms),
            "drift_at": config.drift_at,
            "drift_kind": config.drift_kind,
            "link_factor": config.link_factor,
        },
        "seed": config.seed,
        "start": format_time(config.start_ms),
        "end": format_time(config.end_ms),
        "counts": {
            "customers": config.customers,
            "present_at_start": int(customers.present.sum()),
            "dropped_out": int((dropout_ms >= 0).sum()),
            "orders": len(order_lines),
            "orders_by_status": {
                name: int((orders.status == code).sum())
                for code, name in enumerate(("completed", "returned", "cancelled"))
            },
            "tickets": n_tickets,
            "tickets_open_at_end": still_open,
            "ticket_events": len(ticket_events),
            "profiles": len(profiles),
            "events": len(order_lines) + len(ticket_events) + len(profiles),
        },
        "drift": None
        if config.drift_at is None
        else {
            "day": config.drift_at,
            "at": format_time(config.start_ms + config.drift_at * DAY_MS),
            "kind": config.drift_kind,
            "changes": config.drift_changes,
            "description": "from this time on: "
            + ", ".join(_DESCRIBED[name].format(factor=f) for name, f in config.drift_changes.items())
            + "; events before this time are identical to the run without drift",
        },
        "model": MODEL,
        "files": {
            "orders.jsonl": "orders topic events, sorted by timestamp",
            "support_tickets.jsonl": "support_tickets topic events: an opening event per ticket "
            "(resolution null) and a resolution event when resolved before the end",
            "customer_profiles.jsonl": "customer_profiles topic events, one per customer at signup "
            "(at the start for customers who signed up before it)",
            "truth.jsonl": "one line per customer: signup, true dropout time (null = stayed) and parameters",
        },
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


_DESCRIBED = {
    "order_amount_factor": "order amounts x1.4 (same items, pricier baskets)",
    "ticket_rate_factor": "support tickets arrive x2 as often",
    "ticket_dropout_link_factor": "the frustration-to-dropout link is x{factor:g} as strong",
    "order_rate_dropout_link": "the daily dropout hazard rises by {factor:g} times the order rate",
    "hidden_dropout_link_share": "{factor:g} of the link's hazard follows the same tickets handled with "
    "a hidden quality the features do not show",
}


def cli(args: argparse.Namespace, settings: Settings) -> int:
    """``churnstream simulate``: write the files and print how many events per second it made."""
    config = SimulationConfig(
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        start_ms=parse_time(args.start or DEFAULT_START, "--start"),
        drift_at=args.drift_at,
        drift_kind=getattr(args, "drift_kind", "both"),
        link_factor=getattr(args, "link_factor", None),
    )
    began = time.perf_counter()
    manifest = simulate(config, args.out)
    elapsed = time.perf_counter() - began
    counts = manifest["counts"]
    print(
        f"wrote {counts['events']:,} events ({counts['orders']:,} orders, {counts['ticket_events']:,} ticket "
        f"events, {counts['profiles']:,} profiles) of {counts['customers']:,} customers "
        f"({counts['dropped_out']:,} dropped out) to {args.out} in {elapsed:.2f} s: "
        f"{counts['events'] / elapsed:,.0f} events/s"
    )
    return 0

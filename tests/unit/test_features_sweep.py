"""The sweep rule as plain functions: which partitions sweep at a tick, and which silent customers."""

from __future__ import annotations

import random

import pytest

from churnstream.events import OrderEvent
from churnstream.features.offline import serving_rows
from churnstream.features.store import MemoryFeatureStore
from churnstream.features.sweep import crossed_milestone, plan_sweep, silence_windows, sweep_tick
from churnstream.settings import DAY_MS

MILESTONES = (7 * DAY_MS, 14 * DAY_MS, 30 * DAY_MS)
T0 = 1_700_000_000_000 // DAY_MS * DAY_MS


def test_a_tick_waits_for_the_allowed_lateness() -> None:
    lateness = 2 * DAY_MS
    assert sweep_tick(T0 + 2 * DAY_MS - 1, lateness_ms=lateness, interval_ms=DAY_MS) == T0 - DAY_MS
    assert sweep_tick(T0 + 2 * DAY_MS, lateness_ms=lateness, interval_ms=DAY_MS) == T0
    week = 7 * DAY_MS
    assert (
        sweep_tick(T0 + 9 * DAY_MS, lateness_ms=lateness, interval_ms=week)
        == (T0 + 7 * DAY_MS) // week * week
    )


def test_a_partition_without_a_tick_starts_and_the_others_sweep_from_their_own() -> None:
    plan = plan_sweep({3, 1, 0, 2}, {0: 10, 1: 20, 2: 10}, 20)
    assert plan.starting == [3]
    assert plan.due == {0: 10, 2: 10}  # 1 is at the tick already
    assert plan.groups == [(10, [0, 2])]
    assert plan_sweep([0], {0: 20}, 20).due == {}


def test_partitions_behind_by_different_ticks_are_asked_for_separately_oldest_first() -> None:
    plan = plan_sweep([0, 1, 2], {0: 15, 1: 5, 2: 15}, 25)
    assert plan.groups == [(5, [1]), (15, [0, 2])]


def test_a_silent_customer_is_swept_once_per_milestone_however_the_ticks_fall() -> None:
    rng = random.Random(7)
    for _ in range(200):
        seen = T0 + rng.randrange(40 * DAY_MS)
        ticks = sorted({T0 + rng.randrange(0, 90 * DAY_MS) for _ in range(rng.randrange(2, 40))})
        swept = [
            tick
            for last, tick in zip(ticks, ticks[1:], strict=False)
            if crossed_milestone(seen, silence_windows(last, tick, MILESTONES))
        ]
        # each milestone seen + m within (first tick, last tick] is crossed in exactly one interval
        crossings = {
            next(t for t in ticks[1:] if t >= seen + m)
            for m in MILESTONES
            if ticks[0] < seen + m <= ticks[-1]
        }
        assert swept == sorted(crossings)


@pytest.mark.parametrize("interval_days", [1, 3])
def test_the_store_query_and_the_offline_test_pick_the_same_customers(interval_days: int) -> None:
    """Online, the worker asks the store for customers in the windows; offline, each customer is tested."""
    rng = random.Random(interval_days)
    events = sorted(
        (
            OrderEvent(f"o{n}", f"C{rng.randrange(30)}", T0 + rng.randrange(60 * DAY_MS), f"o{n}", 5.0)
            for n in range(300)
        ),
        key=lambda e: e.timestamp,
    )
    store = MemoryFeatureStore(lateness_ms=0)
    interval = interval_days * DAY_MS
    last_seen: dict[str, int] = {}
    online: list[tuple[int, str]] = []
    offline: list[tuple[int, str]] = []
    last_tick = (T0 // interval + 1) * interval - interval
    for tick in range(last_tick + interval, T0 + 120 * DAY_MS, interval):
        batch = [e for e in events if last_tick <= e.timestamp < tick]
        store.update(batch, partition=0)
        for e in batch:
            last_seen[e.customer_id] = max(last_seen.get(e.customer_id, e.timestamp), e.timestamp)
        windows = silence_windows(last_tick, tick, MILESTONES)
        listed: dict[str, int] = {}
        for since, before in windows:
            listed.update(store.active_before(before, partitions=[0], since=since))
        online += [(tick, cid) for cid in listed]
        offline += [(tick, cid) for cid, seen in last_seen.items() if crossed_milestone(seen, windows)]
        last_tick = tick
    assert sorted(online) == sorted(offline) and len(online) > 20


def test_the_offline_serving_rows_sweep_by_the_same_rule() -> None:
    events = [OrderEvent("o1", "a", T0 + DAY_MS // 2, "o1", 5.0)]
    rows = serving_rows(events, T0, T0 + 40 * DAY_MS, lateness_ms=0, milestones_ms=MILESTONES, tick_ms=DAY_MS)
    sweeps = [(r["as_of"] - T0) // DAY_MS for r in rows if r["trigger"] == "sweep"]
    assert sweeps == [8, 15, 31]  # silence since day 0.5 reaches 7, 14 and 30 days

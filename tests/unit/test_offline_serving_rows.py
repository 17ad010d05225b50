"""The offline replay of what a scorer serves: one row per event, and sweep rows at silence milestones."""

from __future__ import annotations

from churnstream.events import OrderEvent
from churnstream.features.offline import serving_rows
from churnstream.settings import DAY_MS

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS


def order(n: int, cid: str, day: float) -> OrderEvent:
    return OrderEvent(
        event_id=f"o{n}", customer_id=cid, timestamp=T0 + int(day * DAY_MS), order_id=f"o{n}", amount=10.0
    )


def test_event_rows_in_the_window_and_sweeps_when_silence_reaches_a_milestone() -> None:
    events = [order(1, "a", 0.5), order(2, "b", 1.5), order(3, "a", 20.5), order(4, "b", 40.5)]
    rows = list(
        serving_rows(
            events,
            T0 + 10 * DAY_MS,
            T0 + 60 * DAY_MS,
            lateness_ms=0,
            milestones_ms=[7 * DAY_MS, 30 * DAY_MS],
            tick_ms=DAY_MS,
        )
    )
    event_rows = [(r["customer_id"], (r["as_of"] - T0) / DAY_MS) for r in rows if r["trigger"] == "event"]
    assert event_rows == [("a", 20.5), ("b", 40.5)]  # events before the window only build state
    sweeps = sorted(((r["as_of"] - T0) // DAY_MS, r["customer_id"]) for r in rows if r["trigger"] == "sweep")
    # a: silent since 20.5 -> 7 days at tick 28, 30 days at tick 51; b: since 1.5 -> 30 days at 32, then
    # ordered at 40.5 -> 7 days at tick 48 (its 7-day milestone at tick 9 lies before the window)
    assert sweeps == [(28, "a"), (32, "b"), (48, "b"), (51, "a")]
    sweep = next(r for r in rows if r["trigger"] == "sweep" and r["customer_id"] == "a")
    assert sweep["recency_days"] == 7.5 and sweep["orders_total"] == 2

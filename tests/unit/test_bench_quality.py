"""The protocol benchmark's pure parts: the label rule at a cutoff, the BTYD inputs, the printed table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from churnstream.events import Event, LabelEvent, OrderEvent, TicketEvent
from churnstream.settings import DAY_MS

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # bench_quality imports bench_scorer for its live part
    try:
        spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "bench_quality.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_quality"] = module  # its dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def _log() -> list[Event]:
    """A log in event-time order, as read_events gives it."""
    d = DAY_MS
    log: list[Event] = [
        OrderEvent("1", "stays", 0, "o1", 5.0),
        OrderEvent("2", "leaves", 1 * d, "o2", 5.0),
        TicketEvent("3", "ticket-only", 2 * d, "t1"),
        OrderEvent("4", "returns-only", 3 * d, "o3", 5.0),
        OrderEvent("5", "stays", 10 * d + 1, "o4", 5.0),  # just after the cutoff: inside the horizon
        OrderEvent("6", "returns-only", 12 * d, "o5", 5.0, status="returned"),  # not a completed order
        OrderEvent("7", "leaves", 40 * d + 1, "o6", 5.0),  # just past the horizon's end
        OrderEvent("8", "explicit", 5 * d, "o7", 5.0),
        LabelEvent("9", "explicit", 12 * d, True),  # answers first: the order after it does not count
        OrderEvent("12", "explicit", 20 * d, "o10", 5.0),
        OrderEvent("10", "late", 11 * d, "o8", 5.0),  # first seen after the cutoff: not scored
        OrderEvent("11", "stays", 45 * d, "o9", 5.0),
    ]
    return sorted(log, key=lambda e: e.timestamp)


def test_labels_at_the_cutoff_follow_the_contract(bench: ModuleType) -> None:
    labels = bench.protocol_labels(_log(), 10 * DAY_MS, horizon_ms=30 * DAY_MS)
    assert labels == {"stays": 0, "leaves": 1, "ticket-only": 1, "returns-only": 1, "explicit": 1}


def test_a_log_ending_inside_the_horizon_is_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="log ends before the label"):
        bench.protocol_labels(_log(), 30 * DAY_MS, horizon_ms=30 * DAY_MS)


def test_btyd_inputs_count_purchase_days_up_to_the_cutoff(bench: ModuleType) -> None:
    x, t_x, T = bench.btyd_inputs(_log(), ["stays", "returns-only", "ticket-only", "explicit"], 11 * DAY_MS)
    assert x.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert t_x.tolist() == [10.0, 0.0, 0.0, 0.0]
    assert T.tolist() == [11.0, 8.0, 0.0, 6.0]


def test_metrics_and_the_table(bench: ModuleType) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    m = bench.metrics(y, rng.random(400) + 0.3 * y, resamples=100, seed=1)
    assert 0.5 < m["roc_ci"][0] < m["roc_auc"] < m["roc_ci"][1]
    assert m["pr_ci"][0] < m["pr_auc"] < m["pr_ci"][1]
    table = bench.format_table("title", [("model", {**m, "note": "n"})])
    assert table.splitlines()[3].startswith(f"| model | {m['roc_auc']:.4f} | {m['roc_ci'][0]:.3f}–")


# -- the alert table (issue #20) ---------------------------------------------------------------------

T0 = 400 * DAY_MS
MONTHS = (T0, T0 + 30 * DAY_MS, T0 + 60 * DAY_MS)


def _shop() -> list[Event]:
    """Four active customers and one lapsed; amounts chosen so every column has its own value."""
    d = DAY_MS
    orders = [
        ("a", -100, 100.0),
        ("a", -10, 50.0),
        ("b", -50, 10.0),
        ("b", 15, 10.0),  # inside the horizon of month 1's start
        ("b", 40, 10.0),  # and of month 2's
        ("c", -400, 1000.0),  # more than a year before: never active
        ("d", -20, 60.0),
        ("e", -30, 20.0),
        ("e", 10, 20.0),
        ("e", 45, 20.0),
    ]
    log: list[Event] = [
        OrderEvent(f"{i}", cid, T0 + day * d, f"o{i}", amount) for i, (cid, day, amount) in enumerate(orders)
    ]
    return sorted(log, key=lambda e: e.timestamp)


ALERTS = [
    {"customer_id": "a", "as_of": T0 + 1 * DAY_MS},
    {"customer_id": "d", "as_of": T0 + 31 * DAY_MS},
    {"customer_id": "b", "as_of": T0 + 32 * DAY_MS},
    {"customer_id": "a", "as_of": T0 + 33 * DAY_MS},  # a left on day 5: alerted when already gone
    {"customer_id": "e", "as_of": T0 + 60 * DAY_MS},  # after the last month: not counted
]


def test_the_alert_table_by_observed_orders(bench: ModuleType) -> None:
    m = bench.measure(ALERTS, bench.Orders(_shop()), MONTHS, 20 * DAY_MS)
    # active: a, b, d, e in both months; then churn = no completed order in the 20 days after.
    # Random list: the month's mean of past-year spend of churners = (150 + 0 + 60 + 0) / 4 in both months.
    # Alerts lose a 150, d 60, b 0 (orders on day 40), a 150 again.
    assert (m["per_month"], m["max_month"]) == (2.0, 3)
    assert (m["share"], m["max_share"]) == (0.5, 0.75)
    assert m["precision"] == 0.75
    assert m["lost_per_alert"] == pytest.approx(360.0 / 4)
    assert m["random_per_alert"] == pytest.approx(52.5)
    assert m["lift"] == pytest.approx(90.0 / 52.5)
    assert m["gone"] is None and m["random_gone"] is None and m["lift_there"] is None


def test_the_alert_table_by_the_simulators_truth(bench: ModuleType) -> None:
    d = DAY_MS
    truth = bench.Truth(_shop(), {"a": T0 + 5 * d, "b": None, "d": None, "e": T0 + 46 * d})
    m = bench.measure(ALERTS, truth, MONTHS, 20 * DAY_MS)
    # d stays (no order in the horizon, yet truly a customer); e leaves on day 46, inside month 2's
    # horizon (random: month 1 (150) / 4, month 2 (150 + 40) / 4); only a's two alerts lose 150 each.
    assert m["precision"] == 0.5
    assert m["lost_per_alert"] == pytest.approx(75.0)
    assert m["random_per_alert"] == pytest.approx((37.5 * 1 + 47.5 * 3) / 4)
    assert m["lift"] == pytest.approx(75.0 / 45.0)
    assert m["gone"] == 0.25  # a random list: none gone at month 1's start, a at month 2's (1 of 4)
    assert m["random_gone"] == pytest.approx((0.0 * 1 + 0.25 * 3) / 4)
    # Counting only customers still there: a's first alert (150) of 4; random: month 1 150 / 4, month 2
    # e's 40 / 4 (a is gone).
    assert m["lift_there"] == pytest.approx((150.0 / 4) / ((37.5 * 1 + 10.0 * 3) / 4))
    assert (m["per_month"], m["share"]) == (2.0, 0.5)


def test_no_alerts_gives_an_empty_row_not_a_crash(bench: ModuleType) -> None:
    m = bench.measure([], bench.Orders(_shop()), MONTHS, 20 * DAY_MS)
    assert (m["per_month"], m["max_share"], m["gone"]) == (0.0, 0.0, None)
    assert np.isnan(m["lift"]) and np.isnan(m["precision"])


def test_truth_is_read_from_the_simulators_file(bench: ModuleType, tmp_path: Path) -> None:
    from churnstream.events import parse_time
    from churnstream.features.offline import read_events
    from churnstream.sources.simulate import SimulationConfig, simulate

    config = SimulationConfig(customers=300, days=200, seed=3, start_ms=parse_time("2024-01-01T00:00:00Z"))
    manifest = simulate(config, tmp_path, progress_bar=False)
    events = read_events(tmp_path, max_future_skew_hours=1.0).events
    truth = bench.Truth.read(events, tmp_path / "truth.jsonl")
    left = {c: t for c, t in truth.dropouts.items() if t is not None}
    assert len(truth.dropouts) == 300 and len(left) == manifest["counts"]["dropped_out"] > 0
    cid, t = min(left.items(), key=lambda kv: kv[1])
    assert truth.gone(cid, t) and not truth.gone(cid, t - 1)
    assert all(e.timestamp < t for e in events if e.customer_id == cid and isinstance(e, OrderEvent))


def test_the_simulator_window_ends_a_horizon_before_the_period(bench: ModuleType) -> None:
    from churnstream.events import parse_time

    start = parse_time("2024-01-01T00:00:00Z")
    w = bench.simulator_window(start, start + 400 * DAY_MS, 90 * DAY_MS)
    assert w.months[-1] + 90 * DAY_MS <= start + 400 * DAY_MS < w.months[-1] + 90 * DAY_MS + 31 * DAY_MS
    assert len(w.months) == 4 and w.train_until == w.months[0]
    with pytest.raises(SystemExit, match="too short"):
        bench.simulator_window(start, start + 200 * DAY_MS, 90 * DAY_MS)


def test_the_alert_replay_follows_the_scorers_high_risk_rule(bench: ModuleType) -> None:
    """A turn to HIGH held back by the cooldown raises the alert when it ends, as the scorer does
    (churnstream.models.alert_policy.step_high_risk): the benchmark's figures are the product's."""
    from churnstream.settings import Settings

    settings = Settings(alert_policy="high_risk", high_threshold=0.7, medium_threshold=0.4)
    days = [0, 2, 4, 6, 8, 9]
    rows = [{"customer_id": "c", "as_of": d * DAY_MS, "recency_days": 1.0} for d in days]
    p = np.array([0.9, 0.5, 0.9, 0.9, 0.9, 0.9])
    alerts, _ = bench.replay_alerts(rows, p, settings=settings, metadata={})
    assert [a["as_of"] // DAY_MS for a in alerts] == [0, 8]

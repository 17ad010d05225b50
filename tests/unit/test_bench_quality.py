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

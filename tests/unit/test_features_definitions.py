"""The gap features (regularity and silence in the customer's own rhythm) stay exact when history folds."""

from __future__ import annotations

import copy
import random
import statistics

import pytest

from churnstream.events import OrderEvent
from churnstream.features.definitions import features_as_of
from churnstream.features.state import DAY_MS, apply_event, new_state

LATENESS = 7 * DAY_MS


def _orders(seed: int, n: int = 300) -> list[OrderEvent]:
    rng = random.Random(seed)
    out, t = [], 0
    for i in range(n):
        t += rng.choice([0, 1, 3_600_000, rng.randrange(1, 40 * DAY_MS)])  # same-ms and same-day orders too
        status = rng.choice(["completed"] * 8 + ["returned", "cancelled"])
        out.append(OrderEvent(f"e{i}", "c", t, f"o{i}", round(rng.uniform(1, 50), 2), status=status))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_gap_features_of_a_folded_state_equal_those_of_the_whole_log(seed: int) -> None:
    events = _orders(seed)
    folded, whole = new_state(), new_state()
    for e in events:
        apply_event(folded, e, lateness_ms=LATENESS)
        apply_event(whole, e, lateness_ms=10_000 * DAY_MS)  # never folds
    assert folded["fu"] is not None and folded["f"]["n"] > 100
    assert whole["fu"] is None
    end = events[-1].timestamp
    for t in (end, end - 3 * DAY_MS, end + 200 * DAY_MS):
        got, expected = features_as_of(folded, t), features_as_of(whole, t)
        assert got == expected
        assert got["order_gap_cv"] is not None and got["recency_gap_z"] is not None


def test_gap_features_mean_what_they_say() -> None:
    days = [0, 10, 30, 36]  # gaps 10, 20, 6
    state = new_state()
    for i, d in enumerate(days):
        apply_event(state, OrderEvent(f"e{i}", "c", d * DAY_MS, f"o{i}", 5.0), lateness_ms=0)
    f = features_as_of(state, 50 * DAY_MS)
    gaps = [10, 20, 6]
    mean, sd = statistics.fmean(gaps), statistics.pstdev(gaps)
    assert f["order_gap_cv"] == pytest.approx(sd / mean, rel=1e-12)
    assert f["recency_gap_z"] == pytest.approx((14 - mean) / sd, rel=1e-12)
    two = new_state()
    for i, d in enumerate(days[:2]):
        apply_event(two, OrderEvent(f"e{i}", "c", d * DAY_MS, f"o{i}", 5.0), lateness_ms=0)
    g = features_as_of(two, 50 * DAY_MS)
    assert g["order_gap_cv"] is None and g["recency_gap_z"] is None  # one gap has no spread


def test_a_state_folded_before_the_gap_total_existed_leaves_the_gap_features_missing() -> None:
    events = _orders(4)
    state = new_state()
    for e in events[:200]:
        apply_event(state, e, lateness_ms=LATENESS)
    assert state["f"]["n"] >= 2
    old = copy.deepcopy(state)
    del old["f"]["gq"]  # as written before the total existed
    for e in events[200:]:
        apply_event(state, e, lateness_ms=LATENESS)
        apply_event(old, e, lateness_ms=LATENESS)
    assert "gq" not in old["f"]
    t = events[-1].timestamp
    got, exact = features_as_of(old, t), features_as_of(state, t)
    assert got["order_gap_cv"] is None and got["recency_gap_z"] is None
    assert exact["order_gap_cv"] is not None
    assert {k: v for k, v in got.items() if k not in ("order_gap_cv", "recency_gap_z")} == {
        k: v for k, v in exact.items() if k not in ("order_gap_cv", "recency_gap_z")
    }


def test_a_clockwork_buyer_has_a_finite_silence_score() -> None:
    state = new_state()
    for i in range(5):  # exactly weekly: the gaps have no spread at all
        apply_event(state, OrderEvent(f"e{i}", "c", i * 7 * DAY_MS, f"o{i}", 5.0), lateness_ms=0)
    f = features_as_of(state, 40 * DAY_MS)
    assert f["order_gap_cv"] == 0.0
    assert f["recency_gap_z"] == pytest.approx((12 - 7) / 1.0)  # the spread is floored at one day

"""The customer state's typed shape: feature state and the scorer's part, apart in one JSON value."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnstream.events import LabelEvent, OrderEvent, TicketEvent
from churnstream.features.definitions import features_as_of
from churnstream.features.labels import (
    add_pending,
    due_time,
    next_answer,
    remember_label,
    resolve_by_event,
    resolve_by_time,
)
from churnstream.features.state import (
    CustomerState,
    FeatureState,
    FoldedTotals,
    ScoringState,
    apply_event,
    new_state,
    scoring_state,
)
from churnstream.settings import DAY_MS

H = 30 * DAY_MS


def test_a_new_state_has_exactly_the_keys_its_types_declare() -> None:
    s = new_state()
    assert set(s) == FeatureState.__required_keys__ == CustomerState.__required_keys__
    assert set(s["f"]) == FoldedTotals.__required_keys__
    assert CustomerState.__optional_keys__ == {"scoring"}
    assert ScoringState.__optional_keys__ == {"pend", "kept", "lab", "risk", "alerted", "au", "last"}
    assert orjson.loads(orjson.dumps(s)) == s  # one JSON value per customer in the store


def _customer() -> CustomerState:
    s = new_state()
    for i, event in enumerate(
        [
            OrderEvent("e0", "c", 0, "o0", 10.0),
            TicketEvent("e1", "c", DAY_MS, "t1", satisfaction_score=2),
            OrderEvent("e2", "c", 3 * DAY_MS, "o2", 5.0),
        ]
    ):
        assert apply_event(s, event, lateness_ms=0) == "applied", i
    return s


def test_the_scorers_part_lives_under_scoring_and_leaves_the_features_alone() -> None:
    s = _customer()
    features = features_as_of(s, 3 * DAY_MS)
    feature_part = orjson.dumps({k: v for k, v in s.items() if k != "scoring"})
    assert add_pending(s, "p1", DAY_MS, 0.5, None, 0.5, [1.0], horizon_ms=H, lateness_ms=0, recency_days=1.0)
    remember_label(s, LabelEvent("l1", "c", 2 * DAY_MS, True))
    scoring_state(s)["risk"] = "HIGH"
    assert set(s) == FeatureState.__required_keys__ | {"scoring"}
    assert set(s["scoring"]) == {"pend", "kept", "lab", "risk"}
    assert orjson.dumps({k: v for k, v in s.items() if k != "scoring"}) == feature_part
    assert features_as_of(s, 3 * DAY_MS) == features
    # the first answer after the prediction: the remembered label, before the order at 3 days
    assert next_answer(s, DAY_MS) == (2 * DAY_MS, True)
    assert due_time(s, horizon_ms=H) == DAY_MS + H
    done = resolve_by_event(s, 2 * DAY_MS, churned=True, horizon_ms=H)
    assert [(r.prediction_id, r.label, r.source) for r in done] == [("p1", 1, "explicit")]
    assert s["scoring"]["pend"] == [] and due_time(s, horizon_ms=H) is None


def test_reading_a_customer_without_a_scoring_part_adds_none() -> None:
    s = _customer()
    before = orjson.dumps(s)
    assert resolve_by_time(s, 10**13, horizon_ms=H, lateness_ms=0) == []
    assert resolve_by_event(s, 3 * DAY_MS, churned=None, horizon_ms=H) == []
    assert due_time(s, horizon_ms=H) is None
    assert next_answer(s, DAY_MS) == (3 * DAY_MS, None)  # the completed order the feature state holds
    assert orjson.dumps(s) == before
    assert "scoring" not in s
    remember_label(s, LabelEvent("l1", "c", 4 * DAY_MS, False))
    assert s["scoring"] == {"lab": [[4 * DAY_MS, 0, "l1"]]}


def test_a_written_state_holds_no_more_memory_than_its_json() -> None:
    """The Redis store keeps the JSON it wrote for every customer it caches. orjson's own output keeps
    the whole buffer it was written into (8 KiB for a state of 1-2 KB), so what dump_state returns, and
    the packed vectors in it, are copies of their own size."""
    import tracemalloc

    from churnstream.features.state import Packed, dump_state

    state = new_state()
    state["o"] = [[i * DAY_MS, f"e{i}", 1_000_000, 0] for i in range(60)]
    state["scoring"] = {"pend": [["p", 0, 0.5, None, 0.5, [0.25] * 30]]}
    tracemalloc.start()
    try:
        vectors = [Packed([float(i)] * 30) for i in range(200)]
        states = [dump_state(state) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    json_bytes = sum(len(v.raw) for v in vectors) + sum(len(s) for s in states)
    assert 1_500 < len(states[0]) < 2_500
    assert held < 1.5 * json_bytes  # untrimmed: ~11x


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # few times: ties are common
            st.sampled_from(["a", "b", "c", "d", "e", "f"]),
            st.sampled_from(["t1", "t2"]),
            st.one_of(st.none(), st.integers(0, 10**9)),
            st.one_of(st.none(), st.integers(1, 5)),
        ),
        max_size=6,
        unique_by=lambda e: e[1],
    ),
    st.one_of(st.none(), st.integers(0, 3)),
)
def test_each_ticket_s_summary_takes_its_latest_values(events: list, until: int | None) -> None:
    """A ticket opens at its earliest event; resolution and satisfaction come from its latest event (by
    time, then event id) that carries them; events after ``until`` do not count."""
    from churnstream.features.state import T_ID, T_RES, T_SAT, T_TICKET, T_TS, ticket_summaries

    log = sorted(([list(e) for e in events]), key=lambda e: (e[T_TS], e[T_ID]))  # a state's log order
    expected = {}
    for tid in sorted({e[T_TICKET] for e in log}):
        mine = [e for e in log if e[T_TICKET] == tid and (until is None or e[T_TS] <= until)]
        resolutions = [e[T_RES] for e in mine if e[T_RES] is not None]
        scores = [e[T_SAT] for e in mine if e[T_SAT] is not None]
        if mine:
            expected[tid] = [
                mine[0][T_TS],
                mine[-1][T_TS],
                resolutions[-1] if resolutions else None,
                scores[-1] if scores else None,
            ]
    assert ticket_summaries(log, until) == expected


@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2)), max_size=8),  # (time, status): ties common
    st.integers(-1, 5),
)
def test_the_next_completed_order_is_the_earliest_after_t(orders: list, t: int) -> None:
    from churnstream.features.labels import next_completed_order

    log = [[ts, f"e{i}", 1, status] for i, (ts, status) in enumerate(sorted(orders))]
    later = [ts for ts, _, _, status in log if ts > t and status == 0]
    assert next_completed_order({"o": log}, t) == (min(later) if later else None)  # type: ignore[typeddict-item]


def test_one_customer_holds_at_most_max_retained_events_and_takes_more_as_old_ones_leave() -> None:
    """A bot at an order a second made every event's features read a longer log: a review's worker fell
    from ~660 to ~40 events/s, and a customer of another partition waited three minutes."""
    from churnstream.errors import ProcessingError
    from churnstream.events import OrderEvent, TicketEvent
    from churnstream.features.state import LONGEST_WINDOW_MS, MAX_RETAINED_EVENTS, apply_event, new_state

    lateness = 7 * 86_400_000
    state = new_state()
    t0 = 1_700_000_000_000
    for i in range(MAX_RETAINED_EVENTS - 1):
        apply_event(state, OrderEvent(f"o{i}", "bot", t0 + i * 1000, f"o{i}", 1.0), lateness_ms=lateness)
    apply_event(state, TicketEvent("t0", "bot", t0 + 10**7, "T0"), lateness_ms=lateness)  # every kind counts
    late = OrderEvent("late", "bot", t0 + 10**7 + 1, "late", 1.0)
    with pytest.raises(
        ProcessingError, match=f"the most one customer may hold \\({MAX_RETAINED_EVENTS:,}\\)"
    ):
        apply_event(state, late, lateness_ms=lateness)
    assert len(state["o"]) + len(state["t"]) == MAX_RETAINED_EVENTS  # refused: nothing changed
    # a redelivery is still a duplicate, not a refusal
    assert (
        apply_event(state, OrderEvent("o7", "bot", t0 + 7000, "o7", 1.0), lateness_ms=lateness) == "duplicate"
    )
    # once the history has moved past the old events, the customer's events are taken again
    later = t0 + LONGEST_WINDOW_MS + lateness + 10**7 + 2
    assert (
        apply_event(state, OrderEvent("later", "bot", later, "later", 1.0), lateness_ms=lateness) == "applied"
    )
    assert len(state["o"]) + len(state["t"]) < MAX_RETAINED_EVENTS


def test_every_feature_that_can_be_null_says_what_its_null_means() -> None:
    """An alert's reasons show a null as what it says of the customer (``churnstream alerts``, the
    monitor's alerts page): every feature null for some customer has its words."""
    from churnstream.events import ProfileEvent
    from churnstream.features.state import apply_event, new_state
    from churnstream.predictions import NULL_MEANS

    nulls = set()
    for events in ([], [TicketEvent("t", "c", 10, "T1")], [ProfileEvent("p", "c", 10, {})]):
        state = new_state()
        for event in events:
            apply_event(state, event, lateness_ms=0)
        nulls |= {name for name, value in features_as_of(state, 20).items() if value is None}
    assert nulls and nulls <= set(NULL_MEANS), nulls - set(NULL_MEANS)

"""One label rule: the worker's pending predictions and the training table label a prediction alike.

The online driver (:func:`add_pending`, :func:`resolve_by_event`, :func:`resolve_by_time`) is run here as the
worker runs it, on customer histories with completed and cancelled orders and explicit labels; the offline
driver (:class:`AnswerLog`, used by ``training_rows``) must give every prediction the same label, source and
time. No Kafka, no Redis."""

from __future__ import annotations

import random

import pytest

from churnstream.errors import ProcessingError
from churnstream.events import Event, LabelEvent, OrderEvent, TicketEvent
from churnstream.features import labels
from churnstream.features.labels import (
    AnswerLog,
    Label,
    add_pending,
    answer_of,
    label_by_event,
    label_by_time,
    resolve_by_event,
    resolve_by_time,
)
from churnstream.features.offline import training_rows
from churnstream.features.state import new_state
from churnstream.settings import DAY_MS

H = 30 * DAY_MS
LATE = 7 * DAY_MS
START = 1_700_006_400_000


def test_an_event_answers_a_prediction_only_within_its_horizon() -> None:
    assert label_by_event(100, 100, churned=None, horizon_ms=H) is None
    assert label_by_event(100, 101, churned=None, horizon_ms=H) == Label(0, "order", 101)
    assert label_by_event(100, 100 + H, churned=False, horizon_ms=H) == Label(0, "explicit", 100 + H)
    assert label_by_event(100, 100 + H, churned=True, horizon_ms=H) == Label(1, "explicit", 100 + H)
    assert label_by_event(100, 101 + H, churned=True, horizon_ms=H) is None


def test_inactivity_waits_for_the_horizon_and_the_lateness() -> None:
    assert label_by_time(0, H + LATE - 1, horizon_ms=H, lateness_ms=LATE) is None
    assert label_by_time(0, H + LATE, horizon_ms=H, lateness_ms=LATE) == Label(1, "inactivity", H)
    assert label_by_time(0, H, horizon_ms=H, lateness_ms=0) == Label(1, "inactivity", H)


def test_only_completed_orders_and_explicit_labels_answer() -> None:
    assert answer_of(OrderEvent("a", "c", 5, "o", 1.0)) == (5, None)
    assert answer_of(OrderEvent("b", "c", 6, "o", 1.0, status="returned")) is None
    assert answer_of(TicketEvent("d", "c", 7, "t")) is None
    assert answer_of(LabelEvent("e", "c", 8, False)) == (8, False)


def test_the_first_answer_wins_and_an_explicit_label_first_at_the_same_instant() -> None:
    events: list[Event] = [
        OrderEvent("o1", "c", START + DAY_MS, "o1", 5.0),
        LabelEvent("l1", "c", START + 2 * DAY_MS, True),  # after the order: the order answered first
        OrderEvent("o2", "d", START + DAY_MS, "o2", 5.0),
        LabelEvent("l2", "d", START + DAY_MS, True),  # same instant: the explicit label
        TicketEvent("t", "e", START + 100 * DAY_MS, "t"),
    ]
    events.sort(key=lambda e: e.timestamp)
    log = AnswerLog.from_events(events)
    assert log.label("c", START, horizon_ms=H) == Label(0, "order", START + DAY_MS)
    assert log.label("c", START + DAY_MS, horizon_ms=H) == Label(1, "explicit", START + 2 * DAY_MS)
    assert log.label("d", START, horizon_ms=H) == Label(1, "explicit", START + DAY_MS)
    end = START + 100 * DAY_MS  # the log's last event
    assert log.label("e", end - H, horizon_ms=H) == Label(1, "inactivity", end)
    assert log.label("e", end - H + 1, horizon_ms=H) is None  # its horizon runs past the log: censored


def test_training_rows_carry_the_rule_s_labels() -> None:
    events: list[Event] = [
        OrderEvent("o1", "c", START, "o1", 5.0),
        OrderEvent("o2", "c", START + 10 * DAY_MS, "o2", 5.0),
        LabelEvent("l1", "c", START + 12 * DAY_MS, True),
        OrderEvent("o3", "d", START, "o3", 5.0),
        LabelEvent("l2", "d", START + 3 * DAY_MS, False),
        TicketEvent("t", "d", START + 80 * DAY_MS, "t"),
    ]
    events.sort(key=lambda e: e.timestamp)
    rows = training_rows(
        events, [START, START + 11 * DAY_MS, START + 50 * DAY_MS], horizon_ms=H, lateness_ms=0, progress=False
    )
    got = {(r["customer_id"], (r["as_of"] - START) // DAY_MS): (r["label"], r["label_source"]) for r in rows}
    assert got == {
        ("c", 0): (0, "order"),
        ("c", 11): (1, "explicit"),
        ("c", 50): (1, "inactivity"),
        ("d", 0): (0, "explicit"),
        ("d", 11): (1, "inactivity"),
        ("d", 50): (1, "inactivity"),
    }


def _history(rng: random.Random, customer: str) -> tuple[list[Event], list[int]]:
    """A customer's events over 200 days, in event time, and the times predictions are made."""
    events: list[Event] = []
    for i in range(rng.randrange(0, 12)):
        status = rng.choice(["completed", "completed", "completed", "cancelled"])
        t = START + rng.randrange(200 * DAY_MS)
        events.append(OrderEvent(f"{customer}o{i}", customer, t, f"o{i}", 9.0, status=status))
    for i in range(rng.randrange(0, 4)):
        t = START + rng.randrange(200 * DAY_MS) // DAY_MS * DAY_MS  # some on the same instant as a sweep
        reused = rng.random() < 0.1 and any(isinstance(e, OrderEvent) for e in events)
        event_id = f"{customer}o0" if reused else f"{customer}l{i}"  # a producer's bug: dead-lettered
        events.append(LabelEvent(event_id, customer, t, rng.random() < 0.5))
    if rng.random() < 0.2 and any(isinstance(e, LabelEvent) for e in events):  # contradicting at one instant
        first = next(e for e in events if isinstance(e, LabelEvent))
        events.append(LabelEvent(f"{customer}lx", customer, first.timestamp, not first.churned))
    predictions = sorted(
        {e.timestamp for e in events if isinstance(e, OrderEvent)}
        | {START + d * DAY_MS for d in range(0, 200, rng.choice([1, 3, 7]))}
    )
    events.sort(key=lambda e: (e.timestamp, e.event_id))
    return events, predictions


def _online(events: list[Event], predictions: list[int], end: int) -> tuple[dict[int, Label], set[int]]:
    """The worker's labels of one customer's predictions, event time passing as the events arrive: at each
    instant the answering events first, then the predictions as of it, then the watermark."""
    state = new_state()
    done: dict[int, Label] = {}

    def record(resolved: list[labels.Resolved]) -> None:
        for r in resolved:
            assert r.as_of not in done
            done[r.as_of] = Label(r.label, r.source, r.labeled_at)

    instants = sorted({e.timestamp for e in events} | set(predictions))
    by_time: dict[int, list[Event]] = {}
    for e in events:
        by_time.setdefault(e.timestamp, []).append(e)
    for t in instants:
        # an explicit label first at one instant (as the offline log sorts them)
        for e in sorted(by_time.get(t, []), key=lambda e: not isinstance(e, LabelEvent)):
            if isinstance(e, LabelEvent):  # as the worker: a label it dead-letters answers nothing
                try:
                    if not labels.remember_label(state, e):
                        continue
                except ProcessingError:
                    continue
            else:
                state["seen"].setdefault(e.event_id, e.timestamp)  # the ids a label may not reuse
            answer = answer_of(e)
            if answer is not None:
                record(resolve_by_event(state, t, churned=answer[1], horizon_ms=H))
        if t in predictions:
            add_pending(
                state, str(t), t, 0.5, None, 0.5, [], horizon_ms=H, lateness_ms=LATE, recency_days=None
            )
        record(resolve_by_time(state, t, horizon_ms=H, lateness_ms=LATE))
    record(resolve_by_time(state, end, horizon_ms=H, lateness_ms=LATE))
    return done, {p[labels.P_AS_OF] for p in state.get("scoring", {}).get("pend", ())}


def test_online_and_offline_label_every_prediction_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(labels, "OPEN_LIMIT", 10**9)  # every prediction kept: all of them compared
    monkeypatch.setattr(labels, "MAX_PENDING", 10**9)
    rng = random.Random(18)
    histories = [_history(rng, f"c{i}") for i in range(300)]
    everything = sorted(
        (e for events, _ in histories for e in events), key=lambda e: (e.timestamp, e.event_id)
    )
    log = AnswerLog.from_events(everything)
    sources: set[str] = set()
    censored = 0
    for events, predictions in histories:
        online, pending = _online(events, predictions, log.end)
        for t in predictions:
            offline = log.label(events[0].customer_id if events else "nobody", t, horizon_ms=H)
            if t in pending:  # still waiting for the allowed lateness at the end of the log
                assert offline is None or (offline.source == "inactivity" and t + H + LATE > log.end)
                censored += offline is None
                continue
            assert online[t] == offline, (t, online[t], offline)
            sources.add(online[t].source)
    assert sources == {"order", "explicit", "inactivity"} and censored > 0


def test_an_outcome_names_the_model_and_the_shadow_its_prediction_was_made_with() -> None:
    """The model version is an optional eighth item of a pending prediction, after the shadow (or None):
    lists written before either existed still resolve, without them."""
    state = new_state()
    common = {"horizon_ms": H, "lateness_ms": LATE, "recency_days": None}
    add_pending(state, "old", START, 0.5, None, 0.5, [1.0], **common)
    add_pending(state, "v2", START + 2 * DAY_MS, 0.5, None, 0.5, [1.0], model_version="v0002", **common)
    add_pending(
        state,
        "both",
        START + 4 * DAY_MS,
        0.5,
        None,
        0.5,
        [1.0],
        shadow=["v0003", 0.4],
        model_version="v0002",
        **common,
    )
    add_pending(state, "shadow", START + 6 * DAY_MS, 0.5, None, 0.5, [1.0], shadow=["v0003", 0.3], **common)
    assert [len(p) for p in state["scoring"]["pend"]] == [6, 8, 8, 7]
    found = {
        r.prediction_id: r
        for r in resolve_by_time(state, START + 100 * DAY_MS, horizon_ms=H, lateness_ms=LATE)
    }
    assert {k: (r.model_version, r.shadow) for k, r in found.items()} == {
        "old": (None, None),
        "v2": ("v0002", None),
        "both": ("v0002", ["v0003", 0.4]),
        "shadow": (None, ["v0003", 0.3]),
    }


def test_a_pending_prediction_s_features_read_the_same_from_memory_and_from_the_stored_json() -> None:
    """The worker keeps a pending feature vector as its JSON text (`Packed`) while the state stays in
    memory; what a store writes is the JSON of the list itself, and an outcome resolved from the state
    read back from that JSON has the same features (NaN -> None) as one resolved from memory."""
    import orjson

    from churnstream.features.state import dump_state

    vector = [1.5, float("nan"), None, 0.0, 12345.678901]
    state = new_state()
    add_pending(state, "p", START, 0.5, None, 0.5, vector, horizon_ms=H, lateness_ms=LATE, recency_days=None)
    written = dump_state(state)
    plain = orjson.loads(written)
    assert plain["scoring"]["pend"][0][labels.P_FEATURES] == [1.5, None, None, 0.0, 12345.678901]
    assert dump_state(plain) == written  # the same bytes whether the vector is packed or a list
    later = START + 100 * DAY_MS
    (from_memory,) = resolve_by_time(state, later, horizon_ms=H, lateness_ms=LATE)
    (from_json,) = resolve_by_time(plain, later, horizon_ms=H, lateness_ms=LATE)
    assert from_memory == from_json
    assert from_memory.features == [1.5, None, None, 0.0, 12345.678901]

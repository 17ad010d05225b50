"""What a batch's events do to its customers' state: scored rows, labels resolved, dead letters."""

from __future__ import annotations

import orjson

from churnstream.dead_letter import dead_letter_payload
from churnstream.events import Event, LabelEvent, OrderEvent, TicketEvent
from churnstream.features.labels import add_pending
from churnstream.features.store import MemoryFeatureStore, Transaction
from churnstream.streams.apply import apply_events, label_overdue
from churnstream.streams.ingest import Coordinates

H = 100


def _pending(tx: Transaction, cid: str, *as_of: int) -> None:
    for t in as_of:
        add_pending(
            tx.state(cid), f"p{t}", t, 0.4, None, 0.4, [], horizon_ms=H, lateness_ms=0, recency_days=None
        )
    tx.touch(cid)


def _at(events: list[Event]) -> list[tuple[Event, Coordinates]]:
    return [(e, Coordinates(e.kind, 3, 40 + i, e.customer_id.encode())) for i, e in enumerate(events)]


def test_answering_events_label_the_predictions_they_answer() -> None:
    tx = MemoryFeatureStore(lateness_ms=0).begin({"a": 3, "b": 3, "c": 3})
    _pending(tx, "a", 10, 50)
    _pending(tx, "b", 10)
    _pending(tx, "c", 10)
    applied = apply_events(
        tx,
        _at(
            [
                OrderEvent("e1", "a", 20, "o1", 9.5, status="cancelled"),  # answers nothing
                TicketEvent("e2", "a", 30, "t1"),  # answers nothing
                OrderEvent("e3", "a", 60, "o2", 9.5),  # completed: answers both of a's, label 0
                LabelEvent("e4", "b", 70, True),  # explicit: answers b's, label 1
                LabelEvent("e5", "c", 200, True),  # past c's horizon: answers nothing
            ]
        ),
        horizon_ms=H,
    )
    found = {(cid, r.prediction_id): (r.label, r.source, r.labeled_at) for cid, r in applied.resolved}
    assert found == {
        ("a", "p10"): (0, "order", 60),
        ("a", "p50"): (0, "order", 60),
        ("b", "p10"): (1, "explicit", 70),
    }
    # labels are not scored; every order and ticket is, as of its own time
    assert applied.scoring.event_ids == ["e1", "e2", "e3"]
    assert applied.scoring.as_of == [20, 30, 60]
    assert applied.scoring.partitions == [3, 3, 3] and applied.scoring.triggers == ["event"] * 3
    assert applied.dead_letters == [] and applied.duplicates == 0
    assert dict(applied.per_topic) == {"orders": 2, "support_tickets": 1, "churn_labels": 2}
    assert {"a", "b", "c"} <= tx.changed  # label events are remembered in the state that is written


def test_a_duplicate_answers_nothing_and_a_conflicting_event_becomes_a_dead_letter() -> None:
    tx = MemoryFeatureStore(lateness_ms=0).begin({"a": 3})
    order = OrderEvent("e1", "a", 20, "o1", 9.5)
    apply_events(tx, _at([order]), horizon_ms=H)
    _pending(tx, "a", 30)
    conflicting = OrderEvent("e1", "a", 40, "o1", 9.5)  # the same event_id at another time
    applied = apply_events(tx, _at([order, conflicting]), horizon_ms=H)
    assert applied.duplicates == 1 and applied.resolved == [] and applied.scoring.event_ids == []
    (letter,) = applied.dead_letters
    assert (letter.source_topic, letter.partition, letter.offset, letter.key) == ("orders", 3, 41, b"a")
    assert letter.stage == "process" and "already used" in letter.error
    record = orjson.loads(dead_letter_payload(letter))
    assert orjson.loads(record["value"])["event_id"] == "e1" and record["stage"] == "process"


def test_overdue_predictions_are_labelled_by_inactivity_and_the_next_due_time_is_kept() -> None:
    tx = MemoryFeatureStore(lateness_ms=0).begin({"a": 3})
    _pending(tx, "a", 10, 150)
    assert label_overdue(tx, ["a"], 109, horizon_ms=H, lateness_ms=0) == []  # not yet
    resolved = label_overdue(tx, ["a"], 117, horizon_ms=H, lateness_ms=7)
    assert [(r.prediction_id, r.label, r.source, r.labeled_at) for _, r in resolved] == [
        ("p10", 1, "inactivity", 110)
    ]
    assert tx.due["a"] == 250  # the other prediction's horizon
    assert label_overdue(tx, ["a"], 10**6, horizon_ms=H, lateness_ms=7)[0][1].prediction_id == "p150"
    assert tx.due["a"] is None


def test_readers_find_a_customer_on_whichever_partition_holds_it_and_forget_every_copy() -> None:
    """A producer whose partitioner is not murmur2 keeps a customer on another partition (the scorer
    files the state where the events arrive); readers looked only on the murmur2 one. Two producers with
    two partitioners even made two copies, and forget removed one."""
    from churnstream.features.layout import partition_of

    store = MemoryFeatureStore(lateness_ms=0, partitions=4)
    home = partition_of("c1", 4)
    away, other = (home + 1) % 4, (home + 2) % 4
    tx = store.begin({"c1": away})
    tx.apply(OrderEvent("e1", "c1", 1000, "o1", 5.0))
    store.commit(tx)
    assert store.locate(["c1", "nobody"]) == {"c1": away, "nobody": partition_of("nobody", 4)}
    assert store.features("c1", 2000)["orders_total"] == 1  # type: ignore[index]
    tx = store.begin({"c1": other})  # a second producer, another partitioner: a second copy
    tx.apply(OrderEvent("e2", "c1", 3000, "o2", 5.0))
    store.commit(tx)
    assert store.forget("c1") and store.locate(["c1"]) == {"c1": home}
    assert store.features("c1", 4000) is None and not store.forget("c1")


def test_a_read_locates_its_customer_once() -> None:
    """Each look for a customer's partition is a Redis round trip: a read located the customer three
    times (its partition time, the lookup, the state)."""
    from churnstream.streams.feature_lookup import find

    class Counting(MemoryFeatureStore):
        looks = 0

        def _holders(self, places: set[tuple[str, int]]) -> set[tuple[str, int]]:
            self.looks += 1
            return super()._holders(places)

    store = Counting(lateness_ms=0, partitions=4)
    store.update([OrderEvent("e1", "c1", 1000, "o1", 5.0)])
    assert find(store, "c1").features["orders_total"] == 1
    assert store.looks == 1  # the customer is on its murmur2 partition: one look

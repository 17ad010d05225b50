"""A message that breaks processing for a reason nobody foresaw stops neither the worker nor its partition.

The fault is injected into scoring (a model that raises on one customer's row), since every input that
is known to break the pipeline is now refused by validation; the path under test is the worker's:
find the one message among its batch, dead-letter it with stage ``process``, go on with the rest.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from churnstream.settings import Settings, Topics
from churnstream.streams.scorer import build_scorer
from tests.integration.conftest import (
    committed_everything,
    consume_all,
    produce_raw,
    simulate_world,
    wait_until,
)

pytestmark = pytest.mark.integration
POISON_AMOUNT = 4242.42


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_world(tmp_path_factory.mktemp("world"), customers=80, days=200, train_days=180, seed=5)


def _order(n: int, amount: float) -> tuple[bytes, bytes]:
    event = {
        "event_id": f"e{n}",
        "customer_id": f"C{n}",
        "order_id": f"o{n}",
        "timestamp": f"2024-09-{1 + n % 28:02d}T10:00:00Z",
        "amount": amount,
    }
    return f"C{n}".encode(), json.dumps(event).encode()


def test_a_message_that_fails_alone_is_dead_lettered_and_the_rest_are_scored(
    settings: Settings, topics: Topics, redis_client: object, world: Path
) -> None:
    scorer_settings = dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)
    scorer = build_scorer(scorer_settings)
    score = scorer.handler.models.score

    def score_or_fail(rows: list[dict[str, Any]], partitions: list[int]) -> Any:
        if any(row["spent_total"] == POISON_AMOUNT for row in rows):
            raise ValueError("injected: the model cannot take this row")
        return score(rows, partitions)

    scorer.handler.models.score = score_or_fail  # type: ignore[method-assign]
    records = [_order(n, POISON_AMOUNT if n == 20 else 10.0 + n) for n in range(41)]
    produce_raw(settings, topics.orders, records)  # before the worker starts: they come in one batch
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 90, "every offset committed"
        )
        after = [_order(n, 5.0) for n in range(41, 46)]
        produce_raw(settings, topics.orders, after)
        wait_until(lambda: committed_everything(settings, settings.consumer_group), 60, "the later events")
        assert thread.is_alive()
    finally:
        scorer.stop()
        thread.join(60)

    predictions = [json.loads(m.value() or b"") for m in consume_all(settings, topics.churn_predictions)]
    letters = [json.loads(m.value() or b"") for m in consume_all(settings, topics.dead_letter)]
    scored = sorted({p["event_id"] for p in predictions if p["trigger"] == "event"})
    assert scored == sorted(f"e{n}" for n in range(46) if n != 20)
    assert len(letters) == 1, letters
    (letter,) = letters
    assert letter["stage"] == "process"
    assert "ValueError: injected: the model cannot take this row" in letter["error"]
    assert letter["value"] == records[20][1].decode()  # the bytes as they were sent, not re-serialized
    assert letter["source_topic"] == topics.orders and letter["key"] == "C20"


def _score_everything(settings: Settings) -> None:
    """A scorer over what the topics hold, until every offset is committed."""
    scorer = build_scorer(settings)
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 90, "every offset committed"
        )
    finally:
        scorer.stop()
        thread.join(60)


def test_a_reused_event_id_with_other_content_is_dead_lettered_naming_the_conflict(
    settings: Settings, topics: Topics, redis_client: object, world: Path
) -> None:
    scorer_settings = dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)
    first = _order(1, 10.0)
    again = first  # a redelivery: silently the same
    other_time = (first[0], first[1].replace(b"2024-09-02", b"2024-09-05"))
    other_amount = (first[0], first[1].replace(b"10.0", b"99.0"))
    produce_raw(settings, topics.orders, [first, again, other_time, other_amount, _order(2, 3.0)])
    _score_everything(scorer_settings)

    predictions = [json.loads(m.value() or b"") for m in consume_all(settings, topics.churn_predictions)]
    letters = [json.loads(m.value() or b"") for m in consume_all(settings, topics.dead_letter)]
    assert sorted(p["event_id"] for p in predictions if p["trigger"] == "event") == ["e1", "e2"]
    assert [(d["stage"], json.loads(d["value"])["timestamp"]) for d in letters] == [
        ("process", "2024-09-05T10:00:00Z"),
        ("process", "2024-09-02T10:00:00Z"),
    ]
    for letter in letters:
        assert "event_id 'e1' was already used by" in letter["error"]
    assert [d["value"] for d in letters] == [other_time[1].decode(), other_amount[1].decode()]
    (e1,) = [p for p in predictions if p["event_id"] == "e1"]
    assert e1["features"]["spent_total"] == 10.0


def _label(event_id: str, day: int, churned: bool, customer: str = "C1") -> tuple[bytes, bytes]:
    event = {
        "event_id": event_id,
        "customer_id": customer,
        "timestamp": f"2024-09-{day:02d}T10:00:00Z",
        "churned": churned,
    }
    return customer.encode(), json.dumps(event).encode()


def test_churn_labels_reusing_an_event_id_or_contradicting_one_at_the_same_instant_are_dead_lettered(
    settings: Settings, topics: Topics, redis_client: object, world: Path
) -> None:
    """Labels skipped the event_id check every other event gets: a label sent again with ``churned``
    flipped, or one reusing an order's id, was kept silently, and of two contradicting labels at one
    instant the 'not churned' one won by sort order. Each now goes to dead_letter naming the conflict."""
    scorer_settings = dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)
    order = _order(1, 10.0)  # e1 of C1, 2 Sep
    first = _label("l1", 10, False)
    bad = [
        _label("l1", 10, True),  # the same id, churned flipped
        _label("l2", 10, True),  # another id, contradicting l1 at the same instant
        _label("e1", 12, True),  # the order's id
    ]
    order_with_label_id = (b"C1", order[1].replace(b'"e1"', b'"l1"').replace(b"2024-09-02", b"2024-09-11"))
    records = [
        order,
        first,
        first,
        *bad,
        _label("l3", 10, False),
        order_with_label_id,
        _label("l4", 13, True),
    ]
    produce_raw(settings, topics.churn_labels, [r for r in records if b'"churned"' in r[1]])
    produce_raw(settings, topics.orders, [r for r in records if b'"churned"' not in r[1]])
    _score_everything(scorer_settings)

    letters = [json.loads(m.value() or b"") for m in consume_all(settings, topics.dead_letter)]
    by_value = {d["value"]: d for d in letters}
    expected = [r[1].decode() for r in (*bad, order_with_label_id)]
    assert sorted(by_value) == sorted(expected), letters
    assert all(d["stage"] == "process" for d in letters)
    assert "event_id 'l1' was already used by a churn label" in by_value[expected[0]]["error"]
    assert (
        "already has a churn label at 2024-09-10T10:00:00Z (event_id 'l1', churned false)"
        in (by_value[expected[1]]["error"])
    )
    assert "event_id 'e1' was already used by an event at 2024-09-02" in by_value[expected[2]]["error"]
    assert "event_id 'l1' was already used by a churn label" in by_value[expected[3]]["error"]


def test_a_producer_broken_for_good_is_replaced_and_nothing_is_lost(
    settings: Settings, topics: Topics, redis_client: object, world: Path
) -> None:
    """librdkafka declares an idempotent producer fatally broken (seen when the broker behind the address
    was replaced mid-stream); retrying with it fails for ever. The report is injected here, as librdkafka
    makes it (through the producer's error callback), since a real one cannot be provoked on demand."""
    scorer_settings = dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)
    scorer = build_scorer(scorer_settings)
    first_producer = scorer.producer
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        produce_raw(settings, topics.orders, [_order(n, 10.0) for n in range(10)])
        wait_until(lambda: committed_everything(settings, settings.consumer_group), 90, "the first events")
        fatal = KafkaError(
            KafkaError._FATAL, "Broker: Broker received an out of order sequence number", fatal=True
        )
        scorer.outbox.on_producer_error(fatal)
        produce_raw(settings, topics.orders, [_order(n, 10.0) for n in range(10, 20)])
        wait_until(lambda: committed_everything(settings, settings.consumer_group), 90, "the later events")
        assert thread.is_alive()
    finally:
        scorer.stop()
        thread.join(60)

    assert scorer.producer is not first_producer
    predictions = [json.loads(m.value() or b"") for m in consume_all(settings, topics.churn_predictions)]
    by_event: dict[str, set[float]] = {}
    for p in predictions:
        if p["trigger"] == "event":
            by_event.setdefault(p["event_id"], set()).add(p["churn_probability"])
    assert sorted(by_event) == sorted(f"e{n}" for n in range(20))
    assert all(len(answers) == 1 for answers in by_event.values())  # re-emitted, never changed

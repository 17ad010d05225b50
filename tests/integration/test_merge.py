"""The event-time reader on real Kafka: a backfill of one topic after another still comes out in order."""

from __future__ import annotations

import json
import random
import uuid

from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.merge import EventTimeReader
from tests.integration.conftest import produce_raw

START = 1_700_000_000_000


def _records(kind: str, n: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    """``n`` events of one topic over 100 days, in event-time order (as a backfill would send them)."""
    times = sorted(START + rng.randrange(100 * DAY_MS) for _ in range(n))
    out = []
    for i, ts in enumerate(times):
        cid = f"c{rng.randrange(300)}"
        body: dict[str, object] = {"event_id": f"{kind}-{i}", "customer_id": cid, "timestamp": ts}
        if kind == "orders":
            body |= {"order_id": f"o{i}", "amount": 10.0}
        else:
            body |= {"ticket_id": f"k{i}"}
        out.append((cid.encode(), json.dumps(body).encode()))
    return out


def test_topics_backfilled_one_after_another_come_out_in_event_time_order(
    settings: Settings, topics: Topics
) -> None:
    rng = random.Random(5)
    orders = _records("orders", 3000, rng)
    tickets = _records("support_tickets", 1500, rng)
    produce_raw(settings, topics.orders, orders)  # every order first, then every ticket
    produce_raw(settings, topics.support_tickets, tickets)
    produce_raw(settings, topics.orders, [(b"c1", b"{broken")])  # a dead letter at the very end
    reader = EventTimeReader(settings=settings, group=f"merge-{uuid.uuid4().hex[:8]}", idle_ms=10_000)
    released: list[int] = []
    letters = 0
    next_offset: dict[tuple[str, int], int] = {}
    try:
        while len(released) < len(orders) + len(tickets) or not letters:
            batch = reader.poll_batch(timeout=1.0)
            for event, where in batch.events:
                released.append(event.timestamp)
                key = (where.topic, where.partition)
                assert where.offset == next_offset.get(key, 0), "offsets of a partition must be contiguous"
                next_offset[key] = where.offset + 1
            letters += len(batch.dead_letters)
            for key, offset in batch.offsets.items():
                next_offset[key] = offset
    finally:
        reader.close()
    assert len(released) == len(orders) + len(tickets)
    assert letters == 1
    out_of_order = sum(1 for a, b in zip(released, released[1:], strict=False) if b < a)
    assert out_of_order == 0, f"{out_of_order} events released before an older one"


def test_a_backlog_waits_for_a_topic_whose_first_events_are_produced_a_moment_later(
    settings: Settings, topics: Topics
) -> None:
    """Kafka does not order messages across partitions: a backfill's orders can be read before the older
    tickets produced beside them reach the broker. A partition that has delivered nothing holds a backlog
    (events older than the allowed lateness by the clock) back for idle_ms, so they come out in order."""
    rng = random.Random(6)
    orders = _records("orders", 2000, rng)
    tickets = _records("support_tickets", 1000, rng)
    reader = EventTimeReader(settings=settings, group=f"merge-{uuid.uuid4().hex[:8]}", idle_ms=10_000)
    released: list[int] = []
    try:
        produce_raw(settings, topics.orders, orders)
        for _ in range(1000):  # until the reader holds orders (the tickets topic has delivered nothing)
            released += [event.timestamp for event, _ in reader.poll_batch(timeout=0.05).events]
            if reader.queued():
                break
        assert reader.queued(), "the reader never fetched the orders"
        assert released == [], "orders released while the tickets' partitions had delivered nothing"
        produce_raw(settings, topics.support_tickets, tickets)
        while len(released) < len(orders) + len(tickets):
            released += [event.timestamp for event, _ in reader.poll_batch(timeout=1.0).events]
    finally:
        reader.close()
    out_of_order = sum(1 for a, b in zip(released, released[1:], strict=False) if b < a)
    assert out_of_order == 0, f"{out_of_order} events released before an older one"


def test_the_reader_holds_a_bounded_number_of_bytes_however_large_the_messages(
    settings: Settings, topics: Topics
) -> None:
    """The contract lets a message carry fields the service ignores, up to the broker's limit. Bounded by a
    count alone (5,000 a partition), 600 orders of 100 KB were all queued (60 MB); now a partition queues
    its share of ``max_queued_bytes`` and is paused, then resumed as the worker takes its events."""
    pad = "x" * 100_000
    records = []
    for i in range(600):
        body = {"event_id": f"o-{i}", "customer_id": "c1", "timestamp": START + i, "order_id": f"o{i}"}
        records.append((b"c1", json.dumps(body | {"amount": 10.0, "note": pad}).encode()))
    produce_raw(settings, topics.orders, records)  # one customer: one partition
    budget = 2_000_000
    reader = EventTimeReader(
        settings=settings, group=f"merge-{uuid.uuid4().hex[:8]}", idle_ms=0, max_queued_bytes=budget
    )
    peaks: list[int] = []
    fill = reader._fill

    def measured(timeout: float) -> None:  # what the reader holds after each read from the consumer
        fill(timeout)
        peaks.append(reader.queued_bytes())

    reader._fill = measured  # type: ignore[method-assign]
    released = 0
    try:
        while released < len(records):
            batch = reader.poll_batch(timeout=1.0)
            released += len(batch.events)
    finally:
        reader.close()
    assert released == len(records)
    assert 1_000_000 < max(peaks) <= budget, max(peaks)  # against 60 MB before

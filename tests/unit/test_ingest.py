"""The validation edge without a broker: one message in, an event or a dead letter out."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from churnstream.events import OrderEvent, TicketEvent
from churnstream.settings import Settings
from churnstream.streams.ingest import decode_message

NOW = 1_800_000_000_000
ORDER = {
    "event_id": "e1",
    "customer_id": "c1",
    "order_id": "o1",
    "timestamp": "2024-05-01T10:00:00Z",
    "amount": 3,
}
TICKET = {"event_id": "e2", "customer_id": "c1", "ticket_id": "t1", "timestamp": 0}


@dataclass
class Msg:
    """The part of ``confluent_kafka.Message`` that decode_message reads."""

    t: str
    k: bytes | None
    v: bytes | None
    p: int = 2
    o: int = 41

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def key(self) -> bytes | None:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


PREFIXED = Settings.from_env({"CHURN_TOPIC_PREFIX": "prod."})


@pytest.mark.parametrize(
    ("settings", "msg", "kind"),
    [
        (Settings(), Msg("orders", b"c1", enc(ORDER)), OrderEvent),
        (Settings(), Msg("orders", None, enc(ORDER)), OrderEvent),
        (PREFIXED, Msg("prod.orders", b"c1", enc(ORDER)), OrderEvent),
        (PREFIXED, Msg("prod.support_tickets", b"c1", enc(TICKET)), TicketEvent),
    ],
)
def test_valid_messages_become_events(settings: Settings, msg: Msg, kind: type) -> None:
    event, letter = decode_message(msg, settings, now=NOW)
    assert letter is None
    assert isinstance(event, kind)


@pytest.mark.parametrize(
    ("settings", "msg", "stage", "reason"),
    [
        (Settings(), Msg("orders", b"c1", b"{"), "decode", "invalid JSON"),
        (Settings(), Msg("orders", b"c1", None), "decode", "empty message"),
        (Settings(), Msg("orders", b"c1", b"\xc3\x28"), "decode", "not UTF-8"),
        (Settings(), Msg("orders", b"c2", enc(ORDER)), "validate", "differs from customer_id"),
        (Settings(), Msg("orders", b"c1", enc(TICKET)), "validate", "amount: required field is missing"),
        (Settings(), Msg("churn_predictions", b"c1", enc(ORDER)), "validate", "is not an input topic"),
        (PREFIXED, Msg("prod.dead_letter", b"c1", enc(ORDER)), "validate", "is not an input topic"),
        (
            Settings(max_future_skew_hours=1),
            Msg("orders", b"c1", enc({**ORDER, "timestamp": NOW + 2 * 3_600_000})),
            "validate",
            "more than 1 h ahead",
        ),
    ],
)
def test_broken_messages_become_dead_letters(settings: Settings, msg: Msg, stage: str, reason: str) -> None:
    event, letter = decode_message(msg, settings, now=NOW)
    assert event is None
    assert letter is not None
    assert (letter.source_topic, letter.partition, letter.offset) == (msg.t, 2, 41)
    assert (letter.key, letter.value, letter.stage, letter.failed_at) == (msg.k, msg.v, stage, NOW)
    assert reason in letter.error
    record = letter.to_json()
    assert record["stage"] == stage and record["source_topic"] == msg.t


def test_a_split_batch_commits_each_message_with_its_own_part() -> None:
    """Partition 0: events at offsets 10, 11, 13 and dead letters at 12 and 14; partition 1: a dead letter
    at 4, events at 5, 6. Cut after the first three events (10, 5, 11)."""
    from churnstream.messages import DeadLetter
    from churnstream.streams.ingest import Batch, Coordinates

    def event(offset: int, partition: int) -> tuple[OrderEvent, Coordinates]:
        order = OrderEvent(event_id=f"e{offset}", customer_id="c", timestamp=offset, order_id="o", amount=1.0)
        return order, Coordinates("orders", partition, offset)

    def letter(offset: int, partition: int) -> DeadLetter:
        return DeadLetter("orders", partition, offset, None, b"{", "invalid JSON", "decode", 0)

    batch = Batch(
        events=[event(10, 0), event(5, 1), event(11, 0), event(6, 1), event(13, 0)],
        dead_letters=[letter(4, 1), letter(12, 0), letter(14, 0)],
        offsets={("orders", 0): 15, ("orders", 1): 7},
    )
    head, tail = batch.split(3)
    assert [w.offset for _, w in head.events] == [10, 5, 11]
    assert [w.offset for _, w in tail.events] == [6, 13]
    assert head.dead_letters == [letter(4, 1), letter(12, 0)]  # before the tail's first of their partition
    assert tail.dead_letters == [letter(14, 0)]
    assert head.offsets == {("orders", 0): 13, ("orders", 1): 6}  # the next message of each is the tail's
    assert tail.offsets == {("orders", 0): 15, ("orders", 1): 7}
    assert head.size + tail.size == batch.size

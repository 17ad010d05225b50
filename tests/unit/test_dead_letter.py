"""Dead letters are made in one place: whatever failed (a message, an event, a monitor's record), the
same envelope, the stage its error names, and one cap on the size."""

from __future__ import annotations

import json
from typing import NamedTuple

import orjson
import pytest

from churnstream.dead_letter import (
    TOPIC_MAX_BYTES,
    DeadLetter,
    dead_letter_for_bytes,
    dead_letter_for_event,
    dead_letter_for_message,
    dead_letter_payload,
)
from churnstream.errors import DecodeError, EventError, ProcessingError, ValidationError
from churnstream.events import TicketEvent
from churnstream.streams.ingest import Coordinates
from churnstream.streams.kafka import DEAD_LETTER_TOPIC_MAX_BYTES


class _Message:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def topic(self) -> str | None:
        return "support_tickets"

    def partition(self) -> int | None:
        return 4

    def offset(self) -> int | None:
        return 99

    def key(self) -> bytes | None:
        return b"c9"

    def value(self) -> bytes | None:
        return self._value


class _Record(NamedTuple):  # the shape of the monitor's records
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int | None
    offset: int | None


@pytest.mark.parametrize(
    "error", [DecodeError("bad bytes"), ValidationError("bad field"), ProcessingError("no")]
)
def test_every_builder_gives_the_same_envelope(error: EventError) -> None:
    event = TicketEvent("e1", "c9", 1_700_000_000_000, "t1")
    value = json.dumps(event.to_json()).encode()
    where = Coordinates("support_tickets", 4, 99, b"c9")
    letters = [
        dead_letter_for_message(_Message(value), error, failed_at=5),
        dead_letter_for_event(event, where, error, failed_at=5),
        dead_letter_for_bytes(value, _Record(b"c9", value, "support_tickets", 4, 99), error, failed_at=5),
    ]
    expected = DeadLetter("support_tickets", 4, 99, b"c9", value, str(error), error.stage, 5)
    assert letters == [expected] * 3
    payloads = {dead_letter_payload(letter) for letter in letters}
    assert len(payloads) == 1
    record = orjson.loads(payloads.pop())
    assert record["stage"] == error.stage and record["error"] == str(error)
    assert json.loads(record["value"])["ticket_id"] == "t1"


def test_a_letter_without_a_time_is_stamped_now_and_one_without_bytes_has_no_value() -> None:
    letter = dead_letter_for_message(_Message(None), DecodeError("empty message"))
    assert letter.failed_at > 1_700_000_000_000 and letter.value is None
    assert orjson.loads(dead_letter_payload(letter))["value"] is None


def test_the_cap_is_the_dead_letter_topics_and_a_value_is_cut_to_fit_it() -> None:
    assert DEAD_LETTER_TOPIC_MAX_BYTES == TOPIC_MAX_BYTES  # the topic is created with the cap letters obey
    fits = dead_letter_for_message(_Message(b"x" * 1_000_000), DecodeError("too big"))
    assert "value_truncated" not in orjson.loads(dead_letter_payload(fits))
    huge = dead_letter_for_message(_Message(b'"' * 3_000_000), DecodeError("too big"))  # each escapes to 2
    payload = dead_letter_payload(huge)
    record = orjson.loads(payload)
    assert len(payload) <= TOPIC_MAX_BYTES and record["value_truncated"] is True
    assert 0 < len(record["value"]) < 3_000_000 and set(record["value"]) == {'"'}


def test_a_huge_key_is_cut_in_the_letter_and_in_the_key_it_is_produced_with() -> None:
    """A 1.9 MiB key escaped to ~11 MiB of JSON: the topic refused the dead letter, and the worker that
    found it retried for ever (a review)."""
    from churnstream.dead_letter import KEY_MAX_BYTES

    class Keyed(_Message):
        def key(self) -> bytes | None:
            return b"\x01" * (1900 * 1024)

    letter = dead_letter_for_message(Keyed(b"{}"), ValidationError("key differs"))
    payload = dead_letter_payload(letter)
    record = orjson.loads(payload)
    assert len(payload) < 10_000 and record["key_truncated"] is True
    assert letter.kafka_key == b"\x01" * KEY_MAX_BYTES and record["key"] == "\x01" * KEY_MAX_BYTES

    class Accented(_Message):  # a UTF-8 key cut inside a character read as base64 (a second review)
        def key(self) -> bytes | None:
            return ("a" + "\u00e9" * 1000).encode()

    accented = dead_letter_for_message(Accented(b"{}"), ValidationError("key differs")).to_json()
    assert "key_encoding" not in accented and accented["key"] == "a" + "\u00e9" * 511
    short = orjson.loads(dead_letter_payload(dead_letter_for_message(_Message(b"{}"), DecodeError("x"))))
    assert short["key"] == "c9" and "key_truncated" not in short

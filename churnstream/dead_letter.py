"""A message that could not be processed (a ``dead_letter`` message of the contract), the one place
dead letters are made and serialised, whichever worker finds them.

- :func:`dead_letter_for_message`: a Kafka message that could not be decoded or validated (its bytes);
- :func:`dead_letter_for_event`: an event that was decoded but could not be processed (its message's bytes);
- :func:`dead_letter_for_bytes`: raw bytes read at a place (the monitor's records);
- :func:`dead_letter_payload`: the bytes produced to ``dead_letter``, within the topic's
  :data:`TOPIC_MAX_BYTES`.

The stage (``decode``, ``validate``, ``process``) comes from the error
(:class:`~churnstream.errors.EventError`).

>>> from churnstream.errors import DecodeError
>>> class Message:  # what a confluent_kafka.Message offers
...     def topic(self): return "orders"
...     def partition(self): return 0
...     def offset(self): return 7
...     def key(self): return b"c1"
...     def value(self): return b"\\xff"
>>> letter = dead_letter_for_message(Message(), DecodeError("not UTF-8"), failed_at=0)
>>> letter.to_json()["value"], letter.to_json()["value_encoding"], letter.stage
('/w==', 'base64', 'decode')
>>> dead_letter_payload(letter)[:40]
b'{"source_topic":"orders","partition":0,"'

A key that is not UTF-8 is given in base64 too, and says so:

>>> Message.key = lambda self: b"\\xfe"
>>> record = dead_letter_for_message(Message(), DecodeError("not UTF-8"), failed_at=0).to_json()
>>> record["key"], record["key_encoding"]
('/g==', 'base64')
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from churnstream.errors import EventError
from churnstream.message_fields import OutputField
from churnstream.timefmt import format_time, now_ms

if TYPE_CHECKING:
    from churnstream.events import Event

# max.message.bytes of the dead_letter topic: base64 can grow a value by a third, and a value may be as
# large as an input topic accepts (above the contract's 1 MiB, so that oversized messages get here)
TOPIC_MAX_BYTES = 4 * 1024 * 1024
_ROOM = TOPIC_MAX_BYTES - 64 * 1024  # for the value, with room for the envelope around it
# A dead letter's key, as produced and as text, is the original key's first bytes up to this: a key can
# be as large as an input topic accepts (a 1.9 MiB key escapes to ~11 MiB of JSON), and a dead letter the
# topic refuses would stop the worker that found it. Any customer_id fits many times over.
KEY_MAX_BYTES = 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, with the original bytes and the reason."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "source_topic": OutputField("string", "The topic the message came from."),
        "partition": OutputField("integer", "Its partition.", nullable=True, minimum=0),
        "offset": OutputField("integer", "Its offset.", nullable=True, minimum=0),
        "key": OutputField("string", "Its key as text, or in base64 (see key_encoding).", nullable=True),
        "key_encoding": OutputField(
            "string", "Present when the key was not UTF-8.", required=False, enum=("base64",)
        ),
        "key_truncated": OutputField(
            "boolean",
            "Present when the key was longer than 1,024 bytes: key holds its start.",
            required=False,
        ),
        "value": OutputField(
            "string", "Its bytes as text, or in base64 (see value_encoding).", nullable=True
        ),
        "value_encoding": OutputField(
            "string", "Present when the value was not UTF-8.", required=False, enum=("base64",)
        ),
        "value_truncated": OutputField(
            "boolean",
            "Present when the value would not fit the topic: value holds its start.",
            required=False,
        ),
        "error": OutputField("string", "Why it could not be processed."),
        "stage": OutputField("string", "Where it failed.", enum=("decode", "validate", "process")),
        "failed_at": OutputField("time", "Wall clock time of the failure."),
    }

    source_topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    error: str
    stage: str
    failed_at: int

    @property
    def kafka_key(self) -> bytes | None:
        """The key the dead letter is produced with: the original's first :data:`KEY_MAX_BYTES`, cut
        before a character a UTF-8 key would otherwise lose half of (so it still reads as text).

        >>> DeadLetter("orders", 0, 1, "aé".encode() * 600, None, "x", "decode", 0).kafka_key[-3:]
        b'\xc3\xa9a'
        """
        if self.key is None or len(self.key) <= KEY_MAX_BYTES:
            return self.key
        for end in range(KEY_MAX_BYTES, KEY_MAX_BYTES - 4, -1):
            try:
                self.key[:end].decode("utf-8")
            except UnicodeDecodeError:
                continue
            return self.key[:end]
        return self.key[:KEY_MAX_BYTES]  # not UTF-8 at all: given in base64

    def to_json(self) -> dict[str, Any]:
        key, key_encoding = _text(self.kafka_key)
        out: dict[str, Any] = {
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": key,
            "error": self.error,
            "stage": self.stage,
            "failed_at": format_time(self.failed_at),
        }
        if key_encoding:
            out["key_encoding"] = key_encoding
        if self.key is not None and len(self.key) > KEY_MAX_BYTES:
            out["key_truncated"] = True
        text, encoding = _text(self.value)
        out["value"] = text
        if encoding:
            out["value_encoding"] = encoding
        return out


def _text(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


class RawMessage(Protocol):
    """What a dead letter needs of a message (a ``confluent_kafka.Message`` has all of it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


class Where(Protocol):
    """Where something was read: topic, partition, offset and the message key."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int | None: ...
    @property
    def offset(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...


def dead_letter_for_bytes(
    value: bytes | None, where: Where, error: EventError, *, failed_at: int | None = None
) -> DeadLetter:
    """The dead letter of ``value`` read at ``where`` (``failed_at`` defaults to now)."""
    return _letter(where.topic, where.partition, where.offset, where.key, value, error, failed_at)


def dead_letter_for_message(
    msg: RawMessage, error: EventError, *, failed_at: int | None = None
) -> DeadLetter:
    """The dead letter of a Kafka message, with its original bytes (``failed_at`` defaults to now)."""
    topic, partition, offset, key = msg.topic() or "", msg.partition(), msg.offset(), msg.key()
    return _letter(topic, partition, offset, key, msg.value(), error, failed_at)


def _letter(
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    error: EventError,
    failed_at: int | None,
) -> DeadLetter:
    failed_at = now_ms() if failed_at is None else failed_at
    return DeadLetter(topic, partition, offset, key, value, str(error), error.stage, failed_at)


def dead_letter_for_event(
    event: Event, where: Where, error: EventError, *, failed_at: int | None = None
) -> DeadLetter:
    """The dead letter of a decoded event that could not be processed, where it was read: the message's
    original bytes when ``where`` has them (a ``value``, as the readers' coordinates do), else the
    event's JSON.

    >>> from churnstream.errors import ProcessingError
    >>> from churnstream.events import OrderEvent
    >>> from types import SimpleNamespace
    >>> order = OrderEvent("e1", "c1", 0, "o1", 9.5)
    >>> where = SimpleNamespace(topic="orders", partition=2, offset=40, key=b"c1", value=b'{"sent": "so"}')
    >>> letter = dead_letter_for_event(order, where, ProcessingError("no"))
    >>> letter.partition, letter.offset, letter.stage, letter.value
    (2, 40, 'process', b'{"sent": "so"}')
    >>> del where.value
    >>> dead_letter_for_event(order, where, ProcessingError("no")).value[:30]
    b'{"event_id": "e1", "customer_i'
    """
    value = getattr(where, "value", None)
    if value is None:
        value = json.dumps(event.to_json()).encode()
    return dead_letter_for_bytes(value, where, error, failed_at=failed_at)


def dead_letter_payload(letter: DeadLetter) -> bytes:
    """The JSON of a dead letter, its ``value`` cut (``value_truncated``) when it would not fit the topic.

    JSON escaping can make one character six bytes (``\\u0001``), so a value at the input limit can come
    out several times larger: cut to a sixth of the room, it fits whatever it holds.

    >>> big = DeadLetter("orders", 0, 1, b"k", b"\\x01" * 2_000_000, "too big", "decode", 0)
    >>> payload = dead_letter_payload(big)
    >>> len(payload) <= TOPIC_MAX_BYTES, orjson.loads(payload)["value_truncated"]
    (True, True)
    """
    record = letter.to_json()
    payload = orjson.dumps(record)
    if len(payload) > _ROOM:
        record["value"] = (record["value"] or "")[: _ROOM // 6]
        record["value_truncated"] = True
        payload = orjson.dumps(record)
    return payload


__all__ = [
    "KEY_MAX_BYTES",
    "TOPIC_MAX_BYTES",
    "DeadLetter",
    "RawMessage",
    "Where",
    "dead_letter_for_bytes",
    "dead_letter_for_event",
    "dead_letter_for_message",
    "dead_letter_payload",
]

"""The event contract: typed input events, decoding a message, and validating it.

Every rule of the contract's input tables is declared once in :data:`FIELDS` (one :class:`Field` per
field of each input topic, kept in :mod:`churnstream.event_fields` with the readers that check them) and
checked by :func:`parse_event`, whose hand-written checks take their bounds from there;
:mod:`churnstream.schemas` publishes the same table as JSON Schemas. Beyond the contract's rules, every
number has an upper bound the whole pipeline can hold (``amount`` <= 1e9, ``items`` <= 100000,
``resolution_time_hours`` <= 1e6). Times are held as integer epoch milliseconds (UTC) and emitted as
RFC 3339 strings (:mod:`churnstream.timefmt`). This module is the public surface: import the names from here.

>>> e = parse_event("orders", {"event_id": "e1", "customer_id": "c1", "order_id": "o1",
...                            "timestamp": "2024-05-01T10:00:00Z", "amount": 12.5}, now_ms=1_800_000_000_000)
>>> e.kind, e.timestamp, e.items, e.status
('orders', 1714557600000, 1, 'completed')
>>> format_time(e.timestamp)
'2024-05-01T10:00:00Z'
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from churnstream.errors import DecodeError, ValidationError
from churnstream.event_fields import (
    AGE,
    AMOUNT,
    CATEGORY,
    CHANNEL,
    CHURNED,
    CITY,
    CUSTOMER_ID,
    EMAIL_VERIFIED,
    EVENT_ID,
    FIELDS,
    ITEMS,
    KINDS,
    MAX_AMOUNT,
    MAX_ITEMS,
    MAX_RESOLUTION_HOURS,
    ORDER_ID,
    ORDER_STATUSES,
    PHONE_VERIFIED,
    PROFILE_FIELDS,
    RESOLUTION,
    SATISFACTION,
    SIGNUP_DATE,
    STATUS,
    TICKET_ID,
    TIMESTAMP,
    Field,
    json_type,
    read_boolean,
    read_choice,
    read_integer,
    read_number,
    read_string,
)
from churnstream.timefmt import TIME_PATTERN, format_time, now_ms, parse_time, read_time

__all__ = [
    "FIELDS",
    "KINDS",
    "MAX_AMOUNT",
    "MAX_ITEMS",
    "MAX_MESSAGE_BYTES",
    "MAX_RESOLUTION_HOURS",
    "ORDER_STATUSES",
    "PROFILE_FIELDS",
    "TIME_PATTERN",
    "Event",
    "Field",
    "LabelEvent",
    "OrderEvent",
    "ProfileEvent",
    "TicketEvent",
    "decode_json",
    "format_time",
    "infer_kind",
    "now_ms",
    "parse_event",
    "parse_time",
]

MAX_MESSAGE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class OrderEvent:
    event_id: str
    customer_id: str
    timestamp: int
    order_id: str
    amount: float
    items: int = 1
    category: str | None = None
    status: str = "completed"
    kind = "orders"

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "order_id": self.order_id,
            "timestamp": format_time(self.timestamp),
            "amount": self.amount,
            "items": self.items,
            "category": self.category,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class TicketEvent:
    event_id: str
    customer_id: str
    timestamp: int
    ticket_id: str
    resolution_time_hours: float | None = None
    satisfaction_score: int | None = None
    channel: str | None = None
    kind = "support_tickets"

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "ticket_id": self.ticket_id,
            "timestamp": format_time(self.timestamp),
            "resolution_time_hours": self.resolution_time_hours,
            "satisfaction_score": self.satisfaction_score,
            "channel": self.channel,
        }


@dataclass(frozen=True, slots=True)
class ProfileEvent:
    """A profile update; ``fields`` holds only the fields the message carried (later events overwrite)."""

    event_id: str
    customer_id: str
    timestamp: int
    fields: dict[str, Any]
    kind = "customer_profiles"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "timestamp": format_time(self.timestamp),
        }
        for name, value in self.fields.items():
            out[name] = format_time(value) if name == "signup_date" and value is not None else value
        return out


@dataclass(frozen=True, slots=True)
class LabelEvent:
    event_id: str
    customer_id: str
    timestamp: int
    churned: bool
    kind = "churn_labels"

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "timestamp": format_time(self.timestamp),
            "churned": self.churned,
        }


Event = OrderEvent | TicketEvent | ProfileEvent | LabelEvent


def _reject_constant(name: str) -> float:
    raise DecodeError(f"{name} is not a valid JSON number (numbers must be finite)")


# Built once: json.loads with a hook builds a new decoder per call, which doubles the cost per message.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_json(value: bytes | str | None) -> dict[str, Any]:
    """The JSON object in a message value, or :class:`DecodeError` saying why not."""
    if value is None:
        raise DecodeError("empty message (null value)")
    if len(value) > MAX_MESSAGE_BYTES:
        raise DecodeError(f"message of {len(value)} bytes exceeds the 1 MiB limit")
    try:  # the fast path: orjson refuses everything the strict decoder below refuses, and a bit more
        obj = orjson.loads(value)
        if isinstance(obj, dict):
            return obj
    except orjson.JSONDecodeError:
        pass  # the decoder below says precisely why (or accepts what orjson cannot: huge integers)
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        text = value
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise DecodeError(
            f"invalid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {json_type(obj)}")
    if "\\u" in text:  # orjson refused it: a lone surrogate escape decodes to a string nothing can encode
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("invalid JSON: a \\u escape is a lone UTF-16 surrogate, not text") from None
    return obj


def infer_kind(obj: dict[str, Any]) -> str:
    """The input topic a record belongs to, judged by its fields (for ``publish`` without ``--topic``)."""
    if "order_id" in obj:
        return "orders"
    if "ticket_id" in obj:
        return "support_tickets"
    if "churned" in obj:
        return "churn_labels"
    if any(name in obj for name in PROFILE_FIELDS):
        return "customer_profiles"
    raise ValidationError(
        "cannot tell the topic of this record: it has none of order_id, ticket_id, churned or a profile field"
    )


def _as_key(customer_id: str, key: bytes | str) -> bytes | str:
    """``customer_id`` as ``key``'s type: keys are compared as bytes, so a key that is not UTF-8 never
    passes for the U+FFFD its decoding shows."""
    return customer_id.encode("utf-8", "surrogatepass") if isinstance(key, bytes) else customer_id


def parse_event(
    kind: str,
    obj: dict[str, Any],
    *,
    key: bytes | str | None = None,
    now_ms: int | None = None,
    max_future_skew_hours: float = 24.0,
) -> Event:
    """Validate a decoded JSON object against the contract for topic ``kind``; unknown fields are ignored.

    Each check takes its bounds from :data:`FIELDS`. Besides the contract's rules, numbers have upper
    bounds every stage can hold: ``amount`` <= 1e9, ``items`` <= 100000, ``resolution_time_hours`` <= 1e6
    (``satisfaction_score`` stays 1..5 and ``age`` 0..130), so no later sum or square overflows a float;
    an integer too large for a float is rejected for its bound like any other value.

    >>> parse_event("orders", {"event_id": "e1", "customer_id": "c1", "order_id": "o1", "timestamp": 0,
    ...                        "amount": 10**400})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    churnstream.errors.ValidationError: amount: must be <= 1e+09, got an integer of 401 digits
    """
    now = _now() if now_ms is None else now_ms
    skew = int(max_future_skew_hours * 3_600_000)
    event_id = read_string(obj, EVENT_ID)
    customer_id = read_string(obj, CUSTOMER_ID)
    if key is not None and key != _as_key(customer_id, key):
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        raise ValidationError(
            f"message key {key_text[:80]!r} differs from customer_id {customer_id!r}; "
            "key messages by customer_id so a customer's events stay in order"
        )
    ts = read_time(obj, TIMESTAMP, now=now, skew_ms=skew)
    assert ts is not None
    if kind == "orders":
        status = read_choice(obj, STATUS)
        category = read_string(obj, CATEGORY)
        items = read_integer(obj, ITEMS)
        amount = read_number(obj, AMOUNT)
        assert amount is not None and items is not None
        return OrderEvent(
            event_id=event_id,
            customer_id=customer_id,
            timestamp=ts,
            order_id=read_string(obj, ORDER_ID),
            amount=amount,
            items=items,
            category=category,
            status=status,
        )
    if kind == "support_tickets":
        channel = read_string(obj, CHANNEL)
        return TicketEvent(
            event_id=event_id,
            customer_id=customer_id,
            timestamp=ts,
            ticket_id=read_string(obj, TICKET_ID),
            resolution_time_hours=read_number(obj, RESOLUTION),
            satisfaction_score=read_integer(obj, SATISFACTION),
            channel=channel,
        )
    if kind == "customer_profiles":
        fields: dict[str, Any] = {}
        if "signup_date" in obj:
            fields["signup_date"] = read_time(obj, SIGNUP_DATE, now=now, skew_ms=skew)
        if "age" in obj:
            fields["age"] = read_integer(obj, AGE)
        if "city" in obj:
            fields["city"] = read_string(obj, CITY)
        for f in (EMAIL_VERIFIED, PHONE_VERIFIED):
            if f.name in obj:
                fields[f.name] = read_boolean(obj, f)
        return ProfileEvent(event_id=event_id, customer_id=customer_id, timestamp=ts, fields=fields)
    if kind == "churn_labels":
        churned = read_boolean(obj, CHURNED)
        assert churned is not None
        return LabelEvent(event_id=event_id, customer_id=customer_id, timestamp=ts, churned=churned)
    raise ValidationError(f"unknown input topic kind {kind!r}; expected one of {', '.join(KINDS)}")


def _now() -> int:
    return now_ms()

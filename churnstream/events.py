"""The event contract: typed input events, their validation, and time handling.

Every rule of the contract's input tables lives in :func:`parse_event`. Times are held as integer
epoch milliseconds (UTC) and emitted as RFC 3339 strings.

>>> e = parse_event("orders", {"event_id": "e1", "customer_id": "c1", "order_id": "o1",
...                            "timestamp": "2024-05-01T10:00:00Z", "amount": 12.5}, now_ms=1_800_000_000_000)
>>> e.kind, e.timestamp, e.items, e.status
('orders', 1714557600000, 1, 'completed')
>>> format_time(e.timestamp)
'2024-05-01T10:00:00Z'
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from churnstream.errors import DecodeError, ValidationError

MAX_MESSAGE_BYTES = 1024 * 1024
ORDER_STATUSES = ("completed", "returned", "cancelled")
KINDS = ("orders", "support_tickets", "customer_profiles", "churn_labels")

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_time(value: Any, field: str = "timestamp") -> int:
    """Epoch milliseconds from an RFC 3339 string with offset or an integer of epoch ms.

    >>> parse_time("1970-01-01T00:00:01+00:00"), parse_time(1500)
    (1000, 1500)
    >>> parse_time("2024-05-01 10:00")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    churnstream.errors.ValidationError: timestamp: '2024-05-01 10:00' is not an RFC 3339 time ...
    """
    if isinstance(value, bool):
        raise ValidationError(f"{field}: a boolean is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if len(value) <= 40 and _RFC3339.match(value):
            text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
            try:
                dt = datetime.fromisoformat(text.replace("t", "T"))
            except ValueError:
                raise ValidationError(f"{field}: {value!r} is not a valid date and time") from None
            return _whole_ms(dt)
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise ValidationError(
            f"{field}: {shown!r} is not an RFC 3339 time with an offset (e.g. 2024-05-01T10:00:00Z) "
            "or integer epoch milliseconds"
        )
    raise ValidationError(f"{field}: expected an RFC 3339 string or integer epoch ms, got {_type(value)}")


def _whole_ms(dt: datetime) -> int:
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def format_time(ms: int) -> str:
    """RFC 3339 UTC string of epoch milliseconds, millisecond precision only when needed.

    >>> format_time(0), format_time(1_700_000_000_123), format_time(-1000)
    ('1970-01-01T00:00:00Z', '2023-11-14T22:13:20.123Z', '1969-12-31T23:59:59Z')
    """
    text = _RECENT.get(ms)
    if text is not None:  # a batch's messages share their scored_at, an outcome its prediction's as_of
        return text
    if len(_RECENT) > 4096:
        _RECENT.clear()
    text = _RECENT[ms] = _format_time(ms)
    return text


def _format_time(ms: int) -> str:
    day, rest = divmod(ms, 86_400_000)
    date = _DATES.get(day)
    if date is None:
        if 0 <= day < 2_932_897:  # years 1970..9999
            t = time.gmtime(day * 86_400)
            date = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        else:
            date = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=day)).strftime("%Y-%m-%dT")
        if len(_DATES) > 100_000:
            _DATES.clear()
        _DATES[day] = date
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if millis:
        return f"{date}{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"
    return f"{date}{hours:02d}:{minutes:02d}:{seconds:02d}Z"


_DATES: dict[int, str] = {}  # day number -> "YYYY-MM-DDT": formatting times is on the scorer's hot path
_RECENT: dict[int, str] = {}  # epoch ms -> its text, for the last few thousand times formatted


def now_ms() -> int:
    return int(datetime.now(tz=UTC).timestamp() * 1000)


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


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


PROFILE_FIELDS = ("signup_date", "age", "city", "email_verified", "phone_verified")


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
    if not isinstance(obj, dict):
        raise DecodeError(f"expected a JSON object, got {_type(obj)}")
    if "\\u" in text:  # orjson refused it: a lone surrogate escape decodes to a string nothing can encode
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("invalid JSON: a \\u escape is a lone UTF-16 surrogate, not text") from None
    return obj


def _string(obj: dict[str, Any], name: str, *, max_len: int = 128, required: bool = True) -> Any:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(
                f"{name}: required field is missing" if name not in obj else f"{name}: must not be null"
            )
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name}: expected a string, got {_type(value)}")
    if not 1 <= len(value) <= max_len:
        raise ValidationError(f"{name}: length {len(value)} is outside 1..{max_len}")
    return value


def _number(obj: dict[str, Any], name: str, *, required: bool, minimum: float | None = 0.0) -> float | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(
                f"{name}: required field is missing" if name not in obj else f"{name}: must not be null"
            )
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{name}: expected a number, got {_type(value)}")
    if not math.isfinite(value):
        raise ValidationError(f"{name}: must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{name}: must be >= {minimum:g}, got {value}")
    return float(value)


def _integer(obj: dict[str, Any], name: str, lo: int, hi: int | None) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValidationError(f"{name}: expected an integer, got {_type(value)} {value!r}"[:200])
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValidationError(f"{name}: must be {bound}, got {value}")
    return value


def _boolean(obj: dict[str, Any], name: str, *, required: bool) -> bool | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(
                f"{name}: required field is missing" if name not in obj else f"{name}: must not be null"
            )
        return None
    if not isinstance(value, bool):
        raise ValidationError(f"{name}: expected true or false, got {_type(value)}")
    return value


def _time(obj: dict[str, Any], name: str, *, now: int, skew_ms: int, required: bool = True) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ValidationError(
                f"{name}: required field is missing" if name not in obj else f"{name}: must not be null"
            )
        return None
    ms = parse_time(value, name)
    if ms < 0:
        raise ValidationError(f"{name}: {value} is before 1970-01-01")
    if ms > now + skew_ms:
        raise ValidationError(
            f"{name}: {value} is more than {skew_ms / 3_600_000:g} h ahead of the wall clock "
            "(CHURN_MAX_FUTURE_SKEW_HOURS)"
        )
    return ms


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


def parse_event(
    kind: str,
    obj: dict[str, Any],
    *,
    key: bytes | str | None = None,
    now_ms: int | None = None,
    max_future_skew_hours: float = 24.0,
) -> Event:
    """Validate a decoded JSON object against the contract for topic ``kind``; unknown fields are ignored."""
    now = _now() if now_ms is None else now_ms
    skew = int(max_future_skew_hours * 3_600_000)
    event_id = _string(obj, "event_id", max_len=128)
    customer_id = _string(obj, "customer_id", max_len=64)
    if key is not None:
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if key_text != customer_id:
            raise ValidationError(
                f"message key {key_text[:80]!r} differs from customer_id {customer_id!r}; "
                "key messages by customer_id so a customer's events stay in order"
            )
    ts = _time(obj, "timestamp", now=now, skew_ms=skew)
    assert ts is not None
    if kind == "orders":
        status = obj.get("status")
        if status is None:
            status = "completed"
        elif status not in ORDER_STATUSES:
            raise ValidationError(
                f"status: must be one of {', '.join(ORDER_STATUSES)}, got {str(status)[:40]!r}"
            )
        category = obj.get("category")
        if category is not None and not isinstance(category, str):
            raise ValidationError(f"category: expected a string or null, got {_type(category)}")
        items = _integer(obj, "items", 1, None)
        amount = _number(obj, "amount", required=True)
        assert amount is not None
        return OrderEvent(
            event_id=event_id,
            customer_id=customer_id,
            timestamp=ts,
            order_id=_string(obj, "order_id", max_len=128),
            amount=amount,
            items=1 if items is None else items,
            category=category[:128] if category is not None else None,
            status=status,
        )
    if kind == "support_tickets":
        channel = obj.get("channel")
        if channel is not None and not isinstance(channel, str):
            raise ValidationError(f"channel: expected a string or null, got {_type(channel)}")
        return TicketEvent(
            event_id=event_id,
            customer_id=customer_id,
            timestamp=ts,
            ticket_id=_string(obj, "ticket_id", max_len=128),
            resolution_time_hours=_number(obj, "resolution_time_hours", required=False),
            satisfaction_score=_integer(obj, "satisfaction_score", 1, 5),
            channel=channel[:128] if channel is not None else None,
        )
    if kind == "customer_profiles":
        fields: dict[str, Any] = {}
        if "signup_date" in obj:
            fields["signup_date"] = _time(obj, "signup_date", now=now, skew_ms=skew, required=False)
        if "age" in obj:
            fields["age"] = _integer(obj, "age", 0, 130)
        if "city" in obj:
            city = obj["city"]
            if city is not None and not isinstance(city, str):
                raise ValidationError(f"city: expected a string, got {_type(city)}")
            fields["city"] = city[:128] if city is not None else None
        for name in ("email_verified", "phone_verified"):
            if name in obj:
                fields[name] = _boolean(obj, name, required=False)
        return ProfileEvent(event_id=event_id, customer_id=customer_id, timestamp=ts, fields=fields)
    if kind == "churn_labels":
        churned = _boolean(obj, "churned", required=True)
        assert churned is not None
        return LabelEvent(event_id=event_id, customer_id=customer_id, timestamp=ts, churned=churned)
    raise ValidationError(f"unknown input topic kind {kind!r}; expected one of {', '.join(KINDS)}")


def _now() -> int:
    return now_ms()

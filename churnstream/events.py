"""The event contract: typed input events, their validation, and time handling.

Every rule of the contract's input tables is declared once in :data:`FIELDS` (one :class:`Field` per
field of each input topic) and checked by :func:`parse_event`, whose hand-written checks take their
bounds from there; :mod:`churnstream.schemas` publishes the same table as JSON Schemas. Beyond the
contract's rules, every number has an upper bound the whole pipeline can hold (``amount`` <= 1e9,
``items`` <= 100000, ``resolution_time_hours`` <= 1e6). Times are held as integer epoch milliseconds
(UTC) and emitted as RFC 3339 strings.

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
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from churnstream.errors import DecodeError, ValidationError

MAX_MESSAGE_BYTES = 1024 * 1024
ORDER_STATUSES = ("completed", "returned", "cancelled")
KINDS = ("orders", "support_tickets", "customer_profiles", "churn_labels")

# Upper bounds that every part of the pipeline can hold. Sums over a customer's lifetime stay finite
# with room to spare: a million orders of MAX_AMOUNT add up to 1e15, and a square (a variance, a drift
# statistic) of any one value stays below 1e18, while a float reaches 1.8e308.
MAX_AMOUNT = 1e9
MAX_ITEMS = 100_000
MAX_RESOLUTION_HOURS = 1e6  # 114 years


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an input topic, as the contract states it.

    :func:`parse_event` takes its checks' bounds from here and :mod:`churnstream.schemas` builds the
    published JSON Schemas from the same objects, so the two cannot disagree. ``type`` is ``string``,
    ``number``, ``integer``, ``boolean`` or ``time`` (an RFC 3339 string or integer epoch ms);
    ``min``/``max`` bound numbers, integers and times; ``min_len``/``max_len`` bound a string's length
    (longer is rejected) while ``truncate`` keeps only that many characters of free text; ``nullable``
    means null is accepted and reads as absent; ``default`` is the value an absent or null field takes.
    """

    name: str
    type: str
    description: str
    required: bool = False
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    min_len: int = 0
    max_len: int | None = None
    truncate: int | None = None
    enum: tuple[str, ...] = ()
    default: Any = None


_EVENT_ID = Field(
    "event_id",
    "string",
    "Unique per event; a redelivery with the same id changes nothing.",
    required=True,
    min_len=1,
    max_len=128,
)
_CUSTOMER_ID = Field(
    "customer_id", "string", "The customer; also the message key.", required=True, min_len=1, max_len=64
)
_TIMESTAMP = Field("timestamp", "time", "The event time.", required=True, min=0)
_ORDER_ID = Field("order_id", "string", "The order.", required=True, min_len=1, max_len=128)
_AMOUNT = Field(
    "amount", "number", "The order total, a finite JSON number.", required=True, min=0, max=MAX_AMOUNT
)
_ITEMS = Field("items", "integer", "Items in the order.", nullable=True, min=1, max=MAX_ITEMS, default=1)
_CATEGORY = Field(
    "category",
    "string",
    "Product category; text past 128 characters is dropped.",
    nullable=True,
    truncate=128,
)
_STATUS = Field(
    "status",
    "string",
    "Only completed orders count as purchases.",
    nullable=True,
    enum=ORDER_STATUSES,
    default="completed",
)
_TICKET_ID = Field("ticket_id", "string", "The support ticket.", required=True, min_len=1, max_len=128)
_RESOLUTION = Field(
    "resolution_time_hours",
    "number",
    "Hours to resolve the ticket; null while it is still open.",
    nullable=True,
    min=0,
    max=MAX_RESOLUTION_HOURS,
)
_SATISFACTION = Field(
    "satisfaction_score",
    "integer",
    "The customer's rating; 2 or less counts as negative.",
    nullable=True,
    min=1,
    max=5,
)
_CHANNEL = Field(
    "channel",
    "string",
    "Where the ticket came in; text past 128 characters is dropped.",
    nullable=True,
    truncate=128,
)
_SIGNUP_DATE = Field("signup_date", "time", "When the customer signed up.", nullable=True, min=0)
_AGE = Field("age", "integer", "The customer's age in years.", nullable=True, min=0, max=130)
_CITY = Field(
    "city",
    "string",
    "The customer's city; text past 128 characters is dropped.",
    nullable=True,
    truncate=128,
)
_EMAIL_VERIFIED = Field("email_verified", "boolean", "Whether the e-mail address is verified.", nullable=True)
_PHONE_VERIFIED = Field("phone_verified", "boolean", "Whether the phone number is verified.", nullable=True)
_CHURNED = Field(
    "churned", "boolean", "The explicit outcome; it overrides the inactivity rule.", required=True
)

_PROFILE = (_SIGNUP_DATE, _AGE, _CITY, _EMAIL_VERIFIED, _PHONE_VERIFIED)

FIELDS: dict[str, tuple[Field, ...]] = {
    "orders": (_EVENT_ID, _CUSTOMER_ID, _TIMESTAMP, _ORDER_ID, _AMOUNT, _ITEMS, _CATEGORY, _STATUS),
    "support_tickets": (
        _EVENT_ID,
        _CUSTOMER_ID,
        _TIMESTAMP,
        _TICKET_ID,
        _RESOLUTION,
        _SATISFACTION,
        _CHANNEL,
    ),
    "customer_profiles": (_EVENT_ID, _CUSTOMER_ID, _TIMESTAMP, *_PROFILE),
    "churn_labels": (_EVENT_ID, _CUSTOMER_ID, _TIMESTAMP, _CHURNED),
}
"""Every input topic's fields, in the order the contract lists them: the one definition of its rules."""

# An RFC 3339 time with an offset ("T", "t" or a space between date and time); also in the JSON Schemas.
TIME_PATTERN = r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(TIME_PATTERN)


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


PROFILE_FIELDS = tuple(f.name for f in _PROFILE)


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
        raise DecodeError(f"expected a JSON object, got {_type(obj)}")
    if "\\u" in text:  # orjson refused it: a lone surrogate escape decodes to a string nothing can encode
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError("invalid JSON: a \\u escape is a lone UTF-16 surrogate, not text") from None
    return obj


def _absent(obj: dict[str, Any], f: Field) -> None:
    """Raise when a null or missing value is not allowed for ``f``; an optional field may be left out."""
    if f.required:
        raise ValidationError(
            f"{f.name}: required field is missing" if f.name not in obj else f"{f.name}: must not be null"
        )
    if not f.nullable and f.name in obj:
        raise ValidationError(f"{f.name}: must not be null")


def _shown(value: Any) -> str:
    """``value`` for an error message; an integer too long to print (10**5000) is described instead."""
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        n = abs(value)
        digits = int((n.bit_length() - 1) * 0.30102999566398120) + 1  # the fewest 2**(bits-1) can have
        digits += n >= 10**digits
        return f"{'-' if value < 0 else ''}an integer of {digits} digits"
    return f"{value}"


def _string(obj: dict[str, Any], f: Field) -> Any:
    value = obj.get(f.name)
    if value is None:
        _absent(obj, f)
        return f.default
    if not isinstance(value, str):
        raise ValidationError(
            f"{f.name}: expected a string{' or null' if f.nullable else ''}, got {_type(value)}"
        )
    if f.max_len is not None and not f.min_len <= len(value) <= f.max_len:
        raise ValidationError(f"{f.name}: length {len(value)} is outside {f.min_len}..{f.max_len}")
    if f.truncate is not None:
        return value[: f.truncate]
    return value


def _choice(obj: dict[str, Any], f: Field) -> Any:
    value = obj.get(f.name)
    if value is None:
        _absent(obj, f)
        return f.default
    if value not in f.enum:
        raise ValidationError(f"{f.name}: must be one of {', '.join(f.enum)}, got {_shown(value)[:40]!r}")
    return value


def _number(obj: dict[str, Any], f: Field) -> float | None:
    """A finite float within ``f``'s bounds; an int too large for a float fails its bound, not float()."""
    value = obj.get(f.name)
    if value is None:
        _absent(obj, f)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{f.name}: expected a number, got {_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{f.name}: must be finite, got {value}")
    if f.min is not None and value < f.min:
        raise ValidationError(f"{f.name}: must be >= {f.min:g}, got {_shown(value)}")
    if f.max is not None and value > f.max:
        raise ValidationError(f"{f.name}: must be <= {f.max:g}, got {_shown(value)}")
    try:
        return float(value)
    except OverflowError:  # only for a field without a max
        raise ValidationError(f"{f.name}: {_shown(value)} is too large for a number") from None


def _integer(obj: dict[str, Any], f: Field) -> int | None:
    value = obj.get(f.name)
    if value is None:
        _absent(obj, f)
        return f.default
    number = value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ValidationError(f"{f.name}: expected an integer, got {_type(value)} {value!r}"[:200])
    lo, hi = f.min, f.max
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValidationError(f"{f.name}: must be {_bounds(lo, hi, number)}, got {_shown(value)}")
    return number


def _bounds(lo: float | None, hi: float | None, value: float) -> str:
    """The rule a value broke: a short range reads best whole (``1..5``), a long one by the side broken."""
    if lo is not None and hi is not None and hi - lo <= 1000:
        return f"{lo:g}..{hi:g}"
    return f">= {lo:g}" if lo is not None and value < lo else f"<= {hi:g}"


def _boolean(obj: dict[str, Any], f: Field) -> bool | None:
    value = obj.get(f.name)
    if value is None:
        _absent(obj, f)
        return None
    if not isinstance(value, bool):
        raise ValidationError(f"{f.name}: expected true or false, got {_type(value)}")
    return value


def _time(obj: dict[str, Any], f: Field, *, now: int, skew_ms: int) -> int | None:
    value = obj.get(f.name)
    if value is None:
        _absent(obj, f)
        return None
    ms = parse_time(value, f.name)
    if f.min is not None and ms < f.min:
        raise ValidationError(f"{f.name}: {_shown(value)} is before {format_time(int(f.min))[:10]}")
    if ms > now + skew_ms:
        raise ValidationError(
            f"{f.name}: {_shown(value)} is more than {skew_ms / 3_600_000:g} h ahead of the wall clock "
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
    event_id = _string(obj, _EVENT_ID)
    customer_id = _string(obj, _CUSTOMER_ID)
    if key is not None:
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if key_text != customer_id:
            raise ValidationError(
                f"message key {key_text[:80]!r} differs from customer_id {customer_id!r}; "
                "key messages by customer_id so a customer's events stay in order"
            )
    ts = _time(obj, _TIMESTAMP, now=now, skew_ms=skew)
    assert ts is not None
    if kind == "orders":
        status = _choice(obj, _STATUS)
        category = _string(obj, _CATEGORY)
        items = _integer(obj, _ITEMS)
        amount = _number(obj, _AMOUNT)
        assert amount is not None and items is not None
        return OrderEvent(
            event_id=event_id,
            customer_id=customer_id,
            timestamp=ts,
            order_id=_string(obj, _ORDER_ID),
            amount=amount,
            items=items,
            category=category,
            status=status,
        )
    if kind == "support_tickets":
        channel = _string(obj, _CHANNEL)
        return TicketEvent(
            event_id=event_id,
            customer_id=customer_id,
            timestamp=ts,
            ticket_id=_string(obj, _TICKET_ID),
            resolution_time_hours=_number(obj, _RESOLUTION),
            satisfaction_score=_integer(obj, _SATISFACTION),
            channel=channel,
        )
    if kind == "customer_profiles":
        fields: dict[str, Any] = {}
        if "signup_date" in obj:
            fields["signup_date"] = _time(obj, _SIGNUP_DATE, now=now, skew_ms=skew)
        if "age" in obj:
            fields["age"] = _integer(obj, _AGE)
        if "city" in obj:
            fields["city"] = _string(obj, _CITY)
        for f in (_EMAIL_VERIFIED, _PHONE_VERIFIED):
            if f.name in obj:
                fields[f.name] = _boolean(obj, f)
        return ProfileEvent(event_id=event_id, customer_id=customer_id, timestamp=ts, fields=fields)
    if kind == "churn_labels":
        churned = _boolean(obj, _CHURNED)
        assert churned is not None
        return LabelEvent(event_id=event_id, customer_id=customer_id, timestamp=ts, churned=churned)
    raise ValidationError(f"unknown input topic kind {kind!r}; expected one of {', '.join(KINDS)}")


def _now() -> int:
    return now_ms()

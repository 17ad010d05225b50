"""The input topics' fields: the one table of their rules, and the readers that check a value against it.

:data:`FIELDS` declares every field of each input topic once (one :class:`Field` each);
:func:`churnstream.events.parse_event` reads a decoded message with the ``read_*`` functions below, which take
their bounds from those declarations, and :mod:`churnstream.schemas` publishes the same table as JSON Schemas.

>>> read_integer({"items": 3}, ITEMS), read_integer({}, ITEMS), len(read_string({"city": "x" * 200}, CITY))
(3, 1, 128)
>>> read_number({"amount": -1}, AMOUNT)
Traceback (most recent call last):
...
churnstream.errors.ValidationError: amount: must be >= 0, got -1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from churnstream.errors import ValidationError

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

    :func:`~churnstream.events.parse_event` takes its checks' bounds from here and
    :mod:`churnstream.schemas` builds the published JSON Schemas from the same objects, so the two cannot
    disagree. ``type`` is ``string``, ``number``, ``integer``, ``boolean`` or ``time`` (an RFC 3339
    string or integer epoch ms); ``min``/``max`` bound numbers, integers and times; ``min_len`` and
    ``max_len`` bound a string's length (longer is rejected) while ``truncate`` keeps only that many
    characters of free text; ``nullable`` means null is accepted and reads as absent; ``default`` is the
    value an absent or null field takes.
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


EVENT_ID = Field(
    "event_id",
    "string",
    "Unique per event; a redelivery with the same id changes nothing.",
    required=True,
    min_len=1,
    max_len=128,
)
CUSTOMER_ID = Field(
    "customer_id", "string", "The customer; also the message key.", required=True, min_len=1, max_len=64
)
TIMESTAMP = Field("timestamp", "time", "The event time.", required=True, min=0)
ORDER_ID = Field("order_id", "string", "The order.", required=True, min_len=1, max_len=128)
AMOUNT = Field(
    "amount", "number", "The order total, a finite JSON number.", required=True, min=0, max=MAX_AMOUNT
)
ITEMS = Field("items", "integer", "Items in the order.", nullable=True, min=1, max=MAX_ITEMS, default=1)
CATEGORY = Field(
    "category",
    "string",
    "Product category; text past 128 characters is dropped.",
    nullable=True,
    truncate=128,
)
STATUS = Field(
    "status",
    "string",
    "Only completed orders count as purchases.",
    nullable=True,
    enum=ORDER_STATUSES,
    default="completed",
)
TICKET_ID = Field("ticket_id", "string", "The support ticket.", required=True, min_len=1, max_len=128)
RESOLUTION = Field(
    "resolution_time_hours",
    "number",
    "Hours to resolve the ticket; null while it is still open.",
    nullable=True,
    min=0,
    max=MAX_RESOLUTION_HOURS,
)
SATISFACTION = Field(
    "satisfaction_score",
    "integer",
    "The customer's rating; 2 or less counts as negative.",
    nullable=True,
    min=1,
    max=5,
)
CHANNEL = Field(
    "channel",
    "string",
    "Where the ticket came in; text past 128 characters is dropped.",
    nullable=True,
    truncate=128,
)
SIGNUP_DATE = Field("signup_date", "time", "When the customer signed up.", nullable=True, min=0)
AGE = Field("age", "integer", "The customer's age in years.", nullable=True, min=0, max=130)
CITY = Field(
    "city",
    "string",
    "The customer's city; text past 128 characters is dropped.",
    nullable=True,
    truncate=128,
)
EMAIL_VERIFIED = Field("email_verified", "boolean", "Whether the e-mail address is verified.", nullable=True)
PHONE_VERIFIED = Field("phone_verified", "boolean", "Whether the phone number is verified.", nullable=True)
CHURNED = Field(
    "churned", "boolean", "The explicit outcome; it overrides the inactivity rule.", required=True
)

PROFILE = (SIGNUP_DATE, AGE, CITY, EMAIL_VERIFIED, PHONE_VERIFIED)

FIELDS: dict[str, tuple[Field, ...]] = {
    "orders": (EVENT_ID, CUSTOMER_ID, TIMESTAMP, ORDER_ID, AMOUNT, ITEMS, CATEGORY, STATUS),
    "support_tickets": (
        EVENT_ID,
        CUSTOMER_ID,
        TIMESTAMP,
        TICKET_ID,
        RESOLUTION,
        SATISFACTION,
        CHANNEL,
    ),
    "customer_profiles": (EVENT_ID, CUSTOMER_ID, TIMESTAMP, *PROFILE),
    "churn_labels": (EVENT_ID, CUSTOMER_ID, TIMESTAMP, CHURNED),
}
"""Every input topic's fields, in the order the contract lists them: the one definition of its rules."""

PROFILE_FIELDS = tuple(f.name for f in PROFILE)


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, as error messages name it."""
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


def reject_absent(obj: dict[str, Any], f: Field) -> None:
    """Raise when a null or missing value is not allowed for ``f``; an optional field may be left out."""
    if f.required:
        raise ValidationError(
            f"{f.name}: required field is missing" if f.name not in obj else f"{f.name}: must not be null"
        )
    if not f.nullable and f.name in obj:
        raise ValidationError(f"{f.name}: must not be null")


def shown(value: Any) -> str:
    """``value`` for an error message; an integer too long to print (10**5000) is described instead."""
    if isinstance(value, int) and not -(10**30) < value < 10**30:
        n = abs(value)
        digits = int((n.bit_length() - 1) * 0.30102999566398120) + 1  # the fewest 2**(bits-1) can have
        digits += n >= 10**digits
        return f"{'-' if value < 0 else ''}an integer of {digits} digits"
    return f"{value}"


def read_string(obj: dict[str, Any], f: Field) -> Any:
    value = obj.get(f.name)
    if value is None:
        reject_absent(obj, f)
        return f.default
    if not isinstance(value, str):
        raise ValidationError(
            f"{f.name}: expected a string{' or null' if f.nullable else ''}, got {json_type(value)}"
        )
    if f.max_len is not None and not f.min_len <= len(value) <= f.max_len:
        raise ValidationError(f"{f.name}: length {len(value)} is outside {f.min_len}..{f.max_len}")
    if f.truncate is not None:
        return value[: f.truncate]
    return value


def read_choice(obj: dict[str, Any], f: Field) -> Any:
    value = obj.get(f.name)
    if value is None:
        reject_absent(obj, f)
        return f.default
    if value not in f.enum:
        raise ValidationError(f"{f.name}: must be one of {', '.join(f.enum)}, got {shown(value)[:40]!r}")
    return value


def read_number(obj: dict[str, Any], f: Field) -> float | None:
    """A finite float within ``f``'s bounds; an int too large for a float fails its bound, not float()."""
    value = obj.get(f.name)
    if value is None:
        reject_absent(obj, f)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{f.name}: expected a number, got {json_type(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{f.name}: must be finite, got {value}")
    if f.min is not None and value < f.min:
        raise ValidationError(f"{f.name}: must be >= {f.min:g}, got {shown(value)}")
    if f.max is not None and value > f.max:
        raise ValidationError(f"{f.name}: must be <= {f.max:g}, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # only for a field without a max
        raise ValidationError(f"{f.name}: {shown(value)} is too large for a number") from None


def read_integer(obj: dict[str, Any], f: Field) -> int | None:
    value = obj.get(f.name)
    if value is None:
        reject_absent(obj, f)
        return f.default
    number = value
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            number = int(value)
        else:
            raise ValidationError(f"{f.name}: expected an integer, got {json_type(value)} {value!r}"[:200])
    lo, hi = f.min, f.max
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise ValidationError(f"{f.name}: must be {_bounds(lo, hi, number)}, got {shown(value)}")
    return number


def _bounds(lo: float | None, hi: float | None, value: float) -> str:
    """The rule a value broke: a short range reads best whole (``1..5``), a long one by the side broken."""
    if lo is not None and hi is not None and hi - lo <= 1000:
        return f"{lo:g}..{hi:g}"
    return f">= {lo:g}" if lo is not None and value < lo else f"<= {hi:g}"


def read_boolean(obj: dict[str, Any], f: Field) -> bool | None:
    value = obj.get(f.name)
    if value is None:
        reject_absent(obj, f)
        return None
    if not isinstance(value, bool):
        raise ValidationError(f"{f.name}: expected true or false, got {json_type(value)}")
    return value

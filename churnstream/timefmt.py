"""Event times: integer epoch milliseconds (UTC) read from RFC 3339 text or integers, and written as RFC 3339.

>>> format_time(parse_time("2024-05-01T12:00:00+02:00"))
'2024-05-01T10:00:00Z'
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from churnstream.errors import ValidationError
from churnstream.event_fields import Field, json_type, reject_absent, shown

# An RFC 3339 time with an offset ("T", "t" or a space between date and time); also in the JSON Schemas.
TIME_PATTERN = r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(TIME_PATTERN)


def parse_time(value: Any, field: str = "timestamp") -> int:
    """Epoch milliseconds from an RFC 3339 string with offset or an integer of epoch ms.

    >>> parse_time("1970-01-01T00:00:01+00:00"), parse_time(1500), parse_time(1500.0)
    (1000, 1500, 1500)
    >>> parse_time("2024-05-01 10:00")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    churnstream.errors.ValidationError: timestamp: '2024-05-01 10:00' is not an RFC 3339 time ...
    """
    if isinstance(value, bool):
        raise ValidationError(f"{field}: a boolean is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():  # 1714557600000.0: an integer to JSON Schema too
        return int(value)
    if isinstance(value, str):
        if len(value) <= 40 and _RFC3339.match(value):
            text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
            try:
                dt = datetime.fromisoformat(text.replace("t", "T"))
            except ValueError:
                raise ValidationError(f"{field}: {value!r} is not a valid date and time") from None
            return _whole_ms(dt)
        quoted = value if len(value) <= 60 else value[:57] + "..."
        raise ValidationError(
            f"{field}: {quoted!r} is not an RFC 3339 time with an offset (e.g. 2024-05-01T10:00:00Z) "
            "or integer epoch milliseconds"
        )
    raise ValidationError(f"{field}: expected an RFC 3339 string or integer epoch ms, got {json_type(value)}")


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


def read_time(obj: dict[str, Any], f: Field, *, now: int, skew_ms: int) -> int | None:
    """A time field's epoch ms, at most ``skew_ms`` ahead of ``now`` (the wall clock)."""
    value = obj.get(f.name)
    if value is None:
        reject_absent(obj, f)
        return None
    ms = parse_time(value, f.name)
    if f.min is not None and ms < f.min:
        raise ValidationError(f"{f.name}: {shown(value)} is before {format_time(int(f.min))[:10]}")
    if ms > now + skew_ms:
        raise ValidationError(
            f"{f.name}: {shown(value)} is more than {skew_ms / 3_600_000:g} h ahead of the wall clock "
            "(CHURN_MAX_FUTURE_SKEW_HOURS)"
        )
    return ms

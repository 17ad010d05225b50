"""Every validation rule of the input contract, both sides of every bound, one table row per case."""

from __future__ import annotations

import json
from typing import Any

import pytest

from churnstream.errors import DecodeError, ValidationError
from churnstream.events import MAX_MESSAGE_BYTES, decode_json, format_time, infer_kind, parse_event

NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z
SKEW_MS = 24 * 3_600_000
T = "2024-05-01T10:00:00Z"
T_MS = 1_714_557_600_000

BASE: dict[str, dict[str, Any]] = {
    "orders": {"event_id": "e1", "customer_id": "c1", "order_id": "o1", "timestamp": T, "amount": 10.0},
    "support_tickets": {"event_id": "e1", "customer_id": "c1", "ticket_id": "t1", "timestamp": T},
    "customer_profiles": {"event_id": "e1", "customer_id": "c1", "timestamp": T},
    "churn_labels": {"event_id": "e1", "customer_id": "c1", "timestamp": T, "churned": True},
}
MISSING = object()


def build(kind: str, **changes: Any) -> dict[str, Any]:
    obj = dict(BASE[kind])
    for name, value in changes.items():
        if value is MISSING:
            obj.pop(name, None)
        else:
            obj[name] = value
    return obj


def parse(kind: str, obj: dict[str, Any], key: bytes | str | None = None) -> Any:
    return parse_event(kind, obj, key=key, now_ms=NOW, max_future_skew_hours=24)


# (kind, changes, expected attribute values) -- valid records
VALID = [
    # event_id 1..128 chars
    ("orders", {"event_id": "a"}, {"event_id": "a"}),
    ("orders", {"event_id": "a" * 128}, {"event_id": "a" * 128}),
    # customer_id 1..64 chars
    ("orders", {"customer_id": "c"}, {"customer_id": "c"}),
    ("orders", {"customer_id": "c" * 64}, {"customer_id": "c" * 64}),
    # amount: finite and >= 0
    ("orders", {"amount": 0}, {"amount": 0.0}),
    ("orders", {"amount": 12}, {"amount": 12.0}),
    ("orders", {"amount": 1e9}, {"amount": 1e9}),
    # items: optional, >= 1, default 1
    ("orders", {}, {"items": 1}),
    ("orders", {"items": 1}, {"items": 1}),
    ("orders", {"items": 3}, {"items": 3}),
    ("orders", {"items": None}, {"items": 1}),
    ("orders", {"items": 2.0}, {"items": 2}),
    # status: completed (default), returned, cancelled
    ("orders", {}, {"status": "completed"}),
    ("orders", {"status": None}, {"status": "completed"}),
    ("orders", {"status": "completed"}, {"status": "completed"}),
    ("orders", {"status": "returned"}, {"status": "returned"}),
    ("orders", {"status": "cancelled"}, {"status": "cancelled"}),
    # category: string or null
    ("orders", {"category": None}, {"category": None}),
    ("orders", {"category": "books"}, {"category": "books"}),
    # satisfaction_score 1..5 or null
    ("support_tickets", {"satisfaction_score": 1}, {"satisfaction_score": 1}),
    ("support_tickets", {"satisfaction_score": 5}, {"satisfaction_score": 5}),
    ("support_tickets", {"satisfaction_score": None}, {"satisfaction_score": None}),
    # resolution_time_hours >= 0 or null (still open)
    ("support_tickets", {"resolution_time_hours": 0}, {"resolution_time_hours": 0.0}),
    ("support_tickets", {"resolution_time_hours": 2.5}, {"resolution_time_hours": 2.5}),
    ("support_tickets", {"resolution_time_hours": None}, {"resolution_time_hours": None}),
    ("support_tickets", {"channel": "chat"}, {"channel": "chat"}),
    ("support_tickets", {"channel": None}, {"channel": None}),
    # age 0..130, booleans, city, signup_date
    ("customer_profiles", {"age": 0}, {"fields": {"age": 0}}),
    ("customer_profiles", {"age": 130}, {"fields": {"age": 130}}),
    (
        "customer_profiles",
        {"email_verified": True, "phone_verified": False},
        {"fields": {"email_verified": True, "phone_verified": False}},
    ),
    ("customer_profiles", {"city": "Oslo"}, {"fields": {"city": "Oslo"}}),
    (
        "customer_profiles",
        {"signup_date": "2023-01-01T00:00:00Z"},
        {"fields": {"signup_date": 1_672_531_200_000}},
    ),
    ("customer_profiles", {}, {"fields": {}}),
    # churned bool
    ("churn_labels", {"churned": True}, {"churned": True}),
    ("churn_labels", {"churned": False}, {"churned": False}),
    # timestamps
    ("orders", {"timestamp": "2024-05-01T10:00:00Z"}, {"timestamp": T_MS}),
    ("orders", {"timestamp": "2024-05-01T12:00:00+02:00"}, {"timestamp": T_MS}),
    ("orders", {"timestamp": "2024-05-01T05:30:00-04:30"}, {"timestamp": T_MS}),
    ("orders", {"timestamp": "2024-05-01T10:00:00.250Z"}, {"timestamp": T_MS + 250}),
    ("orders", {"timestamp": T_MS}, {"timestamp": T_MS}),
    ("orders", {"timestamp": 0}, {"timestamp": 0}),
    ("orders", {"timestamp": "1970-01-01T00:00:00Z"}, {"timestamp": 0}),
    ("orders", {"timestamp": NOW + SKEW_MS}, {"timestamp": NOW + SKEW_MS}),
    # unknown extra fields are ignored
    ("orders", {"coupon": "X", "nested": {"a": [1, 2]}}, {"order_id": "o1"}),
    ("churn_labels", {"extra": None}, {"churned": True}),
]


@pytest.mark.parametrize(("kind", "changes", "expected"), VALID)
def test_valid_records(kind: str, changes: dict[str, Any], expected: dict[str, Any]) -> None:
    event = parse(kind, build(kind, **changes))
    assert event.kind == kind
    for name, value in expected.items():
        assert getattr(event, name) == value, name


# (kind, changes, error text the reason must contain)
INVALID = [
    ("orders", {"event_id": ""}, "event_id: length 0"),
    ("orders", {"event_id": "a" * 129}, "event_id: length 129"),
    ("orders", {"event_id": MISSING}, "event_id: required"),
    ("orders", {"event_id": None}, "event_id: must not be null"),
    ("orders", {"event_id": 7}, "event_id: expected a string"),
    ("orders", {"customer_id": ""}, "customer_id: length 0"),
    ("orders", {"customer_id": "c" * 65}, "customer_id: length 65"),
    ("orders", {"customer_id": MISSING}, "customer_id: required"),
    ("orders", {"customer_id": 42}, "customer_id: expected a string"),
    ("orders", {"order_id": MISSING}, "order_id: required"),
    ("orders", {"amount": -0.01}, "amount: must be >= 0"),
    ("orders", {"amount": "12"}, "amount: expected a number, got string"),
    ("orders", {"amount": True}, "amount: expected a number, got boolean"),
    ("orders", {"amount": MISSING}, "amount: required"),
    ("orders", {"amount": None}, "amount: must not be null"),
    ("orders", {"items": 0}, "items: must be >= 1"),
    ("orders", {"items": 1.5}, "items: expected an integer"),
    ("orders", {"items": "2"}, "items: expected an integer"),
    ("orders", {"status": "refunded"}, "status: must be one of"),
    ("orders", {"status": "COMPLETED"}, "status: must be one of"),
    ("orders", {"category": 5}, "category: expected a string"),
    ("support_tickets", {"ticket_id": MISSING}, "ticket_id: required"),
    ("support_tickets", {"satisfaction_score": 0}, "satisfaction_score: must be 1..5"),
    ("support_tickets", {"satisfaction_score": 6}, "satisfaction_score: must be 1..5"),
    ("support_tickets", {"satisfaction_score": 3.5}, "satisfaction_score: expected an integer"),
    ("support_tickets", {"satisfaction_score": True}, "satisfaction_score: expected an integer"),
    ("support_tickets", {"resolution_time_hours": -0.5}, "resolution_time_hours: must be >= 0"),
    ("support_tickets", {"resolution_time_hours": "3"}, "resolution_time_hours: expected a number"),
    ("support_tickets", {"channel": 1}, "channel: expected a string"),
    ("customer_profiles", {"age": -1}, "age: must be 0..130"),
    ("customer_profiles", {"age": 131}, "age: must be 0..130"),
    ("customer_profiles", {"age": "30"}, "age: expected an integer"),
    ("customer_profiles", {"email_verified": "true"}, "email_verified: expected true or false"),
    ("customer_profiles", {"phone_verified": 1}, "phone_verified: expected true or false"),
    ("customer_profiles", {"city": 5}, "city: expected a string"),
    ("customer_profiles", {"signup_date": "yesterday"}, "signup_date:"),
    ("churn_labels", {"churned": "yes"}, "churned: expected true or false"),
    ("churn_labels", {"churned": 1}, "churned: expected true or false"),
    ("churn_labels", {"churned": MISSING}, "churned: required"),
    # timestamps
    ("orders", {"timestamp": "2024-05-01T10:00:00"}, "not an RFC 3339 time with an offset"),
    ("orders", {"timestamp": "2024-05-01"}, "not an RFC 3339 time with an offset"),
    ("orders", {"timestamp": "2024-13-01T10:00:00Z"}, "not a valid date"),
    ("orders", {"timestamp": T_MS + 0.5}, "timestamp: expected an RFC 3339 string or integer epoch ms"),
    ("orders", {"timestamp": True}, "timestamp: a boolean is not a time"),
    ("orders", {"timestamp": -1}, "before 1970-01-01"),
    ("orders", {"timestamp": "1969-12-31T23:59:59Z"}, "before 1970-01-01"),
    ("orders", {"timestamp": NOW + SKEW_MS + 1}, "ahead of the wall clock"),
    ("orders", {"timestamp": format_time(NOW + SKEW_MS + 1000)}, "ahead of the wall clock"),
    ("orders", {"timestamp": MISSING}, "timestamp: required"),
    ("orders", {"timestamp": None}, "timestamp: must not be null"),
]


@pytest.mark.parametrize(("kind", "changes", "reason"), INVALID)
def test_invalid_records(kind: str, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse(kind, build(kind, **changes))
    assert reason in str(info.value)
    assert info.value.stage == "validate"


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        (None, True),
        (b"c1", True),
        ("c1", True),
        (b"c2", False),
        (b"", False),
        (b"C1", False),
        (b"\xff\xfe", False),
    ],
)
def test_key_must_equal_customer_id(key: bytes | str | None, ok: bool) -> None:
    obj = build("orders")
    if ok:
        assert parse("orders", obj, key=key).customer_id == "c1"
    else:
        with pytest.raises(ValidationError, match="differs from customer_id"):
            parse("orders", obj, key=key)


def test_future_skew_follows_the_setting() -> None:
    obj = build("orders", timestamp=NOW + 2 * 3_600_000)
    assert parse_event("orders", obj, now_ms=NOW, max_future_skew_hours=2).timestamp == NOW + 2 * 3_600_000
    with pytest.raises(ValidationError, match="more than 1 h ahead"):
        parse_event("orders", obj, now_ms=NOW, max_future_skew_hours=1)


def _padded(size: int) -> bytes:
    """A valid order whose JSON text is exactly ``size`` bytes (an unknown ``pad`` field fills it)."""
    skeleton = json.dumps({**BASE["orders"], "pad": ""}, separators=(",", ":")).encode()
    raw = json.dumps({**BASE["orders"], "pad": "x" * (size - len(skeleton))}, separators=(",", ":")).encode()
    assert len(raw) == size
    return raw


# (raw message value, expected: None = decodes fine, else text of the DecodeError)
DECODE = [
    (b'{"a": 1}', None),
    (_padded(MAX_MESSAGE_BYTES), None),
    (_padded(MAX_MESSAGE_BYTES + 1), "exceeds the 1 MiB limit"),
    (b'{"amount": NaN}', "NaN is not a valid JSON number"),
    (b'{"amount": Infinity}', "Infinity is not a valid JSON number"),
    (b'{"amount": -Infinity}', "-Infinity is not a valid JSON number"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"customer_id": "\xe9"}', "not UTF-8"),
    (b"[1, 2]", "expected a JSON object, got array"),
    (b'"text"', "expected a JSON object, got string"),
    (b"42", "expected a JSON object, got number"),
    (b"null", "expected a JSON object, got null"),
    (b"", "invalid JSON"),
    (b"{oops", "invalid JSON"),
    (b'{"a": 1} {"b": 2}', "invalid JSON: Extra data"),
    (b"[" * 100_000, "invalid JSON"),
    (None, "empty message"),
]


@pytest.mark.parametrize(
    ("raw", "error"), DECODE, ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None
)
def test_decode(raw: bytes | None, error: str | None) -> None:
    if error is None:
        assert isinstance(decode_json(raw), dict)
    else:
        with pytest.raises(DecodeError, match=error) as info:
            decode_json(raw)
        assert info.value.stage == "decode"


def test_exactly_one_mib_message_is_a_valid_event() -> None:
    event = parse("orders", decode_json(_padded(MAX_MESSAGE_BYTES)))
    assert event.order_id == "o1"


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        (BASE["orders"], "orders"),
        (BASE["support_tickets"], "support_tickets"),
        (BASE["churn_labels"], "churn_labels"),
        ({**BASE["customer_profiles"], "age": 30}, "customer_profiles"),
        ({**BASE["customer_profiles"], "email_verified": True}, "customer_profiles"),
        ({**BASE["customer_profiles"], "signup_date": T}, "customer_profiles"),
    ],
)
def test_infer_kind(obj: dict[str, Any], kind: str) -> None:
    assert infer_kind(obj) == kind


def test_infer_kind_rejects_records_without_a_telling_field() -> None:
    with pytest.raises(ValidationError, match="cannot tell the topic"):
        infer_kind(BASE["customer_profiles"])


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown input topic kind"):
        parse("refunds", build("orders"))


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "1970-01-01T00:00:00Z"), (T_MS, T), (T_MS + 5, "2024-05-01T10:00:00.005Z")],
)
def test_times_are_emitted_as_rfc3339_utc(ms: int, text: str) -> None:
    assert format_time(ms) == text
    assert parse("orders", build("orders", timestamp=text)).timestamp == ms


@pytest.mark.parametrize("key", [b"\xfe", b"\xfd", b"\xef\xbf\xbd\xff"])
def test_a_key_that_is_not_utf8_never_passes_for_the_replacement_character(key: bytes) -> None:
    """Decoded with replacement, b"\\xfe" and b"\\xfd" both read U+FFFD: a review's customer "\\ufffd" had
    three keys accepted, on two partitions, and two states."""
    obj = build("orders", customer_id="\ufffd")
    assert parse("orders", obj, key="\ufffd".encode()).customer_id == "\ufffd"
    with pytest.raises(ValidationError, match="differs from customer_id"):
        parse("orders", obj, key=key)

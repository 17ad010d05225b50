"""Hostile input through the real scoring worker: a corpus of malformed messages mixed with valid events.

Hypothesis strategies build the corpus: every malformed message starts from a valid event (with
unicode text, extra fields, every time format) and breaks the contract in one way — broken JSON,
non-UTF-8 bytes, wrong types, NaN and Infinity, payloads over 1 MiB and strings over their length
limit, deep nesting, missing fields (with extra ones), timestamps far in the future or before 1970,
negative amounts, values out of range, numbers past the upper bounds (huge floats, integers of
hundreds of digits: valid JSON the pipeline could not hold), a key that disagrees with ``customer_id``,
JSON that is not an object, an event sent to another event type's topic. The valid events use the same
strategies without the break. Examples are drawn with ``derandomize=True``: the same code gives the same
corpus (Hypothesis also tries literals it finds in the project's own modules, so changing those can
change the corpus).

The rules are :mod:`churnstream.events` (the spec): at generation every malformed message must be
rejected there, with a reason that names what the strategy broke, and every valid event accepted.
Through the worker, every malformed message must then reach ``dead_letter`` with that reason, its
stage, its coordinates and its original bytes; every valid event must be scored; the worker keeps
running and stops with exit status 0 on SIGTERM.

Two kinds of hostile input stop the worker today, so each has a small test of its own rather than a
place in the corpus (where one would hide every other finding): a message over 1 MiB whose dead letter
outgrows the producer's limit once JSON-escaped, and a lone UTF-16 surrogate escape (``"\\ud800"``) in
a string field.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from churnstream.errors import EventError, ValidationError
from churnstream.events import (
    KINDS,
    MAX_MESSAGE_BYTES,
    ORDER_STATUSES,
    decode_json,
    now_ms,
    parse_event,
    parse_time,
)
from churnstream.features.layout import partition_of
from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import make_producer
from churnstream.streams.topics import input_partitions
from tests.integration.conftest import (
    committed_everything,
    consume_all,
    produce_raw,
    start_worker,
    stop_worker,
    wait_until,
)
from tests.integration.test_scorer import scorer_settings, world  # noqa: F401 - fixtures used below

T = TypeVar("T")

MALFORMED, VALID = 1000, 300
KIB = 1024
CUSTOMERS = (*(f"c{i}" for i in range(36)), "kunde-ü", "客户-7", "emoji-🙂", 'O\'Brien "Q"', "x" * 64)
MARCH_2024 = (1_709_251_200_000, 1_711_843_200_000)  # 2024-03-01 .. 2024-03-31, UTC
YEAR_2100 = 4_102_444_800_000  # "far in the future" (a fixed bound: strategies must not read the clock)
REQUIRED = {
    "orders": ("event_id", "customer_id", "order_id", "timestamp", "amount"),
    "support_tickets": ("event_id", "customer_id", "ticket_id", "timestamp"),
    "customer_profiles": ("event_id", "customer_id", "timestamp"),
    "churn_labels": ("event_id", "customer_id", "timestamp", "churned"),
}
KNOWN_FIELDS = frozenset(
    {*(f for fields in REQUIRED.values() for f in fields), "items", "category", "status"}
    | {"resolution_time_hours", "satisfaction_score", "channel"}
    | {"signup_date", "age", "city", "email_verified", "phone_verified"}
)
SCORED_KINDS = ("orders", "support_tickets", "customer_profiles")  # a label event has no prediction


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the corpus: where it goes, its bytes, and what it is meant to break."""

    kind: str
    key: bytes | None
    value: bytes | None
    rule: str  # the contract rule it breaks ("" for a valid event)
    reason: str = ""  # a pattern the contract's reason for rejecting it must match (re.search)


# --- valid events -----------------------------------------------------------------------------------


def _text(min_size: int = 1, max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=max_size)  # any code point but surrogates


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text(0, 20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text(0, 8), inner, max_size=3),
    max_leaves=8,
)
extra_fields = st.dictionaries(_text(1, 12).filter(lambda k: k not in KNOWN_FIELDS), json_values, max_size=3)


def _utc(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


@st.composite
def times(draw: st.DrawFn, lo: int = MARCH_2024[0], hi: int = MARCH_2024[1]) -> str | int:
    """A time the contract accepts: RFC 3339 with ``Z`` or an offset (``T``, ``t`` or a space between
    date and time, with or without fractions), or integer epoch milliseconds."""
    ms = draw(st.integers(lo, hi))
    style = draw(st.sampled_from(("epoch", "Z", "offset", "fraction")))
    if style == "epoch":
        return ms
    minutes = draw(st.integers(-12 * 4, 14 * 4)) * 15
    local = _utc(ms).astimezone(timezone(timedelta(minutes=minutes if style == "offset" else 0)))
    text = local.isoformat(timespec="milliseconds" if style == "fraction" else "seconds")
    if style != "offset":
        text = text.replace("+00:00", draw(st.sampled_from(("Z", "z"))))
    return text.replace("T", draw(st.sampled_from(("T", "t", " "))))


@st.composite
def events(draw: st.DrawFn, kind: str, customers: tuple[str, ...] = CUSTOMERS) -> dict[str, Any]:
    """A valid event of topic ``kind``, optional fields drawn or left out, plus unknown extra fields."""
    obj: dict[str, Any] = {
        "event_id": draw(_text(1, 128)),
        "customer_id": draw(st.sampled_from(customers)),
        "timestamp": draw(times()),
    }
    maybe = draw(st.sets(st.sampled_from(sorted(KNOWN_FIELDS))))
    if kind == "orders":
        obj["order_id"] = draw(_text(1, 128))
        # up to the bound the whole pipeline can hold, the bound itself included
        obj["amount"] = draw(st.integers(0, 10**9) | st.floats(0, 1e9) | st.just(1e9))
        if "items" in maybe:
            obj["items"] = draw(st.none() | st.integers(1, 1000) | st.sampled_from((1.0, 2.0)))
        if "category" in maybe:
            obj["category"] = draw(st.none() | _text(0, 200))
        if "status" in maybe:
            obj["status"] = draw(st.none() | st.sampled_from(ORDER_STATUSES))
    elif kind == "support_tickets":
        obj["ticket_id"] = draw(_text(1, 128))
        if "resolution_time_hours" in maybe:
            obj["resolution_time_hours"] = draw(st.none() | st.floats(0, 1e6) | st.integers(0, 10**6))
        if "satisfaction_score" in maybe:
            obj["satisfaction_score"] = draw(st.none() | st.integers(1, 5))
        if "channel" in maybe:
            obj["channel"] = draw(st.none() | _text(0, 200))
    elif kind == "customer_profiles":
        if "signup_date" in maybe:
            obj["signup_date"] = draw(st.none() | times(0, MARCH_2024[1]))
        if "age" in maybe:
            obj["age"] = draw(st.none() | st.integers(0, 130))
        if "city" in maybe:
            obj["city"] = draw(st.none() | _text(0, 200))
        for name in ("email_verified", "phone_verified"):
            if name in maybe:
                obj[name] = draw(st.none() | st.booleans())
    else:
        obj["churned"] = draw(st.booleans())
    for name, value in draw(extra_fields).items():
        obj.setdefault(name, value)
    return obj


def is_time(text: str) -> bool:
    try:
        parse_time(text)
    except ValidationError:
        return False
    return True


def encode(obj: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")  # NaN/Infinity written as such


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[str, dict[str, Any], bytes | None, bool]:
    """(kind, event, key, ASCII-only JSON?) of a valid event; a key, when present, is the customer_id."""
    kind = draw(st.sampled_from(SCORED_KINDS))
    obj = draw(events(kind))
    key = draw(st.sampled_from((obj["customer_id"].encode(), obj["customer_id"].encode(), None)))
    return kind, obj, key, draw(st.booleans())


# --- malformed messages ---------------------------------------------------------------------------


@st.composite
def an_event(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> tuple[str, dict[str, Any], bytes]:
    kind = draw(st.sampled_from(kinds))
    obj = draw(events(kind))
    return kind, obj, obj["customer_id"].encode()


@st.composite
def broken_json(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    text = json.dumps(obj)
    how = draw(
        st.sampled_from(("truncated", "unquoted", "single quotes", "trailing comma", "twice", "comment"))
    )
    if how == "truncated":
        text = text[: draw(st.integers(1, len(text) - 1))]
    elif how == "unquoted":
        text = text.replace('"event_id"', "event_id", 1)
    elif how == "single quotes":
        text = text.replace('"', "'")
    elif how == "trailing comma":
        text = text[:-1] + ", }"
    elif how == "twice":
        text = text + text
    else:
        text = "// an event\n" + text
    return Message(kind, key, text.encode(), "broken JSON", "^invalid JSON: ")


@st.composite
def not_an_object(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    value = draw(
        st.sampled_from((None, b"", b"   ", b"null", b"[]", b"42", b'"an event"', b"true", encode([obj])))
        | _text(1, 40).filter(lambda s: not s.lstrip().startswith("{")).map(str.encode)
    )
    return Message(
        kind, key, value, "not a JSON object", "^(invalid JSON|expected a JSON object|empty message)"
    )


@st.composite
def not_utf8(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    raw = encode(obj)
    bad = draw(
        st.sampled_from((b"\xff", b"\xfe\xff", b"\xc3\x28", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8"))
    )
    how = draw(st.sampled_from(("inside", "prefix", "latin-1", "utf-16")))
    if how == "inside":  # in the middle of the event_id string
        at = raw.index(b'"event_id": "') + len(b'"event_id": "')
        value = raw[:at] + bad + raw[at:]
    elif how == "prefix":
        value = bad + raw
    elif how == "latin-1":
        value = json.dumps(dict(obj, customer_id="Müller-ß"), ensure_ascii=False).encode("latin-1", "replace")
    else:
        value = json.dumps(obj, ensure_ascii=False).encode("utf-16")
    return Message(kind, key, value, "not UTF-8", "^not UTF-8: ")


@st.composite
def not_finite(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    constant = draw(st.sampled_from((float("nan"), float("inf"), float("-inf"))))
    numeric = {
        "orders": ["amount", "items"],
        "support_tickets": ["resolution_time_hours", "satisfaction_score"],
    }
    field = draw(st.sampled_from([*numeric.get(kind, []), "timestamp", "an_extra_field"]))
    if draw(st.booleans()) and field in ("amount", "resolution_time_hours"):
        # a literal too large for a double parses as infinity without any NaN/Infinity token
        text = encode(dict(obj, **{field: 1.5})).replace(
            f'"{field}": 1.5'.encode(), f'"{field}": 1e999'.encode()
        )
        return Message(kind, key, text, "NaN/Infinity", f"^{field}: must be finite")
    obj[field] = constant
    return Message(kind, key, encode(obj), "NaN/Infinity", "is not a valid JSON number")


@st.composite
def wrong_type(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    strings = ["event_id", "customer_id", *(["order_id"] if kind == "orders" else [])]
    strings += ["ticket_id"] if kind == "support_tickets" else []
    numbers = {"orders": ["amount"], "support_tickets": ["resolution_time_hours"]}.get(kind, [])
    integers = {"orders": ["items"], "support_tickets": ["satisfaction_score"], "customer_profiles": ["age"]}
    booleans = {"customer_profiles": ["email_verified", "phone_verified"], "churn_labels": ["churned"]}
    texts = {"orders": ["category"], "support_tickets": ["channel"], "customer_profiles": ["city"]}
    times_ = ["timestamp", *(["signup_date"] if kind == "customer_profiles" else [])]
    containers = st.lists(st.integers(), max_size=2) | st.dictionaries(_text(1, 5), st.integers(), max_size=2)
    choices: list[tuple[str, st.SearchStrategy[Any]]] = [
        *(
            (f, st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | containers)
            for f in strings
        ),
        *((f, st.floats(0, 100).map(str) | st.booleans() | containers) for f in numbers),
        *((f, st.sampled_from((1.5, "3", True, False)) | containers) for f in integers.get(kind, [])),
        *((f, st.sampled_from((0, 1, "true", "yes")) | containers) for f in booleans.get(kind, [])),
        *((f, st.integers() | st.booleans() | containers) for f in texts.get(kind, [])),
        *(  # a whole number is epoch ms even written 1714557600000.0 (as JSON Schema reads it)
            (
                f,
                st.floats(0, 2e12, allow_nan=False).filter(lambda x: not x.is_integer())
                | st.booleans()
                | containers,
            )
            for f in times_
        ),
        *(
            (f, st.sampled_from(("done", "Completed", "COMPLETED", 3, True)) | containers)
            for f in (["status"] if kind == "orders" else [])
        ),
    ]
    field, values = draw(st.sampled_from(choices))
    obj[field] = draw(values)
    return Message(kind, key, encode(obj), "wrong type", f"^{field}: ")


@st.composite
def missing_fields(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    gone = draw(st.sets(st.sampled_from(REQUIRED[kind]), min_size=1))
    nulled = draw(st.booleans())
    for name in gone:
        if nulled:
            obj[name] = None
        else:
            del obj[name]
    obj.update(
        draw(
            st.dictionaries(
                _text(1, 12).filter(lambda k: k not in KNOWN_FIELDS), json_values, min_size=1, max_size=5
            )
        )
    )
    reason = ": must not be null" if nulled else ": required field is missing"
    return Message(kind, key, encode(obj), "missing fields (extra ones present)", reason)


@st.composite
def wrong_topic(draw: st.DrawFn) -> Message:
    """A valid event on the topic of another event type that needs fields it lacks."""
    kind, obj, key = draw(an_event(("orders", "support_tickets", "customer_profiles")))
    needs = {"orders": ("support_tickets", "churn_labels"), "support_tickets": ("orders", "churn_labels")}
    topic = draw(st.sampled_from(needs.get(kind, ("orders", "support_tickets", "churn_labels"))))
    return Message(
        topic, key, encode(obj), "sent to another event type's topic", ": required field is missing"
    )


@st.composite
def bad_times(draw: st.DrawFn, how: str) -> Message:
    kind, obj, key = draw(an_event())
    field = draw(
        st.sampled_from(("timestamp", "signup_date") if kind == "customer_profiles" else ("timestamp",))
    )
    day = 86_400_000
    if how == "future":
        obj[field] = draw(times(YEAR_2100, 253_402_300_799_000) | st.integers(YEAR_2100, 10**18))
        reason = "ahead of the wall clock"
    elif how == "before 1970":
        obj[field] = draw(times(-62_135_596_800_000 + day, -1))
        reason = "is before 1970-01-01"
    elif how == "no offset":
        obj[field] = draw(
            st.sampled_from(("2024-03-01T10:00:00", "2024-03-01", "2024-03-01 10:00", "10:00:00Z"))
        )
        reason = "is not an RFC 3339 time with an offset"
    else:
        obj[field] = draw(
            st.sampled_from(("2024-02-30T10:00:00Z", "2024-13-01T00:00:00Z", "2024-03-01T25:00:00Z"))
            | _text(1, 80).filter(lambda s: not is_time(s))
        )
        reason = ""
    return Message(kind, key, encode(obj), f"time {how}", f"^{field}: .*{reason}")


@st.composite
def negative_amount(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event(("orders",)))
    obj["amount"] = draw(st.floats(-1e9, -1e-9) | st.integers(-(10**9), -1) | st.just(-0.01))
    return Message(kind, key, encode(obj), "negative amount", "^amount: must be >= 0")


@st.composite
def too_large(draw: st.DrawFn) -> Message:
    """Finite JSON numbers past the contract's upper bounds: huge floats, integers of hundreds of digits."""
    kind, obj, key = draw(an_event(("orders", "support_tickets")))
    field = "amount" if kind == "orders" else "resolution_time_hours"
    top = 1e9 if kind == "orders" else 1e6
    if kind == "orders" and draw(st.booleans()):
        field, top = "items", 100_000
        obj[field] = draw(st.integers(100_001, 10**400))
    else:
        obj[field] = draw(st.floats(top * 1.000001, 1.7e308) | st.integers(int(top) + 1, 10**400))
    return Message(kind, key, encode(obj), "too large", f"^{field}: must be <= ")


@st.composite
def out_of_range(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event(("orders", "support_tickets", "customer_profiles")))
    bounds: dict[str, list[tuple[str, st.SearchStrategy[Any]]]] = {
        "orders": [
            ("items", st.integers(-(10**6), 0)),
            ("status", _text(1, 20).filter(lambda s: s not in ORDER_STATUSES)),
        ],
        "support_tickets": [
            ("resolution_time_hours", st.floats(-1e6, -1e-9) | st.integers(-(10**6), -1)),
            ("satisfaction_score", st.integers(-100, 0) | st.integers(6, 100)),
        ],
        "customer_profiles": [("age", st.integers(-(10**6), -1) | st.integers(131, 10**6))],
    }
    field, values = draw(st.sampled_from(bounds[kind]))
    obj[field] = draw(values)
    return Message(kind, key, encode(obj), "out of range", f"^{field}: must be ")


@st.composite
def too_long(draw: st.DrawFn) -> Message:
    """A string over its length limit (the message itself stays under 1 MiB)."""
    kind, obj, key = draw(an_event())
    limits = {"event_id": 128, "customer_id": 64, "order_id": 128, "ticket_id": 128}
    field = draw(st.sampled_from([f for f in limits if f in obj]))
    char = draw(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")))
    obj[field] = char * draw(st.integers(limits[field] + 1, 200_000))
    return Message(kind, key, encode(obj, ascii_only=False), "string too long", f"^{field}: length ")


@st.composite
def over_1_mib(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    size = draw(st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 256 * KIB))
    if draw(st.booleans()):
        # characters JSON does not escape, so the dead letter stays as large as the message
        obj["padding"] = draw(st.sampled_from("abcxyz0123456789-_ ")) * max(1, size - len(encode(obj)))
        value = encode(obj)
    else:  # not UTF-8 either (the dead letter carries it in base64)
        pattern = b"\xff" + bytes(draw(st.lists(st.integers(0, 255), max_size=63)))
        value = (pattern * (size // len(pattern) + 1))[:size]
    assert len(value) > MAX_MESSAGE_BYTES
    return Message(kind, key, value, "over 1 MiB", "exceeds the 1 MiB limit")


@st.composite
def deep_nesting(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    depth = draw(st.integers(2_000, 150_000))
    opening, closing = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
    nested = opening * depth + "1" + closing * depth
    where = draw(st.sampled_from(("whole message", "extra field", "required field")))
    if where == "whole message":
        return Message(kind, key, nested.encode(), "deep nesting", "nested too deeply|expected a JSON object")
    field = "an_extra_field" if where == "extra field" else "event_id"
    text = json.dumps(dict(obj, **{field: 0})).replace(f'"{field}": 0', f'"{field}": {nested}', 1)
    return Message(kind, key, text.encode(), "deep nesting", "nested too deeply")


@st.composite
def key_mismatch(draw: st.DrawFn) -> Message:
    kind, obj, key = draw(an_event())
    cid = obj["customer_id"]
    other = draw(
        st.sampled_from(CUSTOMERS).map(str.encode)
        | st.sampled_from((b"", cid.upper().encode(), (cid + " ").encode(), cid.encode() + b"\xff"))
        | _text(1, 70).map(str.encode)
        | st.binary(min_size=1, max_size=20)
    )
    if other.decode("utf-8", "replace") == cid:
        other = b"someone-else"
    return Message(
        kind, other, encode(obj), "key disagrees with customer_id", "^message key .* differs from customer_id"
    )


# Each rule's strategy and how many messages it contributes (a quota per rule, since Hypothesis picks
# neither the branches of one_of nor sampled values uniformly); fewer over 1 MiB: each is a mebibyte.
MALFORMED_QUOTAS: list[tuple[st.SearchStrategy[Message], int]] = [
    (broken_json(), 80),
    (not_an_object(), 60),
    (not_utf8(), 80),
    (not_finite(), 70),
    (wrong_type(), 110),
    (missing_fields(), 80),
    (wrong_topic(), 50),
    (bad_times("future"), 50),
    (bad_times("before 1970"), 50),
    (bad_times("no offset"), 40),
    (bad_times("not a date"), 40),
    (negative_amount(), 60),
    (out_of_range(), 60),
    (too_large(), 60),
    (too_long(), 50),
    (over_1_mib(), 40),
    (deep_nesting(), 60),
    (key_mismatch(), 80),
]


def draw_examples(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """``n`` examples of ``strategy``, the same on every run: Hypothesis with a derandomized seed, only
    its generate phase, no example database."""
    drawn: list[T] = []

    @hypothesis_settings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: T) -> None:
        drawn.append(example)

    collect()
    return drawn


def verdict(message: Message) -> tuple[str, str] | None:
    """``(stage, reason)`` when the contract rejects ``message``, None when it accepts it."""
    try:
        obj = decode_json(message.value)
        parse_event(message.kind, obj, key=message.key, now_ms=now_ms(), max_future_skew_hours=24)
    except EventError as exc:
        return exc.stage, str(exc)
    return None


def build_corpus() -> tuple[list[Message], list[Message]]:
    """(malformed, valid) messages, each checked against the spec; every rule is well represented."""
    bad = [m for strategy, quota in MALFORMED_QUOTAS for m in draw_examples(strategy, quota)]
    drawn = draw_examples(valid_events(), VALID)
    assert len(bad) >= MALFORMED and len(drawn) >= VALID, (len(bad), len(drawn))
    good = [
        Message(kind, key, encode(dict(obj, event_id=f"ok-{i}"), ascii_only), "")
        for i, (kind, obj, key, ascii_only) in enumerate(drawn)
    ]
    for m in bad:
        found = verdict(m)
        shown = repr(m.value[:300]) if m.value is not None else "null"
        assert found is not None, f"meant to break {m.rule!r}, but the contract accepts {shown}"
        assert re.search(m.reason, found[1]), (
            f"{m.rule}: the reason {found[1][:200]!r} does not match {m.reason!r}"
        )
    for m in good:
        assert verdict(m) is None, f"a valid event is rejected: {verdict(m)}: {m.value!r:.300}"
    rules = Counter(m.rule for m in bad)
    assert len(rules) == len(MALFORMED_QUOTAS) and min(rules.values()) >= 30, rules
    return bad, good


def original_bytes(letter: dict[str, Any]) -> bytes | None:
    if letter["value"] is None:
        return None
    if letter.get("value_encoding") == "base64":
        return base64.b64decode(letter["value"])
    return str(letter["value"]).encode("utf-8")


def run_worker_over(
    settings: Settings, tmp_path: Path, messages: list[Message], timeout: float = 120
) -> dict[tuple[str, int, int], Message]:
    """Produce ``messages`` (in order, per topic), run ``churnstream score`` until it has committed every
    input offset, check it is still running, stop it with SIGTERM (exit 0); returns messages by
    (topic, partition, offset)."""
    by_topic: dict[str, list[Message]] = {}
    for m in messages:
        by_topic.setdefault(getattr(settings.topics, m.kind), []).append(m)
    where: dict[tuple[str, int, int], Message] = {}
    for topic, batch in by_topic.items():
        for m, (partition, offset) in zip(
            batch, produce_raw(settings, topic, [(m.key, m.value) for m in batch]), strict=True
        ):
            where[(topic, partition, offset)] = m
    log_path = tmp_path / "worker.log"
    worker = start_worker(settings, log_path)
    try:
        try:
            wait_until(
                lambda: worker.poll() is not None or committed_everything(settings, settings.consumer_group),
                timeout,
                "the worker to get through every message",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; its log ends:\n{log_path.read_text(errors='replace')[-3000:]}"
            ) from None
        assert worker.poll() is None, f"the worker stopped:\n{log_path.read_text(errors='replace')[-3000:]}"
    finally:
        stop_worker(worker, log_path)
    return where


def test_a_thousand_malformed_messages_are_dead_lettered_and_valid_ones_scored(
    scorer_settings: Settings,  # noqa: F811 - the fixture imported above
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    settings = scorer_settings
    bad, valid = build_corpus()
    mixed = bad + valid
    random.Random(3).shuffle(mixed)

    where = run_worker_over(settings, tmp_path, mixed)

    letters = [
        orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter, timeout=60)
    ]
    assert len(letters) == len(bad), f"{len(letters)} dead letters for {len(bad)} malformed messages"
    expected = {coordinates: verdict(m) for coordinates, m in where.items() if m.rule}
    seen = set()
    for d in letters:
        coordinates = (d["source_topic"], d["partition"], d["offset"])
        assert coordinates in expected, f"a dead letter for no malformed message: {d}"[:500]
        assert coordinates not in seen, f"two dead letters for one message: {coordinates}"
        seen.add(coordinates)
        stage, reason = expected[coordinates]
        assert (d["stage"], d["error"]) == (stage, reason), (where[coordinates].rule, d["error"][:300])
        assert original_bytes(d) == where[coordinates].value, (
            f"not the original bytes: {where[coordinates].rule}"
        )
    stages = Counter(d["stage"] for d in letters)
    assert stages["decode"] > 200 and stages["validate"] > 400, stages

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    scored = Counter(p["event_id"] for p in predictions if p["trigger"] == "event")
    assert set(scored) == {json.loads(m.value or b"")["event_id"] for m in valid}
    assert max(scored.values()) == 1


def _poison_test(settings: Settings, tmp_path: Path, poison: list[Message], timeout: float = 60) -> None:
    """Valid events before and after ``poison`` (same customer, so the same partition); every message
    must be answered (scored or dead-lettered) and the worker must keep running."""
    cid = "c1"
    valid = []
    for i in range(20):
        obj = {"event_id": f"ok-{i}", "customer_id": cid, "order_id": f"o{i}", "amount": 5}
        obj["timestamp"] = MARCH_2024[0] + i * 3_600_000
        valid.append(Message("orders", cid.encode(), encode(obj), ""))
    run_worker_over(settings, tmp_path, valid[:10] + poison + valid[10:], timeout=timeout)
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    scored = {p["event_id"] for p in predictions if p["trigger"] == "event"}
    assert {f"ok-{i}" for i in range(20)} <= scored
    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    assert len(scored) + len(letters) == len(valid) + len(poison), (sorted(scored), letters)


def test_an_oversized_message_whose_dead_letter_outgrows_the_producer_limit_does_not_stop_the_worker(
    scorer_settings: Settings,  # noqa: F811
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """1.2 MiB of control characters: over the contract's 1 MiB (a decode dead letter), under the input
    topic's 2 MiB, but six times larger once its text is JSON-escaped into the dead letter."""
    head = b'{"event_id": "huge", "customer_id": "c1", "note": "'
    poison = Message("orders", b"c1", head + b"\x01" * (1200 * KIB) + b'"}', "over 1 MiB")
    _poison_test(scorer_settings, tmp_path, [poison])


def test_a_lone_surrogate_escape_in_a_string_field_does_not_stop_the_worker(
    scorer_settings: Settings,  # noqa: F811
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """``"\\ud800"`` is ASCII JSON that decodes to a string no UTF-8 encoder accepts."""
    base = {"customer_id": "c1", "order_id": "o", "timestamp": "2024-03-01T12:00:00Z", "amount": 1}
    poison = [
        Message("orders", b"c1", encode(dict(base, event_id="s-\ud800")), "surrogate"),
        Message("orders", b"c1", encode(dict(base, event_id="s-2", order_id="o-\udfff")), "surrogate"),
        Message("orders", None, encode(dict(base, event_id="s-3", customer_id="c-\ud83d")), "surrogate"),
    ]
    _poison_test(scorer_settings, tmp_path, poison)


def test_a_customer_kept_on_another_partition_than_murmur2_is_scored_found_and_forgotten(
    scorer_settings: Settings,  # noqa: F811
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A producer on librdkafka's default partitioner (CRC32) keeps each customer on one partition, as the
    contract asks, but not on the murmur2 one the readers looked on: the scorer scored the customer, and
    ``GET /customers/{id}``, ``churnstream features`` and ``forget`` answered that it was unknown (a
    review). Readers now find the customer on whichever partition holds it."""
    from churnstream.features.redis_store import RedisFeatureStore
    from churnstream.streams.feature_lookup import lookup

    settings = scorer_settings
    count = input_partitions(settings)
    assert count > 1
    cid = "crc-customer"
    away = (partition_of(cid, count) + 1) % count
    producer = make_producer(settings)
    for i in range(2):
        obj = {"event_id": f"crc-{i}", "customer_id": cid, "order_id": f"o{i}", "amount": 20}
        obj["timestamp"] = MARCH_2024[0] + i * 3_600_000
        producer.produce(settings.topics.orders, key=cid.encode(), value=encode(obj), partition=away)
    assert producer.flush(30) == 0
    run_worker_over(settings, tmp_path, [])

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    on_events = sorted(
        (p["event_id"], p["features"]["orders_total"]) for p in predictions if p["trigger"] == "event"
    )
    assert on_events == [("crc-0", 1), ("crc-1", 2)]
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    assert store.locate([cid]) == {cid: away}
    features = store.features(cid)
    assert features is not None and features["orders_total"] == 2
    found = lookup(store, cid, MARCH_2024[0] + 3_600_000)
    assert found is not None and found.partition == away and found.features["spent_total"] == 40.0
    assert store.forget(cid) and store.features(cid) is None
    assert not list(redis_client.scan_iter(f"*:c:{cid}"))


def test_a_huge_key_is_a_dead_letter_and_the_events_after_it_are_scored(
    scorer_settings: Settings,  # noqa: F811
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A review published an order with a 1.9 MiB key (the input topics take 2 MiB): its dead letter
    escaped the key to ~11 MiB of JSON, the topic refused it, and the worker retried for ever, scoring
    nothing on any partition while /health said ok."""
    settings = scorer_settings
    count = input_partitions(settings)
    assert count > 1
    producer = make_producer(settings)

    def order(customer: str) -> bytes:
        obj = {"event_id": f"{customer}-0", "customer_id": customer, "order_id": "o0", "amount": 20}
        obj["timestamp"] = MARCH_2024[0]
        return encode(obj)

    producer.produce(
        settings.topics.orders, key=b"\x01" * (1900 * 1024), value=order("huge-key"), partition=0
    )
    for p in range(count):  # one customer after it on every partition, the huge key's one too
        producer.produce(
            settings.topics.orders, key=f"after-{p}".encode(), value=order(f"after-{p}"), partition=p
        )
    assert producer.flush(30) == 0
    run_worker_over(settings, tmp_path, [])

    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    assert [json.loads(original_bytes(d) or b"")["event_id"] for d in letters] == ["huge-key-0"]
    huge = letters[0]
    assert huge["stage"] == "validate" and huge["key_truncated"] is True and len(huge["key"]) == 1024
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    scored = sorted(p["customer_id"] for p in predictions if p["trigger"] == "event")
    assert scored == sorted(f"after-{p}" for p in range(count))


def test_a_customer_past_the_most_events_one_may_hold_has_the_rest_refused(
    scorer_settings: Settings,  # noqa: F811
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """A bot at an order a second: each event's features read its whole log, and a review's worker fell
    from ~660 to ~40 events/s. Past MAX_RETAINED_EVENTS its events are dead letters naming the limit;
    every other customer is scored as before."""
    from churnstream.features.state import MAX_RETAINED_EVENTS

    settings = scorer_settings
    extra = 3
    messages = []
    for i in range(MAX_RETAINED_EVENTS + extra):
        obj = {"event_id": f"bot-{i}", "customer_id": "bot", "order_id": f"o{i}", "amount": 1}
        obj["timestamp"] = MARCH_2024[0] + i * 1000
        messages.append(Message("orders", b"bot", encode(obj), ""))
    human = {"event_id": "human-1", "customer_id": "human", "order_id": "h1", "amount": 30}
    human["timestamp"] = MARCH_2024[0] + (MAX_RETAINED_EVENTS + extra) * 1000
    run_worker_over(
        settings, tmp_path, [*messages, Message("orders", b"human", encode(human), "")], timeout=300
    )

    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    assert sorted(json.loads(original_bytes(d) or b"")["event_id"] for d in letters) == [
        f"bot-{MAX_RETAINED_EVENTS + i}" for i in range(extra)
    ]
    assert {d["stage"] for d in letters} == {"process"}
    assert all(f"the most one customer may hold ({MAX_RETAINED_EVENTS:,})" in d["error"] for d in letters)
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    scored = Counter(p["customer_id"] for p in predictions if p["trigger"] == "event")
    assert scored == {"bot": MAX_RETAINED_EVENTS, "human": 1}

"""Broken input messages end up in ``dead_letter`` with their coordinates; valid ones flow on."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from confluent_kafka import TopicPartition

from churnstream.events import MAX_MESSAGE_BYTES, now_ms, parse_time
from churnstream.settings import Settings, Topics
from churnstream.streams.ingest import Batch, DeadLetterWriter, InputReader
from tests.integration.conftest import consume_all, produce_raw

T = "2024-05-01T10:00:00Z"


def order(cid: str = "c1", **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"event_id": f"e-{uuid.uuid4().hex[:8]}", "customer_id": cid, "order_id": "o1"}
    obj.update({"timestamp": T, "amount": 10.0})
    obj.update(changes)
    return obj


def raw(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def padded(size: int) -> bytes:
    """A valid order of exactly ``size`` bytes."""
    skeleton = raw({**order(), "pad": ""})
    data = skeleton[:-2] + b"x" * (size - len(skeleton)) + b'"}'
    assert len(data) == size
    return data


# (topic kind, key, value, expected stage or None when valid, text the reason must contain)
CASES: list[tuple[str, bytes | None, bytes | None, str | None, str]] = [
    ("orders", b"c1", raw(order()), None, ""),
    ("orders", b"c1", b"{not json", "decode", "invalid JSON"),
    ("orders", b"c1", b"\xff\xfe\x00\x01binary", "decode", "not UTF-8"),
    ("orders", b"c1", b"[1, 2, 3]", "decode", "expected a JSON object, got array"),
    ("orders", b"c1", None, "decode", "empty message"),
    ("orders", b"c1", b'{"event_id":"e","customer_id":"c1","amount":NaN}', "decode", "NaN"),
    ("orders", b"c2", raw(order("c2")), None, ""),
    ("orders", b"someone-else", raw(order("c1")), "validate", "differs from customer_id"),
    ("orders", b"c1", raw(order(amount=-1)), "validate", "amount: must be >= 0"),
    ("orders", b"c1", raw(order(amount="12")), "validate", "amount: expected a number"),
    ("orders", b"c1", raw(order(items=0)), "validate", "items: must be >= 1"),
    ("orders", b"c1", raw(order(status="lost")), "validate", "status: must be one of"),
    ("orders", b"c1", raw(order(timestamp="2024-05-01T10:00:00")), "validate", "RFC 3339"),
    ("orders", b"c1", raw(order(timestamp=now_ms() + 48 * 3_600_000)), "validate", "ahead of the wall clock"),
    ("orders", b"c1", raw(order(timestamp=-5)), "validate", "before 1970"),
    (
        "orders",
        b"c1",
        raw({k: v for k, v in order().items() if k != "event_id"}),
        "validate",
        "event_id: required",
    ),
    ("orders", None, raw(order("c3")), None, ""),
    ("orders", b"c1", padded(MAX_MESSAGE_BYTES), None, ""),
    ("orders", b"c1", padded(MAX_MESSAGE_BYTES + 1), "decode", "exceeds the 1 MiB limit"),
    (
        "support_tickets",
        b"c1",
        raw(
            {"event_id": "t", "customer_id": "c1", "ticket_id": "k", "timestamp": T, "satisfaction_score": 3}
        ),
        None,
        "",
    ),
    (
        "support_tickets",
        b"c1",
        raw(
            {"event_id": "t", "customer_id": "c1", "ticket_id": "k", "timestamp": T, "satisfaction_score": 6}
        ),
        "validate",
        "satisfaction_score: must be 1..5",
    ),
    (
        "support_tickets",
        b"c1",
        raw({"event_id": "t", "customer_id": "c1", "timestamp": T}),
        "validate",
        "ticket_id",
    ),
    (
        "customer_profiles",
        b"c1",
        raw({"event_id": "p", "customer_id": "c1", "timestamp": T, "age": 40}),
        None,
        "",
    ),
    (
        "customer_profiles",
        b"c1",
        raw({"event_id": "p", "customer_id": "c1", "timestamp": T, "age": 131}),
        "validate",
        "age",
    ),
    (
        "churn_labels",
        b"c1",
        raw({"event_id": "l", "customer_id": "c1", "timestamp": T, "churned": False}),
        None,
        "",
    ),
    (
        "churn_labels",
        b"c1",
        raw({"event_id": "l", "customer_id": "c1", "timestamp": T, "churned": "no"}),
        "validate",
        "churned",
    ),
    ("orders", b"c1", raw(order(amount=99.5)), None, ""),
]


def read_everything(
    reader: InputReader, writer: DeadLetterWriter, total: int, timeout: float = 60.0
) -> Batch:
    """Run the worker loop (poll, dead-letter, flush, commit) until ``total`` messages were read."""
    seen = Batch()
    deadline = time.monotonic() + timeout
    while seen.size < total:
        assert time.monotonic() < deadline, f"read only {seen.size} of {total} messages in {timeout:g} s"
        batch = reader.poll_batch(max_messages=10, timeout=0.5)
        writer.write_all(batch.dead_letters)
        writer.flush()
        reader.commit(batch.offsets)
        seen.events += batch.events
        seen.dead_letters += batch.dead_letters
        seen.offsets.update(batch.offsets)
    return seen


def test_every_broken_message_is_dead_lettered_and_every_valid_one_comes_through(
    settings: Settings, topics: Topics
) -> None:
    started = now_ms() - 1000
    produced: list[tuple[str, int, int, bytes | None, bytes | None, str | None, str]] = []
    for kind in sorted({case[0] for case in CASES}):
        cases = [case for case in CASES if case[0] == kind]
        topic = settings.topic_prefix + kind
        coordinates = produce_raw(settings, topic, [(key, value) for _, key, value, _, _ in cases])
        for (_, key, value, stage, reason), (partition, offset) in zip(cases, coordinates, strict=True):
            produced.append((topic, partition, offset, key, value, stage, reason))
    invalid = [p for p in produced if p[5] is not None]
    valid = [p for p in produced if p[5] is None]

    reader = InputReader(settings=settings, group=f"test-{uuid.uuid4().hex[:8]}")
    writer = DeadLetterWriter(settings=settings)
    try:
        seen = read_everything(reader, writer, total=len(produced))
        parts = [TopicPartition(t, p) for (t, p) in seen.offsets]
        committed = {
            (tp.topic, tp.partition): tp.offset for tp in reader.consumer.committed(parts, timeout=10)
        }
    finally:
        reader.close()

    assert seen.size == len(produced)
    assert committed == seen.offsets
    # valid messages became typed events with their coordinates
    got = {(w.topic, w.partition, w.offset): (event, w.key) for event, w in seen.events}
    assert set(got) == {(t, p, o) for t, p, o, *_ in valid}
    for topic, partition, offset, key, value, _, _ in valid:
        event, got_key = got[(topic, partition, offset)]
        assert event.kind == settings.topics.kind_of(topic)
        assert event.event_id == json.loads(value or b"")["event_id"]
        assert got_key == key

    letters = consume_all(settings, topics.dead_letter, expected=len(invalid))
    assert len(letters) == len(invalid)
    by_source = {}
    for message in letters:
        record = json.loads(message.value())
        by_source[(record["source_topic"], record["partition"], record["offset"])] = (message.key(), record)
    assert set(by_source) == {(t, p, o) for t, p, o, *_ in invalid}
    for topic, partition, offset, key, value, stage, reason in invalid:
        letter_key, record = by_source[(topic, partition, offset)]
        where = f"{topic}@{partition}:{offset}"
        assert record["stage"] == stage, where
        assert reason in record["error"], (where, record["error"])
        assert letter_key == key, where
        assert record["key"] == (key.decode() if key is not None else None)
        if value is None:
            assert record["value"] is None
        elif record.get("value_encoding") == "base64":
            assert base64.b64decode(record["value"]) == value, where
            assert stage == "decode" and "not UTF-8" in record["error"]
        else:
            assert record["value"].encode("utf-8") == value, where
        assert started <= parse_time(record["failed_at"]) <= now_ms(), where
        assert record["failed_at"].endswith("Z")


def test_non_utf8_value_is_kept_as_base64(settings: Settings, topics: Topics) -> None:
    value = bytes(range(256))
    [(partition, offset)] = produce_raw(settings, topics.orders, [(b"c9", value)])
    reader = InputReader(settings=settings, group=f"test-{uuid.uuid4().hex[:8]}")
    writer = DeadLetterWriter(settings=settings)
    try:
        seen = read_everything(reader, writer, total=1)
    finally:
        reader.close()

    assert seen.events == []
    [message] = consume_all(settings, topics.dead_letter, expected=1)
    record = json.loads(message.value())
    assert record["value_encoding"] == "base64"
    assert base64.b64decode(record["value"]) == value
    assert (record["source_topic"], record["partition"], record["offset"]) == (
        topics.orders,
        partition,
        offset,
    )
    assert record["stage"] == "decode"

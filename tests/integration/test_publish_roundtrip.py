"""``churnstream publish`` against the real broker: what goes in comes out byte for byte, keyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from churnstream.errors import InfraError
from churnstream.events import KINDS, infer_kind
from churnstream.settings import Settings, Topics
from churnstream.streams.publish import publish_file
from tests.integration.conftest import consume_all

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "examples" / "events.jsonl"
INVALID = ROOT / "examples" / "invalid_events.jsonl"
ORDERS_CSV = ROOT / "examples" / "orders.csv"


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``churnstream`` command, with this test's settings in its environment."""
    exe = Path(sys.executable).with_name("churnstream")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "churnstream.cli"]
    env = dict(os.environ)
    env.update(
        {
            "CHURN_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "CHURN_REDIS_URL": settings.redis_url,
            "CHURN_TOPIC_PREFIX": settings.topic_prefix,
        }
    )
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def expected_by_kind(path: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for line in path.read_bytes().splitlines():
        if line.strip():
            out[infer_kind(json.loads(line))].append(line)
    return out


def test_cli_publishes_every_event_type_byte_identical_and_keyed(settings: Settings, topics: Topics) -> None:
    expected = expected_by_kind(EVENTS)
    assert set(expected) == set(KINDS), "the sample file must cover every event type"

    proc = run_cli(settings, "publish", str(EVENTS))

    assert proc.returncode == 0, proc.stderr
    total = sum(len(v) for v in expected.values())
    assert f"{total} records read, {total} delivered" in proc.stdout
    assert "invalid (not sent): 0" in proc.stdout
    for kind, lines in expected.items():
        messages = consume_all(settings, settings.topic_prefix + kind, expected=len(lines))
        assert sorted(m.value() for m in messages) == sorted(lines)
        for m in messages:
            assert m.key() == json.loads(m.value())["customer_id"].encode("utf-8")
        # one customer -> one partition, in file order
        partitions: dict[bytes, set[int]] = defaultdict(set)
        for m in messages:
            partitions[m.key()].add(m.partition())
        assert all(len(p) == 1 for p in partitions.values())
        by_customer = defaultdict(list)
        for m in messages:
            by_customer[m.key()].append(m.value())
        for key, values in by_customer.items():
            in_file = [line for line in lines if json.loads(line)["customer_id"].encode() == key]
            assert values == in_file


def test_invalid_lines_are_reported_not_sent_and_the_valid_ones_delivered(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    valid = [line for line in EVENTS.read_bytes().splitlines() if line.strip()][:20]
    invalid = [line for line in INVALID.read_bytes().splitlines() if line.strip()]
    mixed = tmp_path / "mixed.jsonl"
    lines: list[bytes] = []
    for i, line in enumerate(valid):
        lines.append(line)
        if i < len(invalid):
            lines.append(invalid[i])
    mixed.write_bytes(b"\n".join(lines) + b"\n")
    invalid_numbers = [n for n, line in enumerate(lines, start=1) if line in invalid]

    proc = run_cli(settings, "publish", str(mixed))

    assert proc.returncode == 1
    assert f"invalid (not sent): {len(invalid)}" in proc.stdout
    assert f"{len(lines)} records read, {len(valid)} delivered" in proc.stdout
    reported = [
        int(line.split(":")[0].split()[1]) for line in proc.stderr.splitlines() if line.startswith("line ")
    ]
    assert reported == invalid_numbers
    assert "line 2: amount: must be >= 0, got -5" in proc.stderr

    received = []
    for kind in KINDS:
        received += [m.value() for m in consume_all(settings, settings.topic_prefix + kind)]
    assert sorted(received) == sorted(valid)


def test_publish_file_function_counts_per_topic(settings: Settings, topics: Topics) -> None:
    result = publish_file(EVENTS, settings, progress=False)

    expected = expected_by_kind(EVENTS)
    assert result.ok
    assert result.invalid == 0 and result.failed == 0
    assert result.sent == result.delivered == sum(len(v) for v in expected.values())
    assert dict(result.per_topic) == {settings.topic_prefix + k: len(v) for k, v in expected.items()}


def test_csv_rows_become_json_objects(settings: Settings, topics: Topics) -> None:
    result = publish_file(ORDERS_CSV, settings, progress=False)

    assert result.ok and result.sent == 3
    messages = consume_all(settings, topics.orders, expected=3)
    objects = {json.loads(m.value())["event_id"]: (m.key(), json.loads(m.value())) for m in messages}
    key, first = objects["csv-0001"]
    assert key == b"00123"
    assert first == {
        "event_id": "csv-0001",
        "customer_id": "00123",
        "order_id": "O-9001",
        "timestamp": "2024-04-01T10:00:00Z",
        "amount": 19.99,
        "items": 1,
        "category": "books",
        "status": "completed",
    }
    assert objects["csv-0002"][1]["timestamp"] == 1714557600000
    assert objects["csv-0002"][1]["category"] is None
    assert objects["csv-0003"][1]["items"] is None and objects["csv-0003"][1]["status"] is None


def test_forced_topic_validates_against_that_topic(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    orders_only = tmp_path / "orders.jsonl"
    orders_only.write_bytes(b"\n".join(expected_by_kind(EVENTS)["orders"][:5]) + b"\n")

    as_orders = publish_file(orders_only, settings, topic="orders", progress=False)
    as_tickets = publish_file(orders_only, settings, topic="support_tickets", progress=False)

    assert as_orders.ok and as_orders.sent == 5
    assert as_tickets.invalid == 5 and as_tickets.sent == 0
    assert all("ticket_id: required" in reason for _, reason in as_tickets.invalid_lines)
    assert len(consume_all(settings, topics.support_tickets)) == 0


def test_missing_topics_fail_with_a_clear_message(settings: Settings) -> None:
    with pytest.raises(InfraError, match="churnstream topics create"):
        publish_file(EVENTS, settings, progress=False)


def test_a_csv_saved_by_excel_is_read_and_a_row_that_is_not_utf8_is_an_invalid_record(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    """Excel's "CSV UTF-8" starts with a byte-order mark; a row typed in another encoding is one bad
    record, named by its line, not the end of the file."""
    rows = ORDERS_CSV.read_bytes().splitlines(keepends=True)
    latin = "csv-0004,00124,O-9004,2024-04-02T10:00:00Z,5.00,1,Café,completed\r\n".encode("latin-1")
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(rows[:2]) + latin + b"".join(rows[2:]))

    result = publish_file(path, settings, progress=False)

    assert result.sent == 3 and result.invalid == 1 and not result.ok
    ((line, reason),) = result.invalid_lines
    assert line == 3 and reason.startswith("not UTF-8"), reason
    messages = consume_all(settings, topics.orders, expected=3)
    assert sorted(json.loads(m.value())["event_id"] for m in messages) == ["csv-0001", "csv-0002", "csv-0003"]


def test_several_files_are_published_as_one_history_and_a_bad_line_names_its_file(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    """``churnstream publish orders.jsonl tickets.jsonl``: every valid record of both delivered to its
    topic (in event-time order across the files: tests/unit/test_publish_files.py), an invalid one
    reported with its file and line."""
    expected = expected_by_kind(EVENTS)
    orders, tickets = tmp_path / "orders.jsonl", tmp_path / "tickets.jsonl"
    orders.write_bytes(b"\n".join(expected["orders"]) + b"\n")
    tickets.write_bytes(b"\n".join([*expected["support_tickets"], b'{"event_id": "x"}']) + b"\n")

    proc = run_cli(settings, "publish", str(orders), str(tickets))

    assert proc.returncode == 1, proc.stderr  # the invalid record
    sent = len(expected["orders"]) + len(expected["support_tickets"])
    assert f"{sent + 1} records read, {sent} delivered" in proc.stdout
    assert f"{tickets} line {len(expected['support_tickets']) + 1}: " in proc.stderr
    for kind in ("orders", "support_tickets"):
        messages = consume_all(settings, settings.topic_prefix + kind, expected=len(expected[kind]))
        assert sorted(m.value() for m in messages) == sorted(expected[kind])

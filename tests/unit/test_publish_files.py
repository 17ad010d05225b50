"""How ``churnstream publish`` reads its files, before anything reaches Kafka (the round trip through a real
broker is tests/integration/test_publish_roundtrip.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from churnstream.events import decode_json, infer_kind, parse_event
from churnstream.streams.publish import _csv_rows, _json_lines

PROFILE = {
    "event_id": "p1",
    "customer_id": "C1",
    "timestamp": "2024-05-01T10:00:00Z",
    "signup_date": "2024-01-01T00:00:00Z",
}


def _parsed(payload: bytes) -> object:
    obj = decode_json(payload)
    return parse_event(infer_kind(obj), obj)


def test_a_json_lines_file_saved_with_a_byte_order_mark_reads_its_first_record() -> None:
    """Before: line 1 was 'invalid JSON: Expecting value at line 1 column 1' (the CSV reader already
    dropped the mark)."""
    data = (
        b"\xef\xbb\xbf"
        + json.dumps(PROFILE).encode()
        + b"\n"
        + json.dumps(dict(PROFILE, event_id="p2")).encode()
    )
    lines = list(_json_lines(io.BytesIO(data)))
    assert [n for n, _, _ in lines] == [1, 2]
    assert [_parsed(payload).event_id for _, payload, _ in lines] == ["p1", "p2"]  # type: ignore[attr-defined]


def test_a_csv_signup_date_in_epoch_milliseconds_is_a_time_as_the_timestamp_is() -> None:
    """Before, ``signup_date`` stayed text in CSV, so '1704067200000' was refused as 'not an RFC 3339 time
    ... or integer epoch milliseconds', while the ``timestamp`` column beside it was accepted."""
    data = b"event_id,customer_id,timestamp,signup_date\np1,00123,1714557600000,1704067200000\n"
    ((_, payload, _),) = list(_csv_rows(io.BytesIO(data)))
    event = _parsed(payload)
    assert event.customer_id == "00123"  # type: ignore[attr-defined]
    assert event.fields["signup_date"] == 1704067200000  # type: ignore[attr-defined]


class _RecordingProducer:
    """What ``publish_files`` hands the producer, in its order (no broker: the order is the question)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def produce(self, topic: str, *, value: bytes, key: bytes, on_delivery: object) -> None:
        self.sent.append((topic, json.loads(value)["timestamp"]))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


def test_several_files_are_sent_in_event_time_order_across_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history's topics published together go out as it happened: a scorer reading them meanwhile merges
    its topics by event time only over what is on them, so a file sent whole after another would find its
    customers' histories folded past its events (dead letters). One file's records of one instant keep
    their order."""
    from churnstream.settings import Settings
    from churnstream.streams import publish

    producer = _RecordingProducer()
    monkeypatch.setattr(publish, "make_producer", lambda settings, **kw: producer)
    monkeypatch.setattr(publish, "existing_topics", lambda settings: set(settings.topics.inputs))
    day = 86_400_000
    orders = [{"order_id": f"o{d}", "amount": 5.0, "timestamp": d * day} for d in (1, 3, 5, 5)]
    tickets = [{"ticket_id": f"t{d}", "timestamp": d * day} for d in (2, 5, 4)]  # one out of order
    for name, rows in (("orders", orders), ("tickets", tickets)):
        lines = [json.dumps({"event_id": f"{name}{i}", "customer_id": "c", **r}) for i, r in enumerate(rows)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")

    result = publish.publish_files(
        [tmp_path / "orders.jsonl", tmp_path / "tickets.jsonl"], Settings(), progress=False
    )

    assert result.ok and result.sent == 7
    assert [(topic, t // day) for topic, t in producer.sent] == [
        ("orders", 1), ("support_tickets", 2), ("orders", 3), ("support_tickets", 4),
        ("orders", 5), ("orders", 5), ("support_tickets", 5),
    ]  # fmt: skip

"""How ``churnstream publish`` reads its files, before anything reaches Kafka (the round trip through a real
broker is tests/integration/test_publish_roundtrip.py)."""

from __future__ import annotations

import io
import json

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

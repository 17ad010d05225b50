"""The events the demo publishes: the CDNOW data set in event-time order, sampled, split into history and
replay, cut into chunks of event time, plus the broken messages of a careless producer."""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

from churnstream.events import format_time, parse_time
from churnstream.settings import Settings
from churnstream.streams.demo.config import EVENT_FILES


@dataclass(slots=True)
class Events:
    """Every event line of the data set with its event time and base topic, in event-time order."""

    times: list[int]
    kinds: list[str]
    lines: list[bytes]
    customers: int

    def split(self, at: int) -> int:
        """Index of the first event at or after ``at``."""
        return bisect.bisect_left(self.times, at)


def load_events(directory: Path, *, customers: int | None, seed: int) -> Events:
    """Read the event files of ``directory``; keep a seeded sample of ``customers`` customers if given."""
    rows: list[tuple[int, int, str, bytes]] = []
    seen: set[str] = set()
    for rank, kind in enumerate(EVENT_FILES):
        path = directory / f"{kind}.jsonl"
        with path.open("rb") as handle:
            for line in handle:
                if not line.strip():
                    continue
                obj = orjson.loads(line)
                seen.add(obj["customer_id"])
                rows.append((parse_time(obj["timestamp"]), rank, obj["customer_id"], line.rstrip(b"\n")))
    keep: set[str] | None = None
    if customers is not None and customers < len(seen):
        keep = set(sorted(seen, key=lambda c: zlib.crc32(f"{seed}:{c}".encode()))[:customers])
        rows = [r for r in rows if r[2] in keep]
    # Stable by time: a profile (rank 0) precedes the first order it describes at the same instant.
    rows.sort(key=lambda r: (r[0], r[1]))
    return Events(
        times=[r[0] for r in rows],
        kinds=[EVENT_FILES[r[1]] for r in rows],
        lines=[r[3] for r in rows],
        customers=len(keep) if keep is not None else len(seen),
    )


def write_event_files(events: Events, directory: Path) -> None:
    """One ``<kind>.jsonl`` per topic (the layout ``churnstream train --events`` reads)."""
    directory.mkdir(parents=True, exist_ok=True)
    handles = {kind: (directory / f"{kind}.jsonl").open("wb") for kind in EVENT_FILES}
    try:
        for kind, line in zip(events.kinds, events.lines, strict=True):
            handles[kind].write(line + b"\n")
    finally:
        for handle in handles.values():
            handle.close()


def write_chunks(
    events: Events, lo: int, hi: int, directory: Path, *, chunk_ms: int
) -> list[tuple[Path, int, int]]:
    """Events ``lo..hi`` as JSON-lines files of ``chunk_ms`` of event time each, all topics merged in
    event-time order; returns ``(path, events, first event time)`` per file."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks: list[tuple[Path, int, int]] = []
    i = lo
    while i < hi:
        start = events.times[i]
        j = i
        while j < hi and events.times[j] < start + chunk_ms:
            j += 1
        path = directory / f"{len(chunks):04d}-{format_time(start)[:10]}.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in events.lines[i:j]))
        chunks.append((path, j - i, start))
        i = j
    return chunks


def broken_messages(customer_id: str, at: int) -> list[tuple[str, bytes | None, bytes]]:
    """``(base topic, key, value)`` of messages a careless producer might send; each breaks one rule."""
    ts = format_time(at)
    cid = customer_id.encode()
    order = {"event_id": "demo-bad-1", "customer_id": customer_id, "order_id": "demo-bad-o1", "timestamp": ts}
    return [
        ("orders", cid, orjson.dumps({**order, "amount": -5.0})),
        ("orders", cid, orjson.dumps({**order, "event_id": "demo-bad-2", "amount": "12.50"})),
        ("orders", cid, orjson.dumps({**order, "event_id": "demo-bad-3", "timestamp": ts[:10] + " 10:00"})),
        ("support_tickets", cid, b"ticket #4711: customer called, very angry"),
    ]


def send_broken(settings: Settings, line: bytes, at: int) -> int:
    """A careless producer (no validation) sends :func:`broken_messages` about the customer of the event
    ``line``; they must become dead letters. Returns how many it sent."""
    from churnstream.streams.kafka import DeliveryTracker, make_producer

    customer = orjson.loads(line)["customer_id"]
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    messages = broken_messages(customer, at)
    for kind, key, value in messages:
        producer.produce(settings.topic_prefix + kind, value=value, key=key, on_delivery=tracker.on_delivery)
    tracker.flush_or_raise(producer)
    return len(messages)

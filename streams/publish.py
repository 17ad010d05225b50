"""``churnstream publish FILE``: validate a file of events and publish it to the input topics.

JSON lines are published byte for byte (the line without its line ending); CSV rows become JSON objects
(numbers where a cell is a number, empty cells null, ``true``/``false`` booleans; identifier and text
columns of the contract stay strings). Each record is keyed by its ``customer_id`` and goes to the topic
``--topic`` names or, without it, the one :func:`~churnstream.events.infer_kind` reads from its fields.
Records that break the contract are not sent; they are reported with their line number and reason.

Several files are published as one history: their valid records are sent in event-time order across the
files (a stable sort: a file's records of one instant keep their order). The scorer merges its topics by
event time only over what is already on them, so a history loaded one topic after another while it runs
finds the later topics' events older than the customers' retained history (see the README's "Backfills
and live events").
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from churnstream.errors import ConfigError, EventError, InfraError
from churnstream.events import KINDS, decode_json, infer_kind, now_ms, parse_event
from churnstream.settings import Settings
from churnstream.streams.kafka import DeliveryTracker, flush, make_producer
from churnstream.streams.topics import existing_topics

SHOW_INVALID = 20
# Contract fields that are text even when a CSV cell looks like a number (e.g. customer_id "00123").
_TEXT_FIELDS = frozenset(
    {
        "event_id",
        "customer_id",
        "order_id",
        "ticket_id",
        "category",
        "status",
        "channel",
        "city",
    }
)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(slots=True)
class PublishResult:
    """What :func:`publish_file` did; ``ok`` when every record was valid and delivered."""

    records: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    invalid: int = 0
    per_topic: Counter[str] = field(default_factory=Counter)
    invalid_lines: list[tuple[int, str]] = field(default_factory=list)
    invalid_files: list[str] = field(default_factory=list)  # the file of each of invalid_lines
    delivery_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.failed == 0 and self.delivered == self.sent

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def csv_value(name: str, cell: str | None) -> Any:
    """The JSON value of one CSV cell.

    >>> csv_value("amount", "12.5"), csv_value("items", "2"), csv_value("age", "")
    (12.5, 2, None)
    >>> csv_value("churned", "True"), csv_value("churned", "false")
    (True, False)
    >>> csv_value("customer_id", "00123"), csv_value("amount", "NaN")
    ('00123', 'NaN')
    """
    if cell is None or cell == "":
        return None
    if name in _TEXT_FIELDS:
        return cell
    lowered = cell.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    text = cell.strip()
    if _INTEGER.match(text):
        return int(text)
    if _NUMBER.match(text):
        return float(text)
    return cell


def _json_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip(b"\r\n")
        if number == 1 and line.startswith(codecs.BOM_UTF8):  # saved by an editor that marks UTF-8
            line = line[len(codecs.BOM_UTF8) :]
        yield number, line, len(raw)


def _csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, bytes, int]]:
    # utf-8-sig: the byte-order mark of Excel's "CSV UTF-8" is not part of the first column's name.
    # surrogateescape: a row that is not UTF-8 keeps its bytes, so it is an invalid record with its line
    # number (as a JSON line would be), not an error that stops the file halfway.
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(text)
    for row in reader:
        obj = {name: csv_value(name, cell) for name, cell in row.items() if name is not None}
        payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        raw = payload.encode("utf-8", "surrogateescape")
        yield reader.line_num, raw, len(raw)


def _resolve_topic(settings: Settings, topic: str | None) -> str | None:
    """The kind named by ``--topic`` (a base name like ``orders`` or a full, prefixed name)."""
    if topic is None:
        return None
    kind = settings.topics.kind_of(topic)
    if kind in KINDS:
        return kind
    raise ConfigError(f"--topic {topic!r} is not an input topic; use one of {', '.join(KINDS)}")


def _open(source: str) -> tuple[IO[bytes], int | None]:
    """The byte stream of ``source`` (``-``: stdin) and its size when known; :class:`ConfigError` when it
    cannot be read (a typo in a path is not a network problem)."""
    if source == "-":
        return sys.stdin.buffer, None
    if Path(source).is_dir():
        raise ConfigError(f"{source} is a directory; give a .jsonl or .csv file of events")
    try:
        stream = open(source, "rb")  # noqa: SIM115 - closed by publish_files
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from None
    return stream, Path(source).stat().st_size


def publish_file(
    path: str | Path, settings: Settings, topic: str | None = None, *, progress: bool | None = None
) -> PublishResult:
    """Validate and publish every record of ``path`` (``-`` = JSON lines on stdin); see the module docstring.

    Raises :class:`InfraError` when Kafka does not answer or a needed topic does not exist; invalid records
    and failed deliveries are counted in the result, not raised.
    """
    return publish_files([path], settings, topic, progress=progress)


def publish_files(
    paths: list[str | Path], settings: Settings, topic: str | None = None, *, progress: bool | None = None
) -> PublishResult:
    """:func:`publish_file` of several files as one history: every file is read and checked first, then
    the valid records are sent in event-time order across the files (one file: as it is read)."""
    forced_kind = _resolve_topic(settings, topic)
    sources = [str(path) for path in paths]
    if "-" in sources and len(sources) > 1:
        raise ConfigError("'-' (stdin) can be published only alone")
    streams: list[IO[bytes]] = []
    try:
        totals = []
        for source in sources:
            stream, size = _open(source)
            streams.append(stream)
            totals.append(size)
        needed = [f"{settings.topic_prefix}{forced_kind}"] if forced_kind else list(settings.topics.inputs)
        have = existing_topics(settings)
        missing = [name for name in needed if name not in have]
        if missing:
            raise InfraError(
                f"topic(s) {', '.join(missing)} do not exist; create them with: churnstream topics create"
            )
        total = None if None in totals else sum(t for t in totals if t is not None)
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="publish", file=sys.stderr, disable=not show)
        try:
            return _publish(sources, streams, settings, forced_kind, bar)
        finally:
            bar.close()
    finally:
        for stream in streams:
            if stream is not sys.stdin.buffer:
                stream.close()


def _publish(
    sources: list[str], streams: list[IO[bytes]], settings: Settings, forced_kind: str | None, bar: Any
) -> PublishResult:
    result = PublishResult()
    tracker = DeliveryTracker()
    # Only failures call back (a Python callback per acked message costs ~10% of the throughput); after
    # flush() every sent message has either been acknowledged or reported as failed.
    producer = make_producer(settings, **{"delivery.report.only.error": True})
    prefix = settings.topic_prefix
    skew = settings.max_future_skew_hours
    started = time.perf_counter()

    def valid() -> Iterator[tuple[int, str, bytes, bytes]]:
        """(event time, topic, key, payload) of each valid record, file after file."""
        pending_bytes = 0
        current = now_ms()
        for source, stream in zip(sources, streams, strict=True):
            rows = _csv_rows(stream) if source.lower().endswith(".csv") else _json_lines(stream)
            for number, payload, size in rows:
                pending_bytes += size
                if number % 2048 == 0:
                    bar.update(pending_bytes)
                    pending_bytes = 0
                    current = now_ms()
                    producer.poll(0)
                if not payload or payload.isspace():
                    continue
                result.records += 1
                try:
                    obj = decode_json(payload)
                    kind = forced_kind or infer_kind(obj)
                    event = parse_event(kind, obj, now_ms=current, max_future_skew_hours=skew)
                except EventError as exc:
                    result.invalid += 1
                    if len(result.invalid_lines) < SHOW_INVALID:
                        result.invalid_lines.append((number, str(exc)))
                        result.invalid_files.append(source)
                    continue
                yield event.timestamp, prefix + kind, event.customer_id.encode("utf-8"), payload
        bar.update(pending_bytes)

    records: Iterable[tuple[int, str, bytes, bytes]] = valid()
    if len(sources) > 1:  # one history: in event-time order across the files
        records = sorted(records, key=lambda record: record[0])
    for n, (_, name, key, payload) in enumerate(records, start=1):
        if n % 2048 == 0:
            producer.poll(0)  # delivery reports (failures) as they come, not all at the flush
        while True:
            try:
                producer.produce(name, value=payload, key=key, on_delivery=tracker.on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        result.sent += 1
        result.per_topic[name] += 1
    remaining = flush(producer, 60)
    result.seconds = time.perf_counter() - started
    result.failed = tracker.failed + remaining
    result.delivered = result.sent - result.failed
    result.delivery_errors = list(tracker.errors)
    return result


def cli(args: Any, settings: Settings) -> int:
    """``churnstream publish FILE... [--topic T]``: exit 0 only when every record was valid and delivered."""
    result = publish_files(args.file, settings, topic=args.topic)
    several = len(args.file) > 1
    for source, (number, reason) in zip(result.invalid_files, result.invalid_lines, strict=True):
        print(f"{source + ' ' if several else ''}line {number}: {reason}", file=sys.stderr)
    if result.invalid > len(result.invalid_lines):
        print(f"... and {result.invalid - len(result.invalid_lines)} more invalid records", file=sys.stderr)
    for error in result.delivery_errors[:5]:
        print(f"delivery failed: {error}", file=sys.stderr)
    print(
        f"{result.records} records read, {result.delivered} delivered in {result.seconds:.2f} s "
        f"({result.rate:,.0f} events/s)"
    )
    for name, count in sorted(result.per_topic.items()):
        print(f"  {name:<40} {count}")
    print(f"invalid (not sent): {result.invalid}")
    print(f"failed deliveries:  {result.failed}")
    return 0 if result.ok else 1

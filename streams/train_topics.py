"""``churnstream train --from-topics [--since T] [--until T]``: train from the input topics themselves.

The input topics are the source of truth: reading them spares users an export of their own. Every message
of the input topics up to their current ends (by assignment: no consumer group state) is written, one
compact JSON line each, to a temporary directory in the event-file layout ``train --events`` reads, so the
same validation, event-time rules and feature code build the training table (a message the rules reject is
counted there, as in a file). ``--since`` / ``--until`` keep events by event time.

History the topics no longer hold is reported, not skipped silently: a partition whose first offset is
above 0 lost its oldest messages to retention (or compaction), and the log says which, with the topic's
``cleanup.policy`` and ``retention.ms``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from churnstream.errors import ChurnstreamError, UsageError
from churnstream.settings import Settings
from churnstream.streams.kafka import end_offsets, make_consumer
from churnstream.streams.reading import read_to_end
from churnstream.streams.topics import existing_topics, make_admin
from churnstream.timefmt import format_time, parse_time

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Export:
    """What :func:`export_topics` wrote and what it found missing."""

    written: dict[str, int] = field(default_factory=dict)  # event kind -> lines
    outside: int = 0  # valid JSON with a timestamp outside [since, until)
    unreadable: int = 0  # not a JSON object: rejected here, as the scorer rejects it
    lost: list[str] = field(default_factory=list)  # partitions whose oldest messages are gone


def export_topics(
    settings: Settings,
    out_dir: Path,
    *,
    since: int | None = None,
    until: int | None = None,
    progress: bool = True,
) -> Export:
    """Write the input topics' messages as event files into ``out_dir``."""
    from tqdm import tqdm

    topics = settings.topics
    have = existing_topics(settings)
    inputs = [t for t in topics.inputs if t in have]
    if topics.orders not in have:
        raise ChurnstreamError(f"topic {topics.orders} does not exist: nothing to train on")
    consumer = make_consumer(settings, "churnstream-train-marks")
    try:
        marks = {(t, p): lh for t in inputs for p, lh in end_offsets(consumer, t).items()}
    finally:
        consumer.close()
    export = Export()
    policies = _retention(settings, inputs)
    for (topic, p), (low, _high) in sorted(marks.items()):
        if low > 0:
            export.lost.append(f"{topic}[{p}]: offsets 0..{low - 1} are gone ({policies.get(topic, '?')})")
    handles = {t: (out_dir / f"{topics.kind_of(t)}.jsonl").open("wb") for t in inputs}
    total = sum(high - low for low, high in marks.values())
    try:
        with tqdm(total=total, unit="msg", desc="reading the input topics", disable=not progress) as bar:
            for msg in read_to_end(settings, inputs):
                bar.update()
                value = msg.value()
                topic = msg.topic() or ""
                try:
                    obj = orjson.loads(value or b"")
                except orjson.JSONDecodeError:
                    export.unreadable += 1
                    continue
                if not isinstance(obj, dict):
                    export.unreadable += 1
                    continue
                if since is not None or until is not None:
                    try:
                        t = parse_time(obj.get("timestamp"))
                    except Exception:  # invalid: kept, so the event rules count it as they do in a file
                        t = None
                    if t is not None and (
                        (since is not None and t < since) or (until is not None and t >= until)
                    ):
                        export.outside += 1
                        continue
                handles[topic].write(orjson.dumps(obj) + b"\n")
                kind = topics.kind_of(topic)
                export.written[kind] = export.written.get(kind, 0) + 1
    finally:
        for handle in handles.values():
            handle.close()
    return export


def topics_source(settings: Settings, since: int | None, until: int | None, export: Export) -> dict[str, Any]:
    """Where a model trained from the topics got its events, for its metadata (the files it read were a
    temporary copy): the topics, the time range, what was read and what the topics no longer held."""
    return {
        "from": "topics",
        "topics": list(settings.topics.inputs),
        "since": None if since is None else format_time(since),
        "until": None if until is None else format_time(until),
        "read": dict(sorted(export.written.items())),
        "lost": list(export.lost),
    }


def _retention(settings: Settings, topics: list[str]) -> dict[str, str]:
    """Topic -> ``cleanup.policy=... retention.ms=...`` (empty when the broker does not say)."""
    from confluent_kafka.admin import ConfigResource

    admin = make_admin(settings)
    out = {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    for resource, future in admin.describe_configs(resources).items():
        try:
            config = future.result(timeout=10)
        except Exception:  # describing is a courtesy: the loss is reported either way
            continue
        shown = [f"{k}={config[k].value}" for k in ("cleanup.policy", "retention.ms") if k in config]
        out[resource.name] = " ".join(shown)
    return out


def cli(args: Any, settings: Settings) -> int:
    """``churnstream train``: from ``--events DIR``, or from the input topics with ``--from-topics``."""
    from churnstream.models import train as training

    if not args.from_topics:
        if args.since is not None:
            raise UsageError("--since applies to --from-topics; with --events, trim the files")
        return training.cli(args, settings)
    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    with tempfile.TemporaryDirectory(prefix="churnstream-train-") as tmp:
        export = export_topics(settings, Path(tmp), since=since, until=until, progress=True)
        for line in export.lost:
            log.warning("history the topics no longer hold: %s", line)
        log.info(
            "read %s from the input topics (%d outside --since/--until, %d not JSON objects)",
            ", ".join(f"{n:,} {kind}" for kind, n in sorted(export.written.items())) or "nothing",
            export.outside,
            export.unreadable,
        )
        if not export.written.get("orders"):
            raise ChurnstreamError(
                "the input topics hold no orders in the chosen time range: nothing to train on"
            )
        args.events = tmp
        args.source = topics_source(settings, since, until, export)
        args.until = None  # applied while reading
        return training.cli(args, settings)


__all__ = ["Export", "cli", "export_topics", "topics_source"]

"""``churnstream report [--day D] [--json]``: the daily report, read from the topics the service published.

It reads ``churn_predictions``, ``churn_alerts``, ``churn_outcomes`` and ``dead_letter`` to their ends, then
the input topics for the Kafka timestamps of the events that triggered predictions (the latency's start),
all by assignment (no consumer group state). What a day is, and how each number is computed:
:mod:`churnstream.monitoring.daily`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

from churnstream.errors import ChurnstreamError
from churnstream.monitoring.daily import DailyReport, render_text
from churnstream.settings import Settings
from churnstream.streams.reading import read_to_end
from churnstream.streams.topics import existing_topics
from churnstream.timefmt import parse_time

_KEPT = ("prediction_id", "as_of", "trigger", "risk_category", "churn_probability", "value_at_risk")


def daily_report(settings: Settings, *, day: str | None = None) -> list[dict[str, Any]]:
    """The report's records, one per day (only ``day``'s when given, a ``YYYY-MM-DD``)."""
    topics = settings.topics
    have = existing_topics(settings)
    outputs = [topics.churn_predictions, topics.churn_alerts, topics.churn_outcomes, topics.dead_letter]
    missing = [t for t in outputs if t not in have]
    if missing:
        raise ChurnstreamError(
            f"topics {', '.join(missing)} do not exist yet; create them with: churnstream topics create"
        )
    report = DailyReport()
    waiting: dict[str, list[tuple[dict[str, Any], int]]] = {}  # event id -> its predictions, scored_at
    for msg in read_to_end(settings, outputs):
        value = msg.value()
        if value is None:
            continue
        record = orjson.loads(value)
        topic = msg.topic()
        if topic == topics.churn_predictions:
            if day is not None and not str(record.get("as_of", "")).startswith(day):
                continue
            event_id = record.get("event_id")
            if record.get("trigger") == "event" and event_id:
                kept = {k: record.get(k) for k in _KEPT}
                waiting.setdefault(event_id, []).append((kept, parse_time(record["scored_at"], "scored_at")))
            else:
                report.add_prediction(record)
        elif topic == topics.churn_alerts:
            report.add_alert(record)
        elif topic == topics.churn_outcomes:
            report.add_outcome(record)
        else:
            report.add_dead_letter(record)
    inputs = [t for t in topics.inputs if t in have]
    if waiting and inputs:
        for msg in read_to_end(settings, inputs):
            value = msg.value()
            if value is None:
                continue
            try:
                event_id = orjson.loads(value).get("event_id")
            except (orjson.JSONDecodeError, AttributeError):
                continue  # a dead letter's original: its own line in the report
            held = waiting.pop(event_id, None) if isinstance(event_id, str) else None
            if held is None:
                continue
            _, arrived = msg.timestamp()
            for prediction, scored_at in held:
                report.add_prediction(
                    prediction, latency_ms=float(scored_at - arrived) if arrived > 0 else None
                )
    for held in waiting.values():  # the triggering event is no longer in its topic (retention)
        for prediction, _ in held:
            report.add_prediction(prediction)
    return report.days(day)


def cli(args: Any, settings: Settings) -> int:
    days = daily_report(settings, day=args.day)
    if args.json:
        print(json.dumps(days, indent=2))
    elif days or args.day is None:  # an empty day is said once, below: the topics are not empty
        print(render_text(days))
    if args.day is not None and not days:
        print(f"churnstream report: nothing happened on {args.day}", file=sys.stderr)
        return 1
    return 0


__all__ = ["cli", "daily_report"]

"""``churnstream alerts``: print the churn alerts on ``churn_alerts``.

It reads by assignment (no consumer group state is left behind), so it never moves a worker's offsets.
Without ``--follow`` it prints the topic from its beginning and stops at the end as it was when the
command started; with ``--follow`` it starts at the end, like ``tail -f`` (``--from-beginning`` first
prints what is there).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from churnstream.errors import InfraError
from churnstream.settings import Settings
from churnstream.streams.kafka import end_offsets, make_consumer
from churnstream.streams.topics import existing_topics

# Without progress for this long while the topic still has unread messages, something is wrong.
STALL_SECONDS = 30.0


def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool = False,
    from_beginning: bool = True,
    poll_timeout: float = 0.5,
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """``(key, value)`` of each message of ``topic``; stops at the end unless ``follow``.

    ``from_beginning=False`` (only with ``follow``) starts at the end, so only new messages come.
    """
    consumer = make_consumer(
        settings,
        f"churnstream-reader-{uuid.uuid4().hex[:12]}",
        **{"enable.partition.eof": True},
    )
    try:
        try:
            marks = end_offsets(consumer, topic)
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise InfraError(
                    f"topic {topic} does not exist; create it with: churnstream topics create"
                ) from None
            raise InfraError(f"cannot read the end offsets of {topic}: {error}") from None
        partitions = sorted(marks)
        pending = {p: high for p, (low, high) in marks.items() if high > low}
        if not from_beginning and follow:
            pending = {}
            consumer.assign([TopicPartition(topic, p, marks[p][1]) for p in partitions])
        else:
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        last_progress = time.monotonic()
        while follow or pending:
            msg = consumer.poll(poll_timeout)
            if msg is None:
                if not follow and time.monotonic() - last_progress > STALL_SECONDS:
                    raise InfraError(
                        f"no progress reading {topic} for {STALL_SECONDS:.0f} s; is Kafka still up?"
                    )
                continue
            error = msg.error()
            partition = msg.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if partition is not None:
                        pending.pop(partition, None)
                    continue
                if error.fatal():
                    raise KafkaException(error)
                continue
            last_progress = time.monotonic()
            offset = msg.offset()
            if partition in pending and offset is not None and offset + 1 >= pending[partition]:
                del pending[partition]
            yield msg.key(), msg.value()
    finally:
        consumer.close()


def format_alert(alert: dict[str, Any]) -> str:
    """A readable two-to-four-line rendering of one alert: priority and value at risk first when it has
    them, and the policy that picked it.

    >>> print(format_alert({"customer_id": "C1", "churn_probability": 0.83, "risk_category": "HIGH",
    ...     "as_of": "2024-05-01T00:00:00Z", "model_version": "v1",
    ...     "top_reasons": [{"feature": "recency_days", "value": 45.0, "contribution": 0.12}],
    ...     "recommended_actions": ["send a win-back offer"]}))
    C1  churn 0.83 HIGH  as of 2024-05-01T00:00:00Z  (model v1)
      reasons: recency_days=45 (+0.12)
      actions: send a win-back offer
    >>> print(format_alert({"customer_id": "C2", "churn_probability": 0.5, "risk_category": "MEDIUM",
    ...     "as_of": "2024-05-01T00:00:00Z", "model_version": "v1", "priority": 61.5, "value_at_risk": 61.5,
    ...     "policy": "value_at_risk budget=0.1/month", "holdout": True, "top_reasons": [],
    ...     "recommended_actions": []}))
    C2  priority 61.50  value at risk 61.50  churn 0.50 MEDIUM  as of 2024-05-01T00:00:00Z  (model v1)
      policy: value_at_risk budget=0.1/month
      holdout: a control customer, do not contact
    """
    probability = alert.get("churn_probability")
    shown = f"{probability:.2f}" if isinstance(probability, (int, float)) else str(probability)
    worth = ""
    for field, label in (("priority", "priority"), ("value_at_risk", "value at risk")):
        value = alert.get(field)
        if isinstance(value, (int, float)):
            worth += f"  {label} {value:.2f}"
    head = (
        f"{alert.get('customer_id')}{worth}  churn {shown} {alert.get('risk_category', '')}  "
        f"as of {alert.get('as_of')}  (model {alert.get('model_version')})"
    )
    reasons = []
    for reason in alert.get("top_reasons") or []:
        value = reason.get("value")
        value_text = (
            "null" if value is None else f"{value:g}" if isinstance(value, (int, float)) else str(value)
        )
        contribution = reason.get("contribution")
        contrib_text = f"{contribution:+.2f}" if isinstance(contribution, (int, float)) else str(contribution)
        reasons.append(f"{reason.get('feature')}={value_text} ({contrib_text})")
    lines = [head]
    if alert.get("policy"):
        lines.append(f"  policy: {alert['policy']}")
    if reasons:
        lines.append("  reasons: " + ", ".join(reasons))
    actions = alert.get("recommended_actions") or []
    if actions:
        lines.append("  actions: " + "; ".join(str(a) for a in actions))
    if alert.get("holdout"):
        lines.append("  holdout: a control customer, do not contact")
    return "\n".join(lines)


def print_alerts(
    settings: Settings,
    *,
    follow: bool = False,
    from_beginning: bool = True,
    as_json: bool = False,
    limit: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Print alerts to ``out`` (default stdout); returns how many were printed."""
    stream = out or sys.stdout
    topic = settings.topics.churn_alerts
    if topic not in existing_topics(settings):
        raise InfraError(
            f"topic {topic} does not exist yet; create topics with: churnstream topics create "
            "(alerts appear once churnstream score runs)"
        )
    printed = 0
    if limit is not None and limit <= 0:
        return 0
    for _key, value in read_topic(settings, topic, follow=follow, from_beginning=from_beginning):
        try:
            alert = json.loads(value or b"")
        except ValueError:
            print(f"skipping a message that is not JSON: {(value or b'')[:80]!r}", file=sys.stderr)
            continue
        if as_json:
            stream.write(json.dumps(alert, separators=(",", ":"), ensure_ascii=False) + "\n")
        else:
            stream.write(format_alert(alert) + "\n")
        stream.flush()
        printed += 1
        if limit is not None and printed >= limit:
            break
    return printed


def cli(args: Any, settings: Settings) -> int:
    """``churnstream alerts [--follow [--from-beginning]] [--json] [--limit N]``."""
    if args.follow and not args.json:
        where = "the beginning" if args.from_beginning else "new alerts"
        print(f"following {settings.topics.churn_alerts} from {where} (Ctrl-C to stop)", file=sys.stderr)
    printed = print_alerts(
        settings,
        follow=args.follow,
        from_beginning=args.from_beginning or not args.follow,
        as_json=args.json,
        limit=args.limit,
    )
    if printed == 0 and not args.json and not args.follow:
        print(f"no alerts on {settings.topics.churn_alerts} yet", file=sys.stderr)
    return 0

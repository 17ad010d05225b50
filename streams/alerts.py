"""``churnstream alerts``: print the churn alerts on ``churn_alerts``.

It reads by assignment (no consumer group state is left behind), so it never moves a worker's offsets.
Without ``--follow`` it prints the topic from its beginning in event time (by ``as_of``; ``--limit N``:
the N earliest) and stops at the end as it was when the command started; with ``--follow`` it starts at
the end, like ``tail -f`` (``--from-beginning`` first prints what is there). Reading is
:mod:`churnstream.streams.reading`'s, as for every command that reads what the service published.

:func:`top_alerts` picks the current top alerts (the latest month's, by priority) that the monitor's
``/alerts`` page lists, from the tail of the topic (:func:`recent_alerts`).
"""

from __future__ import annotations

import heapq
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import orjson

from churnstream.errors import ChurnstreamError, InfraError
from churnstream.models.alert_policy import month_of
from churnstream.predictions import reasons_text
from churnstream.settings import Settings
from churnstream.streams.reading import read_to_end, read_topic
from churnstream.streams.topics import existing_topics
from churnstream.timefmt import parse_time

# How far back from its end each partition of churn_alerts is read for the current top alerts.
ALERTS_SCANNED = 2_000


def top_alerts(
    alerts: Iterable[dict[str, Any]], *, limit: int = 20
) -> tuple[str | None, list[dict[str, Any]]]:
    """The latest event-time month among ``alerts`` and its ``limit`` alerts of highest priority, one per
    customer (their highest), highest first; ties go to the higher churn probability, then the later alert.

    >>> month, top = top_alerts([
    ...     {"customer_id": "A", "as_of": "2024-05-03T00:00:00Z", "priority": 10.0, "churn_probability": 0.4},
    ...     {"customer_id": "B", "as_of": "2024-05-09T00:00:00Z", "priority": 30.0, "churn_probability": 0.2},
    ...     {"customer_id": "A", "as_of": "2024-05-20T00:00:00Z", "priority": 50.0, "churn_probability": 0.5},
    ...     {"customer_id": "C", "as_of": "2024-04-30T00:00:00Z", "priority": 99.0, "churn_probability": 0.9},
    ...     {"customer_id": "D", "as_of": "2024-05-01T00:00:00Z", "churn_probability": 0.9}], limit=2)
    >>> month, [(a["customer_id"], a["priority"]) for a in top]
    ('2024-05', [('A', 50.0), ('B', 30.0)])
    """
    by_month: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        try:
            by_month.setdefault(month_of(parse_time(alert["as_of"], "as_of")), []).append(alert)
        except (KeyError, TypeError, ValueError):
            continue  # not an alert this version understands: churnstream alerts shows it as it is
    if not by_month:
        return None, []
    month = max(by_month)
    best: dict[str, tuple[tuple[float, float, int], dict[str, Any]]] = {}
    for alert in by_month[month]:
        rank = (
            _number(alert.get("priority")),
            _number(alert.get("churn_probability")),
            parse_time(alert["as_of"]),
        )
        customer = str(alert.get("customer_id"))
        if customer not in best or rank > best[customer][0]:
            best[customer] = (rank, alert)
    ranked = sorted(best.items(), key=lambda item: (item[1][0], item[0]), reverse=True)
    return month, [alert for _, (_, alert) in ranked[:limit]]


def recent_alerts(settings: Settings, *, per_partition: int = ALERTS_SCANNED) -> list[dict[str, Any]]:
    """The last ``per_partition`` alerts of each partition of ``churn_alerts`` (by assignment)."""
    alerts = []
    for msg in read_to_end(settings, [settings.topics.churn_alerts], last=per_partition):
        try:
            alert = orjson.loads(msg.value() or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(alert, dict):
            alerts.append(alert)
    return alerts


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("-inf")


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
    reasons = reasons_text(alert)
    lines = [head]
    if alert.get("policy"):
        lines.append(f"  policy: {alert['policy']}")
    if reasons:
        lines.append("  reasons: " + reasons)
    actions = alert.get("recommended_actions") or []
    if actions:
        lines.append("  actions: " + "; ".join(str(a) for a in actions))
    if alert.get("holdout"):
        lines.append("  holdout: a control customer, do not contact")
    return "\n".join(lines)


def _alerts(messages: Iterable[tuple[bytes | None, bytes | None]]) -> Iterator[dict[str, Any]]:
    for _key, value in messages:
        try:
            alert = json.loads(value or b"")
        except ValueError:
            alert = None
        if isinstance(alert, dict):
            yield alert
        else:
            print(f"skipping a message that is not a JSON object: {(value or b'')[:80]!r}", file=sys.stderr)


def unique(alerts: Iterable[dict[str, Any]], *, keep: int | None = None) -> Iterator[dict[str, Any]]:
    """``alerts`` without the repeats of an ``alert_id``: a worker's replay after a crash emits the alerts
    of the unit it had not committed again, with the same ids (a list would name those customers twice).
    ``keep``: remember only the latest that many ids (a replay repeats one unit's alerts, so following a
    topic for months needs no more than that).

    >>> [a["n"] for a in unique([{"alert_id": "x", "n": 1}, {"alert_id": "x", "n": 2}, {"n": 3}])]
    [1, 3]
    >>> [a["alert_id"] for a in unique([{"alert_id": i} for i in "abab"], keep=1)]
    ['a', 'b', 'a', 'b']
    """
    seen: dict[str, None] = {}  # in the order first seen, to forget the oldest first
    for alert in alerts:
        alert_id = alert.get("alert_id")
        if alert_id is not None:
            if str(alert_id) in seen:
                continue
            seen[str(alert_id)] = None
            if keep is not None and len(seen) > keep:
                del seen[next(iter(seen))]
        yield alert


# ids `churnstream alerts --follow` remembers to drop repeats: far more than one unit's alerts (a batch of
# at most CHURN_BATCH_SIZE events per partition), a few MB
FOLLOW_KEEP = 100_000


def _when(alert: dict[str, Any]) -> tuple[int, str]:
    """An alert's place in event time (its ``as_of``), then its customer."""
    try:
        at = parse_time(alert.get("as_of"), "as_of")
    except ChurnstreamError:
        at = 2**62  # not a time: last
    return at, str(alert.get("customer_id", ""))


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
    read = read_topic(settings, topic, follow=follow, from_beginning=from_beginning)
    alerts = unique(_alerts(read), keep=FOLLOW_KEEP if follow else None)
    if not follow:  # every alert so far, in event time: the partitions are read in no set order
        alerts = iter(
            sorted(alerts, key=_when) if limit is None else heapq.nsmallest(limit, alerts, key=_when)
        )
    for alert in alerts:
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

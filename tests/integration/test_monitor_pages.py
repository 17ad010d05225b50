"""The monitor's pages beside its drift windows, through real Kafka: ``/alerts`` lists the current top alerts
of what was published on ``churn_alerts``, ``/report`` shows the numbers ``churnstream report --json``
prints (#20, #22)."""

from __future__ import annotations

import dataclasses
import html
import json
import random
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from churnstream.cli import main
from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import make_producer
from churnstream.streams.reading import read_to_end
from churnstream.timefmt import format_time, parse_time
from tests.integration.test_monitor import RunningMonitor, run_monitor

pytestmark = pytest.mark.integration

MAY = parse_time("2024-05-01T00:00:00Z")
APRIL = parse_time("2024-04-01T00:00:00Z")
DAY = 86_400_000
HOUR = 3_600_000


def _produce(settings: Settings, topic: str, records: list[tuple[str, dict[str, Any], int | None]]) -> None:
    producer = make_producer(settings)
    for key, value, timestamp in records:
        extra = {} if timestamp is None else {"timestamp": timestamp}
        producer.produce(topic, key=key, value=orjson.dumps(value), **extra)
    assert producer.flush(30) == 0


def _alerts(rng: random.Random) -> list[dict[str, Any]]:
    """April's alerts (all of higher priority than May's) and May's: 70 customers, some alerted twice,
    some held back, some picked by the old rule without a priority."""
    out = []
    for n in range(20):
        out.append(_alert(f"old{n}", APRIL + n * HOUR, priority=1000.0 + n, rng=rng))
    for n in range(120):
        customer = f"c{rng.randrange(70)}"
        priority = None if n % 17 == 0 else round(rng.uniform(0, 500), 2)
        out.append(_alert(customer, MAY + rng.randrange(28 * DAY), priority=priority, rng=rng))
    return out


def _alert(customer: str, as_of: int, *, priority: float | None, rng: random.Random) -> dict[str, Any]:
    holdout = rng.random() < 0.2
    return {
        "alert_id": f"a-{customer}-{as_of}",
        "prediction_id": f"p-{customer}-{as_of}",
        "customer_id": customer,
        "as_of": format_time(as_of),
        "churn_probability": round(rng.random(), 4),
        "risk_category": "HIGH",
        "model_version": "v1",
        "value_at_risk": priority,
        "priority": priority,
        "policy": "value_at_risk budget=0.1/month" if priority is not None else "turns HIGH",
        "holdout": holdout,
        "top_reasons": [{"feature": "recency_days", "value": 45.0, "contribution": 0.8}],
        "recommended_actions": [] if holdout else ["send a win-back offer"],
    }


def _expected_top(alerts: list[dict[str, Any]], month: str, limit: int = 20) -> list[dict[str, Any]]:
    """The month's alert of highest priority per customer (no priority ranks last; then the higher
    probability, the later alert), highest first."""
    best: dict[str, dict[str, Any]] = {}

    def rank(a: dict[str, Any]) -> tuple[float, float, str]:
        p = a["priority"]
        return (float("-inf") if p is None else p, a["churn_probability"], a["as_of"])

    for a in alerts:
        if not a["as_of"].startswith(month):
            continue
        if a["customer_id"] not in best or rank(a) > rank(best[a["customer_id"]]):
            best[a["customer_id"]] = a
    return sorted(best.values(), key=lambda a: (rank(a), a["customer_id"]), reverse=True)[:limit]


def _report_inputs(settings: Settings, topics: Topics, rng: random.Random) -> None:
    """Predictions over three days (event-triggered ones with their events on the orders topic, for the
    latency), outcomes and a dead letter, as the scorer publishes them."""
    arrived = MAY + 40 * DAY  # a replay: events reach Kafka long after their event time
    predictions, orders, outcomes = [], [], []
    for n in range(60):
        as_of = MAY + (n % 3) * DAY + rng.randrange(DAY)
        trigger = "event" if n % 4 else "sweep"
        p = round(rng.random(), 4)
        predictions.append(
            {
                "prediction_id": f"p{n}",
                "customer_id": f"c{n}",
                "as_of": format_time(as_of),
                "scored_at": format_time(arrived + n * 10 + rng.randrange(5, 200)),
                "trigger": trigger,
                "event_id": f"e{n}" if trigger == "event" else None,
                "churn_probability": p,
                "risk_category": "HIGH" if p > 0.7 else "MEDIUM" if p > 0.4 else "LOW",
                "value_at_risk": round(50 * p, 2),
            }
        )
        if trigger == "event":
            orders.append((f"c{n}", {"event_id": f"e{n}", "customer_id": f"c{n}"}, arrived + n * 10))
        if n % 2 == 0:
            outcomes.append(
                (
                    f"c{n}",
                    {
                        "prediction_id": f"p{n}",
                        "customer_id": f"c{n}",
                        "labeled_at": format_time(as_of + DAY),
                        "label": int(rng.random() < p),
                        "churn_probability": p,
                    },
                    None,
                )
            )
    _produce(settings, topics.orders, orders)
    _produce(settings, topics.churn_predictions, [(p["customer_id"], p, None) for p in predictions])
    _produce(settings, topics.churn_outcomes, outcomes)
    letter = {
        "source_topic": topics.orders,
        "stage": "validate",
        "value": json.dumps({"customer_id": "c9", "timestamp": "2024-05-02T08:00:00Z", "amount": -1}),
        "failed_at": format_time(arrived),
    }
    _produce(settings, topics.dead_letter, [("c9", letter, None)])


def _get(monitor: RunningMonitor, path: str) -> tuple[int, bytes]:
    """``GET path``, waiting as long as a first read of the topics may take on a busy machine."""
    try:
        with urllib.request.urlopen(monitor.base_url + path, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _cells(fragment: str) -> dict[str, Any]:
    return {
        field: json.loads(html.unescape(value))
        for field, value in re.findall(r"data-field='([^']+)' data-value='([^']*)'", fragment)
    }


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif key != "day":
            out[f"{prefix}{key}"] = value
    return out


def test_the_pages_list_the_top_alerts_and_the_daily_report_of_what_was_published(
    settings: Settings,
    topics: Topics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20)
    alerts = _alerts(rng)
    _produce(settings, topics.churn_alerts, [(a["customer_id"], a, None) for a in alerts])
    _report_inputs(settings, topics, rng)
    monkeypatch.setenv("CHURN_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["report", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert main(["report", "--day", "2024-05-02", "--json"]) == 0
    printed_day = json.loads(capsys.readouterr().out)

    # served behind a proxy under /churn: the pages' links must start there
    behind_proxy = dataclasses.replace(settings, public_url="https://drift.example/churn")
    with run_monitor(behind_proxy, tmp_path) as monitor:
        index = _get(monitor, "/")[1].decode()
        alerts_status, alerts_page = _get(monitor, "/alerts")
        alerts_json = json.loads(_get(monitor, "/alerts.json")[1])
        report_status, report_page = _get(monitor, "/report")
        report_json = json.loads(_get(monitor, "/report.json")[1])
        day_page = _get(monitor, "/report?day=2024-05-02")[1].decode()
        day_json = json.loads(_get(monitor, "/report.json?day=2024-05-02")[1])
        bad_day = _get(monitor, "/report?day=May-2")[0]

    assert 'href="/churn/alerts"' in index and 'href="/churn/report"' in index
    for page in (index, alerts_page.decode(), report_page.decode(), day_page):
        links = re.findall(r"href=[\"']([^\"']*)[\"']", page)
        assert links and all(link.startswith("/churn/") for link in links), links

    # the top 20 of May (April's higher priorities are an older month), one row per customer
    expected = _expected_top(alerts, "2024-05")
    assert len(expected) == 20 and len({a["customer_id"] for a in alerts if a["as_of"] < "2024-05"}) == 20
    listed = re.findall(r"<tr data-customer='([^']*)' data-priority='([^']*)'>", alerts_page.decode())
    assert alerts_status == 200
    assert [c for c, _ in listed] == [a["customer_id"] for a in expected]
    assert [float(p) for _, p in listed] == [a["priority"] for a in expected]
    priorities = [a["priority"] for a in expected]
    assert priorities == sorted(priorities, reverse=True)
    assert "Top alerts of 2024-05" in alerts_page.decode() and f"of {len(alerts)} alerts read" in (
        alerts_page.decode()
    )
    # the policy said once, the risk on every row, no priority column repeating the value at risk
    page = alerts_page.decode()
    assert "picked by value_at_risk budget=0.1/month" in page and "<th>priority</th>" not in page
    assert page.count("<td>HIGH</td>") == len(expected)
    held = [a for a in expected if a["holdout"]]
    assert held and alerts_page.decode().count("held back: do not contact") == len(held)
    assert alerts_json["month"] == "2024-05" and alerts_json["alerts"] == expected

    # the daily report: the same records as churnstream report --json, on the list and on a day's page
    assert report_json == printed and day_json == printed_day
    assert {d["day"] for d in printed} >= {
        "2024-04-01",
        "2024-05-01",
        "2024-05-02",
        "2024-05-03",
        "2024-05-04",
    }
    assert report_status == 200
    rows = re.findall(r"<tr data-day='([^']+)'>(.*?)</tr>", report_page.decode())
    assert [day for day, _ in rows] == [d["day"] for d in reversed(printed)]
    for (day, row), record in zip(rows, reversed(printed), strict=True):
        flat = _flat(record)
        shown = _cells(row)
        assert shown.pop("dead_letters.total") == sum(record["dead_letters"].values())
        assert shown and all(value == flat.get(field, 0) for field, value in shown.items()), day
    (record,) = printed_day
    shown = _cells(day_page)
    assert shown.pop("dead_letters.total") == 1
    assert shown == _flat(record)
    assert record["predictions"]["total"] == 20 and record["scoring_latency_ms"]["p50"] is not None
    assert bad_day == 400


def test_reading_the_last_messages_of_each_partition(settings: Settings, topics: Topics) -> None:
    topic = topics.churn_alerts
    _produce(settings, topic, [(f"c{n % 5}", {"n": n}, None) for n in range(40)])
    every = [(m.partition(), orjson.loads(m.value())["n"]) for m in read_to_end(settings, [topic])]
    last = [(m.partition(), orjson.loads(m.value())["n"]) for m in read_to_end(settings, [topic], last=3)]
    assert len(every) == 40
    by_partition: dict[int, list[int]] = {}
    for partition, n in every:
        by_partition.setdefault(partition, []).append(n)
    assert len(by_partition) > 1
    assert sorted(last) == sorted((p, n) for p, ns in by_partition.items() for n in ns[-3:])
    assert list(read_to_end(settings, [topic], last=0)) == []

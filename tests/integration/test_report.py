"""``churnstream report`` through real Kafka: published messages in, the day's numbers out."""

from __future__ import annotations

import json

import orjson
import pytest

from churnstream.cli import main
from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import make_producer
from churnstream.streams.report import daily_report
from churnstream.timefmt import format_time, parse_time

D1 = parse_time("2024-05-01T00:00:00Z")
HOUR = 3_600_000


def _produce(settings: Settings, topic: str, records: list[tuple[str, dict, int | None]]) -> None:
    producer = make_producer(settings)
    for key, value, timestamp in records:
        extra = {} if timestamp is None else {"timestamp": timestamp}
        producer.produce(topic, key=key, value=orjson.dumps(value), **extra)
    assert producer.flush(30) == 0


def _prediction(n: int, as_of: int, *, trigger: str, risk: str, p: float, scored_at: int) -> dict:
    return {
        "prediction_id": f"p{n}",
        "customer_id": f"c{n}",
        "as_of": format_time(as_of),
        "scored_at": format_time(scored_at),
        "trigger": trigger,
        "event_id": f"e{n}" if trigger == "event" else None,
        "churn_probability": p,
        "risk_category": risk,
        "value_at_risk": 10.0 * p,
    }


def test_the_daily_report_adds_up_what_the_service_published(
    settings: Settings, topics: Topics, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    arrived = D1 + 30 * 86_400_000  # a replay: the events reach Kafka long after their event time
    orders = [(f"c{n}", {"event_id": f"e{n}", "customer_id": f"c{n}"}, arrived + n) for n in range(3)]
    _produce(settings, topics.orders, orders)
    predictions = [
        _prediction(0, D1 + HOUR, trigger="event", risk="HIGH", p=0.9, scored_at=arrived + 10),
        _prediction(1, D1 + 2 * HOUR, trigger="event", risk="LOW", p=0.1, scored_at=arrived + 1 + 20),
        _prediction(2, D1 + 86_400_000, trigger="event", risk="MEDIUM", p=0.5, scored_at=arrived + 2 + 40),
        _prediction(3, D1 + 3 * HOUR, trigger="sweep", risk="HIGH", p=0.8, scored_at=arrived + 50),
    ]
    # a worker's replay after a crash emits a unit's outputs again, with their ids: counted once
    again = [predictions[0], predictions[3]]
    _produce(settings, topics.churn_predictions, [(p["customer_id"], p, None) for p in predictions + again])
    alerts = [
        {"prediction_id": "p0", "customer_id": "c0", "as_of": format_time(D1 + HOUR), "value_at_risk": 9.0},
        {"prediction_id": "p3", "customer_id": "c3", "as_of": format_time(D1 + 3 * HOUR), "holdout": True},
    ]
    _produce(settings, topics.churn_alerts, [("c0", a, None) for a in alerts + alerts[:1]])
    outcomes = [
        {"prediction_id": "p3", "customer_id": "c3", "labeled_at": format_time(D1 + 4 * HOUR), "label": 0},
        {
            "prediction_id": "p0",
            "customer_id": "c0",
            "labeled_at": format_time(D1 + 5 * HOUR),
            "label": 1,
            "churn_probability": 0.9,
        },
        {"customer_id": "c1", "labeled_at": format_time(D1 + 6 * HOUR), "label": 0, "churn_probability": 0.1},
        {
            "customer_id": "c2",
            "labeled_at": format_time(D1 + 86_400_000),
            "label": 1,
            "churn_probability": 0.05,
        },
    ]
    _produce(settings, topics.churn_outcomes, [(o["customer_id"], o, None) for o in outcomes + outcomes[:2]])
    letter = {
        "source_topic": topics.orders,
        "stage": "validate",
        "value": json.dumps({"customer_id": "c9", "timestamp": "2024-05-02T08:00:00Z", "amount": -1}),
        "failed_at": format_time(arrived),
    }
    _produce(settings, topics.dead_letter, [("c9", letter, None)])

    first, second = daily_report(settings)
    assert first["day"] == "2024-05-01" and second["day"] == "2024-05-02"
    assert first["predictions"] == {
        "total": 3,
        "by_trigger": {"event": 2, "sweep": 1},
        "by_risk": {"HIGH": 2, "LOW": 1},
    }
    assert first["predicted_churn_rate"] == pytest.approx((0.9 + 0.1 + 0.8) / 3, abs=1e-4)
    assert first["alerts"] == {
        "sent": 2,
        "holdout": 1,
        "value_at_risk": 9.0,
        "outcomes": {"contacted": {"labelled": 1, "churned": 1}, "holdout": {"labelled": 1, "churned": 0}},
    }
    assert first["outcomes"] == {"labelled": 3, "churned": 1, "realized_roc_auc_so_far": 1.0}
    assert second["outcomes"]["realized_roc_auc_so_far"] == 0.5  # c2 churned at the lowest probability
    assert first["scoring_latency_ms"]["p50"] == pytest.approx(15.0)  # 10 and 20 ms after arrival
    assert second["scoring_latency_ms"]["p99"] == pytest.approx(40.0)
    assert first["dead_letters"] == {} and second["dead_letters"] == {"validate": 1}  # its event's day

    monkeypatch.setenv("CHURN_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["report", "--day", "2024-05-02"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 and table[1].split()[:2] == ["2024-05-02", "1"]
    assert main(["report", "--day", "2024-06-01"]) == 1
    assert "nothing happened on 2024-06-01" in capsys.readouterr().err

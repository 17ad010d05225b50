"""The demo's summary counts what the output topics hold: every alert of the replayed period, not a sample."""

from __future__ import annotations

import orjson

from churnstream.events import format_time, parse_time
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.demo import DemoConfig, DemoResult
from churnstream.streams.demo.report import TOP_ALERTS, print_summary, read_outputs
from tests.integration.conftest import produce_raw


def _alert(n: int, as_of: int, value: float, *, holdout: bool) -> tuple[bytes, bytes]:
    alert = {
        "alert_id": f"a{n}",
        "prediction_id": f"p{n}",
        "customer_id": f"C{n % 700}",
        "as_of": format_time(as_of),
        "churn_probability": 0.5,
        "risk_category": "LOW",
        "model_version": "v0001",
        "recommended_actions": [] if holdout else ["call them"],
        "top_reasons": [{"feature": f"f{n % 7}", "value": 1, "contribution": 0.5}] * 3,
        "value_at_risk": value,
        "priority": value,
        "policy": "value_at_risk budget=0.1/month threshold=1 cooldown=7d",
        "holdout": holdout,
    }
    return f"C{n % 700}".encode(), orjson.dumps(alert)


def test_the_summary_sums_every_replayed_alert_and_shows_the_highest_priorities(
    settings: Settings, topics: Topics
) -> None:
    config = DemoConfig(prefix=settings.topic_prefix)
    split = parse_time(f"{config.train_until[:10]}T00:00:00Z")
    # more alerts of the replayed period than any sample would keep, and some before it; values in
    # quarters, so that their sum is exact whatever the order they are added in
    history = [_alert(n, split - DAY_MS, 1000.0, holdout=False) for n in range(20)]
    replayed = [
        _alert(100 + n, split + (n % 90) * DAY_MS, (n * 37 % 401) / 4, holdout=n % 9 == 0)
        for n in range(2600)
    ]
    produce_raw(settings, topics.churn_alerts, history + replayed)

    result = DemoResult()
    outputs = read_outputs(settings, split, result)
    lines: list[str] = []
    print_summary(lines.append, config, settings, result, outputs)
    text = "\n".join(lines)

    sent = [orjson.loads(value) for _, value in replayed]
    assert result.alerts == 2620 and result.alerts_replay == 2600
    total = sum(a["value_at_risk"] for a in sent)
    held = sum(a["holdout"] for a in sent)
    assert f"2,600 in the replayed period, value at risk {total:,.2f}, {held} held back" in text
    # the examples come from the highest priorities of the whole period (history's 1000s are not in it)
    best = sorted((a["priority"] for a in sent), reverse=True)[:TOP_ALERTS]
    assert [a["priority"] for a in outputs.alerts] == best
    shown = [float(line.split("priority ")[1].split()[0]) for line in lines if "  priority " in line]
    assert len(shown) == 3 and all(p in best for p in shown)

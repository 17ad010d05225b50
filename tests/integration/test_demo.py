"""The demo end to end on a slice of CDNOW: its summary must match what is really on its topics.

A shortened run (1,500 customers, four drift windows) with real Kafka, Redis, ``churnstream score`` and
``churnstream monitor`` subprocesses; then every output topic is read independently of the demo and
compared with the counts the demo printed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from churnstream.events import parse_time
from churnstream.models.registry import ModelRegistry
from churnstream.settings import Settings
from churnstream.streams.demo import DemoConfig, DemoResult, clear_previous, run_demo
from churnstream.streams.kafka import group_offsets
from tests.integration.conftest import consume_all


@pytest.fixture
def demo_run(base_settings: Settings, tmp_path: Path) -> Iterator[tuple[DemoResult, str, Settings]]:
    prefix = f"t{uuid.uuid4().hex[:8]}.demo."
    config = DemoConfig(
        prefix=prefix,
        work_dir=tmp_path / "demo",
        customers=1500,
        drift_windows=4,
        progress=False,
        timeout_s=240,
    )
    out = io.StringIO()
    settings = dataclasses.replace(base_settings, topic_prefix=prefix)
    try:
        result = run_demo(config, base_settings, out=out)
        yield result, out.getvalue(), settings
    finally:
        groups = [f"{prefix}churnstream-scorer", f"{prefix}churnstream-monitor"]
        clear_previous(settings, groups, tmp_path / "demo")


def _values(settings: Settings, topic: str) -> list[dict]:
    return [json.loads(m.value() or b"") for m in consume_all(settings, topic)]


def test_demo_summary_matches_the_topics(demo_run: tuple[DemoResult, str, Settings], tmp_path: Path) -> None:
    result, text, settings = demo_run
    topics = settings.topics

    # Every step ran, in order, and the summary is there.
    steps = [line for line in text.splitlines() if line.startswith("[")]
    assert len(steps) == 11, text
    assert "Summary" in text

    predictions = _values(settings, topics.churn_predictions)
    by_trigger = Counter(p["trigger"] for p in predictions)
    assert by_trigger == result.predictions
    assert by_trigger["event"] == result.events_history + result.events_replay  # one per valid event
    assert by_trigger["sweep"] > 0  # silent customers are rescored
    assert f"{sum(by_trigger.values()):,}: {by_trigger['event']:,} on events" in text

    alerts = _values(settings, topics.churn_alerts)
    assert len(alerts) == result.alerts > 0
    assert all(len(a["top_reasons"]) >= 3 and a["recommended_actions"] for a in alerts)
    # a reason names what moved the score: never "open_tickets=0" raising the risk (slow resolution, its
    # group's other member, did), which told teams to expedite open tickets the customer did not have
    assert not [
        a
        for a in alerts
        if any(
            r["feature"] == "open_tickets" and r["value"] == 0 < r["contribution"] for r in a["top_reasons"]
        )
    ]
    # reasons are measured against a typical customer who stayed: most alerts say what raises the risk
    # (against the median of all customers, a one-time buyer at 0.97 on CDNOW, half of them did not)
    raising = [any(r["contribution"] > 0 for r in a["top_reasons"]) for a in alerts]
    assert sum(raising) >= 0.75 * len(alerts), (
        f"{sum(raising)} of {len(alerts)} alerts have a reason raising the risk"
    )
    customers = len({a["customer_id"] for a in alerts})
    assert result.alerted_customers == customers
    assert (
        f"alerts        {len(alerts):,} for {customers:,} customers; picked by value_at_risk budget=0.1"
        in text
    )
    assert all(a["priority"] == a["value_at_risk"] > 0 for a in alerts)
    assert "value at risk" in text and "priority" in text  # the examples show what they are worth
    # where the risk categories start, so "churn 0.49 LOW" reads as the model's own scale
    thresholds = ModelRegistry(tmp_path / "demo" / "models").metadata(result.model_version)["risk_thresholds"]
    assert (
        f"  risk          HIGH from {thresholds['high']:.3g}, MEDIUM from {thresholds['medium']:.3g}" in text
    )

    letters = _values(settings, topics.dead_letter)
    assert len(letters) == result.dead_letters == result.broken_sent == 4
    assert Counter(d["stage"] for d in letters) == {"validate": 3, "decode": 1}
    assert "dead letters  4 (decode 1, validate 3)" in text

    outcomes = _values(settings, topics.churn_outcomes)
    assert len(outcomes) == result.outcomes > 0
    assert all(0.5 < (result.auc[name] or 0) <= 1 for name in ("batch", "blend")), result.auc

    reports = _values(settings, topics.drift_reports)
    assert result.monitor_started
    assert len(reports) == len(result.drift_reports) >= 2
    assert {r["report_id"] for r in reports} == {r["report_id"] for r in result.drift_reports}
    assert all(Path(r["html_path"]).is_file() for r in reports)
    assert f"drift         {len(reports)} windows reported" in text
    # each window says whether its drift matters: the action, and the performance it rests on
    actions = Counter(r["action"] for r in reports)
    advice = ", ".join(f"{a} {actions[a]}" for a in ("none", "watch", "retrain") if actions[a])
    assert f"the monitor advises: {advice}" in text
    assert text.count("                  action ") == len(reports)
    estimated = [r for r in reports if r.get("estimated_performance")]
    assert estimated, "no window has an estimated ROC-AUC"
    for r in estimated:
        assert f"estimated ROC-AUC {r['estimated_performance']['value']:.3f}" in text

    # The HTTP API re-scores a stream prediction as of its time with the stream's probabilities, the online
    # learner's of then included
    _rescored_as_the_stream_scored(
        dataclasses.replace(settings, model_dir=tmp_path / "demo" / "models"), predictions
    )

    # The scorer really caught up: its committed offsets are the end offsets of every input topic.
    positions = group_offsets(settings, f"{settings.topic_prefix}churnstream-scorer", topics.inputs)
    assert positions and all(committed == end for committed, end in positions.values()), positions


def _rescored_as_the_stream_scored(settings: Settings, predictions: list[dict]) -> None:
    from churnstream.streams.api import build_service
    from churnstream.streams.api_service import AsOfError

    by_customer: dict[str, list[dict]] = {}
    for p in predictions:
        by_customer.setdefault(p["customer_id"], []).append(p)
    sample = [p for cid in sorted(by_customer)[:150] for p in by_customer[cid][-4:]]
    service = build_service(settings)
    compared: Counter[str] = Counter()
    differ = []
    try:
        for p in sample:
            try:
                got = service.score(p["customer_id"], parse_time(p["as_of"]), reasons=False)
            except AsOfError:  # folded out of the customer's retained history
                continue
            answer = got.prediction.to_json()
            if answer["features"] != p["features"]:  # a sign-up, scored before its first order's millisecond
                compared["same millisecond"] += 1
                continue
            compared[p["trigger"]] += 1
            names = ("batch_probability", "online_probability", "churn_probability")
            if any(answer[n] != p[n] for n in names):
                differ.append((p["trigger"], p["as_of"], [(answer[n], p[n]) for n in names]))
    finally:
        service.store.close()
    assert compared["event"] >= 100 and compared["sweep"] >= 100, compared
    assert not differ, f"{len(differ)} of {compared} differ from the stream's: {differ[:5]}"

"""The default alert policy through real Kafka and Redis: alerts by value at risk within the monthly budget,
a control group without actions, and a replay of the same log from scratch giving the same alerts."""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest
import redis

from churnstream.events import OrderEvent, parse_time
from churnstream.features.offline import read_events
from churnstream.models.alert_policy import PERSONAL_SHARE, month_of, threshold_for
from churnstream.models.explain import PERSONAL_WIN_BACK, SERVICE_RECOVERY
from churnstream.models.registry import ModelRegistry
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.kafka import end_offsets, make_consumer
from churnstream.streams.scorer import ScoringWorker, build_scorer
from tests.integration.conftest import (
    committed_everything,
    consume_all,
    publish_world,
    simulate_world,
    wait_until,
)

CUSTOMERS, DAYS, TRAIN_DAYS = 500, 300, 200
HOLDOUT = 0.3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("budget-world")
    return simulate_world(root, customers=CUSTOMERS, days=DAYS, train_days=TRAIN_DAYS, seed=20)


def run_until_done(settings: Settings) -> None:
    scorer: ScoringWorker = build_scorer(settings)
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 300, "the scorer to commit"
        )
    finally:
        scorer.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the scorer did not stop"


def alerts_from(settings: Settings, start: dict[int, int]) -> list[dict[str, object]]:
    """The alerts on the topic from offsets ``start`` (partition -> offset) to its end."""
    out = []
    for m in consume_all(settings, settings.topics.churn_alerts):
        if (m.offset() or 0) >= start.get(m.partition() or 0, 0):
            out.append(orjson.loads(m.value() or b"{}"))
    return out


def end_of(settings: Settings, topic: str) -> dict[int, int]:
    consumer = make_consumer(settings, "budget-probe")
    try:
        return {p: hi for p, (_lo, hi) in end_offsets(consumer, topic).items()}
    finally:
        consumer.close()


def active_base(events_dir: Path) -> dict[str, set[str]]:
    """Month -> customers with a completed order in the 365 days before some instant of that month."""
    orders: dict[str, list[int]] = {}
    for e in read_events(events_dir).events:
        if isinstance(e, OrderEvent) and e.status == "completed":
            orders.setdefault(e.customer_id, []).append(e.timestamp)
    months: dict[str, set[str]] = {}
    first = min(t for ts in orders.values() for t in ts)
    last = max(t for ts in orders.values() for t in ts)
    t = first
    while t <= last + 31 * DAY_MS:
        month = month_of(t)
        start = parse_time(f"{month}-01T00:00:00Z")
        end = parse_time(f"{month_of(start + 32 * DAY_MS)}-01T00:00:00Z")
        months[month] = {
            c
            for c, ts in orders.items()
            if (i := bisect.bisect_left(ts, end)) and ts[i - 1] > start - 365 * DAY_MS
        }
        t = end
    return months


def test_value_at_risk_alerts_stay_within_the_budget_and_replay_identically(
    settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    s = dataclasses.replace(
        settings, model_dir=world / "models", metrics_port=-1, alert_holdout_share=HOLDOUT
    )
    publish_world(s, world / "events")
    run_until_done(s)
    first = alerts_from(s, {})
    assert first, "no alerts"

    metadata = ModelRegistry(world / "models").load().metadata
    threshold = threshold_for(metadata["alert_policy"], s.alert_budget_share)
    assert threshold is not None
    assert all(
        a["policy"] == f"value_at_risk budget=0.1/month threshold={threshold:g} cooldown=7d" for a in first
    )
    assert all(a["priority"] == a["value_at_risk"] and a["priority"] >= threshold for a in first)  # type: ignore[operator]

    # the budget: at most 10 % of the month's active customers (each partition's share rounded up: at
    # most one more a partition), each at most once a month
    per_month = Counter((month_of(parse_time(str(a["as_of"]))), a["customer_id"]) for a in first)
    assert max(per_month.values()) == 1
    base = active_base(world / "events")
    alerted = Counter(month for month, _ in per_month)
    for month, count in alerted.items():
        assert count <= 0.1 * len(base[month]) + s.topic_partitions, (month, count, len(base[month]))

    # a person calls only at or above the model's value threshold for its top 1 % (the shop's own measure)
    personal = threshold_for(metadata["alert_policy"], PERSONAL_SHARE)
    assert personal is not None
    called = [a for a in first if {PERSONAL_WIN_BACK, SERVICE_RECOVERY} & set(a["recommended_actions"])]  # type: ignore[arg-type]
    assert called and all(a["value_at_risk"] >= personal for a in called)  # type: ignore[operator]

    # the control group: flagged, without actions; the others carry actions
    held = [a for a in first if a["holdout"]]
    assert held and len(held) < len(first)
    assert all(a["recommended_actions"] == [] for a in held)
    assert all(a["recommended_actions"] for a in first if not a["holdout"])
    # ... and a customer's for good: one alerted in several months stays in the same group
    groups: dict[str, set[bool]] = {}
    for a in first:
        groups.setdefault(str(a["customer_id"]), set()).add(bool(a["holdout"]))
    months = Counter(customer for _, customer in per_month)
    assert any(n > 1 for n in months.values()), "no customer alerted in two months"
    assert all(len(g) == 1 for g in groups.values()), [c for c, g in groups.items() if len(g) > 1]

    # a replay from scratch (a new group over an empty store) gives the very same alerts
    mark = end_of(s, s.topics.churn_alerts)
    for key in redis_client.scan_iter(match=f"churn:{s.topic_prefix}*", count=1000):
        redis_client.delete(key)
    again = dataclasses.replace(s, scorer_group=f"{s.topic_prefix}replay")
    run_until_done(again)
    second = alerts_from(s, mark)

    def key(a: dict[str, object]) -> str:
        return str(a["alert_id"])

    assert sorted(first, key=key) == sorted(second, key=key)

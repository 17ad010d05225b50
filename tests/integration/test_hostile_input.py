"""A corpus of malformed messages mixed with valid events, through the real scoring worker.

Every bad message must land in ``dead_letter`` with a reason and its coordinates, the worker must keep
running, and every valid event must be scored. The corpus is seeded (reproducible) and covers the
contract's failure kinds: broken JSON, non-UTF-8, wrong types, NaN/Infinity, huge strings and payloads,
deep nesting, missing fields, timestamps far in the future or before 1970, negative amounts, and keys that
disagree with ``customer_id``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import orjson
import redis

from churnstream.settings import Settings, Topics
from tests.integration.conftest import consume_all, produce_raw
from tests.integration.test_scorer import committed_everything, run_scorer, scorer_settings, wait_until, world  # noqa: F401

GOOD = {
    "event_id": "g",
    "customer_id": "c1",
    "order_id": "o1",
    "timestamp": "2024-03-01T10:00:00Z",
    "amount": 12.5,
    "items": 1,
    "status": "completed",
}


def corpus(n: int, seed: int = 7) -> list[tuple[str, bytes | None, bytes]]:
    """``n`` malformed (topic kind, key, value) messages, each breaking the contract in one way."""
    rng = random.Random(seed)

    def obj(**change: object) -> dict:
        o = dict(GOOD, event_id=f"bad-{rng.randrange(10**9)}")
        o.update(change)
        return {k: v for k, v in o.items() if v is not _DROP}

    def nested(depth: int) -> str:
        return "[" * depth + "]" * depth

    makers = [
        lambda: (
            "orders",
            b"c1",
            b'{"event_id": "x", "customer_id": ' + bytes(rng.randrange(256) for _ in range(8)),
        ),
        lambda: ("orders", b"c1", bytes([0xFF, 0xFE]) + json.dumps(obj()).encode()),
        lambda: ("orders", b"c1", json.dumps(obj(amount=str(rng.random()))).encode()),
        lambda: ("orders", b"c1", json.dumps(obj(amount=-rng.uniform(0.01, 1e6))).encode()),
        lambda: ("orders", b"c1", json.dumps(obj()).replace('"amount": 12.5', '"amount": NaN').encode()),
        lambda: (
            "orders",
            b"c1",
            json.dumps(obj()).replace('"amount": 12.5', '"amount": -Infinity').encode(),
        ),
        lambda: ("orders", b"c1", json.dumps(obj(items=rng.choice([0, -3, "two", 1.5, True]))).encode()),
        lambda: (
            "orders",
            b"c1",
            json.dumps(obj(status=rng.choice(["done", "Completed", 3, ["completed"]]))).encode(),
        ),
        lambda: ("orders", b"c1", json.dumps(obj(customer_id="c" * rng.randrange(65, 5000))).encode()),
        lambda: ("orders", b"c1", json.dumps(obj(event_id="e" * rng.randrange(129, 3000))).encode()),
        lambda: ("orders", b"c1", json.dumps(obj(order_id=_DROP)).encode()),
        lambda: ("orders", b"c1", json.dumps(obj(timestamp=_DROP)).encode()),
        lambda: (
            "orders",
            b"c1",
            json.dumps(obj(timestamp=rng.choice(["2999-01-01T00:00:00Z", 99999999999999]))).encode(),
        ),
        lambda: (
            "orders",
            b"c1",
            json.dumps(
                obj(timestamp=rng.choice(["1969-12-31T23:59:59Z", -5, "0001-01-01T00:00:00Z"]))
            ).encode(),
        ),
        lambda: (
            "orders",
            b"c1",
            json.dumps(
                obj(timestamp=rng.choice(["yesterday", "2024-03-01", "2024-03-01T10:00:00", True]))
            ).encode(),
        ),
        lambda: ("orders", b"someone-else", json.dumps(obj()).encode()),
        lambda: ("orders", b"c1", nested(rng.randrange(2000, 100_000)).encode()),
        lambda: ("orders", b"c1", json.dumps([obj()]).encode()),
        lambda: ("orders", b"c1", json.dumps(obj(note="x" * (1024 * 1024))).encode()),  # over 1 MiB
        lambda: (
            "support_tickets",
            b"c1",
            json.dumps(obj(ticket_id="t", satisfaction_score=rng.choice([0, 6, "5", 2.5]))).encode(),
        ),
        lambda: (
            "support_tickets",
            b"c1",
            json.dumps(obj(ticket_id="t", resolution_time_hours=rng.choice([-1, "fast"]))).encode(),
        ),
        lambda: ("customer_profiles", b"c1", json.dumps(obj(age=rng.choice([-1, 131, "40", 40.5]))).encode()),
        lambda: (
            "customer_profiles",
            b"c1",
            json.dumps(obj(email_verified=rng.choice(["yes", 1, 0]))).encode(),
        ),
        lambda: ("churn_labels", b"c1", json.dumps(obj(churned=rng.choice(["true", 1, None]))).encode()),
        lambda: ("orders", b"c1", b""),
        lambda: ("orders", b"c1", b"null"),
    ]
    return [rng.choice(makers)() for _ in range(n)]


_DROP = object()


def test_a_thousand_malformed_messages_are_dead_lettered_and_valid_ones_scored(
    scorer_settings: Settings,  # noqa: F811 - the fixture imported above
    topics: Topics,
    redis_client: redis.Redis,
    tmp_path: Path,  # noqa: F811
) -> None:
    settings = scorer_settings
    bad = corpus(1000)
    valid = []
    for i in range(300):
        o = dict(GOOD, event_id=f"ok-{i}", customer_id=f"c{i % 40}", order_id=f"o{i}")
        o["timestamp"] = f"2024-03-{1 + i // 20:02d}T{i % 20:02d}:00:00Z"
        valid.append(("orders", o["customer_id"].encode(), json.dumps(o).encode()))
    mixed = bad + valid
    random.Random(3).shuffle(mixed)
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    for kind, key, value in mixed:
        by_topic.setdefault(kind, []).append((key, value))
    for kind, records in by_topic.items():
        produce_raw(settings, getattr(settings.topics, kind), records)

    gen = run_scorer(settings)
    scorer = next(gen)
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 240, "the worker to get through"
        )
    finally:
        gen.close()  # also asserts the worker thread stopped cleanly
    assert scorer.totals.events == len(valid)

    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    assert len(letters) == len(bad)
    assert all(d["error"] and d["stage"] in ("decode", "validate") for d in letters)
    assert all(
        d["source_topic"].startswith(settings.topic_prefix) and d["offset"] is not None for d in letters
    )
    stages = Counter(d["stage"] for d in letters)
    assert stages["decode"] > 50 and stages["validate"] > 500
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    scored = {p["event_id"] for p in predictions if p["trigger"] == "event"}
    assert scored == {json.loads(v)["event_id"] for _, _, v in valid}

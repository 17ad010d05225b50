"""What the scoring worker really writes matches the JSON Schemas kept in the repository.

A slice of a simulated business (every event of a few dozen customers, so there are sweeps, outcomes
and alerts) and a handful of broken messages go through the scorer on real Kafka and Redis; every
message on ``churn_predictions``, ``churn_outcomes``, ``churn_alerts`` and ``dead_letter`` is then
validated against ``churnstream/jsonschema/<topic>.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from jsonschema import Draft202012Validator

from churnstream.schemas import SCHEMA_DIR
from churnstream.settings import Settings, Topics
from tests.integration.conftest import (
    committed_everything,
    consume_all,
    event_time_records,
    produce_raw,
    produce_records,
    wait_until,
)
from tests.integration.test_scorer import run_scorer, scorer_settings, world  # noqa: F401 - fixtures

CUSTOMERS = 40
T = "2024-03-01T00:00:00Z"


def kept_validator(topic: str) -> Draft202012Validator:
    """A validator for the schema file users get, not the code that generates it."""
    document = json.loads((SCHEMA_DIR / f"{topic}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(document)
    return Draft202012Validator(document)


def invalid_orders(cid: str) -> list[tuple[bytes | None, bytes | None]]:
    """Broken messages for the orders topic, each dead-lettered at another stage or for another rule."""
    order = {"event_id": "bad", "customer_id": cid, "order_id": "o", "timestamp": T}
    return [
        (cid.encode(), b"{not json"),
        (cid.encode(), b"\xff\xfe not utf-8"),
        (cid.encode(), None),
        (cid.encode(), json.dumps(dict(order, amount=-5)).encode()),
        (cid.encode(), json.dumps(dict(order, amount=1e308)).encode()),
        (
            cid.encode(),
            b'{"event_id": "big", "customer_id": "%s", "order_id": "o", "timestamp": "%s", '
            b'"amount": 1%s}' % (cid.encode(), T.encode(), b"0" * 400),
        ),
        (cid.encode(), b'{"amount": %s}' % (b"7" * 5000)),  # more digits than Python reads
        (b"someone-else", json.dumps(dict(order, amount=5)).encode()),
    ]


def validate_all(topic: str, messages: list[dict[str, Any]]) -> None:
    check = kept_validator(topic)
    for message in messages:
        errors = sorted(check.iter_errors(message), key=lambda e: list(e.absolute_path))
        assert not errors, (
            f"a {topic} message breaks its schema: "
            + "; ".join(f"{list(e.absolute_path)}: {e.message}"[:300] for e in errors[:3])
            + f"\n{json.dumps(message)[:1000]}"
        )


def test_every_message_the_worker_writes_matches_its_schema(
    scorer_settings: Settings,  # noqa: F811 - the fixture imported above
    topics: Topics,
    redis_client: redis.Redis,
    world: Path,  # noqa: F811
) -> None:
    settings = scorer_settings
    records = event_time_records(settings, world / "events")
    chosen = sorted({key for _, _, key, _ in records})[:CUSTOMERS]
    produce_records(settings, [r for r in records if r[2] in chosen])
    broken = invalid_orders(chosen[0])
    produce_raw(settings, settings.topics.orders, broken)

    gen = run_scorer(settings)
    next(gen)
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group),
            180,
            "the scorer to commit every input",
        )
    finally:
        gen.close()

    def read(topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.value()) for m in consume_all(settings, getattr(settings.topics, topic))]

    predictions = read("churn_predictions")
    letters = read("dead_letter")
    outcomes = read("churn_outcomes")
    alerts = read("churn_alerts")
    validate_all("churn_predictions", predictions)
    validate_all("dead_letter", letters)
    validate_all("churn_outcomes", outcomes)
    validate_all("churn_alerts", alerts)

    triggers = Counter(p["trigger"] for p in predictions)
    assert triggers["event"] > 0 and triggers["sweep"] > 0, triggers
    assert len(letters) == len(broken)
    stages = Counter(d["stage"] for d in letters)
    assert stages == Counter({"decode": 4, "validate": 4}), stages
    assert any(d.get("value_encoding") == "base64" for d in letters)
    too_large = [d["error"] for d in letters if d["error"].startswith("amount: must be <= 1e+09, got ")]
    assert len(too_large) == 2, [d["error"] for d in letters]  # 1e308 and a 401-digit integer
    assert outcomes, "no outcomes: the slice should span more than the label horizon"

    # the same check fails for a broken copy of a real message
    check = kept_validator("churn_predictions")
    broken_prediction = dict(predictions[0], churn_probability="high")
    del broken_prediction["features"]
    assert not check.is_valid(broken_prediction)
    with pytest.raises(AssertionError, match="breaks its schema"):
        validate_all("churn_predictions", [broken_prediction])
    broken_letter = dict(letters[0], stage="later")
    assert not kept_validator("dead_letter").is_valid(broken_letter)

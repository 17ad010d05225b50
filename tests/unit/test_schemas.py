"""The published JSON Schemas: kept files match the code, and they agree with parse_event on real examples."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from churnstream.errors import ConfigError, DecodeError, ValidationError
from churnstream.events import FIELDS, Field, decode_json, infer_kind, parse_event
from churnstream.messages import (
    OUTPUT_MESSAGES,
    Alert,
    DeadLetter,
    DriftReport,
    Outcome,
    Prediction,
    Reason,
)
from churnstream.schemas import SCHEMA_DIR, TOPICS, all_schemas, cli, main, render, schema, write_schemas
from churnstream.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z
T = "2024-05-01T10:00:00Z"
BASE: dict[str, dict[str, Any]] = {
    "orders": {"event_id": "e1", "customer_id": "c1", "order_id": "o1", "timestamp": T, "amount": 10.0},
    "support_tickets": {"event_id": "e1", "customer_id": "c1", "ticket_id": "t1", "timestamp": T},
    "customer_profiles": {"event_id": "e1", "customer_id": "c1", "timestamp": T},
    "churn_labels": {"event_id": "e1", "customer_id": "c1", "timestamp": T, "churned": True},
}


def validator(topic: str) -> Draft202012Validator:
    return Draft202012Validator(schema(topic))


def parse(kind: str, obj: dict[str, Any]) -> Any:
    return parse_event(kind, obj, now_ms=NOW, max_future_skew_hours=24)


def test_the_kept_files_are_what_the_code_generates() -> None:
    kept = {path.stem: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    assert sorted(kept) == sorted(TOPICS), "python -m churnstream.schemas --write"
    for topic in TOPICS:
        assert kept[topic] == render(schema(topic)), (
            f"{topic}.json is stale: python -m churnstream.schemas --write"
        )
    assert main(["--check"]) == 0


def test_write_schemas_writes_one_file_per_topic(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{t}.json" for t in TOPICS)
    doc = json.loads((tmp_path / "out" / "orders.json").read_text(encoding="utf-8"))
    assert doc == schema("orders")
    assert (tmp_path / "out" / "orders.json").read_text(encoding="utf-8").endswith("}\n")


@pytest.mark.parametrize("topic", TOPICS)
def test_every_schema_is_a_draft_2020_12_schema_with_its_identity(topic: str) -> None:
    doc = schema(topic)
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"] == f"urn:churnstream:schema:{topic}"
    assert doc["title"] == topic and doc["description"]
    assert doc["type"] == "object" and doc["additionalProperties"] is True


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_an_input_schema_lists_the_table_and_requires_its_required_fields(kind: str) -> None:
    doc = schema(kind)
    assert list(doc["properties"]) == [f.name for f in FIELDS[kind]]
    assert doc["required"] == [f.name for f in FIELDS[kind] if f.required]


def test_every_example_event_is_valid_for_its_topic() -> None:
    lines = (EXAMPLES / "events.jsonl").read_text(encoding="utf-8").splitlines()
    seen = set()
    for line in lines:
        obj = decode_json(line)
        kind = infer_kind(obj)
        parse(kind, obj)
        errors = [e.message for e in validator(kind).iter_errors(obj)]
        assert not errors, (line, errors)
        seen.add(kind)
    assert seen == set(FIELDS) and len(lines) > 50


def test_every_invalid_example_that_breaks_a_field_rule_is_rejected_by_both() -> None:
    checked = 0
    for line in (EXAMPLES / "invalid_events.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            obj = decode_json(line)
            kind = infer_kind(obj)
        except (DecodeError, ValidationError):
            continue  # not JSON, not an object, or of no topic: no field rule to judge
        with pytest.raises(ValidationError):
            parse(kind, obj)
        assert not validator(kind).is_valid(obj), line
        checked += 1
    assert checked >= 6


def _just_beyond(f: Field, side: str) -> list[Any]:
    """Values just past ``f``'s bound on ``side`` (``max`` or ``min``)."""
    if f.type == "string":
        return ["x" * (f.max_len + 1)] if side == "max" else ["x" * (f.min_len - 1)]
    bound = f.max if side == "max" else f.min
    assert bound is not None
    step = 1 if side == "max" else -1
    if f.type == "integer":
        return [int(bound) + step, float(int(bound) + step)]
    if f.type == "time":
        return [int(bound) + step]
    return [math.nextafter(bound, step * math.inf), int(bound) + step, *([10**400] if side == "max" else [])]


def _at(f: Field, side: str) -> Any:
    if f.type == "string":
        return "x" * (f.max_len if side == "max" else f.min_len)  # type: ignore[operator]
    return f.max if side == "max" else f.min


BOUNDED = [
    (kind, f, side)
    for kind, fields in FIELDS.items()
    for f in fields
    for side in ("max", "min")
    if (f.max if side == "max" else f.min) is not None
    or (f.type == "string" and (f.max_len if side == "max" else f.min_len))
]


@pytest.mark.parametrize(
    ("kind", "f", "side"), BOUNDED, ids=[f"{k}.{f.name}.{side}" for k, f, side in BOUNDED]
)
def test_a_value_just_past_a_bound_is_rejected_by_both_and_the_bound_itself_accepted(
    kind: str, f: Field, side: str
) -> None:
    check = validator(kind)
    at = dict(BASE[kind], **{f.name: _at(f, side)})
    parse(kind, at)
    assert check.is_valid(at), at
    for value in _just_beyond(f, side):
        obj = dict(BASE[kind], **{f.name: value})
        with pytest.raises(ValidationError, match=f"^{f.name}: "):
            parse(kind, obj)
        assert not check.is_valid(obj), (f.name, value)


def test_every_number_has_an_upper_bound_and_the_error_names_it() -> None:
    numbers = [f for fields in FIELDS.values() for f in fields if f.type in ("number", "integer")]
    assert numbers and all(f.max is not None for f in numbers), [f.name for f in numbers if f.max is None]
    with pytest.raises(ValidationError, match=r"^amount: must be <= 1e\+09, got 1e\+308$"):
        parse("orders", dict(BASE["orders"], amount=1e308))
    with pytest.raises(ValidationError, match=r"^items: must be <= 100000, got 100001$"):
        parse("orders", dict(BASE["orders"], items=100_001))
    with pytest.raises(ValidationError, match=r"^resolution_time_hours: must be <= 1e\+06, got 1000001$"):
        parse("support_tickets", dict(BASE["support_tickets"], resolution_time_hours=1_000_001))


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**5000], ids=["1e400", "-1e400", "1e5000"])
def test_an_integer_too_large_for_a_float_is_a_validation_error(value: int) -> None:
    with pytest.raises(ValidationError, match="^amount: must be .*an integer of [0-9]+ digits$"):
        parse("orders", dict(BASE["orders"], amount=value))
    with pytest.raises(ValidationError, match="^timestamp: .*an integer of [0-9]+ digits"):
        parse("orders", dict(BASE["orders"], timestamp=value))


def test_a_json_integer_too_long_to_read_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="^invalid JSON: a number has more than"):
        decode_json(b'{"amount": ' + b"7" * 5000 + b"}")
    obj = decode_json(b'{"amount": ' + b"7" * 400 + b"}")
    with pytest.raises(ValidationError, match="^amount: must be <= 1e"):
        parse("orders", dict(BASE["orders"], **obj))


# --- outputs ---------------------------------------------------------------------------------------

FEATURES = dict.fromkeys(schema("churn_predictions")["properties"]["features"]["required"], 1.0)
REASONS = [Reason("recency_days", 40.0, 0.9), Reason("orders_90d", 0.0, 0.4), Reason("age", None, -0.1)]


def prediction(**changes: Any) -> Prediction:
    p = Prediction(
        prediction_id="p1",
        customer_id="c1",
        as_of=1_714_557_600_000,
        scored_at=1_714_557_600_123,
        trigger="event",
        event_id="e1",
        model_version="v1",
        batch_probability=0.7,
        online_probability=None,
        churn_probability=0.72,
        risk_category="HIGH",
        features={**FEATURES, "recency_days": None},
    )
    return dataclasses.replace(p, **changes)


MESSAGES: list[tuple[str, Any]] = [
    ("churn_predictions", prediction()),
    ("churn_predictions", prediction(trigger="sweep", event_id=None, online_probability=0.3)),
    (
        "churn_alerts",
        Alert("a1", "p1", "c1", 1_714_557_600_000, 0.72, "HIGH", "v1", ["call them"], REASONS),
    ),
    ("churn_outcomes", Outcome("p1", "c1", 0, 2_592_000_000, 1, "inactivity", 0.7, None, 0.72)),
    ("churn_outcomes", Outcome("p1", "c1", 0, 2_592_000_000, 0, "order", 0.7, 0.5, 0.6)),
    (
        "drift_reports",
        DriftReport(
            report_id="r1",
            created_at=1_714_557_600_000,
            window_start=0,
            window_end=1000,
            rows=5000,
            reference_rows=20_000,
            model_version="v1",
            dataset_drift=False,
            drift_share=0.1,
            drifted_columns=["age"],
            columns={"age": {"method": "ks", "score": 0.01, "threshold": 0.05, "drifted": True}},
            prediction_drift={"method": "wasserstein", "score": None, "threshold": 0.1, "drifted": False},
            concept_drift={"detector": "ADWIN", "detected": False, "at": None},
            html_path="var/reports/r1.html",
            url=None,
            extra={
                "estimated_performance": {"metric": "roc_auc", "value": 0.8, "lower": 0.7, "upper": 0.9},
                "realized_performance": None,
                "action": "watch",
                "evidently_run": None,
                "closed_by": "rows",
            },
        ),
    ),
    ("dead_letter", DeadLetter("orders", 3, 17, b"c1", b'{"a": 1}', "invalid JSON", "decode", 0)),
    ("dead_letter", DeadLetter("orders", None, None, None, b"\xff\xfe", "not UTF-8", "decode", 5)),
]


@pytest.mark.parametrize(("topic", "message"), MESSAGES, ids=[t for t, _ in MESSAGES])
def test_every_output_message_validates_and_declares_every_field_it_emits(topic: str, message: Any) -> None:
    body = message.to_json()
    errors = [e.message for e in validator(topic).iter_errors(body)]
    assert not errors, errors
    declared = type(message).FIELDS
    extra = set(getattr(message, "extra", {})) - set(declared)  # a drift report's undeclared extras
    assert set(body) - extra <= set(declared), set(body) - set(declared) - extra
    assert {name for name, f in declared.items() if f.required} <= set(body)


def test_every_output_topic_has_a_declared_message_class() -> None:
    assert set(OUTPUT_MESSAGES) == {
        "churn_predictions",
        "churn_alerts",
        "churn_outcomes",
        "drift_reports",
        "dead_letter",
    }
    alerts = schema("churn_alerts")
    assert {"value_at_risk", "priority", "policy", "explanation", "holdout"} <= set(alerts["properties"])
    assert not {"value_at_risk", "priority", "policy", "explanation", "holdout"} & set(alerts["required"])
    reports = schema("drift_reports")
    extensions = {"estimated_performance", "realized_performance", "action", "evidently_run"}
    assert extensions <= set(reports["properties"]) and not extensions & set(reports["required"])


BROKEN: list[tuple[str, dict[str, Any]]] = [
    ("no churn_probability", {"churn_probability": ...}),
    ("probability above 1", {"churn_probability": 1.5}),
    ("unknown risk category", {"risk_category": "SEVERE"}),
    ("local time", {"as_of": "2024-05-01T12:00:00+02:00"}),
    ("a required feature missing", {"features": {"orders_total": 1}}),
    ("a feature that is text", {"features": {**FEATURES, "spent_total": "12"}}),
]


@pytest.mark.parametrize(("what", "changes"), BROKEN, ids=[w for w, _ in BROKEN])
def test_a_broken_prediction_fails_validation(what: str, changes: dict[str, Any]) -> None:
    body = prediction().to_json()
    for name, value in changes.items():
        if value is ...:
            del body[name]
        else:
            body[name] = value
    assert not validator("churn_predictions").is_valid(body), what


def test_an_alert_with_fewer_than_three_reasons_fails_validation() -> None:
    body = MESSAGES[2][1].to_json()
    body["top_reasons"] = body["top_reasons"][:2]
    assert not validator("churn_alerts").is_valid(body)


# --- churnstream schema [TOPIC] ---------------------------------------------------------------------


def test_cli_prints_one_topic_or_all(capsys: pytest.CaptureFixture[str]) -> None:
    settings = dataclasses.replace(Settings(), topic_prefix="prod.")
    assert cli(argparse.Namespace(topic="orders"), settings) == 0
    assert json.loads(capsys.readouterr().out) == schema("orders")
    assert cli(argparse.Namespace(topic="prod.dead_letter"), settings) == 0
    assert json.loads(capsys.readouterr().out) == schema("dead_letter")
    assert cli(argparse.Namespace(topic=None), settings) == 0
    assert json.loads(capsys.readouterr().out) == all_schemas()


def test_cli_names_the_topics_for_an_unknown_one() -> None:
    with pytest.raises(ConfigError, match="unknown topic 'refunds'.*orders, support_tickets.*dead_letter"):
        cli(argparse.Namespace(topic="refunds"), Settings())


@pytest.mark.parametrize("kind", ["orders", "churn_labels"])
def test_a_whole_number_timestamp_written_with_a_fraction_is_valid_to_both(kind: str) -> None:
    """JSON Schema counts 1714557600000.0 an integer; the service refused it ("got number")."""
    obj = dict(BASE[kind], timestamp=1714557600000.0)
    assert validator(kind).is_valid(obj)
    assert parse(kind, obj).timestamp == 1714557600000
    half = dict(obj, timestamp=1714557600000.5)
    assert not validator(kind).is_valid(half)
    with pytest.raises(ValidationError, match="^timestamp: "):
        parse(kind, half)

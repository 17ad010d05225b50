"""JSON Schemas (draft 2020-12) of every topic's messages, built from the definitions the code uses.

Input topics come from :data:`churnstream.events.FIELDS`, the table :func:`~churnstream.events.parse_event`
takes its bounds from; output topics from the ``FIELDS`` declarations beside the message classes in
:mod:`churnstream.messages`. ``churnstream schema [TOPIC]`` prints them, and the repository keeps them in
``churnstream/jsonschema/<topic>.json``. After changing a definition, regenerate those files with::

    python -m churnstream.schemas --write

(``tests/unit/test_schemas.py`` fails until you do). Unknown fields are allowed everywhere: inputs ignore
them, and the contract grows only by extension, so a consumer must accept fields it does not know yet.
Three rules no JSON Schema can state are only in the descriptions: a time may be at most
``CHURN_MAX_FUTURE_SKEW_HOURS`` ahead of the wall clock, a time string must name a real date (the pattern
admits 2024-02-30), and a message key must equal ``customer_id``.

>>> s = schema("orders")
>>> s["$id"], s["required"][:3], s["properties"]["amount"]["maximum"]
('urn:churnstream:schema:orders', ['event_id', 'customer_id', 'timestamp'], 1000000000.0)
>>> sorted(all_schemas()) == sorted(TOPICS)
True
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from churnstream.errors import ConfigError
from churnstream.events import FIELDS, KINDS, TIME_PATTERN, Field
from churnstream.messages import OUTPUT_MESSAGES, OutputField
from churnstream.settings import Settings

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# An identifier, not a link: the schemas are published by `churnstream schema` and kept in the package.
BASE_URI = "urn:churnstream:schema:"
INPUT_TOPICS = KINDS
OUTPUT_TOPICS = tuple(OUTPUT_MESSAGES)
TOPICS = INPUT_TOPICS + OUTPUT_TOPICS
SCHEMA_DIR = Path(__file__).with_name("jsonschema")

# Times the workers emit: always UTC, with milliseconds only when they are not zero (events.format_time).
_UTC_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$"

_INPUT_DESCRIPTIONS = {
    "orders": "An order of a customer.",
    "support_tickets": "A support ticket of a customer.",
    "customer_profiles": "An update of a customer's profile; later events overwrite earlier fields.",
    "churn_labels": "An explicit churn outcome of a customer; it overrides the inactivity rule.",
}
_INPUT_RULES = (
    " Keyed by customer_id (the key must equal it); at most 1 MiB of UTF-8 JSON; numbers are finite."
    " Unknown fields are ignored. A message that breaks a rule goes to dead_letter."
)


def schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of ``topic``'s messages (a contract base name such as ``orders``)."""
    if topic in FIELDS:
        body = _input_schema(FIELDS[topic])
        description = _INPUT_DESCRIPTIONS[topic] + _INPUT_RULES
    elif topic in OUTPUT_MESSAGES:
        message = OUTPUT_MESSAGES[topic]
        body = _object(message.FIELDS)
        doc = " ".join((message.__doc__ or "").replace("``", "").split())
        description = f"{doc} Fields this schema does not list may be added."
    else:
        raise ConfigError(f"unknown topic {topic!r}; the topics are: {', '.join(TOPICS)}")
    return {
        "$schema": DIALECT,
        "$id": f"{BASE_URI}{topic}",
        "title": topic,
        "description": description,
        **body,
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every topic's schema, keyed by topic, inputs first."""
    return {topic: schema(topic) for topic in TOPICS}


def render(document: Mapping[str, Any]) -> str:
    """The text kept in the repository: two-space indents, sorted keys, a trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path = SCHEMA_DIR) -> list[Path]:
    """Write ``<topic>.json`` for every topic into ``directory``; returns the files written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for topic, document in all_schemas().items():
        path = out / f"{topic}.json"
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written


def cli(args: argparse.Namespace, settings: Settings) -> int:
    """``churnstream schema [TOPIC]``: one topic's schema, or all of them as one object keyed by topic.

    TOPIC may carry the configured prefix (``prod.orders``); the schemas themselves do not depend on it.
    """
    topic = getattr(args, "topic", None)
    if topic is None:
        document: dict[str, Any] = all_schemas()
    else:
        document = schema(settings.topics.kind_of(topic))
    sys.stdout.write(render(document))
    return 0


# --- building blocks -------------------------------------------------------------------------------


def _input_schema(fields: Sequence[Field]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f.name: _input_property(f) for f in fields},
        "required": [f.name for f in fields if f.required],
        "additionalProperties": True,
    }


def _input_property(f: Field) -> dict[str, Any]:
    """A field of an input topic, with the bounds :func:`~churnstream.events.parse_event` checks."""
    if f.type == "time":
        return _input_time(f)
    out: dict[str, Any] = {"type": [f.type, "null"] if f.nullable else f.type}
    description = f.description
    if f.type == "string":
        if f.min_len:
            out["minLength"] = f.min_len
        if f.max_len is not None:
            out["maxLength"] = f.max_len
    if f.type in ("number", "integer"):
        if f.min is not None:
            out["minimum"] = f.min
        if f.max is not None:
            out["maximum"] = f.max
    if f.enum:
        out["enum"] = [*f.enum, None] if f.nullable else list(f.enum)
    if f.default is not None:
        out["default"] = f.default
        description += f" Absent or null means {f.default}."
    out["description"] = description
    return out


def _input_time(f: Field) -> dict[str, Any]:
    """A time: an RFC 3339 string with an offset, or integer epoch milliseconds."""
    minimum = 0 if f.min is None else int(f.min)
    choices: list[dict[str, Any]] = [
        {"type": "string", "pattern": TIME_PATTERN, "maxLength": 40},
        {
            "type": "integer",
            "minimum": minimum,
            "description": "Epoch milliseconds, a whole number (1714557600000 or 1714557600000.0).",
        },
    ]
    if f.nullable:
        choices.append({"type": "null"})
    description = f"{f.description} An RFC 3339 time with an offset (e.g. 2024-05-01T10:00:00Z) or integer"
    description += " epoch milliseconds; never before 1970-01-01 nor ahead of the wall clock by more than"
    description += " CHURN_MAX_FUTURE_SKEW_HOURS. A string must name a real date and time: the pattern lets"
    description += " 2024-02-30 through, the service refuses it."
    return {"oneOf": choices, "description": description}


def _object(fields: Mapping[str, OutputField]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: _output_property(f) for name, f in fields.items()},
        "required": [name for name, f in fields.items() if f.required],
        "additionalProperties": True,
    }


def _output_property(f: OutputField) -> dict[str, Any]:
    """A field of an output message as :mod:`churnstream.messages` declares it."""
    if f.type == "time":
        out: dict[str, Any] = {"type": "string", "pattern": _UTC_TIME}
    elif f.type == "object" and f.properties is not None:
        out = _object(f.properties)
    else:
        out = {"type": f.type}
    if f.nullable:
        out["type"] = [out["type"], "null"]
    if f.enum:
        out["enum"] = [*f.enum, None] if f.nullable else list(f.enum)
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    if f.items is not None:
        out["items"] = _output_property(f.items)
    if f.min_items:
        out["minItems"] = f.min_items
    if f.values is not None:
        out["additionalProperties"] = _output_property(f.values)
    if f.keys:
        out["required"] = list(f.keys)
    description = f.description
    if f.type == "time":
        description = f"{description} An RFC 3339 time in UTC.".strip()
    if description:
        out["description"] = description
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m churnstream.schemas [--write | --check]``: print, regenerate or check the kept files."""
    parser = argparse.ArgumentParser(
        prog="python -m churnstream.schemas", description="Print, write or check the JSON Schemas."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write every schema into {SCHEMA_DIR}")
    group.add_argument("--check", action="store_true", help="exit 1 when a kept file is out of date")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_schemas():
            print(path)
        return 0
    if args.check:
        stale = [
            topic
            for topic, document in all_schemas().items()
            if not (SCHEMA_DIR / f"{topic}.json").is_file()
            or (SCHEMA_DIR / f"{topic}.json").read_text(encoding="utf-8") != render(document)
        ]
        for topic in stale:
            print(f"{SCHEMA_DIR / topic}.json is out of date; run: python -m churnstream.schemas --write")
        return 1 if stale else 0
    sys.stdout.write(render(all_schemas()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

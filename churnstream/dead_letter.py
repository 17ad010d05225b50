"""A message that could not be processed (a ``dead_letter`` message of the contract).

>>> DeadLetter("orders", 0, 7, b"c1", b"\\xff", "not UTF-8", "decode", 0).to_json()["value"]
'/w=='
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from churnstream.message_fields import OutputField
from churnstream.timefmt import format_time


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, with the original bytes and the reason."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "source_topic": OutputField("string", "The topic the message came from."),
        "partition": OutputField("integer", "Its partition.", nullable=True, minimum=0),
        "offset": OutputField("integer", "Its offset.", nullable=True, minimum=0),
        "key": OutputField("string", "Its key as text.", nullable=True),
        "value": OutputField(
            "string", "Its bytes as text, or in base64 (see value_encoding).", nullable=True
        ),
        "value_encoding": OutputField(
            "string", "Present when the value was not UTF-8.", required=False, enum=("base64",)
        ),
        "error": OutputField("string", "Why it could not be processed."),
        "stage": OutputField("string", "Where it failed.", enum=("decode", "validate", "process")),
        "failed_at": OutputField("time", "Wall clock time of the failure."),
    }

    source_topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    error: str
    stage: str
    failed_at: int

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": _text(self.key)[0],
            "error": self.error,
            "stage": self.stage,
            "failed_at": format_time(self.failed_at),
        }
        text, encoding = _text(self.value)
        out["value"] = text
        if encoding:
            out["value_encoding"] = encoding
        return out


def _text(raw: bytes | None) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"

"""How an output message declares its fields: :class:`OutputField`, and the field shapes messages share.

Each message class keeps a ``FIELDS`` mapping of name -> :class:`OutputField` beside its ``to_json()``;
:mod:`churnstream.schemas` publishes those declarations as JSON Schemas.

>>> PROBABILITY.type, PROBABILITY.minimum, PROBABILITY.maximum
('number', 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OutputField:
    """One field of an output message as the contract lists it: its JSON type and what it holds.

    ``type`` is ``string``, ``number``, ``integer``, ``boolean``, ``time`` (an RFC 3339 UTC string),
    ``object`` or ``array``. ``required`` fields are in every message; the others are extensions a
    message may carry. An object lists its known ``properties`` (all of them present) or, as a map,
    the shape of its ``values`` and the ``keys`` it always has; an array gives its ``items``.
    """

    type: str
    description: str = ""
    required: bool = True
    nullable: bool = False
    enum: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    items: OutputField | None = None
    min_items: int = 0
    properties: Mapping[str, OutputField] | None = None
    values: OutputField | None = None
    keys: tuple[str, ...] = ()


PROBABILITY = OutputField("number", "A probability.", minimum=0.0, maximum=1.0)
NUMBER_OR_NULL = OutputField("number", nullable=True)

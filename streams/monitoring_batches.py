"""Records of the ``monitoring_batches`` topic: decode one and check it is what the scorer writes.

A record that is not raises :class:`~churnstream.errors.DecodeError` or
:class:`~churnstream.errors.ValidationError`; the monitor turns it into a dead letter and goes on.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np

from churnstream.errors import DecodeError, ValidationError
from churnstream.messages import MonitoringBatch

MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH_ROWS = 200_000
MAX_FEATURES = 1000
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")
_RESERVED = {
    "prediction_id",
    "as_of",
    "customer_id",
    "trigger",
    "batch_probability",
    "online_probability",
    "churn_probability",
}
_NUMBER = {int, float}
_NULLABLE_NUMBER = {int, float, type(None)}


def decode_batch(value: bytes | None, *, max_as_of: int | None = None) -> MonitoringBatch:
    """A :class:`MonitoringBatch` from a message value; :class:`DecodeError` / :class:`ValidationError`.

    The checks match what the scorer writes: columns are lists of one length, ``as_of`` and
    ``labeled_at`` integer epoch ms (not after ``max_as_of``), every listed feature present as numbers
    or nulls, probabilities in [0, 1], labels 0 or 1.

    >>> decode_batch(b"nope")
    Traceback (most recent call last):
    ...
    churnstream.errors.DecodeError: not JSON: ...
    """
    import orjson

    if value is None:
        raise DecodeError("empty message value")
    if len(value) > MAX_BATCH_BYTES:
        raise DecodeError(f"monitoring batch of {len(value):,} bytes exceeds {MAX_BATCH_BYTES:,}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("a monitoring batch must be a JSON object")
    for name, kind in (
        ("batch_id", str),
        ("created_at", int),
        ("model_version", str),
        ("feature_names", list),
        ("predictions", dict),
        ("outcomes", dict),
    ):
        if name not in obj:
            raise ValidationError(f"monitoring batch lacks {name}")
        if type(obj[name]) is not kind:
            raise ValidationError(f"{name} must be a {kind.__name__}, got {type(obj[name]).__name__}")
    if not 1 <= len(obj["batch_id"]) <= 128:
        raise ValidationError("batch_id must have 1..128 characters")
    if not _VERSION_RE.match(obj["model_version"]):
        raise ValidationError(f"model_version {obj['model_version'][:80]!r} is not a model version name")
    names = obj["feature_names"]
    if not 1 <= len(names) <= MAX_FEATURES or not all(type(n) is str and 0 < len(n) <= 128 for n in names):
        raise ValidationError(f"feature_names must be 1..{MAX_FEATURES} names of 1..128 characters")
    if len(set(names)) != len(names) or _RESERVED & set(names):
        raise ValidationError("feature_names must be distinct and not name a prediction column")
    predictions, outcomes = obj["predictions"], obj["outcomes"]
    rows = _column_length(predictions, "predictions")
    if rows:
        for name in ("as_of", "churn_probability", *names):
            if name not in predictions:
                raise ValidationError(f"predictions lack the column {name}")
        _epoch_ms(predictions["as_of"], "as_of", max_as_of)
        features = [predictions[name] for name in names]
        if not set(map(type, itertools.chain.from_iterable(features))) <= _NULLABLE_NUMBER:  # one C loop
            for name, values in zip(names, features, strict=True):
                _numbers(values, name, nullable=True)  # names the column
        _probabilities(predictions["churn_probability"], "churn_probability", nullable=False)
        _ids(predictions.get("prediction_id"), "prediction_id")
        for name in ("batch_probability", "online_probability"):
            if name in predictions:
                _probabilities(predictions[name], name, nullable=True)
    labels = _column_length(outcomes, "outcomes")
    if labels:
        for name in ("label", "labeled_at"):
            if name not in outcomes:
                raise ValidationError(f"outcomes lack the column {name}")
        if not all(type(v) is int and v in (0, 1) for v in outcomes["label"]):
            raise ValidationError("outcome labels must be 0 or 1")
        _epoch_ms(outcomes["labeled_at"], "labeled_at", max_as_of)
        if "as_of" in outcomes:  # the labelled prediction's (records written before it was added lack it)
            _epoch_ms(outcomes["as_of"], "outcome as_of", max_as_of)
        for name in ("batch_probability", "online_probability", "churn_probability"):
            if name in outcomes:
                _probabilities(outcomes[name], f"outcome {name}", nullable=True)
        _ids(outcomes.get("prediction_id"), "outcome prediction_id")
        if "model_version" in outcomes and not all(
            v is None or (type(v) is str and _VERSION_RE.match(v)) for v in outcomes["model_version"]
        ):
            raise ValidationError("outcome model_version must hold model version names")
    return MonitoringBatch.from_json(obj)


def _column_length(columns: dict[str, Any], part: str) -> int:
    lengths = set()
    for name, values in columns.items():
        if type(values) is not list:
            raise ValidationError(f"{part} column {name[:80]!r} must be a list")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise ValidationError(f"{part} columns have unequal lengths {sorted(lengths)[:5]}")
    rows = lengths.pop() if lengths else 0
    if rows > MAX_BATCH_ROWS:
        raise ValidationError(f"{part} hold {rows:,} rows, more than {MAX_BATCH_ROWS:,}")
    return rows


def _numbers(values: list[Any], name: str, *, nullable: bool) -> None:
    allowed = _NULLABLE_NUMBER if nullable else _NUMBER
    kinds = set(map(type, values))
    if not kinds <= allowed:
        bad = next(type(v).__name__ for v in values if type(v) not in allowed)
        raise ValidationError(f"{name[:80]} must hold numbers{' or nulls' if nullable else ''}, not {bad}")


def _probabilities(values: list[Any], name: str, *, nullable: bool) -> None:
    _numbers(values, name, nullable=nullable)
    array = np.array(values, dtype="float64")
    if np.any((array < 0) | (array > 1)):
        raise ValidationError(f"{name} must lie in [0, 1]")


def _ids(values: list[Any] | None, name: str) -> None:
    """An optional column of ids (records written before it was added lack it): strings of 1..128."""
    if values is not None and not all(v is None or (type(v) is str and 0 < len(v) <= 128) for v in values):
        raise ValidationError(f"{name} must hold ids of 1..128 characters")


def _epoch_ms(values: list[Any], name: str, upto: int | None) -> None:
    if values and set(map(type, values)) != {int}:
        raise ValidationError(f"{name} must be epoch milliseconds (integers)")
    if values and (min(values) < 0 or (upto is not None and max(values) > upto)):
        raise ValidationError(f"{name} must lie between 1970 and the wall clock plus the allowed skew")

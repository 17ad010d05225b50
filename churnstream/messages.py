"""Typed output messages of the contract: predictions, alerts, outcomes, drift reports, dead letters.

Each has ``to_json()`` giving exactly the contract's fields (times as RFC 3339 UTC strings).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from churnstream.events import format_time


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be processed, with the original bytes and the reason."""

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


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is twice as slow, and this is per message
class Prediction:
    prediction_id: str
    customer_id: str
    as_of: int
    scored_at: int
    trigger: str
    event_id: str | None
    model_version: str
    batch_probability: float
    online_probability: float | None
    churn_probability: float
    risk_category: str
    features: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "customer_id": self.customer_id,
            "as_of": format_time(self.as_of),
            "scored_at": format_time(self.scored_at),
            "trigger": self.trigger,
            "event_id": self.event_id,
            "model_version": self.model_version,
            "batch_probability": self.batch_probability,
            "online_probability": self.online_probability,
            "churn_probability": self.churn_probability,
            "risk_category": self.risk_category,
            "features": self.features,
        }


@dataclass(frozen=True, slots=True)
class Reason:
    feature: str
    value: float | None
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    prediction_id: str
    customer_id: str
    as_of: int
    churn_probability: float
    risk_category: str
    model_version: str
    recommended_actions: list[str]
    top_reasons: list[Reason]

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "prediction_id": self.prediction_id,
            "customer_id": self.customer_id,
            "as_of": format_time(self.as_of),
            "churn_probability": self.churn_probability,
            "risk_category": self.risk_category,
            "model_version": self.model_version,
            "recommended_actions": list(self.recommended_actions),
            "top_reasons": [r.to_json() for r in self.top_reasons],
        }


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is twice as slow, and this is per message
class Outcome:
    prediction_id: str
    customer_id: str
    as_of: int
    labeled_at: int
    label: int
    source: str
    batch_probability: float
    online_probability: float | None
    churn_probability: float

    def to_json(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "customer_id": self.customer_id,
            "as_of": format_time(self.as_of),
            "labeled_at": format_time(self.labeled_at),
            "label": self.label,
            "source": self.source,
            "batch_probability": self.batch_probability,
            "online_probability": self.online_probability,
            "churn_probability": self.churn_probability,
        }


@dataclass(frozen=True, slots=True)
class DriftReport:
    report_id: str
    created_at: int
    window_start: int
    window_end: int
    rows: int
    reference_rows: int
    model_version: str
    dataset_drift: bool
    drift_share: float
    drifted_columns: list[str]
    columns: dict[str, dict[str, Any]]
    prediction_drift: dict[str, Any] | None
    concept_drift: dict[str, Any] | None
    html_path: str
    url: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "report_id": self.report_id,
            "created_at": format_time(self.created_at),
            "window_start": format_time(self.window_start),
            "window_end": format_time(self.window_end),
            "rows": self.rows,
            "reference_rows": self.reference_rows,
            "model_version": self.model_version,
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drifted_columns": list(self.drifted_columns),
            "columns": self.columns,
            "prediction_drift": self.prediction_drift,
            "concept_drift": self.concept_drift,
            "html_path": self.html_path,
            "url": self.url,
        }
        out.update(self.extra)
        return out


OUTCOME_COLUMNS = (
    "labeled_at",
    "label",
    "source",
    "batch_probability",
    "online_probability",
    "churn_probability",
)  # the columns of MonitoringBatch.outcomes


@dataclass(frozen=True, slots=True)
class MonitoringBatch:
    """Internal: what one scorer micro-batch saw and said, in columns, for the drift monitor.

    One record per micro-batch on the ``churnstream.monitoring_batches`` topic keeps the monitor's
    per-message cost independent of the scoring rate. ``predictions`` holds equal-length columns:
    ``as_of`` (epoch ms), ``customer_id``, ``trigger``, every feature, ``batch_probability``,
    ``online_probability`` (None until learned) and ``churn_probability``. ``outcomes`` holds the labels
    resolved in this batch: ``labeled_at``, ``label``, ``source``, and the three probabilities.
    """

    batch_id: str
    created_at: int
    model_version: str
    feature_names: list[str]
    predictions: dict[str, list[Any]]
    outcomes: dict[str, list[Any]]

    @property
    def rows(self) -> int:
        return len(self.predictions.get("churn_probability", ()))

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "created_at": self.created_at,
            "model_version": self.model_version,
            "feature_names": list(self.feature_names),
            "predictions": self.predictions,
            "outcomes": self.outcomes,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> MonitoringBatch:
        """Rebuild from :meth:`to_json` output; :class:`ValidationError` when a part is missing or ragged."""
        from churnstream.errors import ValidationError

        try:
            batch = cls(
                batch_id=str(obj["batch_id"]),
                created_at=int(obj["created_at"]),
                model_version=str(obj["model_version"]),
                feature_names=[str(n) for n in obj["feature_names"]],
                predictions=dict(obj["predictions"]),
                outcomes=dict(obj["outcomes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not a monitoring batch record: {exc!r}") from None
        for part in (batch.predictions, batch.outcomes):
            lengths = {len(v) for v in part.values() if isinstance(v, list)}
            if len(lengths) > 1 or any(not isinstance(v, list) for v in part.values()):
                raise ValidationError("monitoring batch columns must be lists of equal length")
        return batch

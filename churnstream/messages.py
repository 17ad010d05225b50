"""Typed output messages of the contract: predictions, alerts, outcomes, drift reports, dead letters.

Each has ``to_json()`` giving exactly the contract's fields (times as RFC 3339 UTC strings), and a
``FIELDS`` declaration beside it listing every field the contract names for its topic, with its JSON type;
:mod:`churnstream.schemas` publishes those declarations as JSON Schemas (:data:`OUTPUT_MESSAGES` says
which class is on which topic).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from churnstream.events import format_time

# The features every prediction carries, with the contract's names and meanings (the feature code is in
# churnstream.features.definitions, which adds more).
REQUIRED_FEATURES = (
    "orders_total",
    "spent_total",
    "avg_order_value",
    "recency_days",
    "tenure_days",
    "orders_30d",
    "orders_90d",
    "spent_90d",
    "mean_days_between_orders",
    "returns_total",
    "tickets_total",
    "tickets_90d",
    "negative_tickets_total",
    "avg_resolution_hours",
)


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


_PROBABILITY = OutputField("number", "A probability.", minimum=0.0, maximum=1.0)
_NUMBER_OR_NULL = OutputField("number", nullable=True)
_STRINGS = OutputField("array", items=OutputField("string"))
_COLUMN_DRIFT = OutputField(
    "object",
    "The drift test of one column.",
    properties={
        "method": OutputField("string", "The statistical test.", nullable=True),
        "score": OutputField("number", "The test's statistic or p-value.", nullable=True),
        "threshold": OutputField("number", "The score at which the column counts as drifted.", nullable=True),
        "drifted": OutputField("boolean"),
    },
)
_SHADOW = {
    "shadow_model_version": OutputField("string", "The model in shadow.", required=False),
    "shadow_probability": OutputField(
        "number",
        "The shadow model's churn probability.",
        required=False,
        nullable=True,
        minimum=0.0,
        maximum=1.0,
    ),
}


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


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ is twice as slow, and this is per message
class Prediction:
    """One scoring of one customer as of an event time (a ``churn_predictions`` message)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "prediction_id": OutputField("string", "Unique per prediction."),
        "customer_id": OutputField("string"),
        "as_of": OutputField("time", "The event time the features are valid at."),
        "scored_at": OutputField("time", "Wall clock time of the scoring."),
        "trigger": OutputField(
            "string",
            "What caused it (request: an answer of the HTTP API).",
            enum=("event", "sweep", "request"),
        ),
        "event_id": OutputField("string", "The triggering event; null for a sweep.", nullable=True),
        "model_version": OutputField("string"),
        "batch_probability": _PROBABILITY,
        "online_probability": OutputField(
            "number", "Null until the online model has learned.", nullable=True, minimum=0.0, maximum=1.0
        ),
        "churn_probability": OutputField("number", "The blend that decisions use.", minimum=0.0, maximum=1.0),
        "risk_category": OutputField("string", enum=("LOW", "MEDIUM", "HIGH")),
        "features": OutputField(
            "object",
            "Feature name -> value (null where undefined).",
            values=_NUMBER_OR_NULL,
            keys=REQUIRED_FEATURES,
        ),
        "value_at_risk": OutputField(
            "number", "As on alerts: the value expected to be lost.", required=False, nullable=True
        ),
        **_SHADOW,
    }

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
    """How much one feature moved a customer's score (one of an alert's ``top_reasons``)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "feature": OutputField("string"),
        "value": OutputField("number", "The feature's value.", nullable=True),
        "contribution": OutputField("number", "In the unit the alert's explanation names."),
    }

    feature: str
    value: float | None
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True, slots=True)
class Alert:
    """A customer the alert policy picked for a retention action (a ``churn_alerts`` message)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "alert_id": OutputField("string", "Unique per alert."),
        "prediction_id": OutputField("string", "The prediction that raised it."),
        "customer_id": OutputField("string"),
        "as_of": OutputField("time"),
        "churn_probability": _PROBABILITY,
        "risk_category": OutputField("string", enum=("LOW", "MEDIUM", "HIGH")),
        "model_version": OutputField("string"),
        "recommended_actions": OutputField("array", items=OutputField("string"), min_items=1),
        "top_reasons": OutputField(
            "array",
            "The features that moved the score most, largest first.",
            items=OutputField("object", properties=Reason.FIELDS),
            min_items=3,
        ),
        "value_at_risk": OutputField(
            "number", "Expected loss, in the unit of order amounts, if the customer churns.", required=False
        ),
        "priority": OutputField("number", "Higher is more worth a retention action.", required=False),
        "policy": OutputField("string", "The alert policy that chose it, with its settings.", required=False),
        "explanation": OutputField(
            "object",
            "The unit of the contributions and the base value they add to.",
            required=False,
            properties={"unit": OutputField("string"), "base": OutputField("number")},
        ),
        "holdout": OutputField("boolean", "A control customer who must not be contacted.", required=False),
    }

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
    """The label of a prediction once it became known (a ``churn_outcomes`` message)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "prediction_id": OutputField("string"),
        "customer_id": OutputField("string"),
        "as_of": OutputField("time", "The prediction's as_of."),
        "labeled_at": OutputField("time", "The event time the label became known."),
        "label": OutputField("integer", "1 = churned within the horizon.", enum=(0, 1)),
        "source": OutputField("string", "What decided the label.", enum=("inactivity", "order", "explicit")),
        "batch_probability": _PROBABILITY,
        "online_probability": OutputField("number", nullable=True, minimum=0.0, maximum=1.0),
        "churn_probability": _PROBABILITY,
        **_SHADOW,
    }

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
    """What the monitor found in one window of predictions (a ``drift_reports`` message)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "report_id": OutputField("string"),
        "created_at": OutputField("time"),
        "window_start": OutputField("time"),
        "window_end": OutputField("time"),
        "rows": OutputField("integer", "Predictions in the window.", minimum=0),
        "reference_rows": OutputField("integer", minimum=0),
        "model_version": OutputField("string"),
        "dataset_drift": OutputField("boolean"),
        "drift_share": OutputField("number", "Share of drifted columns.", minimum=0.0, maximum=1.0),
        "drifted_columns": _STRINGS,
        "columns": OutputField("object", "Column name -> its drift test.", values=_COLUMN_DRIFT),
        "prediction_drift": OutputField(
            "object",
            "The drift test of churn_probability.",
            nullable=True,
            properties=_COLUMN_DRIFT.properties,
        ),
        "concept_drift": OutputField(
            "object",
            "The online concept-drift detector's state.",
            nullable=True,
            properties={
                "detector": OutputField("string"),
                "detected": OutputField("boolean"),
                "at": OutputField("time", "The event time of the latest detection.", nullable=True),
            },
        ),
        "html_path": OutputField("string", "The Evidently HTML report on disk."),
        "url": OutputField("string", "Where the report can be viewed.", nullable=True),
        "estimated_performance": OutputField(
            "object",
            "ROC-AUC on this window estimated without labels.",
            required=False,
            nullable=True,
            properties={
                "metric": OutputField("string"),
                "value": _NUMBER_OR_NULL,
                "lower": _NUMBER_OR_NULL,
                "upper": _NUMBER_OR_NULL,
            },
        ),
        "realized_performance": OutputField(
            "object",
            "Realized ROC-AUC of the latest earlier window whose labels are known.",
            required=False,
            nullable=True,
            properties={
                "metric": OutputField("string"),
                "value": _NUMBER_OR_NULL,
                "labels": OutputField("integer", minimum=0),
                "window_start": OutputField("time"),
                "window_end": OutputField("time"),
            },
        ),
        "action": OutputField(
            "string", "What the monitor advises.", required=False, enum=("none", "watch", "retrain")
        ),
        "evidently_run": OutputField(
            "string", "This window's run in the Evidently UI project.", required=False, nullable=True
        ),
    }

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


OUTPUT_MESSAGES: dict[str, Any] = {
    "churn_predictions": Prediction,
    "churn_alerts": Alert,
    "churn_outcomes": Outcome,
    "drift_reports": DriftReport,
    "dead_letter": DeadLetter,
}
"""Each output topic's message class; its ``FIELDS`` is the one declaration of the topic's shape."""

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

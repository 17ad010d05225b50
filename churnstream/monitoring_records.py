"""What the drift monitor reads and writes: the scorer's per-batch monitoring records and drift reports.

:class:`DriftReport` is a ``drift_reports`` message of the contract; :class:`MonitoringBatch` is internal
(the ``churnstream.monitoring_batches`` topic between the scorer and the monitor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from churnstream.message_fields import NUMBER_OR_NULL, OutputField
from churnstream.timefmt import format_time

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
                "value": NUMBER_OR_NULL,
                "lower": NUMBER_OR_NULL,
                "upper": NUMBER_OR_NULL,
                "calibrated_on": OutputField(
                    "object",
                    "The labels of the model version's first windows the probabilities were read through "
                    "(what a probability turned out to mean) before estimating; null: taken as served.",
                    required=False,
                    nullable=True,
                    properties={"labels": OutputField("integer"), "windows": OutputField("integer")},
                ),
            },
        ),
        "realized_performance": OutputField(
            "object",
            "Realized ROC-AUC of the latest earlier window whose labels are known.",
            required=False,
            nullable=True,
            properties={
                "metric": OutputField("string"),
                "value": NUMBER_OR_NULL,
                "lower": OutputField(
                    "number",
                    "The 95% interval of value, by DeLong's variance over its labels: what they can show by "
                    "chance. A retrain is advised only for a drop beyond chance.",
                    required=False,
                ),
                "upper": OutputField("number", required=False),
                "labels": OutputField("integer", minimum=0),
                "window_start": OutputField("time"),
                "window_end": OutputField("time"),
                "windows": OutputField(
                    "integer",
                    "How many adjacent windows these labels are of: more than 1 when more windows wait for "
                    "their labels than the monitor keeps apart (400).",
                    required=False,
                    minimum=1,
                ),
            },
        ),
        "action": OutputField(
            "string", "What the monitor advises.", required=False, enum=("none", "watch", "retrain")
        ),
        "evidently_run": OutputField(
            "string", "This window's run in the Evidently UI project.", required=False, nullable=True
        ),
        "evidence": OutputField(
            "object",
            "While a model is in shadow: it against the current model on the same labelled predictions "
            "(churnstream.monitoring.evidence).",
            required=False,
        ),
        "action_reason": OutputField(
            "string", "Why the monitor advises this action, in words.", required=False
        ),
        "closed_by": OutputField(
            "string",
            "What closed the window: CHURN_DRIFT_WINDOW_ROWS predictions, CHURN_DRIFT_WINDOW_DAYS of event "
            "time, a new model version, or the monitor flushing it as it stopped.",
            required=False,
            enum=("rows", "time", "model_version", "flush"),
        ),
        "outcomes": OutputField(
            "integer",
            "Outcomes that arrived while the window was open (mostly of earlier windows' predictions).",
            required=False,
            minimum=0,
        ),
        "model_auc": OutputField(
            "object",
            "Model (batch, online, blend) -> its ROC-AUC over its latest labelled outcomes (null "
            "without both classes).",
            required=False,
            values=NUMBER_OR_NULL,
        ),
        "model_auc_labels": OutputField(
            "object",
            "Model (batch, online, blend) -> how many outcomes model_auc counts.",
            required=False,
            values=OutputField("integer", minimum=0),
        ),
        "evidently_report": OutputField(
            "object",
            "How the Evidently HTML was drawn: drawn (full, light: a page of the verdicts when the renderer "
            "fell behind, none), rows, and for a full one rendered_rows and sampled; error when it failed. "
            "A window published light may be drawn in full once the monitor caught up, behind the same url: "
            "its saved message (the monitor's /reports/<id>.json) then says drawn full, drawn_later true and "
            "drawn_later_at.",
            required=False,
        ),
        "verdict_by": OutputField("string", "What computed the drift verdict.", required=False),
        "skipped_columns": OutputField(
            "array",
            "Features without a finite value on either side, not tested.",
            required=False,
            items=OutputField("string"),
        ),
        "reference_source": OutputField(
            "string",
            "Where the reference sample came from: the model registry (the model's training sample) or the "
            "stream (the model's first windows).",
            required=False,
            enum=("registry", "stream"),
        ),
        "performance_reference": OutputField(
            "object",
            "The ROC-AUC this window's performance is held to (estimated and realized).",
            required=False,
            properties={
                "metric": OutputField("string"),
                "estimated": NUMBER_OR_NULL,
                "realized": NUMBER_OR_NULL,
                "realized_set_aside": NUMBER_OR_NULL,
                "realized_window_start": OutputField("time", nullable=True),
                "realized_window_end": OutputField("time", nullable=True),
                "realized_interval": OutputField(
                    "array", "The realized reference's 95% interval.", required=False, items=NUMBER_OR_NULL
                ),
                "realized_windows": OutputField(
                    "integer", "How many windows the realized reference pools.", required=False
                ),
                "realized_labels": OutputField(
                    "integer", "How many labels the realized reference pools.", required=False, nullable=True
                ),
                "realized_left_out_count": OutputField(
                    "integer",
                    "How many windows after the pool's first it does not hold: each ranked a retrain below "
                    "it and beyond chance (a model that broke meanwhile), so it was judged, not pooled.",
                    required=False,
                ),
                "realized_left_out": OutputField(
                    "array",
                    "The latest (at most 5) of those windows.",
                    required=False,
                    items=OutputField(
                        "object",
                        properties={
                            "window_start": OutputField("time"),
                            "window_end": OutputField("time"),
                            "realized": OutputField("number"),
                        },
                    ),
                ),
            },
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
    estimated_performance: dict[str, Any] | None = None
    realized_performance: dict[str, Any] | None = None
    action: str | None = None

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
            "estimated_performance": self.estimated_performance,
            "realized_performance": _timed(self.realized_performance),
        }
        if self.action is not None:
            out["action"] = self.action
        out.update(self.extra)
        return out


def _timed(performance: dict[str, Any] | None) -> dict[str, Any] | None:
    """``realized_performance`` with its window bounds as RFC 3339 times (they are epoch ms inside)."""
    if performance is None:
        return None
    out = dict(performance)
    for name in ("window_start", "window_end"):
        if isinstance(out.get(name), int):
            out[name] = format_time(out[name])
    return out


OUTCOME_COLUMNS = (
    "as_of",
    "labeled_at",
    "label",
    "source",
    "batch_probability",
    "online_probability",
    "churn_probability",
    "model_version",
    "prediction_id",
)  # the columns of MonitoringBatch.outcomes (model_version, prediction_id: the labelled prediction's)


@dataclass(frozen=True, slots=True)
class MonitoringBatch:
    """Internal: what one scorer micro-batch saw and said, in columns, for the drift monitor.

    One record per micro-batch on the ``churnstream.monitoring_batches`` topic keeps the monitor's
    per-message cost independent of the scoring rate. ``predictions`` holds equal-length columns:
    ``prediction_id``, ``as_of`` (epoch ms), ``customer_id``, ``trigger``, every feature,
    ``batch_probability``, ``online_probability`` (None until learned) and ``churn_probability``.
    ``outcomes`` holds the labels resolved in this batch: the labelled prediction's ``as_of`` (so the
    monitor finds the window it fell in), ``labeled_at``, ``label``, ``source``, the three probabilities and
    the labelled prediction's ``model_version`` and ``prediction_id`` (records written before they were
    added lack them). The ids let the monitor leave out rows of a unit a restarted scorer answered again.
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

"""Typed output messages of the contract: predictions, alerts, outcomes, drift reports, dead letters.

Each has ``to_json()`` giving exactly the contract's fields (times as RFC 3339 UTC strings), and a
``FIELDS`` declaration beside it listing every field the contract names for its topic, with its JSON type
(an :class:`OutputField` each); :mod:`churnstream.schemas` publishes those declarations as JSON Schemas
(:data:`OUTPUT_MESSAGES` says which class is on which topic). The classes live by what they are —
:mod:`churnstream.predictions` (predictions, alerts, outcomes), :mod:`churnstream.monitoring_records`
(drift reports and the monitor's input batches), :mod:`churnstream.dead_letter` — and this module is
their public surface: import them from here.
"""

from __future__ import annotations

from typing import Any

from churnstream.dead_letter import DeadLetter
from churnstream.message_fields import OutputField
from churnstream.monitoring_records import OUTCOME_COLUMNS, DriftReport, MonitoringBatch
from churnstream.predictions import EXPLANATION_DIGITS, REQUIRED_FEATURES, Alert, Outcome, Prediction, Reason

__all__ = [
    "EXPLANATION_DIGITS",
    "OUTCOME_COLUMNS",
    "OUTPUT_MESSAGES",
    "REQUIRED_FEATURES",
    "Alert",
    "DeadLetter",
    "DriftReport",
    "MonitoringBatch",
    "Outcome",
    "OutputField",
    "Prediction",
    "Reason",
]

OUTPUT_MESSAGES: dict[str, Any] = {
    "churn_predictions": Prediction,
    "churn_alerts": Alert,
    "churn_outcomes": Outcome,
    "drift_reports": DriftReport,
    "dead_letter": DeadLetter,
}
"""Each output topic's message class; its ``FIELDS`` is the one declaration of the topic's shape."""

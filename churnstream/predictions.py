"""What the scorer says about a customer: predictions, the alerts picked from them, and their outcomes.

The ``churn_predictions``, ``churn_alerts`` and ``churn_outcomes`` messages of the contract; each class's
``FIELDS`` is the one declaration of its topic's shape (see :mod:`churnstream.messages`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from churnstream.message_fields import NUMBER_OR_NULL, PROBABILITY, OutputField
from churnstream.timefmt import format_time

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

NULL_MEANS = {
    "avg_order_value": "no order yet",
    "recency_days": "no order yet",
    "tenure_days": "no event yet",
    "mean_days_between_orders": "fewer than two orders",
    "avg_resolution_hours": "no resolved ticket",
    "recency_ratio": "fewer than two orders",
    "days_since_last_ticket": "no ticket",
    "negative_ticket_share": "no rated ticket",
    "avg_satisfaction": "no rated ticket",
    "return_rate": "no order or return",
    "age": "not given",
    "email_verified": "not given",
    "phone_verified": "not given",
    "order_gap_cv": "fewer than three orders",
    "recency_gap_z": "fewer than three orders",
}
"""What a feature's null says about the customer, as people read it in an alert's reasons (a reason
``negative_ticket_share=null`` told a retention team nothing: the customer has no rated ticket)."""

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
        "batch_probability": PROBABILITY,
        "online_probability": OutputField(
            "number", "Null until the online model has learned.", nullable=True, minimum=0.0, maximum=1.0
        ),
        "churn_probability": OutputField("number", "The blend that decisions use.", minimum=0.0, maximum=1.0),
        "risk_category": OutputField("string", enum=("LOW", "MEDIUM", "HIGH")),
        "features": OutputField(
            "object",
            "Feature name -> value (null where undefined).",
            values=NUMBER_OR_NULL,
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
    value_at_risk: float | None = None  # churnstream.models.value
    shadow_model_version: str | None = None  # while a model is in shadow (#24)
    shadow_probability: float | None = None

    def to_json(self) -> dict[str, Any]:
        body = {
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
            "value_at_risk": self.value_at_risk,
        }
        if self.shadow_model_version is not None:  # the shadow's fields only while a model is in shadow
            body["shadow_model_version"] = self.shadow_model_version
            body["shadow_probability"] = self.shadow_probability
        return body


# Contributions and the base they add to are written to 6 decimals, as probabilities are: what is past
# that is the explanation's float noise, not information a retention team can use.
EXPLANATION_DIGITS = 6


@dataclass(frozen=True, slots=True)
class Reason:
    """How much one feature moved a customer's score (one of an alert's ``top_reasons``)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "feature": OutputField("string"),
        "value": OutputField("number", "The feature's value.", nullable=True),
        "contribution": OutputField("number", "In the unit the alert's explanation names, to 6 decimals."),
    }

    feature: str
    value: float | None
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "contribution": round(self.contribution, EXPLANATION_DIGITS),
        }


def reasons_text(alert: Mapping[str, Any]) -> str:
    """An alert's ``top_reasons`` as people read them (the ``churnstream alerts`` lines, the monitor's
    alerts page): each feature with its value to about 4 significant digits (``tenure_days=468``, not
    ``468.0287``), and its contribution to 3 significant digits, signed, in the unit the alert's
    explanation names.

    >>> print(reasons_text({"explanation": {"unit": "log-odds", "base": -0.4}, "top_reasons": [
    ...     {"feature": "spent_total", "value": 1234567.5, "contribution": 0.00123456},
    ...     {"feature": "orders_total", "value": 143, "contribution": -1.7214},
    ...     {"feature": "recency_days", "value": 90.3471, "contribution": 0.2},
    ...     {"feature": "return_rate", "value": 0.03125, "contribution": 0.01}]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    spent_total=1,234,568 (+0.00123), orders_total=143 (-1.72), recency_days=90.35 (+0.2),
    return_rate=0.0312 (+0.01) in log-odds

    A null value says what it means for the customer:

    >>> print(reasons_text({"top_reasons": [
    ...     {"feature": "mean_days_between_orders", "value": None, "contribution": 0.61},
    ...     {"feature": "negative_ticket_share", "value": None, "contribution": 0.291}]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    mean_days_between_orders=none (fewer than two orders) (+0.61),
    negative_ticket_share=none (no rated ticket) (+0.291)
    """
    shown = []
    for reason in alert.get("top_reasons") or []:
        value = reason.get("value")
        if value is None:
            value_text = f"none ({NULL_MEANS.get(str(reason.get('feature')), 'not defined')})"
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            value_text = str(value)
        elif isinstance(value, int) or float(value).is_integer():
            value_text = f"{int(value):,}"
        elif not math.isfinite(value):  # another producer's NaN or inf: shown, not a crash
            value_text = str(value)
        else:
            decimals = min(4, max(0, 3 - math.floor(math.log10(abs(value))))) if value else 0
            value_text = f"{value:,.{decimals}f}"
            if "." in value_text:
                value_text = value_text.rstrip("0").rstrip(".")
        contribution = reason.get("contribution")
        signed = f"{contribution:+.3g}" if isinstance(contribution, (int, float)) else str(contribution)
        shown.append(f"{reason.get('feature')}={value_text} ({signed})")
    unit = (alert.get("explanation") or {}).get("unit")
    return ", ".join(shown) + (f" in {unit}" if shown and unit else "")


@dataclass(frozen=True, slots=True)
class Alert:
    """A customer the alert policy picked for a retention action (a ``churn_alerts`` message)."""

    FIELDS: ClassVar[Mapping[str, OutputField]] = {
        "alert_id": OutputField("string", "Unique per alert."),
        "prediction_id": OutputField("string", "The prediction that raised it."),
        "customer_id": OutputField("string"),
        "as_of": OutputField("time"),
        "churn_probability": PROBABILITY,
        "risk_category": OutputField("string", enum=("LOW", "MEDIUM", "HIGH")),
        "model_version": OutputField("string"),
        "recommended_actions": OutputField(
            "array", "What to do; empty for a held-back control customer.", items=OutputField("string")
        ),
        "top_reasons": OutputField(
            "array",
            "Why the customer is at risk: the reasons raising the score most, largest first, then the one "
            "lowering it most (more of those when fewer than three raise it).",
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
            "The unit of the contributions and the base value they add to; with `other`, the reasons not "
            "listed, summed: base + listed contributions + other = the score.",
            required=False,
            properties={
                "unit": OutputField("string"),
                "base": OutputField("number"),
                "other": OutputField("number", "The reasons not listed, summed.", required=False),
            },
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
    value_at_risk: float | None = None
    priority: float | None = None
    policy: str | None = None
    explanation: dict[str, Any] | None = None
    holdout: bool = False

    def to_json(self) -> dict[str, Any]:
        body = {
            "alert_id": self.alert_id,
            "prediction_id": self.prediction_id,
            "customer_id": self.customer_id,
            "as_of": format_time(self.as_of),
            "churn_probability": self.churn_probability,
            "risk_category": self.risk_category,
            "model_version": self.model_version,
            "recommended_actions": list(self.recommended_actions),
            "top_reasons": [r.to_json() for r in self.top_reasons],
            "holdout": self.holdout,
        }
        # extension fields with no value are left out (their schemas allow no null)
        for name in ("value_at_risk", "priority", "policy", "explanation"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body


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
        "batch_probability": PROBABILITY,
        "online_probability": OutputField("number", nullable=True, minimum=0.0, maximum=1.0),
        "churn_probability": PROBABILITY,
        "model_version": OutputField(
            "string",
            "The model that made the prediction (the prediction's model_version); absent for a prediction "
            "made before outcomes carried it.",
            required=False,
        ),
        "customer_value": OutputField(
            "number",
            "What the customer was expected to bring over the horizon if they stayed, as of the prediction "
            "(its value_at_risk is this times churn_probability): for weighing any model's probabilities, "
            "as the shadow's evidence does.",
            required=False,
            nullable=True,
            minimum=0.0,
        ),
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
    shadow_model_version: str | None = None  # copied from the pending prediction (#24)
    shadow_probability: float | None = None
    customer_value: float | None = None  # churnstream.models.value.value_over_horizon of its features
    model_version: str | None = None  # the model that made the prediction, as the pending prediction kept it

    def to_json(self) -> dict[str, Any]:
        body = {
            "prediction_id": self.prediction_id,
            "customer_id": self.customer_id,
            "as_of": format_time(self.as_of),
            "labeled_at": format_time(self.labeled_at),
            "label": self.label,
            "source": self.source,
            "batch_probability": self.batch_probability,
            "online_probability": self.online_probability,
            "churn_probability": self.churn_probability,
            "customer_value": self.customer_value,
        }
        if self.model_version is not None:
            body["model_version"] = self.model_version
        if self.shadow_model_version is not None:
            body["shadow_model_version"] = self.shadow_model_version
            body["shadow_probability"] = self.shadow_probability
        return body

"""The scoring worker's Prometheus metrics, served on ``/metrics`` (:mod:`churnstream.streams.health`).

The runtime (:mod:`churnstream.streams.worker`) counts batches, retries and lag; the scorer's handler
counts events, predictions, outcomes, alerts and dead letters. The names are part of the operations
docs: keep them.
"""

from __future__ import annotations


class ScorerMetrics:
    """Prometheus metrics of one worker (a registry of its own, so tests can run several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.events = Counter("churn_events", "Input events processed", ["topic"], registry=self.registry)
        self.predictions = Counter(
            "churn_predictions", "Predictions emitted", ["trigger"], registry=self.registry
        )
        self.alerts = Counter("churn_alerts", "Alerts emitted", registry=self.registry)
        # the daily report's figures for the dashboard: risk categories, mean probability, alerts' value
        self.predictions_by_risk = Counter(
            "churn_predictions_by_risk",
            "Predictions emitted, by risk category",
            ["risk"],
            registry=self.registry,
        )
        self.probability = Counter(
            "churn_predicted_probability",
            "Sum of the churn probabilities of the predictions emitted (over churn_predictions: the mean)",
            registry=self.registry,
        )
        self.alert_value = Counter(
            "churn_alert_value_at_risk",
            "Sum of the value at risk of the alerts emitted",
            registry=self.registry,
        )
        self.outcomes = Counter("churn_outcomes", "Outcomes emitted", ["source"], registry=self.registry)
        self.dead_letters = Counter("churn_dead_letters", "Dead letters", ["stage"], registry=self.registry)
        self.duplicates = Counter(
            "churn_duplicate_events", "Redelivered events ignored", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "churn_batch_seconds",
            "Time to process one micro-batch",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.lag = Gauge(
            "churn_consumer_lag", "Messages behind the end of the input topics", registry=self.registry
        )
        self.watermark = Gauge(
            "churn_event_time_watermark_seconds", "Event-time watermark", registry=self.registry
        )
        self.retries = Counter(
            "churn_retries", "Batches retried after a broker or Redis failure", registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


__all__ = ["ScorerMetrics"]

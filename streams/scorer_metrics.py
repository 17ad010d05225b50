"""The scoring worker's Prometheus metrics, served on ``/metrics`` (:mod:`churnstream.streams.health`).

The runtime (:mod:`churnstream.streams.worker`) counts batches, retries and lag; the scorer's handler
counts events, predictions, outcomes, alerts and dead letters. The names are part of the operations
docs: keep them.

The handler's counts are of units of work: a unit counts once its write is known to be in Redis, so a
batch retried after a broker or Redis failure (its effects rewound, its events processed again) counts
once, not once per try. A unit's increments are held (:class:`UnitCounter`) until the worker says it is
written (:meth:`ScorerMetrics.written`), durable (:meth:`ScorerMetrics.durable`), or rewound
(:meth:`ScorerMetrics.rewound`): then a write whose answer was lost but which Redis applied (its fences
say so) counts, and one Redis did not apply is dropped, to be counted when it is processed again.

Two rare cases count short, never twice: a unit over several partitions of which Redis applied some and
refused others (each partition's write is atomic, the unit is not), and a sweep's chunk (no offsets to
check) whose write Redis applied while its answer was lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class UnitCounter:
    """A Prometheus counter whose increments wait for their unit's write to be durable: ``labels`` and
    ``inc`` as on the counter itself.

    >>> m = ScorerMetrics()
    >>> def alerts() -> float | None:
    ...     return m.registry.get_sample_value("churn_alerts_total")
    >>> m.alerts.inc(2); m.events.labels("orders").inc(5)
    >>> alerts(), m.written({("orders", 0): 5}), alerts(), m.durable(), alerts()
    (0.0, None, 0.0, None, 2.0)
    >>> m.alerts.inc(); m.written({("orders", 0): 9})  # then its write fails, and Redis's fence says
    >>> m.rewound({("orders", 0): 5}); alerts()  # not applied: counted when it is processed again
    2.0
    >>> m.alerts.inc(); m.written({("orders", 0): 9}); m.rewound({("orders", 0): 9}); alerts()  # applied
    3.0
    """

    def __init__(self, counter: Any, staged: list[tuple[Any, float]]) -> None:
        self._counter = counter  # a Prometheus counter, or one of its labelled children
        self._staged = staged  # the unit's increments, shared by every counter of one ScorerMetrics
        self._children: dict[tuple[str, ...], UnitCounter] = {}

    def labels(self, *values: str) -> UnitCounter:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = UnitCounter(self._counter.labels(*values), self._staged)
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._staged.append((self._counter, amount))


class ScorerMetrics:
    """Prometheus metrics of one worker (a registry of its own, so tests can run several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram
        from prometheus_client import Counter as Prometheus

        self.registry = CollectorRegistry()
        self._staged: list[tuple[Any, float]] = []  # increments of the unit being computed
        # units written, not yet known durable: their next offsets, their increments
        self._written: list[tuple[dict[tuple[str, int], int], list[tuple[Any, float]]]] = []

        def unit(name: str, doc: str, labels: Any = ()) -> UnitCounter:
            """A counter of units of work (see the module docstring)."""
            return UnitCounter(Prometheus(name, doc, labels, registry=self.registry), self._staged)

        self.events = unit("churn_events", "Input events processed", ["topic"])
        self.predictions = unit("churn_predictions", "Predictions emitted", ["trigger"])
        self.alerts = unit("churn_alerts", "Alerts emitted")
        # the daily report's figures for the dashboard: risk categories, mean probability, alerts' value
        self.predictions_by_risk = unit(
            "churn_predictions_by_risk",
            "Predictions emitted, by risk category",
            ["risk"],
        )
        self.probability = unit(
            "churn_predicted_probability",
            "Sum of the churn probabilities of the predictions emitted (over churn_predictions: the mean)",
        )
        self.alert_value = unit(
            "churn_alert_value_at_risk",
            "Sum of the value at risk of the alerts emitted",
        )
        self.outcomes = unit("churn_outcomes", "Outcomes emitted", ["source"])
        self.dead_letters = unit("churn_dead_letters", "Dead letters", ["stage"])
        self.duplicates = unit("churn_duplicate_events", "Redelivered events ignored")
        self.time_jumps = unit(
            "churn_event_time_jumps",
            "Events that moved their partition's event time forward by more than the horizon at once",
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
        self.model_not_served = Gauge(  # the scorer sets what it reads (ModelSet.not_served) at scrape
            "churn_model_not_served",
            "1 while the registry's current model cannot be loaded and an earlier one is served, else 0",
            registry=self.registry,
        )
        self.retries = Prometheus(  # counted as they fail: not a unit's count
            "churn_retries",
            "Batches retried, and rewinds tried again, after a broker or Redis failure",
            registry=self.registry,
        )

    def written(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """The unit computed since the last call is written, with ``offsets`` (its next offsets) as its
        fences; the write is not yet known durable."""
        self._written.append((dict(offsets), list(self._staged)))
        self._staged.clear()

    def durable(self) -> None:
        """Every unit written so far is durable: count them."""
        for _, increments in self._written:
            self._count(increments)
        self._written.clear()

    def rewound(self, fences: Mapping[tuple[str, int], int | None]) -> None:
        """The worker went back to ``fences``, Redis's applied offsets: count each unit written whose
        fences Redis holds (its write was applied, its answer lost), drop the others and the unit being
        computed (processed, and counted, again). A unit without offsets (a sweep's chunk) is dropped."""
        for offsets, increments in self._written:
            # equal, not at least: a fence another worker moved on since is not this unit's write
            if offsets and all(fences.get(k) == o for k, o in offsets.items()):
                self._count(increments)
        self._written.clear()
        self._staged.clear()

    @staticmethod
    def _count(increments: list[tuple[Any, float]]) -> None:
        for counter, amount in increments:
            counter.inc(amount)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


__all__ = ["ScorerMetrics", "UnitCounter"]

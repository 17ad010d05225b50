"""The daily report: what the service did each day, from the messages it published.

A day is a UTC day of event time: a prediction or alert counts on the day of its ``as_of``, an outcome on
the day its label became known (``labeled_at``), a dead letter on the day of the event it carried (its
``timestamp`` when the message still parses, else the day it failed). Replaying a log therefore reports
the log's days, and in production, where events are stamped as they happen, event days are calendar days.

Scoring latency is measured per event-triggered prediction as ``scored_at`` minus the time its triggering
event reached Kafka (the input message's timestamp), so it includes any backlog the event waited in.

Realized ROC-AUC "so far" is over every outcome labelled up to the end of the day, from counts of labels in
10,000 probability bins (ties within 1e-4 count half), so a long report stays one pass.

>>> report = DailyReport()
>>> DAY = 86_400_000
>>> report.add_prediction({"as_of": "2024-05-01T10:00:00Z", "trigger": "event", "risk_category": "HIGH",
...     "churn_probability": 0.8}, latency_ms=12.0)
>>> report.add_outcome({"labeled_at": "2024-05-01T12:00:00Z", "label": 1, "churn_probability": 0.8})
>>> report.add_outcome({"labeled_at": "2024-05-01T13:00:00Z", "label": 0, "churn_probability": 0.3})
>>> day = report.days()[0]
>>> day["day"], day["predictions"], day["outcomes"]["realized_roc_auc_so_far"]
('2024-05-01', {'total': 1, 'by_trigger': {'event': 1}, 'by_risk': {'HIGH': 1}}, 1.0)
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnstream.settings import DAY_MS
from churnstream.timefmt import format_time, parse_time

BINS = 10_000


def day_of(ms: int) -> str:
    """The UTC day of epoch milliseconds ``ms``.

    >>> day_of(0), day_of(86_399_999), day_of(86_400_000)
    ('1970-01-01', '1970-01-01', '1970-01-02')
    """
    return format_time(ms - ms % DAY_MS)[:10]


@dataclass(slots=True)
class _Day:
    triggers: Counter[str] = field(default_factory=Counter)
    risks: Counter[str] = field(default_factory=Counter)
    probability_sum: float = 0.0
    value_at_risk: float = 0.0
    latencies: list[float] = field(default_factory=list)
    alerts: int = 0
    holdouts: int = 0
    alert_value: float = 0.0
    outcomes: Counter[int] = field(default_factory=Counter)
    positives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    dead_letters: Counter[str] = field(default_factory=Counter)


class DailyReport:
    """Adds up published messages by day; :meth:`days` gives one record per day, oldest first."""

    def __init__(self) -> None:
        self._days: dict[str, _Day] = defaultdict(_Day)
        self._alerted: dict[str, tuple[str, bool]] = {}  # prediction id -> (alert day, held back)
        self._labels: dict[str, int] = {}  # prediction id -> its label, once known
        # ids counted: a worker's replay after a crash emits a unit's outputs again with the same ids
        self._predicted: set[str] = set()

    def add_prediction(self, prediction: dict[str, Any], *, latency_ms: float | None = None) -> None:
        pid = prediction.get("prediction_id")
        if pid:
            if pid in self._predicted:
                return
            self._predicted.add(str(pid))
        day = self._days[day_of(parse_time(prediction["as_of"], "as_of"))]
        day.triggers[str(prediction.get("trigger"))] += 1
        day.risks[str(prediction.get("risk_category"))] += 1
        day.probability_sum += float(prediction.get("churn_probability") or 0.0)
        day.value_at_risk += float(prediction.get("value_at_risk") or 0.0)
        if latency_ms is not None:
            day.latencies.append(latency_ms)

    def add_alert(self, alert: dict[str, Any]) -> None:
        if alert.get("prediction_id") in self._alerted:  # emitted again by a replay: counted once
            return
        name = day_of(parse_time(alert["as_of"], "as_of"))
        day = self._days[name]
        if alert.get("prediction_id"):
            self._alerted[str(alert["prediction_id"])] = (name, bool(alert.get("holdout")))
        day.alerts += 1
        day.holdouts += bool(alert.get("holdout"))
        day.alert_value += float(alert.get("value_at_risk") or 0.0)

    def add_outcome(self, outcome: dict[str, Any]) -> None:
        if outcome.get("prediction_id") in self._labels:  # emitted again by a replay: counted once
            return
        day = self._days[day_of(parse_time(outcome["labeled_at"], "labeled_at"))]
        label = int(outcome["label"])
        day.outcomes[label] += 1
        if outcome.get("prediction_id"):
            self._labels[str(outcome["prediction_id"])] = label
        p = outcome.get("churn_probability")
        if p is not None:
            b = min(int(float(p) * BINS), BINS - 1)
            (day.positives if label == 1 else day.negatives)[b] += 1

    def add_dead_letter(self, letter: dict[str, Any]) -> None:
        self._days[day_of(_dead_letter_time(letter))].dead_letters[str(letter.get("stage"))] += 1

    def days(self, only: str | None = None) -> list[dict[str, Any]]:
        """One record per day (just ``only``'s, a ``YYYY-MM-DD``, when given)."""
        out = []
        followed: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        for pid, (name, held) in self._alerted.items():
            group = followed[name]["holdout" if held else "contacted"]
            label = self._labels.get(pid)
            group["labelled"] += label is not None
            group["churned"] += label == 1
        positives = np.zeros(BINS, dtype=np.int64)
        negatives = np.zeros(BINS, dtype=np.int64)
        for name in sorted(self._days):
            d = self._days[name]
            positives += d.positives
            negatives += d.negatives
            if only is not None and name != only:
                continue
            n = sum(d.triggers.values())
            out.append(
                {
                    "day": name,
                    "predictions": {
                        "total": n,
                        "by_trigger": dict(sorted(d.triggers.items())),
                        "by_risk": dict(sorted(d.risks.items())),
                    },
                    "predicted_churn_rate": round(d.probability_sum / n, 4) if n else None,
                    "alerts": {
                        "sent": d.alerts,
                        "holdout": d.holdouts,
                        "value_at_risk": round(d.alert_value, 2),
                        # what the alerted customers did next: contacted against held back (a control)
                        "outcomes": {
                            group: {
                                "labelled": followed[name][group]["labelled"],
                                "churned": followed[name][group]["churned"],
                            }
                            for group in ("contacted", "holdout")
                        },
                    },
                    "outcomes": {
                        "labelled": sum(d.outcomes.values()),
                        "churned": d.outcomes[1],
                        "realized_roc_auc_so_far": _binned_auc(positives, negatives),
                    },
                    "dead_letters": dict(sorted(d.dead_letters.items())),
                    "scoring_latency_ms": _percentiles(d.latencies),
                }
            )
        return out


def render_text(days: list[dict[str, Any]]) -> str:
    """The report as a fixed-width table, one line per day.

    >>> print(render_text([]))
    no predictions, alerts, outcomes or dead letters yet
    """
    if not days:
        return "no predictions, alerts, outcomes or dead letters yet"
    head = (
        f"{'day':<10}  {'predictions':>11}  {'event':>6}  {'sweep':>6}  {'HIGH':>6}  {'MED':>6}  {'LOW':>6}  "
        f"{'p(churn)':>8}  {'alerts':>6}  {'value at risk':>13}  {'labelled':>8}  {'AUC so far':>10}  "
        f"{'dead':>5}  {'p50 ms':>7}  {'p95 ms':>7}  {'p99 ms':>7}"
    )
    lines = [head]
    for d in days:
        p, lat = d["predictions"], d["scoring_latency_ms"]
        rate = d["predicted_churn_rate"]
        auc = d["outcomes"]["realized_roc_auc_so_far"]
        lines.append(
            f"{d['day']:<10}  {p['total']:>11,}  {p['by_trigger'].get('event', 0):>6,}  "
            f"{p['by_trigger'].get('sweep', 0):>6,}  {p['by_risk'].get('HIGH', 0):>6,}  "
            f"{p['by_risk'].get('MEDIUM', 0):>6,}  {p['by_risk'].get('LOW', 0):>6,}  "
            f"{'-' if rate is None else f'{rate:.3f}':>8}  {d['alerts']['sent']:>6,}  "
            f"{d['alerts']['value_at_risk']:>13,.2f}  {d['outcomes']['labelled']:>8,}  "
            f"{'-' if auc is None else f'{auc:.3f}':>10}  {sum(d['dead_letters'].values()):>5,}  "
            + "  ".join(f"{'-' if lat[k] is None else f'{lat[k]:.0f}':>7}" for k in ("p50", "p95", "p99"))
        )
    return "\n".join(lines)


def _binned_auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """ROC-AUC from label counts per probability bin (ties within a bin count half).

    >>> pos, neg = np.zeros(BINS, dtype=np.int64), np.zeros(BINS, dtype=np.int64)
    >>> pos[9000], neg[1000], neg[9000] = 2, 1, 1
    >>> _binned_auc(pos, neg)
    0.75
    """
    n_pos, n_neg = int(positives.sum()), int(negatives.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.cumsum(negatives) - negatives  # negatives in lower bins
    wins = float(np.sum(positives * (below + 0.5 * negatives)))
    return round(wins / (n_pos * n_neg), 4)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    q = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50": round(float(q[0]), 1), "p95": round(float(q[1]), 1), "p99": round(float(q[2]), 1)}


def _dead_letter_time(letter: dict[str, Any]) -> int:
    """The event time a dead letter carried, when its value still parses; else when it failed."""
    raw = letter.get("value")
    if isinstance(raw, str):
        try:
            text = base64.b64decode(raw).decode() if letter.get("value_encoding") == "base64" else raw
            found = json.loads(text)
            if isinstance(found, dict) and "timestamp" in found:
                return parse_time(found["timestamp"])
        except Exception:  # a dead letter's value is whatever broke the rules; any failure means "unknown"
            pass
    return parse_time(letter["failed_at"], "failed_at")


__all__ = ["DailyReport", "day_of", "render_text"]

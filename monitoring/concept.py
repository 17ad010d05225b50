"""Concept drift and model quality from outcomes: ADWIN on the online model's errors, rolling AUCs.

The error of an outcome is ``|label - online_probability|`` (``churn_probability`` while the online model
has not learned yet). ADWIN keeps an adaptive window of errors and signals when its mean changes, i.e.
when the relation between features and churn moved even if the features did not.

>>> d = ConceptDriftDetector()
>>> _ = d.update([0.1] * 2000 + [0.9] * 500, list(range(2500)))
>>> d.state()["detected"], d.detections_total > 0
(True, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from churnstream.events import format_time
from churnstream.models.evaluation import roc_auc

MODELS = {"batch": "batch_probability", "online": "online_probability", "blend": "churn_probability"}


def outcome_errors(outcomes: dict[str, list[Any]]) -> tuple[list[float], list[int]]:
    """Errors of the online model (blend as fallback) of one window's outcomes, and their ``labeled_at``,
    in an order that carries no time within the window (the same order for the same outcomes).

    Not in the order they were labelled: labels come in a daily rhythm (inactivity labels at the sweep
    tick, midnight, errors ~0.28 on the demo's shop; order labels through the day, ~0.57), which ADWIN took
    for a change of concept in every window (the demo: 37 detections in 7 windows, each "the error fell").
    Shuffled within the window, ADWIN compares windows' errors, which is what a change of concept moves.
    """
    labels = outcomes.get("label", [])
    online = outcomes.get("online_probability") or [None] * len(labels)
    blend = outcomes.get("churn_probability") or [None] * len(labels)
    times = outcomes.get("labeled_at") or [0] * len(labels)
    pairs = []
    for label, on, bl, t in zip(labels, online, blend, times, strict=False):
        p = on if on is not None else bl
        if label is None or p is None:
            continue
        pairs.append((int(t), abs(float(label) - float(p))))
    pairs.sort()  # then a permutation that depends on the outcomes alone, whatever order batches came in
    order = np.random.default_rng([len(pairs), sum(t for t, _ in pairs) % 2**32]).permutation(len(pairs))
    return [pairs[i][1] for i in order], [pairs[i][0] for i in order]


class ConceptDriftDetector:
    """River's ADWIN over a stream of errors; :meth:`state` describes the last :meth:`update` call."""

    def __init__(self, *, delta: float = 0.002) -> None:
        from river.drift import ADWIN

        self.delta = delta
        self._adwin = ADWIN(delta=delta)
        self.detections_total = 0
        self.seen = 0
        self._last: dict[str, Any] = {"detected": False, "at": None, "n": 0, "mean": None, "before": None}

    def update(self, errors: Sequence[float], times: Sequence[int]) -> list[int]:
        """Feed one window's errors (:func:`outcome_errors`); returns, for each change detected, the latest
        of ``times`` fed so far in this call (the labels it was detected from were all known by then)."""
        detected_at: list[int] = []
        before = self._adwin.estimation if self.seen else None
        known = None
        for error, t in zip(errors, times, strict=True):
            self._adwin.update(float(error))
            self.seen += 1
            known = int(t) if known is None else max(known, int(t))
            if self._adwin.drift_detected:
                detected_at.append(known)
        self.detections_total += len(detected_at)
        self._last = {
            "detected": bool(detected_at),
            "at": detected_at[-1] if detected_at else None,
            "n": len(errors),
            "mean": float(np.mean(errors)) if len(errors) else None,
            "before": before,
        }
        return detected_at

    def state(self) -> dict[str, Any]:
        """The ``concept_drift`` object of a drift report: ``{detector, detected, at, ...}``."""
        last = self._last
        return {
            "detector": "ADWIN",
            "detected": last["detected"],
            "at": format_time(last["at"]) if last["at"] is not None else None,
            "signal": "abs(label - online_probability)",
            "delta": self.delta,
            "labels": last["n"],
            "labels_total": self.seen,
            "error_mean": _round(last["mean"]),
            "error_mean_before": _round(last["before"]),
            "error_mean_adaptive": _round(self._adwin.estimation) if self.seen else None,
            "adaptive_window": int(self._adwin.width),
            "detections_total": self.detections_total,
        }


class ModelQuality:
    """Rolling ROC-AUC of each model (batch, online, blend) over the last ``size`` outcomes.

    >>> q = ModelQuality(size=4)
    >>> q.update({"label": [0, 1, 0, 1], "batch_probability": [0.1, 0.9, 0.2, 0.8],
    ...           "online_probability": [None] * 4, "churn_probability": [0.9, 0.1, 0.8, 0.2]})
    >>> q.auc()
    {'batch': 1.0, 'online': None, 'blend': 0.0}
    """

    def __init__(self, *, size: int = 5000) -> None:
        self.size = size
        self._labels: dict[str, deque[int]] = {m: deque(maxlen=size) for m in MODELS}
        self._probs: dict[str, deque[float]] = {m: deque(maxlen=size) for m in MODELS}

    def update(self, outcomes: dict[str, list[Any]]) -> None:
        labels = outcomes.get("label", [])
        for model, column in MODELS.items():
            probs = outcomes.get(column) or [None] * len(labels)
            for label, p in zip(labels, probs, strict=False):
                if label is None or p is None:
                    continue
                self._labels[model].append(int(label))
                self._probs[model].append(float(p))

    def auc(self) -> dict[str, float | None]:
        """Model -> ROC-AUC over its rolling outcomes (None without both classes)."""
        return {m: _round(roc_auc(self._labels[m], self._probs[m])) for m in MODELS}

    def counts(self) -> dict[str, int]:
        return {m: len(self._labels[m]) for m in MODELS}


def error_shift(state: dict[str, Any] | None) -> tuple[float, float, str] | None:
    """A detected concept drift (``state``: :meth:`ConceptDriftDetector.state`) as the online model's error
    before and after, and in words; None without a detection.

    >>> error_shift({"detected": True, "error_mean_before": 0.3012, "error_mean": 0.3662})[2]
    "the online model's error rose from 0.301 to 0.366"
    >>> error_shift({"detected": False}) is None, error_shift(None) is None
    (True, True)
    """
    if not state or not state.get("detected"):
        return None
    before, after = state.get("error_mean_before"), state.get("error_mean")
    if before is None or after is None:
        return None
    before, after = float(before), float(after)
    moved = "rose" if after > before else "fell"
    return before, after, f"the online model's error {moved} from {before:.3f} to {after:.3f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)

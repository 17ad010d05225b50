"""Drift windows: the scorer's monitoring batches cut into windows of N predictions or D days of event time.

A window closes when it holds ``max_rows`` predictions, or when a prediction arrives whose ``as_of``
lies more than ``max_span_ms`` after the window's first one (so a quiet stream still reports, with a
short window), or when the model version changes (a window describes one model). Outcomes (labels
that became known) ride along with the window that is open when they arrive.

>>> from churnstream.messages import MonitoringBatch
>>> def batch(times):
...     cols = {"as_of": times, "x": [1.0] * len(times), "churn_probability": [0.5] * len(times)}
...     return MonitoringBatch("b", 0, "v1", ["x"], cols, {})
>>> w = DriftWindow(max_rows=3, max_span_ms=10)
>>> [c.rows for c in w.add(batch([1, 2, 3, 4]))], w.rows
([3], 1)
>>> [(c.rows, c.closed_by) for c in w.add(batch([20]))], w.rows
([(1, 'time')], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnstream.messages import MonitoringBatch
from churnstream.settings import DAY_MS

PREDICTION_COLUMN = "churn_probability"


@dataclass(slots=True)
class ClosedWindow:
    """A finished window: its prediction and outcome columns, event-time bounds and why it closed."""

    model_version: str
    feature_names: list[str]
    predictions: dict[str, list[Any]]
    outcomes: dict[str, list[Any]]
    start: int
    end: int
    rows: int
    closed_by: str

    @property
    def outcome_rows(self) -> int:
        return len(self.outcomes.get("label", ()))

    def frame(self) -> Any:
        """The predictions as a pandas DataFrame: features (floats), ``churn_probability`` and ``as_of``."""
        import pandas as pd

        columns = [c for c in (*self.feature_names, PREDICTION_COLUMN) if c in self.predictions]
        frame = pd.DataFrame(
            {c: pd.to_numeric(pd.Series(self.predictions[c]), errors="coerce") for c in columns}
        )
        frame = frame.astype("float64")
        if "as_of" in self.predictions:
            frame["as_of"] = np.asarray(self.predictions["as_of"], dtype="int64")
        return frame


@dataclass(slots=True)
class _Open:
    model_version: str
    feature_names: list[str]
    predictions: dict[str, list[Any]] = field(default_factory=dict)
    outcomes: dict[str, list[Any]] = field(default_factory=dict)
    rows: int = 0
    anchor: int = 0
    start: int = 0
    end: int = 0


class DriftWindow:
    """Accumulates :class:`MonitoringBatch` records and hands back the windows they complete.

    ``max_span_ms`` is measured from the window's first prediction, so a late prediction (older than
    the first) joins the window instead of closing it; ``start``/``end`` of a closed window are the
    smallest and largest ``as_of`` it holds.
    """

    def __init__(self, *, max_rows: int, max_span_ms: int = 7 * DAY_MS) -> None:
        if max_rows <= 0 or max_span_ms <= 0:
            raise ValueError("max_rows and max_span_ms must be positive")
        self.max_rows = max_rows
        self.max_span_ms = max_span_ms
        self._open: _Open | None = None

    @property
    def rows(self) -> int:
        """Predictions in the open window."""
        return self._open.rows if self._open is not None else 0

    @property
    def model_version(self) -> str | None:
        return self._open.model_version if self._open is not None else None

    def add(self, batch: MonitoringBatch) -> list[ClosedWindow]:
        """Add one batch; returns the windows it completed (usually none, sometimes one, rarely more)."""
        closed: list[ClosedWindow] = []
        if self._open is not None and self._open.model_version != batch.model_version:
            if self._open.rows:
                closed.append(self._close("model_version"))
            self._open = None
        if self._open is None:
            self._open = _Open(batch.model_version, list(batch.feature_names))
        if batch.outcomes:
            _extend(self._open.outcomes, batch.outcomes, 0, len(next(iter(batch.outcomes.values()))))
        n = batch.rows
        if n == 0:
            return closed
        as_of = np.asarray(batch.predictions["as_of"], dtype="int64")
        i = 0
        while i < n:
            window = self._open
            assert window is not None
            if window.rows == 0:
                window.anchor = int(as_of[i])
                window.start = window.end = window.anchor
            room = self.max_rows - window.rows
            beyond = np.flatnonzero(as_of[i : i + room] > window.anchor + self.max_span_ms)
            take = int(beyond[0]) if beyond.size else min(room, n - i)
            if take:
                _extend(window.predictions, batch.predictions, i, i + take)
                chunk = as_of[i : i + take]
                window.start = min(window.start, int(chunk.min()))
                window.end = max(window.end, int(chunk.max()))
                window.rows += take
                i += take
            if window.rows >= self.max_rows:
                closed.append(self._close("rows"))
            elif beyond.size:
                closed.append(self._close("time"))
        return closed

    def flush(self) -> ClosedWindow | None:
        """Close the open window now (e.g. at shutdown); None when it holds no predictions."""
        if self._open is None or self._open.rows == 0:
            return None
        return self._close("flush")

    def _close(self, reason: str) -> ClosedWindow:
        window = self._open
        assert window is not None
        self._open = _Open(window.model_version, window.feature_names)
        return ClosedWindow(
            model_version=window.model_version,
            feature_names=window.feature_names,
            predictions=window.predictions,
            outcomes=window.outcomes,
            start=window.start,
            end=window.end,
            rows=window.rows,
            closed_by=reason,
        )


def _extend(into: dict[str, list[Any]], columns: dict[str, Sequence[Any]], lo: int, hi: int) -> None:
    for name, values in columns.items():
        into.setdefault(name, []).extend(values[lo:hi])

"""Drift windows: the scorer's monitoring batches cut into windows of N predictions or D days of event time.

A window closes when it holds ``max_rows`` predictions, or when a prediction arrives whose ``as_of``
lies more than ``max_span_ms`` after the window's first one (so a quiet stream still reports, with a
short window), or when the model version changes (a window describes one model). Outcomes (labels
that became known) ride along with the window that is open when they arrive.

After a promotion each worker picks the new model up on its own poll, so for a few seconds their
records alternate between the old version and the new. A record of the version the window just left,
made (``created_at``, the scorer's clock) within ``straggle_ms`` of the record that moved the window on,
is a straggler: its predictions join no window (``straggled`` counts them), its outcomes ride along as
any record's. Before, every alternation closed a window: one tiny window, report and Evidently run per
record for as long as the workers disagreed. A record of the version the registry serves now
(``current_version``) is never a straggler: a rollback, or a promotion back, within ``straggle_ms`` of
the last switch is a switch, not workers lagging (before, a one-worker shop lost all of its predictions
from the monitor).

Windows are numbered (``seq``) in the order they open. After each :meth:`DriftWindow.add`,
``segments`` says how many of the batch's predictions went into which window (and ``outcomes_seq``
which window took its outcomes), so the Kafka edge knows when every part of a record has been reported
and its offset may be committed.

>>> from churnstream.messages import MonitoringBatch
>>> def batch(times):
...     cols = {"as_of": times, "x": [1.0] * len(times), "churn_probability": [0.5] * len(times)}
...     return MonitoringBatch("b", 0, "v1", ["x"], cols, {})
>>> w = DriftWindow(max_rows=3, max_span_ms=10)
>>> [c.rows for c in w.add(batch([1, 2, 3, 4]))], w.rows, w.segments
([3], 1, [(1, 3), (2, 1)])
>>> [(c.rows, c.closed_by) for c in w.add(batch([20]))], w.rows
([(1, 'time')], 1)
>>> import dataclasses
>>> [c.model_version for c in w.add(dataclasses.replace(batch([21]), model_version="v2", created_at=5))]
['v1']
>>> w.add(dataclasses.replace(batch([22]), created_at=9)), w.model_version, w.straggled  # v1, lagging
([], 'v2', 1)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from churnstream.messages import MonitoringBatch
from churnstream.settings import DAY_MS

PREDICTION_COLUMN = "churn_probability"
PROBABILITY_COLUMNS = ("batch_probability", "online_probability", PREDICTION_COLUMN)
SEEN_KEPT = 200_000  # ids remembered to leave out rows delivered again (see _Seen)


@dataclass(slots=True)
class ClosedWindow:
    """A finished window: prediction columns (numpy), outcome columns, event-time bounds, why it closed.

    ``first_row`` names the window's first prediction (``<batch_id>:<row>``): a restarted monitor that
    re-reads the same records builds the same window, and so the same report id.
    """

    model_version: str
    feature_names: list[str]
    predictions: dict[str, np.ndarray]
    outcomes: dict[str, list[Any]]
    start: int
    end: int
    rows: int
    closed_by: str
    seq: int = 0
    first_row: str = ""

    @property
    def outcome_rows(self) -> int:
        return len(self.outcomes.get("label", ()))

    def columns(self) -> dict[str, np.ndarray]:
        """Features and ``churn_probability`` as float arrays (NaN where null)."""
        names = (*self.feature_names, PREDICTION_COLUMN)
        return {c: self.predictions[c] for c in names if c in self.predictions}

    def frame(self) -> Any:
        """The predictions as a pandas DataFrame: features (floats), ``churn_probability`` and ``as_of``."""
        import pandas as pd

        frame = pd.DataFrame(self.columns())
        if "as_of" in self.predictions:
            frame["as_of"] = self.predictions["as_of"]
        return frame


@dataclass(slots=True)
class _Open:
    model_version: str
    feature_names: list[str]
    seq: int
    chunks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    outcomes: dict[str, list[Any]] = field(default_factory=dict)
    rows: int = 0
    anchor: int = 0
    start: int = 0
    end: int = 0
    first_row: str = ""


class DriftWindow:
    """Accumulates :class:`MonitoringBatch` records and hands back the windows they complete.

    ``max_span_ms`` is measured from the window's first prediction, so a late prediction (older than
    the first) joins the window instead of closing it; ``start``/``end`` of a closed window are the
    smallest and largest ``as_of`` it holds.
    """

    def __init__(
        self,
        *,
        max_rows: int,
        max_span_ms: int = 7 * DAY_MS,
        first_seq: int = 1,
        straggle_ms: int = 60_000,
        current_version: Callable[[], str | None] | None = None,
    ) -> None:
        if max_rows <= 0 or max_span_ms <= 0:
            raise ValueError("max_rows and max_span_ms must be positive")
        self.max_rows = max_rows
        self.max_span_ms = max_span_ms
        self._next_seq = first_seq
        self._open: _Open | None = None
        self.segments: list[tuple[int, int]] = []
        self.outcomes_seq: int | None = None
        self.straggle_ms = straggle_ms
        self.straggled = 0  # predictions of stragglers (see the module docstring)
        self.left: dict[str, int] = {}  # version -> created_at of the record that moved the window off it
        self.current_version = current_version  # the version served now (the registry's), if known
        self._seen_rows, self._seen_labels = _Seen(SEEN_KEPT), _Seen(SEEN_KEPT)
        self.repeated = 0  # predictions delivered again, left out (see _Seen)
        self.repeated_labels = 0  # labels delivered again, left out

    @property
    def rows(self) -> int:
        """Predictions in the open window."""
        return self._open.rows if self._open is not None else 0

    @property
    def model_version(self) -> str | None:
        return self._open.model_version if self._open is not None else None

    @property
    def open_seq(self) -> int:
        """The number of the open window (or of the next one to open)."""
        return self._open.seq if self._open is not None else self._next_seq

    def add(self, batch: MonitoringBatch, *, skip_rows: int = 0) -> list[ClosedWindow]:
        """Add one batch; returns the windows it completed (usually none, sometimes one, rarely more).

        ``skip_rows`` leaves out the batch's first predictions, and then its outcomes too: a restarted
        monitor re-reads a record whose first rows (and outcomes) were already reported.
        """
        closed: list[ClosedWindow] = []
        self.segments = []
        self.outcomes_seq = None
        straggler = False
        if self._open is None:
            self._open = self._new(batch)
        elif self._open.model_version != batch.model_version:
            left = self.left.get(batch.model_version)
            straggler = left is not None and batch.created_at <= left + self.straggle_ms
            if straggler and self.current_version is not None:
                straggler = batch.model_version != self.current_version()
            if not straggler:
                self.left[self._open.model_version] = batch.created_at
                self.left.pop(batch.model_version, None)
                if self._open.rows:
                    closed.append(self._close("model_version"))
                # the (now empty) open window keeps its number and any outcomes, for the new version
                self._open.model_version = batch.model_version
                self._open.feature_names = list(batch.feature_names)
        if skip_rows == 0 and any(batch.outcomes.values()):
            outcomes = batch.outcomes
            labelled = outcomes.get("prediction_id")
            if labelled:  # a label delivered again (see _Seen) is left out
                keep = self._seen_labels.fresh(labelled)
                if not keep.all():
                    self.repeated_labels += int(len(keep) - keep.sum())
                    outcomes = {
                        k: [v for v, y in zip(vs, keep, strict=True) if y] for k, vs in outcomes.items()
                    }
            _extend(self._open.outcomes, outcomes)
            self.outcomes_seq = self._open.seq
        n = batch.rows
        if straggler:
            self.straggled += max(n - skip_rows, 0)
            return closed
        if n <= skip_rows:
            return closed
        columns = _prediction_arrays(batch, skip_rows)
        ids = _row_ids(batch.predictions, n)
        if skip_rows:  # reported before a restart: still rows a scorer may deliver again
            self._seen_rows.fresh(ids[:skip_rows])
        fresh = self._seen_rows.fresh(ids[skip_rows:])
        delivered = n - skip_rows
        if not fresh.all():  # rows delivered again: each is counted with the window of the row before it
            self.repeated += int(delivered - fresh.sum())
            columns = {name: values[fresh] for name, values in columns.items()}
        as_of = columns["as_of"]
        n = len(as_of)
        i = 0
        while i < n:
            window = self._open
            assert window is not None
            if window.rows == 0:
                window.anchor = int(as_of[i])
                window.start = window.end = window.anchor
                raw = i if n == delivered else int(np.flatnonzero(fresh)[i])  # its place in the record
                window.first_row = f"{batch.batch_id}:{skip_rows + raw}"
            room = self.max_rows - window.rows
            beyond = np.flatnonzero(as_of[i : i + room] > window.anchor + self.max_span_ms)
            take = int(beyond[0]) if beyond.size else min(room, n - i)
            if take:
                for name, values in columns.items():
                    window.chunks.setdefault(name, []).append(values[i : i + take])
                chunk = as_of[i : i + take]
                window.start = min(window.start, int(chunk.min()))
                window.end = max(window.end, int(chunk.max()))
                window.rows += take
                self.segments.append((window.seq, take))
                i += take
            if window.rows >= self.max_rows:
                closed.append(self._close("rows"))
            elif beyond.size:
                closed.append(self._close("time"))
        if n < delivered:
            self.segments = _with_repeats(self.segments, fresh, self.open_seq)
        return closed

    def flush(self) -> ClosedWindow | None:
        """Close the open window now (e.g. at shutdown); None when it holds no predictions."""
        if self._open is None or self._open.rows == 0:
            return None
        return self._close("flush")

    def _new(self, batch: MonitoringBatch) -> _Open:
        seq = self._next_seq
        self._next_seq += 1
        return _Open(batch.model_version, list(batch.feature_names), seq)

    def _close(self, reason: str) -> ClosedWindow:
        window = self._open
        assert window is not None
        self._open = _Open(window.model_version, window.feature_names, self._next_seq)
        self._next_seq += 1
        return ClosedWindow(
            model_version=window.model_version,
            feature_names=window.feature_names,
            predictions={name: np.concatenate(parts) for name, parts in window.chunks.items()},
            outcomes=window.outcomes,
            start=window.start,
            end=window.end,
            rows=window.rows,
            closed_by=reason,
            seq=window.seq,
            first_row=window.first_row,
        )


def _row_ids(predictions: Mapping[str, Sequence[Any]], n: int) -> list[Any]:
    """Each row's identity: its prediction id with its customer (two customers' events may share an
    event id, and then a prediction id); None for records written before ids were."""
    ids = predictions.get("prediction_id")
    if not ids:
        return [None] * n
    customers = predictions.get("customer_id") or [None] * n
    return [None if pid is None else (pid, cid) for pid, cid in zip(ids, customers, strict=True)]


class _Seen:
    """The latest ``kept`` ids (rows' :func:`_row_ids`, or the labelled predictions' ids), to leave out
    rows delivered again: a scorer that stops after its unit's outputs reached Kafka and before its state
    did answers that unit again, with the same ids (predictions are deterministic), and a window counting
    both would hold those customers twice. Hashes, not the ids: 200,000 take ~17 MB. Kept in memory
    only: a monitor restarted between a unit and its repeat (both uncommitted) counts the repeat; rows
    of a record it re-reads are remembered, those of records committed before it are not."""

    def __init__(self, kept: int) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self.kept = kept

    def fresh(self, ids: Sequence[Any]) -> np.ndarray:
        """Which of ``ids`` were not seen (a None id always is), remembering them.

        >>> seen = _Seen(2)
        >>> seen.fresh(["a", "b", "a", None]).tolist(), seen.fresh(["b", "c"]).tolist()
        ([True, True, False, True], [False, True])
        >>> seen.fresh(["a"]).tolist()  # forgotten: only the latest two are kept
        [True]
        """
        out = np.ones(len(ids), dtype=bool)
        order, known = self._order, self._ids
        for i, pid in enumerate(ids):
            if pid is None:
                continue
            h = hash(pid)
            if h in known:
                out[i] = False
                continue
            if len(order) >= self.kept:
                known.discard(order.popleft())
            order.append(h)
            known.add(h)
        return out


def _with_repeats(segments: list[tuple[int, int]], fresh: np.ndarray, open_seq: int) -> list[tuple[int, int]]:
    """The segments of a batch's rows (window, rows) counting the rows delivered again (``fresh`` False)
    with the window of the fresh row before them (the first fresh row's, or the open window's when none
    is): so a record is committable once the windows of its fresh rows are reported, and a restarted
    monitor skips the same count of its rows.

    >>> _with_repeats([(1, 2), (2, 1)], np.array([False, True, True, False, True, False]), 3)
    [(1, 4), (2, 2)]
    >>> _with_repeats([], np.array([False, False]), 3)
    [(3, 2)]
    """
    if not segments:
        return [(open_seq, len(fresh))]
    out = [[seq, 0] for seq, _ in segments]
    left = [rows for _, rows in segments]
    k = 0
    for is_fresh in fresh.tolist():
        if is_fresh:
            while left[k] == 0:
                k += 1
            left[k] -= 1
        out[k][1] += 1
    return [(seq, rows) for seq, rows in out]


def _prediction_arrays(batch: MonitoringBatch, skip: int) -> dict[str, np.ndarray]:
    """The columns a window keeps, as arrays from row ``skip`` on: ``as_of``, features, probabilities."""
    predictions = batch.predictions
    n = batch.rows - skip
    out = {"as_of": np.asarray(predictions["as_of"][skip:], dtype="int64")}
    for name in (*batch.feature_names, *PROBABILITY_COLUMNS):
        values = predictions.get(name)
        # None becomes NaN; the Kafka edge has checked that every value is a number or null
        out[name] = np.full(n, np.nan) if values is None else np.array(values[skip:], dtype="float64")
    return out


def _extend(into: dict[str, list[Any]], columns: Mapping[str, Sequence[Any]]) -> None:
    """Append the rows of ``columns`` to ``into``, as None in a column one side lacks (an older scorer's
    records lack the columns a newer one writes), so every column stays aligned row by row.

    >>> into = {"label": [1], "as_of": [5]}
    >>> _extend(into, {"label": [0], "as_of": [6], "model_version": ["v2"]}); into["model_version"]
    [None, 'v2']
    >>> _extend(into, {"label": [1], "as_of": [7]}); into["model_version"]
    [None, 'v2', None]
    """
    before = max((len(v) for v in into.values()), default=0)
    added = max((len(v) for v in columns.values()), default=0)
    for name in [*into, *(n for n in columns if n not in into)]:
        into.setdefault(name, [None] * before).extend(columns.get(name, [None] * added))

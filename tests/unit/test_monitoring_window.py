"""Drift windows close by row count, by event-time span, and by model version; outcomes ride along."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from churnstream.messages import MonitoringBatch
from churnstream.monitoring.window import DriftWindow
from churnstream.settings import DAY_MS, Settings

HOUR = 3_600_000


def batch(
    times: list[int], *, version: str = "v1", labels: int = 0, start: float = 0.0, made: int = 0
) -> MonitoringBatch:
    n = len(times)
    predictions: dict[str, list[Any]] = {
        "as_of": list(times),
        "customer_id": [f"c{i}" for i in range(n)],
        "trigger": ["event"] * n,
        "spent_total": [start + i for i in range(n)],
        "batch_probability": [0.2] * n,
        "online_probability": [None] * n,
        "churn_probability": [0.3] * n,
    }
    outcomes: dict[str, list[Any]] = {
        "labeled_at": [times[0] if times else 0] * labels,
        "label": [1] * labels,
        "source": ["inactivity"] * labels,
        "batch_probability": [0.5] * labels,
        "online_probability": [None] * labels,
        "churn_probability": [0.5] * labels,
    }
    return MonitoringBatch("b", made, version, ["spent_total"], predictions, outcomes)


def test_window_closes_at_exactly_max_rows_and_keeps_the_rest() -> None:
    window = DriftWindow(max_rows=1000)
    closed = []
    for k in range(5):  # 5 x 300 rows, one hour apart
        closed += window.add(batch([k * 300 * HOUR // 300 + i for i in range(300)], start=k * 300))
    assert [c.rows for c in closed] == [1000]
    assert closed[0].closed_by == "rows"
    assert window.rows == 500
    frame = closed[0].frame()
    assert list(frame["spent_total"]) == [float(i) for i in range(1000)]
    assert {"spent_total", "churn_probability", "as_of"} <= set(frame.columns)


def test_one_batch_can_close_several_windows() -> None:
    window = DriftWindow(max_rows=100)
    closed = window.add(batch(list(range(450))))
    assert [c.rows for c in closed] == [100, 100, 100, 100]
    assert window.rows == 50
    assert (closed[1].start, closed[1].end) == (100, 199)


def test_quiet_stream_closes_by_event_time_span() -> None:
    window = DriftWindow(max_rows=5000, max_span_ms=7 * DAY_MS)
    day = [d * DAY_MS for d in range(8)]
    assert window.add(batch(day[:7])) == []
    assert window.add(batch([7 * DAY_MS])) == []  # exactly 7 days after the first: still inside
    closed = window.add(batch([7 * DAY_MS + 1, 8 * DAY_MS]))
    assert len(closed) == 1
    assert (closed[0].rows, closed[0].closed_by) == (8, "time")
    assert (closed[0].start, closed[0].end) == (0, 7 * DAY_MS)
    assert window.rows == 2


def test_late_prediction_joins_instead_of_closing() -> None:
    window = DriftWindow(max_rows=5000, max_span_ms=7 * DAY_MS)
    window.add(batch([10 * DAY_MS]))
    assert window.add(batch([4 * DAY_MS])) == []  # six days late: joins, widening the window back
    closed = window.add(batch([18 * DAY_MS]))
    assert (closed[0].start, closed[0].end, closed[0].rows) == (4 * DAY_MS, 10 * DAY_MS, 2)


def test_model_version_change_closes_the_window() -> None:
    window = DriftWindow(max_rows=100)
    window.add(batch([1, 2, 3], version="v1"))
    closed = window.add(batch([4, 5], version="v2"))
    assert [(c.model_version, c.rows, c.closed_by) for c in closed] == [("v1", 3, "model_version")]
    assert (window.model_version, window.rows) == ("v2", 2)


def test_workers_that_pick_a_promoted_model_up_at_different_times_close_one_window() -> None:
    """Three workers, one on v2 from the first second, two others 4 and 9 s later: their records
    alternated versions, and each closed a window (one report and Evidently run per record)."""
    window = DriftWindow(max_rows=10_000, straggle_ms=60_000)
    for t in range(20):
        window.add(batch([t * 10, t * 10 + 1], version="v1", made=t * 1000))
    closed = []
    for second in range(20, 40):  # a record a second from each worker
        for lag in (0, 4, 9):
            version = "v2" if second - 20 >= lag else "v1"
            closed += window.add(batch([second * 10], version=version, labels=1, made=second * 1000))
    assert [(c.model_version, c.closed_by) for c in closed] == [("v1", "model_version")]
    assert (window.model_version, window.rows, window.straggled) == ("v2", 60 - 13, 13)
    assert window.flush().outcome_rows == 60  # the stragglers' outcomes ride along as any record's
    # a rollback later than that: v1 serves again, and its records are windows of their own
    rolled = window.add(batch([1000], version="v1", made=200_000))
    assert window.model_version == "v1" and window.rows == 1 and rolled == []


def test_a_switch_back_within_the_straggler_time_is_a_switch_when_the_registry_serves_that_version() -> None:
    """One worker, rolled back v2 -> v1 and promoted to v2 again within 60 s: every v2 record after the
    second switch counted as a straggler, so none of them reached a window."""
    serving = ["v1"]
    window = DriftWindow(max_rows=10_000, straggle_ms=60_000, current_version=lambda: serving[0])
    window.add(batch([0, 1], version="v2", made=0))
    window.add(batch([10], version="v1", made=10_000))  # rolled back (v1 served now)
    serving[0] = "v2"  # promoted again, 20 s later
    closed = window.add(batch([20, 21, 22], version="v2", made=30_000))
    assert window.model_version == "v2" and window.rows == 3 and window.straggled == 0
    assert [(c.model_version, c.rows) for c in closed] == [("v1", 1)]
    window.add(batch([23], version="v1", made=31_000))  # a late v1 record: v1 is not served: a straggler
    assert window.straggled == 1 and window.model_version == "v2"


def test_the_monitor_asks_the_registry_which_version_it_serves(tmp_path: Path) -> None:
    from churnstream.models.registry import ModelRegistry
    from churnstream.streams.monitor import build_monitor
    from tests.unit.test_models_shadow import _model

    monitor = build_monitor(Settings(model_dir=tmp_path, report_dir=tmp_path / "reports"))
    assert monitor._current_version() is None  # no model yet
    version = ModelRegistry(tmp_path).register(_model(1), {}, promote=True)
    assert monitor._current_version() == version and monitor.window.current_version is not None


def test_outcomes_ride_with_the_open_window() -> None:
    window = DriftWindow(max_rows=10)
    window.add(batch([1, 2, 3], labels=4))
    closed = window.add(batch(list(range(4, 11)), labels=2))
    assert closed[0].outcome_rows == 6
    assert window.flush() is None


def test_flush_closes_a_partial_window() -> None:
    window = DriftWindow(max_rows=10)
    window.add(batch([1, 2]))
    flushed = window.flush()
    assert flushed is not None and (flushed.rows, flushed.closed_by) == (2, "flush")
    assert window.rows == 0


@pytest.mark.parametrize("rows, span", [(0, DAY_MS), (10, 0)])
def test_bounds_must_be_positive(rows: int, span: int) -> None:
    with pytest.raises(ValueError):
        DriftWindow(max_rows=rows, max_span_ms=span)


def test_segments_say_which_window_took_which_rows_of_a_batch() -> None:
    window = DriftWindow(max_rows=1000)
    window.add(batch(list(range(700))))
    assert window.segments == [(1, 700)] and window.open_seq == 1
    closed = window.add(batch(list(range(700, 1400)), labels=3))
    assert [c.seq for c in closed] == [1] and window.segments == [(1, 300), (2, 400)]
    assert window.outcomes_seq == 1  # outcomes join the window open when the batch arrives
    assert closed[0].first_row == "b:0"


def test_skip_rows_leaves_out_reported_predictions_and_the_batchs_outcomes() -> None:
    window = DriftWindow(max_rows=1000, first_seq=7)
    closed = window.add(batch(list(range(500)), labels=2, start=0), skip_rows=200)
    assert closed == [] and window.rows == 300 and window.outcomes_seq is None
    assert window.segments == [(7, 300)]
    closed = window.add(batch(list(range(500, 1200)), start=500))
    assert [(c.seq, c.rows, c.start) for c in closed] == [(7, 1000, 200)]
    assert window.open_seq == 8 and window.rows == 0


def test_a_new_model_version_reuses_the_empty_window_number() -> None:
    window = DriftWindow(max_rows=10)
    window.add(batch([], labels=2, version="v1"))  # outcomes only: window 1 is open, without predictions
    window.add(batch([1, 2], version="v2"))
    assert window.open_seq == 1 and window.model_version == "v2" and window.segments == [(1, 2)]


def test_rows_and_labels_a_restarted_scorer_delivers_again_are_counted_once() -> None:
    """A scorer that stops after a unit's outputs reached Kafka and before its state did answers the unit
    again: the same prediction ids (and labels of the same predictions) in another record. Counted twice,
    a window held those customers twice; its records still commit (every row is accounted to a window)."""

    def with_ids(b: MonitoringBatch, ids: list[str], labelled: list[str] | None = None) -> MonitoringBatch:
        b.predictions["prediction_id"] = ids
        b.predictions["customer_id"] = [f"c{pid[1:]}" for pid in ids]  # one customer a prediction
        if labelled is not None:
            b.outcomes["prediction_id"] = labelled
        return b

    window = DriftWindow(max_rows=1000)
    window.add(with_ids(batch(list(range(600)), labels=2), [f"p{i}" for i in range(600)], ["x", "y"]))
    # the last 200 again, then 300 new ones, in one record; one label again and one new
    ids = [f"p{i}" for i in range(400, 600)] + [f"p{i}" for i in range(600, 900)]
    again = with_ids(batch(list(range(400, 900)), labels=2, start=400), ids, ["y", "z"])
    closed = window.add(again)
    assert closed == [] and window.rows == 900 and window.repeated == 200
    assert window.segments == [(1, 500)]  # every row of the record accounted for
    assert window.repeated_labels == 1
    closed = window.add(
        with_ids(batch(list(range(900, 1100)), start=900), [f"p{i}" for i in range(900, 1100)])
    )
    assert [c.rows for c in closed] == [1000] and window.segments == [(1, 100), (2, 100)]
    frame = closed[0].frame()
    assert list(frame["as_of"]) == list(range(1000))  # each prediction once, in order
    assert closed[0].outcome_rows == 3
    # a record of repeats alone: accounted to the open window
    assert window.add(with_ids(batch([5, 6]), ["p5", "p6"])) == [] and window.segments == [(2, 2)]
    # records of a scorer before ids: kept as ever
    window.add(batch(list(range(1100, 1110))))
    assert window.rows == 110 and window.repeated == 202


def test_a_restarted_monitor_remembers_the_rows_it_skips_and_names_a_window_by_its_first_fresh_row() -> None:
    import dataclasses

    def record(name: str, ids: list[int], times: list[int]) -> MonitoringBatch:
        b = dataclasses.replace(batch(times), batch_id=name)
        b.predictions["prediction_id"] = [f"p{i}" for i in ids]
        b.predictions["customer_id"] = [f"c{i}" for i in ids]
        return b

    first = record("h", list(range(10)), list(range(10)))
    again = record("j", list(range(10)) + [10, 11], list(range(12)))  # the unit again, then two new
    uninterrupted = DriftWindow(max_rows=6)
    closed = uninterrupted.add(first) + uninterrupted.add(again)
    # a monitor restarted after window 1 was reported re-reads h from its seventh row
    restarted = DriftWindow(max_rows=6, first_seq=2)
    closed_again = restarted.add(first, skip_rows=6) + restarted.add(again)
    assert [list(c.predictions["as_of"]) for c in closed] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert [list(c.predictions["as_of"]) for c in closed_again] == [[6, 7, 8, 9, 10, 11]]
    assert closed_again[0].first_row == closed[1].first_row == "h:6"
    # a window whose first row comes after repeats is named by that row's place in its record
    window = DriftWindow(max_rows=100)
    window.add(record("a", [1, 2], [1, 2]))
    window.flush()
    window.add(record("b", [1, 2, 3], [1, 2, 3]))
    assert window.flush().first_row == "b:2"  # type: ignore[union-attr]
    # the same prediction id of two customers (their events shared an id) is two predictions
    both = DriftWindow(max_rows=100)
    b = record("x", [1, 1], [1, 2])
    b.predictions["customer_id"] = ["c1", "c2"]
    both.add(b)
    assert both.rows == 2 and both.repeated == 0

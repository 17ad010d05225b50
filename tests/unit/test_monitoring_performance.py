"""Performance estimation without labels (CBPE), realized performance from labels, and the verdict."""

from __future__ import annotations

import math
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from churnstream.events import format_time
from churnstream.messages import OUTCOME_COLUMNS, MonitoringBatch
from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
from churnstream.monitoring.performance import (
    RETRAIN_ITSELF,
    RETRAIN_STEP,
    LabelBook,
    Thresholds,
    advise,
    as_of_spans,
    binned_roc_auc,
    estimate_roc_auc,
    roc_auc_interval,
)
from churnstream.monitoring.reference import FrameSource
from churnstream.monitoring.report import ReportStore
from churnstream.monitoring.state import MonitorState
from churnstream.settings import Settings
from churnstream.streams.monitor import build_monitor


def test_the_estimate_matches_the_auc_of_labels_drawn_from_calibrated_probabilities() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(0.8, 3.0, 5000)
    est = estimate_roc_auc(p)
    assert est is not None
    realized = [roc_auc_score(rng.random(p.size) < p, p) for _ in range(50)]
    assert est["value"] == pytest.approx(np.mean(realized), abs=0.005)
    assert est["lower"] < np.mean(realized) < est["upper"]
    # the interval holds most realizations and is not absurdly wide
    inside = np.mean([est["lower"] <= r <= est["upper"] for r in realized])
    assert inside >= 0.85 and est["upper"] - est["lower"] < 0.06


def test_the_estimate_is_the_same_for_the_same_window_and_tracks_how_well_probabilities_separate() -> None:
    rng = np.random.default_rng(2)
    sharp = np.where(rng.random(3000) < 0.2, rng.uniform(0.7, 1.0, 3000), rng.uniform(0.0, 0.2, 3000))
    vague = rng.uniform(0.3, 0.5, 3000)
    assert estimate_roc_auc(sharp) == estimate_roc_auc(sharp)
    sharp_auc, vague_auc = estimate_roc_auc(sharp)["value"], estimate_roc_auc(vague)["value"]  # type: ignore[index]
    assert sharp_auc > 0.85 and 0.5 < vague_auc < 0.6


def test_no_estimate_without_expected_positives_or_negatives() -> None:
    assert estimate_roc_auc([0.0, 0.0, 0.0]) is None
    assert estimate_roc_auc([1.0, 1.0]) is None
    assert estimate_roc_auc([np.nan, 0.3]) is None


def test_binned_auc_agrees_with_the_exact_one() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 4000)
    y = rng.random(4000) < p**2
    bins = 200
    idx = np.minimum((p * bins).astype(int), bins - 1)
    pos = np.bincount(idx[y], minlength=bins)
    neg = np.bincount(idx[~y], minlength=bins)
    assert binned_roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, p), abs=0.002)
    assert binned_roc_auc(pos, np.zeros(bins)) is None


def _outcomes(as_of: list[int], labels: list[int], probs: list[float]) -> dict[str, list[object]]:
    return {"as_of": as_of, "label": labels, "churn_probability": probs, "labeled_at": as_of}


def test_labels_go_to_the_window_their_prediction_fell_in_and_are_known_after_the_delay() -> None:
    book = LabelBook(delay_ms=100, min_labels=4)
    book.open(1, "v1", 0, 10)
    book.open(2, "v1", 11, 20)
    assert book.add(_outcomes([1, 2, 15, 30], [1, 0, 1, 1], [0.9, 0.1, 0.8, 0.5])) == 3  # 30: no window
    assert book.advance(109) == [] and book.latest == {}
    book.add(_outcomes([3, 4, 5], [1, 0, 0], [0.2, 0.3, 0.05]))
    assert book.advance(110) == [1]
    first = book.latest["v1"]
    exact = roc_auc_score([1, 0, 1, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.05])
    # DeLong: each positive's share of negatives below it (0.9: 3/3, 0.2: 2/3), each negative's of
    # positives above it (0.1, 0.05: 2/2, 0.3: 1/2); the variances of those over 2 and 3
    v10, v01 = np.array([1.0, 2 / 3]), np.array([1.0, 0.5, 1.0])
    se = math.sqrt(v10.var(ddof=1) / 2 + v01.var(ddof=1) / 3)
    lower, upper = max(exact - 1.96 * se, 0.0), min(exact + 1.96 * se, 1.0)
    assert first == {"metric": "roc_auc", "value": pytest.approx(exact, abs=0.01), "labels": 5,
                     "lower": pytest.approx(lower, abs=1e-3), "upper": pytest.approx(upper, abs=1e-3),
                     "window_start": 0, "window_end": 10, "windows": 1}  # fmt: skip
    # window 2 has too few labels: known, but not reported; the latest stays window 1's
    assert book.advance(200) == [2]
    assert book.latest["v1"] is first
    assert book.baseline["v1"] == {**first, "windows": 1}  # one window known so far
    assert book.opened == []


def test_the_book_survives_a_pickle_round_trip_as_the_monitor_state_keeps_it() -> None:
    book = LabelBook(delay_ms=100, min_labels=1)
    book.open(1, "v1", 0, 10)
    book.add(_outcomes([1, 2], [1, 0], [0.9, 0.1]))
    again = pickle.loads(pickle.dumps(book))
    assert again.advance(110) == [1] and again.latest["v1"]["value"] == 1.0
    assert len(pickle.dumps(book)) < 4000  # a window's labels are two small histograms


def test_the_verdict_rule() -> None:
    t = Thresholds(watch=0.03, retrain=0.05)
    common = {"estimated_reference": 0.80, "thresholds": t}
    # feature drift alone, performance holding: nothing to do
    assert advise(drifted=True, estimated=0.79, realized=None, realized_reference=None, **common)[0] == "none"
    # drift that lowers the estimate: watch, never retrain without labels
    assert (
        advise(drifted=True, estimated=0.60, realized=None, realized_reference=None, **common)[0] == "watch"
    )
    assert (
        advise(drifted=False, estimated=0.60, realized=None, realized_reference=None, **common)[0] == "none"
    )
    # labels decide retrain, against the realized reference when there is one
    assert (
        advise(drifted=False, estimated=0.80, realized=0.74, realized_reference=0.80, **common)[0]
        == "retrain"
    )
    assert (
        advise(drifted=False, estimated=0.80, realized=0.76, realized_reference=0.80, **common)[0] == "watch"
    )
    assert advise(drifted=True, estimated=0.80, realized=0.70, realized_reference=0.71, **common)[0] == "none"
    # before a realized reference exists, the reference's estimate stands in for it
    assert (
        advise(drifted=False, estimated=0.80, realized=0.70, realized_reference=None, **common)[0]
        == "retrain"
    )


# --- through the DriftMonitor --------------------------------------------------------------------

T0 = 1_700_006_400_000
DAY = 86_400_000
HORIZON = 10 * DAY
PER_DAY = 200


def _world(
    days: int, *, break_at: int | None = None, seed: int = 5, sharper: float = 1.0
) -> list[MonitoringBatch]:
    """One batch a day of PER_DAY calibrated predictions (churn_probability = sigmoid(x), the label drawn
    from it); each prediction's outcome rides in the batch of the day its horizon ends. From ``break_at``
    on, the labels no longer depend on x (the link broke; the inputs and the probabilities did not move).
    ``sharper`` > 1: the labels are drawn from sigmoid(sharper * x), so the probabilities are too timid."""
    rng = np.random.default_rng(seed)
    made: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    batches = []
    for day in range(days):
        x = rng.normal(0.0, 1.5, PER_DAY)
        p = np.round(1 / (1 + np.exp(-x)), 6)
        truth = (
            1 / (1 + np.exp(-sharper * x)) if break_at is None or day < break_at else np.full(PER_DAY, 0.5)
        )
        y = (rng.random(PER_DAY) < truth).astype(int)
        as_of = [T0 + day * DAY + i * 60_000 for i in range(PER_DAY)]
        made.append((as_of, p, y))
        outcomes: dict[str, list[Any]] = {name: [] for name in OUTCOME_COLUMNS}
        if day >= 10:
            old_as_of, old_p, old_y = made[day - 10]
            outcomes["as_of"] = list(old_as_of)
            outcomes["labeled_at"] = [t + HORIZON for t in old_as_of]
            outcomes["label"] = old_y.tolist()
            outcomes["source"] = ["inactivity"] * PER_DAY
            outcomes["batch_probability"] = old_p.tolist()
            outcomes["online_probability"] = [None] * PER_DAY
            outcomes["churn_probability"] = old_p.tolist()
            outcomes["model_version"] = ["v1"] * PER_DAY
        predictions = {"as_of": as_of, "x": x.tolist(), "churn_probability": p.tolist()}
        batches.append(MonitoringBatch(f"d{day}", 0, "v1", ["x"], predictions, outcomes))
    return batches


def _monitor(state: MonitorState | None = None, *, retrain_on_advice: bool = False) -> DriftMonitor:
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 1.5, 4000)
    reference = pd.DataFrame({"x": x, "churn_probability": 1 / (1 + np.exp(-x))})
    config = MonitorConfig(
        window_rows=5 * PER_DAY, label_delay_ms=HORIZON, min_labels=200, retrain_on_advice=retrain_on_advice
    )
    store = ReportStore(Path(tempfile.mkdtemp()))
    return DriftMonitor(references=FrameSource(reference), store=store, config=config, state=state)


def _reports(monitor: DriftMonitor, batches: list[MonitoringBatch]) -> list[dict[str, Any]]:
    out = []
    for batch in batches:
        for pending in monitor.add(batch).pending:
            out.append(pending.report(created_at=0, html_path="x.html", url=None).to_json())
    return out


def test_each_window_says_its_estimate_the_realized_auc_of_an_earlier_window_and_none_when_stable() -> None:
    reports = _reports(_monitor(), _world(60))
    assert len(reports) == 12  # 5-day windows
    for r in reports:
        est = r["estimated_performance"]
        assert est["metric"] == "roc_auc" and est["lower"] < est["value"] < est["upper"]
        assert r["action"] == "none", r["action_reason"]
    # a window's labels are all known 10 days after its end: the first realized one comes with window 3
    assert [r["realized_performance"] is None for r in reports[:3]] == [True, True, False]
    for earlier, later in zip(reports, reports[2:], strict=False):
        realized = later["realized_performance"]
        assert (realized["window_start"], realized["window_end"]) == (
            earlier["window_start"],
            earlier["window_end"],
        )
        assert realized["labels"] == 5 * PER_DAY
        assert abs(realized["value"] - earlier["estimated_performance"]["value"]) < 0.05
    # the realized reference: the first three windows whose labels are known, pooled
    reference = reports[5]["performance_reference"]
    assert (reference["realized_window_start"], reference["realized_window_end"]) == (
        reports[0]["window_start"],
        reports[2]["window_end"],
    )
    first_three = [r["realized_performance"]["value"] for r in reports[2:5]]
    assert min(first_three) - 0.01 <= reference["realized"] <= max(first_three) + 0.01


def test_when_the_link_breaks_the_labels_say_retrain_and_the_estimate_cannot() -> None:
    reports = _reports(_monitor(), _world(60, break_at=25))  # windows from day 25 on: labels are noise
    broken = [i for i, r in enumerate(reports) if r["window_start"] >= format_time(T0 + 25 * DAY)]
    first_broken = broken[0]
    assert all(r["action"] == "none" for r in reports[: first_broken + 2])  # its labels are not known yet
    # its labels are known with the window two later: retrain from then on
    assert (
        reports[first_broken + 2]["realized_performance"]["window_start"]
        == reports[first_broken]["window_start"]
    )
    assert [r["action"] for r in reports[first_broken + 2 :]] == ["retrain"] * (
        len(reports) - first_broken - 2
    )
    # a broken window is judged against the pool, never pooled (with six windows pooled, the first broken
    # one made the pool: 0.760, set aside as no standard, and every reason after said so)
    for r in reports[first_broken + 2 :]:
        reference = r["performance_reference"]
        assert reference["realized"] > 0.78 and reference["realized_set_aside"] is None, reference
        # and says so: which windows it left out, and what it holds
        left = reference["realized_left_out"]
        count = reference["realized_left_out_count"]
        assert [w["window_start"] for w in left] == [
            x["window_start"] for x in reports[first_broken : first_broken + count][-5:]
        ]
        assert all(w["realized"] < reference["realized"] - 0.05 for w in left)
        assert len(left) == min(reference["realized_left_out_count"], 5) and reference["realized_labels"] > 0
        low, high = reference["realized_interval"]
        assert low < reference["realized"] < high
    assert reports[-1]["performance_reference"]["realized_left_out"], "the broken windows are named"
    assert not reports[first_broken + 1]["performance_reference"].get("realized_left_out")
    assert all(r["dataset_drift"] is False for r in reports)
    # the estimate did not move: it cannot see a broken link
    values = [r["estimated_performance"]["value"] for r in reports]
    assert max(values) - min(values) < 0.05


def test_once_labels_are_known_the_estimate_reads_probabilities_as_they_turned_out() -> None:
    """Probabilities too timid for the labels (the served blend is not the batch model the calibration
    was fitted on): the estimate trusting them lay below the realized ROC-AUC in every window, its
    interval never covering it (the demo: 0.026-0.052 below). Calibrated on the version's first labelled
    windows it meets the realized value, and says on what."""
    reports = _reports(_monitor(), _world(60, sharper=3.0))
    estimates = {(r["window_start"], r["window_end"]): r["estimated_performance"] for r in reports}
    realized = [r["realized_performance"] for r in reports if r["realized_performance"]]
    judged = [(estimates[(x["window_start"], x["window_end"])], x["value"]) for x in realized]
    before = [(e, v) for e, v in judged if e["calibrated_on"] is None]
    after = [(e, v) for e, v in judged if e["calibrated_on"] is not None]
    assert before and after
    assert all(v - e["value"] > 0.04 and e["upper"] < v for e, v in before)  # timid: far below
    assert all(abs(v - e["value"]) < 0.015 for e, v in after), after
    assert after[-1][0]["calibrated_on"] == {"labels": 6 * 5 * PER_DAY, "windows": 6}
    assert all(r["action"] == "none" for r in reports), [r["action_reason"] for r in reports]


def test_a_model_that_ranks_badly_from_its_first_labels_is_judged_against_the_estimate_not_itself() -> None:
    """A window's realized ROC-AUC was judged against a realized reference already holding that window:
    the first labelled one against itself, so a model no better than chance from the start read
    'performance holds' (a review: realized 0.53 beside a reference estimate of 0.67)."""
    reports = _reports(_monitor(), _world(40, break_at=0))  # labels never depend on x
    first = next(i for i, r in enumerate(reports) if r["realized_performance"])
    judged = reports[first]
    assert judged["realized_performance"]["value"] < 0.6
    assert judged["performance_reference"]["realized"] is None  # no realized reference stood before it
    assert judged["action"] == "retrain", judged["action_reason"]
    assert "below the reference 0.8" in judged["action_reason"]  # the reference sample's estimate
    later = reports[first + 1 :]
    # the pool ranks as badly: no standard to hold the later windows to, the estimate stays the reference
    # (held to the pool, every later window read "none": the flag went up once and never again); the
    # message says which reference the advice used, and that the pool was set aside
    assert later and [r["action"] for r in later] == ["retrain"] * len(later), [
        r["action_reason"] for r in later
    ]
    for r in later:
        reference = r["performance_reference"]
        assert reference["realized"] is None and reference["realized_set_aside"] < 0.6
        assert f"below the reference {reference['estimated']:.3f}" in r["action_reason"]
        assert "no standard to hold it to" in r["action_reason"]


def test_a_first_labelled_window_between_the_watch_and_retrain_lines_is_a_watch() -> None:
    """The calibrated estimate's base (the version's pool) also stood in for the realized reference of the
    first labelled window, which the pool already holds: judged against itself, 0.04 below the reference
    sample's estimate read 'performance holds' (the diff review)."""
    reports = _reports(_monitor(), _world(40, sharper=0.75))
    first = next(r for r in reports if r["realized_performance"])
    drop = first["performance_reference"]["estimated"] - first["realized_performance"]["value"]
    assert 0.03 <= drop < 0.05
    assert first["action"] == "watch", first["action_reason"]
    assert f"below the reference {first['performance_reference']['estimated']:.3f}" in first["action_reason"]


def test_a_retrain_advice_says_who_retrains() -> None:
    """With CHURN_RETRAIN_ON_ADVICE=1 the advice told the user to set it, while the monitor was already
    retraining (or waiting for a shadow's evidence)."""
    batches = _world(60, break_at=25)
    for on, step in ((False, RETRAIN_STEP), (True, RETRAIN_ITSELF)):
        advised = [r for r in _reports(_monitor(retrain_on_advice=on), batches) if r["action"] == "retrain"]
        assert advised and all(r["action_reason"].endswith(step) for r in advised)
    assert build_monitor(Settings(retrain_on_advice=1)).config.retrain_on_advice


def test_a_restarted_monitor_keeps_the_labels_of_open_windows(tmp_path: Path) -> None:
    batches = _world(60, break_at=25)
    whole = _reports(_monitor(), batches)

    state = MonitorState(tmp_path)
    first = _monitor(state)
    detectors: dict[int, bytes] = {}
    reports: list[dict[str, Any]] = []
    for batch in batches[:33]:
        added = first.add(batch)
        detectors.update(added.detectors)
        reports += [p.report(created_at=0, html_path="x.html", url=None).to_json() for p in added.pending]
    done = first.windows_closed
    # what the monitor service saves once a window is reported; the open window's records are read again
    state.save(positions={}, seq=done, detectors=detectors[done], counters={})
    again = _monitor(MonitorState(tmp_path))
    assert again.labels.opened and again.window.open_seq == done + 1
    reports += _reports(again, batches[30:])  # the open window's days (from day 30) come again
    assert [r["realized_performance"] for r in reports] == [r["realized_performance"] for r in whole]
    assert [r["action"] for r in reports] == [r["action"] for r in whole]


def test_a_label_goes_to_the_window_that_held_its_prediction_when_windows_overlap() -> None:
    book = LabelBook(delay_ms=1000, min_labels=1)
    book.open(1, "v1", 0, 100, as_of_spans([0, 30, 60, 100]))  # events 0..100
    book.open(2, "v1", 20, 200, as_of_spans([20, 20, 40, 110, 150, 200], limit=3))  # late ticks 20, 40
    assert book.opened[1].start == 20  # its bounds hold 30 and 60 too
    assert book.add(_outcomes([30, 60, 20, 40, 150], [1, 1, 0, 0, 0], [0.9, 0.8, 0.1, 0.2, 0.3])) == 5
    first, second = book.opened
    assert (int(first.positives.sum()), int(first.negatives.sum())) == (2, 0)
    assert (int(second.positives.sum()), int(second.negatives.sum())) == (0, 3)


def test_every_window_realizes_the_labels_of_its_own_predictions_when_sweeps_arrive_late() -> None:
    """The scorer's sweep predictions reach the monitor a lateness after their time, so windows overlap in
    ``as_of``; each window's realized ROC-AUC must still count exactly its own predictions' labels."""
    rng = np.random.default_rng(8)
    lateness, labels_after = 3, 10
    made: list[tuple[list[int], np.ndarray, np.ndarray]] = []
    batches = []
    for day in range(40):
        parts = [[T0 + day * DAY + 1000 + i * 60_000 for i in range(PER_DAY)]]
        if day >= lateness:
            parts.append([T0 + (day - lateness) * DAY] * 50)  # the sweep tick of `lateness` days ago
        for k, as_of in enumerate(parts):
            x = rng.normal(0.0, 1.5, len(as_of))
            p = np.round(1 / (1 + np.exp(-x)), 6)
            y = (rng.random(len(as_of)) < p).astype(int)
            made.append((as_of, p, y))
            outcomes: dict[str, list[Any]] = {name: [] for name in OUTCOME_COLUMNS}
            for old_as_of, old_p, old_y in made[:-1]:
                if old_as_of[0] // DAY == (T0 + (day - labels_after) * DAY) // DAY and k == 0:
                    outcomes["as_of"] += old_as_of
                    outcomes["label"] += old_y.tolist()
                    outcomes["churn_probability"] += old_p.tolist()
            outcomes["labeled_at"] = list(outcomes["as_of"])
            n = len(outcomes["as_of"])
            outcomes["source"], outcomes["batch_probability"] = ["inactivity"] * n, [None] * n
            outcomes["online_probability"] = [None] * n
            outcomes["model_version"] = ["v1"] * n
            predictions = {"as_of": as_of, "x": x.tolist(), "churn_probability": p.tolist()}
            batches.append(MonitoringBatch(f"d{day}-{k}", 0, "v1", ["x"], predictions, outcomes))
    monitor = _monitor()
    monitor.config = MonitorConfig(
        window_rows=10**6, max_span_ms=5 * DAY, label_delay_ms=labels_after * DAY + DAY, min_labels=50
    )
    monitor.restore(None)
    reports = _reports(monitor, batches)
    windows = {(r["window_start"], r["window_end"]): r["rows"] for r in reports}
    realized = [r["realized_performance"] for r in reports if r["realized_performance"]]
    assert len(realized) >= 3
    # the windows do overlap: each holds the sweep ticks of days the previous one covers
    assert all(a["window_end"] > b["window_start"] for a, b in zip(reports, reports[1:], strict=False))
    for r in realized:
        window = (r["window_start"], r["window_end"])
        assert r["labels"] == windows[window], window


def test_past_the_cap_adjacent_windows_share_their_labels_and_none_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shop with more windows a horizon than the book keeps: the two adjacent windows of the shortest
    time together count as one (every label still counts), once the log said so."""
    book = LabelBook(delay_ms=10, min_labels=1, max_open=2)
    with caplog.at_level("INFO", logger="churnstream.monitoring.performance"):
        book.open(1, "v1", 100, 105)
        book.open(2, "v1", 200, 205)
        book.open(3, "v1", 210, 215)  # 2 and 3 span 15 ms together, 1 and 2 105 ms: 2 and 3 merge
        book.open(4, "v1", 300, 390)  # now 1 + (2, 3) spans 115 ms, (2, 3) + 4 190 ms
    assert [(e.seq, e.start, e.end, e.windows) for e in book.opened] == [(1, 100, 215, 3), (4, 300, 390, 1)]
    assert caplog.text.count("adjacent windows now share one realized ROC-AUC") == 1
    as_of = [101, 201, 211, 212, 301, 150]  # 150: in none of the windows' spans
    found = book.add(
        {"as_of": as_of, "label": [1, 0, 1, 0, 1, 1], "churn_probability": [0.9, 0.1, 0.8, 0.2, 0.5, 0.5]}
    )
    assert found == 5
    assert book.advance(225) == [1]
    assert book.latest["v1"] == {
        "metric": "roc_auc", "value": 1.0, "lower": 0.4585, "upper": 1.0, "labels": 4, "window_start": 100,
        "window_end": 215, "windows": 3,
    }  # fmt: skip
    assert book.baseline["v1"]["windows"] == 3


def test_windows_of_alternating_versions_do_not_merge_the_oldest_is_dropped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = LabelBook(delay_ms=10, min_labels=1, max_open=2)
    with caplog.at_level("WARNING", logger="churnstream.monitoring.performance"):
        for seq, version in ((1, "v1"), (2, "v2"), (3, "v1")):
            book.open(seq, version, seq * 100, seq * 100 + 5)
    assert [e.seq for e in book.opened] == [2, 3]
    assert "labels of window 1 are no longer collected" in caplog.text


def test_a_book_saved_before_merging_existed_merges_after_a_restore() -> None:
    """A monitor upgraded in place unpickles the book the release before saved. A slots dataclass pickles
    its fields by name, so that book comes back without ``merging`` and its windows without ``windows``:
    each window counts one, and nothing else moves."""
    import pickle

    book = LabelBook(delay_ms=10, min_labels=1, max_open=2)
    book.open(1, "v1", 100, 105, [(100, 105)])
    book.open(2, "v1", 200, 205)
    for entry in book.opened:  # what the release before had: neither attribute
        object.__delattr__(entry, "windows")
    object.__delattr__(book, "merging")
    old = pickle.loads(pickle.dumps(book))
    assert not hasattr(old, "merging") and old.max_open == 2 and old.latest == {}
    old.open(3, "v1", 206, 210)
    assert [(e.seq, getattr(e, "windows", None)) for e in old.opened] == [(1, None), (2, 2)]
    assert old.add({"as_of": [103, 201, 207], "label": [1, 0, 1], "churn_probability": [0.9, 0.1, 0.6]}) == 3
    assert old.advance(300) == [1, 2] and old.latest["v1"]["windows"] == 2


def test_a_restarted_monitor_still_knows_the_stragglers_of_a_promotion(tmp_path: Path) -> None:
    """The versions the window left are saved with the detectors of the window the promotion closed: a
    restart inside the straggling minute does not cut a window per record again."""
    import dataclasses

    days = _world(12)
    batches = [dataclasses.replace(b, created_at=i * 1000) for i, b in enumerate(days[:8])]
    batches.append(dataclasses.replace(days[8], model_version="v2", created_at=8_000))  # the promotion
    straggler = dataclasses.replace(days[9], created_at=9_000)  # a worker still on v1
    state = MonitorState(tmp_path)
    first = _monitor(state)
    detectors: dict[int, bytes] = {}
    for batch in batches:
        detectors.update(first.add(batch).detectors)
    done = first.windows_closed
    assert first.window.model_version == "v2" and first.window.left == {"v1": 8_000}
    state.save(positions={}, seq=done, detectors=detectors[done], counters={})
    again = _monitor(MonitorState(tmp_path))
    again.add(batches[-1])  # the open window's record, read again
    assert again.add(straggler).pending == [] and again.window.model_version == "v2"
    assert again.rows_straggled == straggler.rows


def test_merged_windows_keep_at_most_the_span_limit_and_still_cover_every_prediction() -> None:
    """Merging never grows a waiting window past SPAN_LIMIT spans (the saved book stays small): the
    smallest gaps are bridged, so every time either window covered is still covered."""
    from churnstream.monitoring.performance import SPAN_LIMIT, _Open

    zeros = np.zeros(4, dtype=np.uint32)
    a_times = [10 * k for k in range(SPAN_LIMIT)]  # points 10 apart
    b_times = [1_000 + 100 * k for k in range(SPAN_LIMIT)]  # points 100 apart
    a = _Open(1, "v", 0, a_times[-1], zeros, zeros, np.array([[t, t] for t in a_times]))
    b = _Open(2, "v", 1_000, b_times[-1], zeros, zeros, np.array([[t, t] for t in b_times]))
    m = a.merged(b)
    assert len(m.spans) == SPAN_LIMIT
    times = np.array(a_times + b_times)
    assert (m.widths(times) < np.iinfo(np.int64).max).all()
    # a's 10-wide gaps are bridged first: a is one span, and of b's 31 gaps one more is bridged
    assert m.spans[0].tolist() == [0, a_times[-1]]
    assert int((m.widths(np.array(b_times)) == 0).sum()) == SPAN_LIMIT - 2


def test_a_monitor_with_more_windows_waiting_than_its_book_keeps_still_realizes_every_label() -> None:
    """One-day windows whose labels come ten days later: ten wait at once, the book keeps four. Before,
    the oldest were dropped, so no window's labels were ever all known and ``retrain`` could never be
    advised; now the realized ROC-AUC comes, of a few adjacent windows, counting every label."""
    monitor = _monitor()
    monitor.config = MonitorConfig(window_rows=PER_DAY, label_delay_ms=HORIZON, min_labels=200)
    monitor.restore(None)
    monitor.labels.max_open = 4
    reports = _reports(monitor, _world(40))
    realized = [r["realized_performance"] for r in reports if r["realized_performance"]]
    assert len(realized) >= 10
    assert max(r["windows"] for r in realized) > 1
    by_window = {(r["window_start"], r["window_end"]): r["rows"] for r in reports}
    starts = [r["window_start"] for r in reports]
    for r in realized:  # the labels of exactly the adjacent windows it names
        first = starts.index(r["window_start"])
        held = reports[first : first + r["windows"]]
        assert held[-1]["window_end"] == r["window_end"]
        assert r["labels"] == sum(by_window[(w["window_start"], w["window_end"])] for w in held)
        assert abs(r["value"] - 0.8) < 0.1  # calibrated sigmoid(N(0, 1.5)) ranks at about 0.8


def test_a_window_of_one_class_says_so_not_too_few(caplog: pytest.LogCaptureFixture) -> None:
    """331 labels, all stayed, logged as "too few" with CHURN_MONITOR_MIN_LABELS=100 (an operator review)."""
    from churnstream.monitoring.performance import LabelBook

    book = LabelBook(delay_ms=10, min_labels=2, baseline_windows=2)
    book.open(0, "v1", 0, 5)
    book.add({"as_of": [1, 2, 3], "label": [0, 0, 0], "churn_probability": [0.2, 0.9, 0.7]})
    with caplog.at_level("INFO", logger="churnstream.monitoring.performance"):
        book.advance(20)
    assert "window 0: 3 labels, all of one class (stayed): no realized ROC-AUC" in caplog.text
    assert "too few" not in caplog.text


def test_a_stationary_calibrated_model_is_rarely_told_to_retrain_by_windows_of_a_few_labels() -> None:
    """A review ran a model that never changes (labels drawn from its own probabilities) in windows of 200
    predictions: 3 of 84 reports said retrain, on chance alone. Retrain now needs the drop beyond chance
    (2.33 standard errors of the window's value and of the reference's); a real drop still retrains.
    Here (5 shops of 300 windows) 63 of 1,495 windows retrain on the value alone. Over 10 shops: 249 of
    2,990 on the value alone, 29 with the gate and a pool of 3 windows (Hanley-McNeil errors), 19 with
    DeLong's errors, a pool of 6 and no window pooled a retrain below it beyond chance; with 500 labels a
    window, 113, 73 and 20 (what was left was mostly one shop whose small pool came out high)."""
    t = Thresholds(watch=0.03, retrain=0.05)
    now = before = judged = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        book = LabelBook(delay_ms=1, min_labels=100, baseline_windows=3)
        for seq in range(300):
            start = seq * 10
            book.open(seq, "v1", start, start + 9)
            p = rng.beta(2.0, 1.0, 200)
            book.add(_outcomes([start + 1] * 200, (rng.random(200) < p).astype(int).tolist(), p.tolist()))
            book.advance(start + 10)
            realized, base = book.latest.get("v1"), book.reference_of("v1")
            if realized is None or base is None:
                continue
            same = {"drifted": False, "estimated": None, "estimated_reference": None, "thresholds": t,
                    "realized": realized["value"], "realized_reference": base["value"]}  # fmt: skip
            judged += 1
            now += (
                advise(
                    **same,
                    realized_interval=(realized["lower"], realized["upper"]),
                    realized_labels=realized["labels"],
                    reference_interval=(base["lower"], base["upper"]),
                )[0]
                == "retrain"
            )
            before += advise(**same)[0] == "retrain"
    assert judged == 5 * 299
    assert before > 0.03 * judged and now < 0.005 * judged, (before, now, judged)
    # a model that really ranks worse by far more than chance, on as many labels, is told to retrain; a
    # drop past the threshold within chance is a watch that says so
    said = {}
    for realized in (0.60, 0.70):
        said[realized] = advise(
            drifted=False,
            estimated=None,
            estimated_reference=None,
            realized=realized,
            realized_reference=0.77,
            thresholds=t,
            realized_interval=roc_auc_interval(realized, 130, 70),
            realized_labels=200,
            reference_interval=roc_auc_interval(0.77, 400, 200),
        )
    assert said[0.60][0] == "retrain" and "(95% 0.5" in said[0.60][1] and "200 labels" in said[0.60][1]
    assert said[0.70][0] == "watch" and "by chance" in said[0.70][1]


def test_an_outcome_counts_only_in_a_window_of_the_model_version_that_made_its_prediction() -> None:
    """After a promotion a partition behind the others scores with the old version at times the new
    version's first window spans: a review's useless v1 was credited with v2's labels (0.567, not 0.5)."""
    book = LabelBook(delay_ms=100, min_labels=2)
    book.open(1, "v1", 0, 10)
    book.open(2, "v2", 5, 20)  # overlaps v1's window in event time
    mixed = _outcomes([6, 7, 8, 9], [1, 0, 1, 0], [0.9, 0.1, 0.2, 0.8])
    assert book.add({**mixed, "model_version": ["v1", "v1", "v2", "v2"]}) == 4
    counted = {e.model_version: (int(e.positives.sum()), int(e.negatives.sum())) for e in book.opened}
    assert counted == {"v1": (1, 1), "v2": (1, 1)}
    # a record written before outcomes named their version: counted by time alone, as then
    assert book.add(_outcomes([6], [1], [0.5])) == 1

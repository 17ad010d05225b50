"""Concept drift: ADWIN on the online model's errors sees a jump in error rate; rolling AUCs per model."""

from __future__ import annotations

import numpy as np

from churnstream.monitoring.concept import ConceptDriftDetector, ModelQuality, outcome_errors


def test_adwin_detects_a_jump_in_error_rate() -> None:
    rng = np.random.default_rng(0)
    detector = ConceptDriftDetector()
    stable = (rng.random(3000) < 0.15).astype(float)  # 15 % of predictions wrong
    assert detector.update(stable.tolist(), list(range(3000))) == []
    state = detector.state()
    assert state["detector"] == "ADWIN" and state["detected"] is False and state["at"] is None
    worse = (rng.random(1000) < 0.45).astype(float)  # then 45 %
    times = [3000 + i for i in range(1000)]
    detected = detector.update(worse.tolist(), times)
    assert detected and 3000 <= detected[0] < 3300  # within a few hundred labels of the change
    state = detector.state()
    assert state["detected"] is True
    assert state["at"].endswith("Z")
    assert state["error_mean"] > state["error_mean_before"]


def test_stable_errors_do_not_alarm() -> None:
    rng = np.random.default_rng(1)
    detector = ConceptDriftDetector()
    for k in range(5):
        errors = np.abs(rng.integers(0, 2, 1000) - rng.uniform(0.2, 0.6, 1000))
        assert detector.update(errors.tolist(), list(range(k * 1000, (k + 1) * 1000))) == []
    assert detector.detections_total == 0


def test_errors_use_online_probability_and_fall_back_to_the_blend() -> None:
    outcomes = {
        "labeled_at": [30, 10, 20],
        "label": [1, 0, 1],
        "online_probability": [0.75, None, 0.5],
        "churn_probability": [0.9, 0.25, 0.9],
    }
    errors, times = outcome_errors(outcomes)
    assert sorted(zip(times, errors, strict=True)) == [(10, 0.25), (20, 0.5), (30, 0.25)]
    shuffled = {k: [v[i] for i in (2, 0, 1)] for k, v in outcomes.items()}
    assert outcome_errors(shuffled) == (errors, times)  # whatever order the batches brought them in


def test_labels_that_come_in_a_daily_rhythm_are_no_concept_drift() -> None:
    """The demo's shop: inactivity labels (the customer churned, mostly rightly predicted: small errors)
    all at the sweep tick, midnight; order labels (stayed: larger errors) through the day. In the order
    they were labelled ADWIN found a change in every window; the model never changed."""
    rng = np.random.default_rng(3)
    detector = ConceptDriftDetector()
    day = 86_400_000
    for window in range(6):
        outcomes: dict[str, list[float]] = {"labeled_at": [], "label": [], "churn_probability": []}
        for d in range(window * 30, (window + 1) * 30):
            swept = rng.uniform(0.55, 0.9, 150)  # churned: label 1, error 1 - p
            ordered = rng.uniform(0.4, 0.75, 50)  # stayed: label 0, error p
            times = [d * day] * 150 + sorted((d * day + rng.integers(1, day, 50)).tolist())
            outcomes["labeled_at"] += times
            outcomes["label"] += [1] * 150 + [0] * 50
            outcomes["churn_probability"] += swept.tolist() + ordered.tolist()
        assert detector.update(*outcome_errors(outcomes)) == [], window
    assert detector.detections_total == 0


def test_rolling_auc_per_model() -> None:
    quality = ModelQuality(size=4)
    quality.update(
        {
            "label": [1, 1, 0, 0, 1, 0],
            "batch_probability": [0.0, 0.0, 1.0, 1.0, 0.9, 0.1],  # the first two roll out of the window
            "online_probability": [None, None, None, None, 0.1, 0.9],
            "churn_probability": [0.5] * 6,
        }
    )
    auc = quality.auc()
    assert (
        auc["batch"] == 0.3333
    )  # labels 0,0,1,0 / probs 1,1,.9,.1: one positive above one negative of three
    assert auc["online"] == 0.0
    assert auc["blend"] == 0.5
    assert quality.counts() == {"batch": 4, "online": 2, "blend": 4}

"""How a candidate is run through a training plan: its score on each time split, its held-out metrics, and
the model that would be served if it wins.

On the plan's rolling-origin splits (:meth:`~churnstream.models.time_split.Plan.folds`) each split is
scored by the candidate fitted on every cutoff at least ``H`` before it; the splits' ranking metric
(uncalibrated scores: calibration is monotone) are what :func:`choose` compares. The held-out metrics
(ROC-AUC, PR-AUC, Brier, ECE) are those of the calibrated model, calibrated without the rows it is
judged on:

- ``full``: fitted on train, calibrated on calibration, scored on test (as before short plans existed);
- ``one_held_out_period``: fitted on train, calibrated by cross-fitting over train's customers, scored
  on test;
- ``no_held_out_period``: customer cross-fitting over every cutoff, each fold's calibration map fitted on
  the other folds' out-of-fold scores (in-period: nothing is held out in time).

The served model is the winner fitted on every labelled row, the newest period included
(:func:`refit_on_every_label`), calibrated on out-of-fold scores of the latest period; on CDNOW's real
orders this ranks 0.001 ROC-AUC better at both cutoffs than the fit that stops H before the test period
(``TrainConfig(refit_on_every_label=False)``: ``production_fit``, calibrated on test).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from churnstream.errors import ModelError
from churnstream.models.batch import BatchModel, Calibration
from churnstream.models.candidates import DEFAULT_CANDIDATE, SELECTION_METRIC, Candidate, calibration_method
from churnstream.models.evaluation import evaluate, roc_auc
from churnstream.models.time_split import FULL, NO_PERIOD, ONE_PERIOD, Plan


@dataclass(frozen=True, slots=True)
class Rows:
    """The labelled table as matrices, with the plan's masks and each row's cross-fitting fold."""

    X: np.ndarray
    y: np.ndarray
    masks: dict[str, np.ndarray]
    folds: np.ndarray
    feature_names: list[str]
    medians: dict[str, float]  # of the production-fit rows: the served model's "typical customer"
    eval_medians: dict[str, float]  # of the train rows


@dataclass(slots=True)
class Trial:
    """One candidate run through the plan."""

    candidate: Candidate
    metrics: dict[str, Any]
    held_out_y: np.ndarray  # the rows its held-out metrics are computed on, and its probabilities there
    held_out_p: np.ndarray
    served: BatchModel


def split_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Ranking metrics of raw scores on one split.

    >>> split_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    {'rows': 4, 'roc_auc': 0.75, 'pr_auc': 0.8333}
    """
    from sklearn.metrics import average_precision_score

    both = 0 < int(y.sum()) < len(y)
    auc = roc_auc(y, scores)
    return {
        "rows": int(len(y)),
        "roc_auc": None if auc is None else round(auc, 4),
        "pr_auc": round(float(average_precision_score(y, scores)), 4) if both else None,
    }


def run_candidate(candidate: Candidate, plan: Plan, rows: Rows) -> Trial:
    """Fit, score and calibrate ``candidate`` as the plan's recipe says (see the module docstring)."""
    started = time.perf_counter()
    X, y, m = rows.X, rows.y, rows.masks
    splits: dict[str, dict[str, Any]] = {}
    if plan.kind == FULL:
        evaluated = _fit(candidate, rows, m["train"], rows.eval_medians)
        y_cal = y[m["calibration"]]
        cal_scores = evaluated.raw_score(X[m["calibration"]])
        splits["calibration"] = split_metrics(y_cal, cal_scores)
        calibration = Calibration.fit(cal_scores, y_cal, calibration_method(y_cal))
        served = _fit(candidate, rows, m["production_fit"], rows.medians)
        held_out_y = y[m["test"]]
        test_scores = served.raw_score(X[m["test"]])
        splits["test"] = split_metrics(held_out_y, test_scores)
        held_out_p = calibration.apply(evaluated.raw_score(X[m["test"]]))
        served.calibration = Calibration.fit(test_scores, held_out_y, calibration_method(held_out_y))
    elif plan.kind == ONE_PERIOD:
        served = _fit(candidate, rows, m["production_fit"], rows.medians)
        held_out_y = y[m["test"]]
        test_scores = served.raw_score(X[m["test"]])
        splits["test"] = split_metrics(held_out_y, test_scores)
        oof = out_of_fold(candidate, rows, m["train"])
        y_train = y[m["train"]]
        calibration = Calibration.fit(oof, y_train, calibration_method(y_train))
        held_out_p = calibration.apply(test_scores)
        served.calibration = Calibration.fit(test_scores, held_out_y, calibration_method(held_out_y))
    elif plan.kind == NO_PERIOD:
        oof = out_of_fold(candidate, rows, m["train"])
        held_out_y = y[m["train"]]
        held_out_p = _cross_calibrated(oof, held_out_y, rows.folds[m["train"]])
        served = _fit(candidate, rows, m["production_fit"], rows.medians)
        calibration = served.calibration = Calibration.fit(oof, held_out_y, calibration_method(held_out_y))
    else:
        raise ValueError(f"unknown plan kind {plan.kind!r}")
    metrics = evaluate(held_out_y, held_out_p)
    metrics["splits"] = splits
    scores = [s[SELECTION_METRIC] for s in splits.values()]
    metrics["selection_score"] = (
        round(float(np.mean(scores)), 4) if scores and all(s is not None for s in scores) else None
    )
    metrics["fit_seconds"] = round(time.perf_counter() - started, 2)
    metrics["calibration"] = calibration.describe()
    return Trial(candidate, metrics, held_out_y, held_out_p, served)


def refit_on_every_label(candidate: Candidate, plan: Plan, rows: Rows) -> BatchModel | None:
    """The chosen candidate fitted on every labelled row, the newest period included, for serving; None
    when a fold lacks a class (the trial's served model is kept then).

    The held-out metrics stay those of :func:`run_candidate`: this fit is judged on nothing it saw. Its
    calibration map comes from out-of-fold scores of the latest period (test; every row when there is
    none): each fold's customers scored by the candidate fitted on every other customer's rows.
    """
    everything = np.ones(len(rows.y), dtype=bool)
    latest = everything if plan.kind == NO_PERIOD else rows.masks["test"]
    try:
        scores = out_of_fold(candidate, rows, latest, fit_on=everything, medians=rows.medians)
    except ModelError:
        return None
    served = _fit(candidate, rows, everything, rows.medians)
    y_latest = rows.y[latest]
    served.calibration = Calibration.fit(scores, y_latest, calibration_method(y_latest))
    return served


def choose(trials: list[Trial]) -> str:
    """The candidate with the best mean split score; the default one when there are no splits.

    Ties go to the earlier candidate (the defaults come first).
    """
    scored = [
        t for t in trials if t.candidate.role == "candidate" and t.metrics["selection_score"] is not None
    ]
    if scored:
        return max(scored, key=lambda t: t.metrics["selection_score"]).candidate.name
    names = [t.candidate.name for t in trials if t.candidate.role == "candidate"]
    return DEFAULT_CANDIDATE if DEFAULT_CANDIDATE in names else names[0]


def _fit(candidate: Candidate, rows: Rows, mask: np.ndarray, medians: dict[str, float]) -> BatchModel:
    estimator = candidate.make(rows.feature_names)
    estimator.fit(rows.X[mask], rows.y[mask])
    return BatchModel(
        estimator=estimator, feature_names=rows.feature_names, medians=medians, name=candidate.name
    )


def out_of_fold(
    candidate: Candidate,
    rows: Rows,
    mask: np.ndarray,
    *,
    fit_on: np.ndarray | None = None,
    medians: dict[str, float] | None = None,
) -> np.ndarray:
    """Raw scores of the rows in ``mask``, each from the candidate fitted on the other folds' customers
    among the rows in ``fit_on`` (default: ``mask`` itself), with ``medians`` (default: train's)."""
    idx = np.flatnonzero(mask)
    folds = rows.folds[idx]
    present = np.unique(folds)
    if fit_on is None and len(present) < 2:
        raise ModelError(f"too few customers to cross-fit ({len(idx)} rows, all in one fold)")
    pool = mask if fit_on is None else fit_on
    scores = np.empty(len(idx))
    for k in present:
        inside = folds == k
        fit_idx = np.flatnonzero(pool & (rows.folds != k))
        if len(np.unique(rows.y[fit_idx])) < 2:
            raise ModelError("too few customers of both classes to cross-fit; use more events or customers")
        model = _fit(candidate, rows, fit_idx, rows.eval_medians if medians is None else medians)
        scores[inside] = model.raw_score(rows.X[idx[inside]])
    return scores


def _cross_calibrated(scores: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's out-of-fold scores through a calibration map fitted on the other folds only."""
    out = np.empty(len(scores))
    for k in np.unique(folds):
        inside = folds == k
        y_rest = y[~inside]
        if len(np.unique(y_rest)) < 2:
            raise ModelError("too few customers of both classes to cross-fit; use more events or customers")
        out[inside] = Calibration.fit(scores[~inside], y_rest, calibration_method(y_rest)).apply(
            scores[inside]
        )
    return out

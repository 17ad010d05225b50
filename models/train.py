"""Batch training: point-in-time rows at rolling cutoffs, time-split selection, calibration, registration.

The recipe (``churnstream train --events DIR --out MODEL_DIR``):

1. **Rows.** Cutoffs every ``step`` days (7, or 14 when more than a year of cutoffs is usable), counted back
   from ``end - H`` (the last cutoff whose label is known for everyone) to ``start + warmup``. At each
   cutoff every customer with any event at or before it gets a row of features as of the cutoff
   (:func:`churnstream.features.offline.training_table`, the same code the online store runs) and the
   contract's label with ``H = CHURN_HORIZON_DAYS``. The population is deliberately *every known customer*,
   because the scorer scores every customer (on their events and on event-time sweeps), so probabilities are
   calibrated for exactly the rows they are served on. When customers x cutoffs exceeds ``max_rows``, a
   stable hash sample of customers is used (whole customers, so no customer is split across periods).
2. **Time split.** With ``P`` the held-out period (about 12 % of the usable span, at least two steps):
   ``test`` = cutoffs in the last ``P``; ``calibration`` = the ``P`` before it, ending ``H`` earlier;
   ``train`` = cutoffs ending ``H`` before calibration. The ``H`` gaps make sure no training label
   looks into the period it is evaluated on, exactly as in deployment. Shorter histories get a smaller
   plan (one held-out period, or none with customer cross-fitting) instead of a refusal; the plan, and
   what it could not check, is logged, printed and recorded (:class:`~churnstream.models.time_split.Plan`).
3. **Selection.** A few model families with a small grid each (logistic regression, histogram gradient
   boosting, a random forest) run through the plan's rolling-origin splits: each split is
   scored by the model fitted on every cutoff at least ``H`` before it, and the best mean ``PR-AUC`` over
   the splits wins. Baselines (recency only; a logistic regression on the contract's required features
   only; the constant base rate) run the same way. Held-out metrics (fitted on ``train``, calibrated on
   ``calibration``, scored on ``test``) of every model go into the metadata
   (:mod:`~churnstream.models.selection`).
4. **Production fit.** The winner fitted on every cutoff up to ``H`` before ``test`` (its last split's
   model) is calibrated on ``test`` — the evaluated recipe shifted one period later, so the served model
   uses the newest labels.
5. **Register** the model, metadata, a reference sample (held-out rows with the production model's
   ``churn_probability``) and a model card, and promote it.

This module runs the recipe (:func:`train`, ``churnstream train``); its parts are
:mod:`~churnstream.models.time_split` (cutoffs, splits, the table), :mod:`~churnstream.models.candidates`
(the models tried and how one is fitted), :mod:`~churnstream.models.selection` (one candidate through the
plan) and :mod:`~churnstream.models.train_report` (the printed table and the model card).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.errors import ModelError
from churnstream.events import format_time, parse_time
from churnstream.models.alert_policy import fit_priority_thresholds, is_active, risk_thresholds
from churnstream.models.batch import BatchModel
from churnstream.models.candidates import DEFAULT_CANDIDATE, SELECTION_METRIC, candidates, fit_candidate
from churnstream.models.evaluation import evaluate
from churnstream.models.selection import Rows, choose, refit_on_every_label, run_candidate
from churnstream.models.time_split import (
    FULL,
    NO_PERIOD,
    ONE_PERIOD,
    Plan,
    TrainConfig,
    build_table,
    crossfit_folds,
    history_needed,
    plan_cutoffs,
)
from churnstream.models.train_report import model_card, split_summary, summary_table, threshold_summary
from churnstream.settings import DAY_MS, Settings

__all__ = [
    "TrainConfig",
    "build_table",
    "candidates",
    "cli",
    "typical_customer",
    "fit_candidate",
    "plan_cutoffs",
    "train",
]

log = logging.getLogger(__name__)


def train(
    events_dir: str | Path,
    registry_root: str | Path,
    *,
    settings: Settings,
    until: int | str | None = None,
    promote: bool = True,
    progress: bool = True,
    config: TrainConfig | None = None,
    out: Any = None,
    source: dict[str, Any] | None = None,
) -> str:
    """Train, evaluate, calibrate and register a batch model from the event files in ``events_dir``.

    Returns the registered version. ``until`` (epoch ms or RFC 3339) ignores events at or after it.
    ``source``: where the events came from when ``events_dir`` is a temporary copy (the input topics:
    ``train --from-topics``, ``retrain``), recorded in the metadata in its place.
    """
    import sklearn.ensemble  # noqa: F401  (loads OpenMP first: threadpoolctl limits only loaded libraries)
    from threadpoolctl import threadpool_limits

    config = config or TrainConfig()
    with threadpool_limits(limits=config.threads):
        return _train(
            events_dir,
            registry_root,
            settings=settings,
            until=until,
            promote=promote,
            progress=progress,
            config=config,
            out=out,
            source=source,
        )


def _train(
    events_dir: str | Path,
    registry_root: str | Path,
    *,
    settings: Settings,
    until: int | str | None,
    promote: bool,
    progress: bool,
    config: TrainConfig,
    out: Any,
    source: dict[str, Any] | None = None,
) -> str:
    from churnstream.features.definitions import FEATURE_NAMES
    from churnstream.features.offline import read_events
    from churnstream.models.registry import ModelRegistry

    out = out if out is not None else sys.stdout
    until_ms = parse_time(until, "until") if isinstance(until, str) else until
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    stages = ["read events", "build table", "fit candidates", "production fit", "register"]
    bar = _bar(len(stages), progress)

    def stage_done(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    event_log = read_events(events_dir, until=until_ms, max_future_skew_hours=settings.max_future_skew_hours)
    if event_log.invalid:
        log.warning("%d invalid events skipped, e.g. %s", event_log.invalid, event_log.errors[:3])
    plan = plan_cutoffs(event_log.start, event_log.end, horizon_ms=settings.horizon_ms, config=config)
    stage_done("read events")

    table, sampling = build_table(event_log.events, plan, settings=settings, config=config, progress=progress)
    feature_names = list(FEATURE_NAMES)
    X = table[feature_names].to_numpy(dtype=np.float64, na_value=np.nan)
    y = table["label"].to_numpy(dtype=np.int64)
    as_of = table["as_of"].to_numpy(dtype=np.int64)
    plan = usable_plan(plan, y, as_of)
    masks = plan.masks(as_of)
    described = {
        **plan.describe(),
        "history_days": {
            "events": round((event_log.end - event_log.start) / DAY_MS, 1),
            **history_needed(settings.horizon_ms, config),
        },
    }
    log.info("training plan %s: %s", plan.kind, described["summary"])
    for what in described["unchecked"]:
        log.warning(
            "training on %.0f days of events could not check %s", described["history_days"]["events"], what
        )
    stage_done("build table")

    medians = typical_customer(X[masks["production_fit"]], y[masks["production_fit"]], feature_names)
    rows = Rows(
        X=X,
        y=y,
        masks=masks,
        folds=crossfit_folds(table["customer_id"].tolist(), config.crossfit_folds, config.seed),
        feature_names=feature_names,
        medians=medians,
        eval_medians=typical_customer(X[masks["train"]], y[masks["train"]], feature_names),
    )
    tried = candidates(config)
    if plan.kind == NO_PERIOD:  # no time split to choose on: the default model, compared with the baselines
        tried = [c for c in tried if c.role == "baseline" or c.name == DEFAULT_CANDIDATE]
    trials = {}
    for cand in tried:
        trials[cand.name] = run_candidate(cand, plan, rows)
        log.info("%s: %s", cand.name, _brief(trials[cand.name].metrics))
    results: dict[str, dict[str, Any]] = {name: trial.metrics for name, trial in trials.items()}
    held_out_y = trials[tried[0].name].held_out_y
    train_rate = float(y[masks["train"]].mean())
    results["constant_base_rate"] = evaluate(held_out_y, np.full(len(held_out_y), train_rate))
    chosen = choose(list(trials.values()))
    stage_done("fit candidates")

    chosen_candidate = next(c for c in tried if c.name == chosen)
    refit = refit_on_every_label(chosen_candidate, plan, rows) if config.refit_on_every_label else None
    production = refit if refit is not None else trials[chosen].served
    stage_done("production fit")

    reference_from = int(as_of[masks["test"]].min()) if masks["test"].any() else plan.cutoffs[-1]
    reference, alert_fit = _reference(
        event_log.events, reference_from, feature_names, production, config, settings
    )
    risk = risk_thresholds(trials[chosen].held_out_p)  # used where CHURN_*_THRESHOLD are unset
    high, medium = settings.risk_thresholds(risk)
    thresholds = threshold_summary(
        replace(settings, high_threshold=high, medium_threshold=medium), held_out_y, trials[chosen].held_out_p
    )
    metadata = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chosen": chosen,
        "selection": _SELECTION[plan.kind],
        "plan": described,
        "horizon_days": settings.horizon_days,
        "training_window": {"start": format_time(event_log.start), "end": format_time(event_log.end)},
        "events": {
            **({"source": source} if source else {"dir": str(events_dir)}),
            "count": len(event_log.events),
            "invalid": event_log.invalid,
        },
        "population": "every customer with any event at or before the cutoff (as the scorer scores)",
        "cutoffs": {
            "step_days": plan.step_ms / DAY_MS,
            "count": len(plan.cutoffs),
            "first": format_time(plan.cutoffs[0]),
            "last": format_time(plan.cutoffs[-1]),
        },
        "splits": {name: split_summary(as_of, y, mask) for name, mask in masks.items()},
        "sampling": sampling,
        "metrics": {
            "chosen": results[chosen],
            "candidates": {c.name: results[c.name] for c in tried if c.role == "candidate"},
            "baselines": {
                **{c.name: results[c.name] for c in tried if c.role == "baseline"},
                "constant_base_rate": results["constant_base_rate"],
            },
            "evaluated_on": _EVALUATED_ON[plan.kind],
            "splits": [name for name, _, _ in plan.folds()],
        },
        "calibration": {
            **production.calibration.describe(),
            "fitted_on": (
                "out-of-fold scores of every cutoff (customer cross-fitting; no later period)"
                if plan.kind == NO_PERIOD
                else "out-of-fold scores of the test period (customer cross-fitting)"
                if refit is not None
                else "test period (production model fitted on every cutoff up to H before it)"
            ),
        },
        "served_model": {
            "fitted_on": (
                "every labelled cutoff, the test period included (held-out metrics are the evaluated model's)"
                if refit is not None
                else "every cutoff up to H before the test period"
            ),
        },
        "thresholds": thresholds,
        "risk_thresholds": risk,
        "alert_policy": alert_fit,
        "candidates": [
            {"name": c.name, "role": c.role, "family": c.family, "description": c.description} for c in tried
        ],
        "medians": {k: (None if np.isnan(v) else v) for k, v in medians.items()},
        "train_config": asdict(config),
        "timings_seconds": timings,
    }
    registry = ModelRegistry(registry_root)
    version = registry.register(
        production,
        metadata,
        reference=reference,
        model_card=model_card(metadata),
        promote=promote,
    )
    stage_done("register")
    if bar is not None:
        bar.close()
    print(summary_table(metadata, version, promoted=promote), file=out)
    return version


_SELECTION = {
    FULL: f"highest mean {SELECTION_METRIC} over the calibration and test periods, each scored by the "
    "model fitted on every cutoff at least H before it",
    ONE_PERIOD: f"highest {SELECTION_METRIC} on the test period, scored by the model fitted on every cutoff "
    "at least H before it",
    NO_PERIOD: f"none: no held-out period to compare on, the default candidate ({DEFAULT_CANDIDATE})",
}
_EVALUATED_ON = {
    FULL: "test period; each model fitted on train and calibrated on calibration",
    ONE_PERIOD: "test period; each model fitted on train, calibrated by cross-fitting over train's customers",
    NO_PERIOD: "every cutoff, cross-fitted over customers (in-period: nothing held out in time)",
}


def usable_plan(plan: Plan, y: np.ndarray, as_of: np.ndarray) -> Plan:
    """``plan``, or the first fallback whose periods all hold rows of both classes (:class:`ModelError` if
    even fitting on every cutoff has one class only)."""
    while True:
        masks = plan.masks(as_of)
        periods = {FULL: ("train", "calibration", "test"), ONE_PERIOD: ("train", "test")}.get(
            plan.kind, ("train",)
        )
        lacking = [name for name in periods if len(np.unique(y[masks[name]])) < 2]
        if not lacking:
            return plan
        fallback = plan.fallback()
        if fallback is None:
            raise ModelError(
                f"no labelled rows of both classes to learn from ({len(y)} rows at {len(plan.cutoffs)} "
                "cutoffs); use more events or customers"
            )
        log.warning("the %s period has rows of one class only: plan %s instead", lacking[0], fallback.kind)
        plan = fallback


def _brief(metrics: dict[str, Any]) -> str:
    splits = ", ".join(f"{name} {s[SELECTION_METRIC]}" for name, s in metrics["splits"].items())
    auc = "-" if metrics["roc_auc"] is None else f"{metrics['roc_auc']:.4f}"
    return f"{SELECTION_METRIC} by split: {splits or '-'}; held out ROC-AUC {auc}"


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="stage", file=sys.stderr, leave=False)


def typical_customer(X: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The reference customer explanations measure against: a typical customer who *stayed* (label 0),
    each feature at its median over those rows, and missing (NaN) where most of them miss it.

    Alerts ask why a customer is more at risk than one who stays. Measured against the median of all
    rows, on CDNOW a one-time buyer with a churn probability of 0.97, half of the demo's alerts had no
    reason raising the risk. Missing where most miss it keeps the reference one coherent customer: a
    typical customer without tickets has no ticket satisfaction, not the median of those who have one.
    Without a row that stayed, every row is typical.

    >>> X = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, np.nan], [9.0, 2.0]])
    >>> typical_customer(X, np.array([0, 0, 0, 1]), ["orders", "satisfaction"])
    {'orders': 3.0, 'satisfaction': nan}
    >>> typical_customer(X, np.array([1, 1, 1, 1]), ["orders", "satisfaction"])
    {'orders': 4.0, 'satisfaction': 3.0}
    """
    stayed = X[np.asarray(y) == 0]
    rows = stayed if len(stayed) else X
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        col = rows[:, j]
        known = col[~np.isnan(col)]
        out[name] = float(np.median(known)) if 2 * len(known) >= len(col) and len(known) else float("nan")
    return out


def _reference(
    events: Any, start: int, names: list[str], model: BatchModel, config: TrainConfig, settings: Settings
) -> tuple[Any, dict[str, Any]]:
    """A sample of what the scorer serves (event and sweep rows) over the held-out period onwards, and the
    value_at_risk alert policy's priority thresholds fitted on all of them
    (:func:`~churnstream.models.alert_policy.fit_priority_thresholds`)."""
    import pandas as pd

    from churnstream.features.offline import serving_rows

    rows = list(
        serving_rows(
            events,
            start,
            events[-1].timestamp + 1,
            lateness_ms=settings.lateness_ms,
            milestones_ms=settings.sweep_milestones_ms,
            tick_ms=settings.sweep_interval_ms,
        )
    )
    held_out = pd.DataFrame(rows, columns=names)
    alert_fit = _alert_fit(rows, held_out, names, model, settings)
    if len(held_out) > config.reference_rows:
        held_out = held_out.sample(n=config.reference_rows, random_state=config.seed)
    reference = held_out.astype("float64").reset_index(drop=True)
    reference["churn_probability"] = model.predict_proba(reference[names].to_numpy(dtype=np.float64))
    return reference, alert_fit


def _alert_fit(
    rows: list[dict[str, Any]], table: Any, names: list[str], model: BatchModel, settings: Settings
) -> dict[str, Any]:
    from churnstream.models.value import value_at_risk

    if not rows:
        return {}
    p = model.predict_proba(table[names].to_numpy(dtype=np.float64))
    h = settings.horizon_days
    priority = [value_at_risk(round(float(pi), 6), r, horizon_days=h) for pi, r in zip(p, rows, strict=True)]
    fit = fit_priority_thresholds(
        [r["customer_id"] for r in rows],
        [r["as_of"] for r in rows],
        priority,
        [is_active(r["recency_days"]) for r in rows],
    )
    return {**fit, "fitted_on": "rows the scorer would serve over the held-out period, batch model"}


def cli(args: Any, settings: Settings) -> int:
    """``churnstream train --events DIR [--out MODEL_DIR] [--until T] [--no-promote]``."""
    root = args.model_dir or settings.model_dir
    version = train(
        args.events,
        root,
        settings=settings,
        until=args.until,
        promote=not args.no_promote,
        progress=True,
        source=getattr(args, "source", None),
    )
    log.info("registered model %s in %s", version, root)
    return 0

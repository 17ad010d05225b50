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
   looks into the period it is evaluated on, exactly as in deployment.
3. **Selection.** Candidates (logistic regression with median imputation, missing indicators and
   ``signed_log1p`` scaling; histogram gradient boosting) are fitted on ``train``, calibrated on
   ``calibration`` and scored on ``test``; the best PR-AUC on ``test`` wins. Baselines (recency only; a
   logistic regression on the contract's required features only; the constant base rate) are evaluated the
   same way. These held-out metrics go into the metadata.
4. **Production fit.** The winner is refitted on every cutoff up to ``H`` before ``test`` and calibrated on
   ``test`` — the evaluated recipe shifted one period later, so the served model uses the newest labels.
5. **Register** the model, metadata, a reference sample (held-out rows with the production model's
   ``churn_probability``) and a model card, and promote it.

This module runs the recipe (:func:`train`, ``churnstream train``); its parts are
:mod:`~churnstream.models.time_split` (cutoffs, splits, the table), :mod:`~churnstream.models.candidates`
(the models tried and how one is fitted) and :mod:`~churnstream.models.train_report` (the printed table and
the model card).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.errors import ModelError
from churnstream.events import format_time, parse_time
from churnstream.models.batch import BatchModel
from churnstream.models.candidates import SELECTION_METRIC, candidates, fit_candidate
from churnstream.models.evaluation import evaluate
from churnstream.models.time_split import TrainConfig, build_table, plan_cutoffs
from churnstream.models.train_report import model_card, split_summary, summary_table, threshold_summary
from churnstream.settings import DAY_MS, Settings

__all__ = [
    "TrainConfig",
    "build_table",
    "candidates",
    "cli",
    "feature_medians",
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
) -> str:
    """Train, evaluate, calibrate and register a batch model from the event files in ``events_dir``.

    Returns the registered version. ``until`` (epoch ms or RFC 3339) ignores events at or after it.
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
    masks = plan.masks(as_of)
    for name in ("train", "calibration", "test"):
        if masks[name].sum() == 0 or len(np.unique(y[masks[name]])) < 2:
            raise ModelError(f"the {name} period has no rows of both classes; use more events or customers")
    stage_done("build table")

    medians = feature_medians(X[masks["production_fit"]], feature_names)
    eval_medians = feature_medians(X[masks["train"]], feature_names)
    results: dict[str, dict[str, Any]] = {}
    fitted: dict[str, BatchModel] = {}
    tried = candidates(config)
    for cand in tried:
        started = time.perf_counter()
        model = fit_candidate(
            cand,
            feature_names,
            X[masks["train"]],
            y[masks["train"]],
            X[masks["calibration"]],
            y[masks["calibration"]],
            eval_medians,
        )
        metrics = evaluate(y[masks["test"]], model.predict_proba(X[masks["test"]]))
        metrics["fit_seconds"] = round(time.perf_counter() - started, 2)
        metrics["calibration"] = model.calibration.describe()
        results[cand.name] = metrics
        fitted[cand.name] = model
    y_test = y[masks["test"]]
    train_rate = float(y[masks["train"]].mean())
    results["constant_base_rate"] = evaluate(y_test, np.full(len(y_test), train_rate))
    chosen = max(
        (c for c in tried if c.role == "candidate"),
        key=lambda c: results[c.name][SELECTION_METRIC] or -1.0,
    ).name
    stage_done("fit candidates")

    production = fit_candidate(
        next(c for c in tried if c.name == chosen),
        feature_names,
        X[masks["production_fit"]],
        y[masks["production_fit"]],
        X[masks["test"]],
        y[masks["test"]],
        medians,
    )
    stage_done("production fit")

    reference = _reference(
        event_log.events, int(as_of[masks["test"]].min()), feature_names, production, config, settings
    )
    thresholds = threshold_summary(settings, y_test, fitted[chosen].predict_proba(X[masks["test"]]))
    metadata = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "chosen": chosen,
        "selection": f"highest {SELECTION_METRIC} on the latest held-out period (test)",
        "horizon_days": settings.horizon_days,
        "training_window": {"start": format_time(event_log.start), "end": format_time(event_log.end)},
        "events": {"dir": str(events_dir), "count": len(event_log.events), "invalid": event_log.invalid},
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
            "evaluated_on": "test period; each model fitted on train and calibrated on calibration",
        },
        "calibration": {
            **production.calibration.describe(),
            "fitted_on": "test period (production model fitted on every cutoff up to H before it)",
        },
        "thresholds": thresholds,
        "candidates": [{"name": c.name, "role": c.role, "description": c.description} for c in tried],
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


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="train", unit="stage", file=sys.stderr, leave=False)


def feature_medians(X: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Median of each column ignoring NaN (NaN for a column without values), for explanations."""
    out: dict[str, float] = {}
    for j, name in enumerate(names):
        col = X[:, j]
        col = col[~np.isnan(col)]
        out[name] = float(np.median(col)) if len(col) else float("nan")
    return out


def _reference(
    events: Any, start: int, names: list[str], model: BatchModel, config: TrainConfig, settings: Settings
) -> Any:
    """A sample of what the scorer serves (event and sweep rows) over the held-out period onwards."""
    import pandas as pd

    from churnstream.features.offline import serving_rows

    rows = list(
        serving_rows(
            events,
            start,
            events[-1].timestamp + 1,
            lateness_ms=settings.lateness_ms,
            milestones_ms=settings.sweep_milestones_ms,
            tick_ms=int(settings.sweep_interval_days * 86_400_000),
        )
    )
    held_out = pd.DataFrame(rows, columns=names)
    if len(held_out) > config.reference_rows:
        held_out = held_out.sample(n=config.reference_rows, random_state=config.seed)
    reference = held_out.astype("float64").reset_index(drop=True)
    reference["churn_probability"] = model.predict_proba(reference[names].to_numpy(dtype=np.float64))
    return reference


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
    )
    log.info("registered model %s in %s", version, root)
    return 0

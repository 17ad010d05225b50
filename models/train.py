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
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from churnstream.errors import ModelError
from churnstream.events import format_time, parse_time
from churnstream.models.batch import BatchModel, Calibration, DropEmptyColumns, signed_log1p
from churnstream.settings import DAY_MS, Settings

log = logging.getLogger(__name__)

SELECTION_METRIC = "pr_auc"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Knobs of the training recipe (defaults suit a few months to a few years of events)."""

    step_days: float | None = None  # None: 7, or 14 when more than a year of cutoffs is usable
    warmup_days: float = 30.0
    test_share: float = 0.12
    max_rows: int = 300_000
    reference_rows: int = 5_000
    hgb_max_iter: int = 150
    threads: int = 1  # BLAS/OpenMP threads while fitting: thread pools oversubscribe shared cores badly
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """Cutoffs (epoch ms, ascending) and the time boundaries of the splits."""

    cutoffs: list[int]
    step_ms: int
    horizon_ms: int
    test_from: int  # test: cutoffs > test_from
    cal_from: int  # calibration: cal_from < cutoff <= cal_to
    cal_to: int
    train_to: int  # train: cutoff <= train_to
    prod_fit_to: int  # production fit: cutoff <= prod_fit_to

    def masks(self, as_of: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "train": as_of <= self.train_to,
            "calibration": (as_of > self.cal_from) & (as_of <= self.cal_to),
            "test": as_of > self.test_from,
            "production_fit": as_of <= self.prod_fit_to,
        }


def plan_cutoffs(start: int, end: int, *, horizon_ms: int, config: TrainConfig) -> Plan:
    """Rolling-origin cutoffs and splits for events in [start, end]; :class:`ModelError` if too short.

    >>> p = plan_cutoffs(0, 400 * DAY_MS, horizon_ms=30 * DAY_MS, config=TrainConfig())
    >>> days = [p.step_ms, p.cutoffs[-1], p.test_from, p.cal_to, p.train_to]
    >>> len(p.cutoffs), [d // DAY_MS for d in days]
    (49, [7, 370, 328, 298, 226])
    """
    t_max = end - horizon_ms
    t_min = start + int(config.warmup_days * DAY_MS)
    span = t_max - t_min
    step_days = config.step_days or (7.0 if span < 365 * DAY_MS else 14.0)
    step = int(step_days * DAY_MS)
    period = max(2 * step, int(round(config.test_share * span / step)) * step)
    test_from = t_max - period
    cal_to = test_from - horizon_ms
    cal_from = cal_to - period
    train_to = cal_from - horizon_ms
    cutoffs = []
    t = t_max
    while t >= t_min:
        cutoffs.append(t)
        t -= step
    cutoffs.reverse()
    n_train = sum(1 for c in cutoffs if c <= train_to)
    if n_train < 2:
        need = config.warmup_days + 2 * step_days + 2 * period / DAY_MS + 3 * horizon_ms / DAY_MS
        raise ModelError(
            f"not enough history to train and evaluate: events span {(end - start) / DAY_MS:.0f} days, "
            f"need about {need:.0f} (warm-up, two {period / DAY_MS:.0f}-day held-out periods and three "
            f"{horizon_ms / DAY_MS:g}-day horizons)"
        )
    return Plan(
        cutoffs=cutoffs,
        step_ms=step,
        horizon_ms=horizon_ms,
        test_from=test_from,
        cal_from=cal_from,
        cal_to=cal_to,
        train_to=train_to,
        prod_fit_to=test_from - horizon_ms,
    )


# -- candidates ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    role: str  # "candidate" (may be chosen) or "baseline" (reported only)
    description: str
    make: Callable[[Sequence[str]], Any]


def _select(indices: Sequence[int]) -> Any:
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(_take_columns, kw_args={"indices": list(indices)})


def _take_columns(X: np.ndarray, indices: list[int]) -> np.ndarray:
    return X[:, indices]


def _logistic(feature_names: Sequence[str], *, only: Sequence[str] | None = None, C: float = 0.5) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    steps: list[Any] = []
    if only is not None:
        steps.append(_select([list(feature_names).index(n) for n in only]))
    steps += [
        FunctionTransformer(signed_log1p),
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(C=C, max_iter=1000),
    ]
    return make_pipeline(*steps)


def _hgb(max_iter: int, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        DropEmptyColumns(),
        HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=0.07,
            max_leaf_nodes=31,
            min_samples_leaf=100,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        ),
    )


def candidates(config: TrainConfig) -> list[Candidate]:
    """The models tried and the baselines they are compared with."""
    from churnstream.features.definitions import REQUIRED_FEATURES

    return [
        Candidate(
            "logistic_regression",
            "candidate",
            "signed log1p, median imputation + missing indicators, standardisation, "
            "L2 logistic regression (C=0.5)",
            lambda names: _logistic(names),
        ),
        Candidate(
            "hist_gradient_boosting",
            "candidate",
            f"HistGradientBoostingClassifier({config.hgb_max_iter} iterations, lr 0.07, 31 leaves, "
            "min 100 rows per leaf, l2 1.0; NaN handled natively)",
            lambda names: _hgb(config.hgb_max_iter, config.seed),
        ),
        Candidate(
            "recency_only",
            "baseline",
            "logistic regression on recency_days alone (+ missing indicator)",
            lambda names: _logistic(names, only=["recency_days"], C=1.0),
        ),
        Candidate(
            "lr_required_features",
            "baseline",
            "the logistic regression above, on the contract's required features only",
            lambda names: _logistic(names, only=list(REQUIRED_FEATURES)),
        ),
    ]


# -- metrics -------------------------------------------------------------------------------------


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over ``bins`` equal-width bins, weighted by rows.

    >>> expected_calibration_error(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]))
    0.0
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / max(len(y), 1))


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Held-out metrics of probabilities ``p`` for labels ``y``."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    both = 0 < y.sum() < len(y)
    return {
        "rows": int(len(y)),
        "base_rate": float(y.mean()) if len(y) else None,
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)) if len(y) else None,
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else None,
        "ece": expected_calibration_error(y, p) if len(y) else None,
    }


def calibration_method(y: np.ndarray) -> str:
    """Isotonic with enough rows of both classes to estimate a free-form curve, else Platt scaling."""
    positives = int(np.sum(y))
    return "isotonic" if len(y) >= 2000 and min(positives, len(y) - positives) >= 100 else "sigmoid"


def fit_candidate(
    candidate: Candidate,
    feature_names: Sequence[str],
    X_fit: np.ndarray,
    y_fit: np.ndarray,
    X_cal: np.ndarray,
    y_cal: np.ndarray,
    medians: dict[str, float],
) -> BatchModel:
    """Fit ``candidate`` on the fit rows and its calibration map on the (later) calibration rows."""
    estimator = candidate.make(feature_names)
    estimator.fit(X_fit, y_fit)
    model = BatchModel(estimator=estimator, feature_names=feature_names, medians=medians, name=candidate.name)
    model.calibration = Calibration.fit(model.raw_score(X_cal), y_cal, calibration_method(y_cal))
    return model


# -- the training run ----------------------------------------------------------------------------


def _sample_fraction(events: Sequence[Any], cutoffs: Sequence[int], max_rows: int) -> tuple[float, int]:
    first: dict[str, int] = {}
    for e in events:
        first.setdefault(e.customer_id, e.timestamp)
    starts = np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
    estimate = int(np.searchsorted(starts, np.asarray(cutoffs), side="right").sum())
    return min(1.0, max_rows / max(estimate, 1)), estimate


def _in_sample(customer_id: str, fraction: float, seed: int) -> bool:
    return zlib.crc32(f"{seed}:{customer_id}".encode()) < fraction * 2**32


def build_table(
    events: Sequence[Any], plan: Plan, *, settings: Settings, config: TrainConfig, progress: bool
) -> tuple[Any, dict[str, Any]]:
    """The labelled point-in-time table at the plan's cutoffs (customer-sampled to ``max_rows``)."""
    from churnstream.features.offline import training_table

    fraction, estimate = _sample_fraction(events, plan.cutoffs, config.max_rows)
    if fraction < 1.0:
        events = [e for e in events if _in_sample(e.customer_id, fraction, config.seed)]
    table = training_table(
        events,
        plan.cutoffs,
        horizon_ms=plan.horizon_ms,
        lateness_ms=settings.lateness_ms,
        progress=progress,
    )
    sampling = {
        "customer_fraction": round(fraction, 4),
        "estimated_rows_unsampled": estimate,
        "max_rows": config.max_rows,
        "customers": int(table["customer_id"].nunique()),
    }
    return table, sampling


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
    thresholds = _thresholds(settings, y_test, fitted[chosen].predict_proba(X[masks["test"]]))
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
        "splits": {name: _split_info(as_of, y, mask) for name, mask in masks.items()},
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


def _split_info(as_of: np.ndarray, y: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    if not mask.any():
        return {"rows": 0}
    return {
        "from": format_time(int(as_of[mask].min())),
        "to": format_time(int(as_of[mask].max())),
        "cutoffs": int(len(np.unique(as_of[mask]))),
        "rows": int(mask.sum()),
        "churn_rate": round(float(y[mask].mean()), 4),
    }


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


def _thresholds(settings: Settings, y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"high": settings.high_threshold, "medium": settings.medium_threshold}
    for name, t in (("high", settings.high_threshold), ("medium", settings.medium_threshold)):
        flagged = p >= t
        out[f"{name}_share"] = round(float(flagged.mean()), 4)
        out[f"{name}_precision"] = round(float(y[flagged].mean()), 4) if flagged.any() else None
        out[f"{name}_recall"] = round(float(flagged[y == 1].mean()), 4) if (y == 1).any() else None
    return out


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def metrics_rows(metadata: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    m = metadata["metrics"]
    rows = [(name, "candidate", r) for name, r in m["candidates"].items()]
    rows += [(name, "baseline", r) for name, r in m["baselines"].items()]
    return rows


def summary_table(metadata: dict[str, Any], version: str, *, promoted: bool) -> str:
    """The held-out comparison as a plain-text table."""
    test = metadata["splits"]["test"]
    lines = [
        f"model {version} ({metadata['chosen']}){' promoted to current' if promoted else ''}",
        f"held-out test: {test['rows']} rows, {test['cutoffs']} cutoffs {test['from']} .. {test['to']}, "
        f"churn rate {test['churn_rate']:.3f}",
        f"{'model':<24} {'role':<9} {'ROC-AUC':>7} {'PR-AUC':>7} {'Brier':>7} {'ECE':>7} {'fit s':>6}",
    ]
    for name, role, r in metrics_rows(metadata):
        mark = "*" if name == metadata["chosen"] else " "
        lines.append(
            f"{name + mark:<24} {role:<9} {_f(r.get('roc_auc')):>7} {_f(r.get('pr_auc')):>7} "
            f"{_f(r.get('brier')):>7} {_f(r.get('ece')):>7} {r.get('fit_seconds', '-'):>6}"
        )
    return "\n".join(lines)


def model_card(metadata: dict[str, Any]) -> str:
    """A short Markdown model card (``{version}`` is filled in by the registry)."""
    m, th = metadata, metadata["thresholds"]
    metric_rows = [
        f"| {name}{' (chosen)' if name == m['chosen'] else ''} | {role} | {_f(r.get('roc_auc'))} | "
        f"{_f(r.get('pr_auc'))} | {_f(r.get('brier'))} | {_f(r.get('ece'))} |"
        for name, role, r in metrics_rows(m)
    ]
    split_rows = [
        f"| {name} | {s.get('from', '-')} | {s.get('to', '-')} | {s.get('rows', 0)} "
        f"| {s.get('churn_rate', '-')} |"
        for name, s in m["splits"].items()
    ]
    lines = [
        "# Churn model {version}",
        "",
        "**What it predicts.** The probability that a customer places no completed order in the next "
        f"{m['horizon_days']:g} days (the contract's label rule), from the features as of the scoring time. "
        f"Model: `{m['chosen']}`, calibrated ({m['calibration']['method']}) so that 0.7 means about 70 %.",
        "",
        f"**Data.** Events {m['training_window']['start']} .. {m['training_window']['end']} "
        f"({m['events']['count']} events). Population: {m['population']}. Cutoffs every "
        f"{m['cutoffs']['step_days']:g} days; customer sample fraction {m['sampling']['customer_fraction']}.",
        "",
        "| split | from | to | rows | churn rate |",
        "|---|---|---|---|---|",
        *split_rows,
        "",
        "**Held-out evaluation** (each model fitted on train, calibrated on calibration, scored on test; "
        f"chosen by {SELECTION_METRIC}):",
        "",
        "| model | role | ROC-AUC | PR-AUC | Brier | ECE |",
        "|---|---|---|---|---|---|",
        *metric_rows,
        "",
        f"At the HIGH threshold {th['high']}: {th['high_share']} of held-out rows flagged, "
        f"precision {th['high_precision']}, recall {th['high_recall']}.",
        "",
        "**Limits.** Labels come from inactivity, so a customer who buys rarely by habit looks like a "
        "churner until their next order. The model knows only the behaviour in its data window; the drift "
        "monitor compares live features with the reference sample. Retrain when drift is reported or "
        "the online model starts to outweigh this one in the blend.",
        "",
    ]
    return "\n".join(lines)


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

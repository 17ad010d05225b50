"""Where a training run's rows come from: rolling-origin cutoffs, their time split, and the labelled table.

:func:`plan_cutoffs` places cutoffs every ``step`` days and splits them into ``train``, ``calibration``,
``test`` and ``production_fit`` with a horizon-long gap between periods, so no label looks into the period
it is evaluated on (the recipe is in :mod:`churnstream.models.train`). Short histories get a plan with
fewer periods rather than a refusal (:data:`PLAN_KINDS`); :func:`crossfit_folds` assigns whole customers
to the folds the shorter plans calibrate with. :func:`build_table` computes the point-in-time rows at
those cutoffs, customer-sampled to ``max_rows``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from churnstream.errors import ModelError
from churnstream.settings import DAY_MS, Settings


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Knobs of the training recipe (defaults suit a few months to a few years of events)."""

    step_days: float | None = None  # None: 7, or 14 when more than a year of cutoffs is usable
    warmup_days: float = 30.0
    test_share: float = 0.12
    max_rows: int = 300_000
    reference_rows: int = 5_000
    hgb_max_iter: int = 150
    search: bool = True  # False: only the two default candidates (logistic regression, gradient boosting)
    crossfit_folds: int = 3  # customer folds when calibration or evaluation must be cross-fitted
    refit_on_every_label: bool = True  # serve the winner fitted on every labelled row, test too
    threads: int = 1  # BLAS/OpenMP threads while fitting: thread pools oversubscribe shared cores badly
    seed: int = 0


FULL = "full"
ONE_PERIOD = "one_held_out_period"
NO_PERIOD = "no_held_out_period"
PLAN_KINDS = (FULL, ONE_PERIOD, NO_PERIOD)  # best first: each needs less history than the one before


@dataclass(frozen=True, slots=True)
class Plan:
    """Cutoffs (epoch ms, ascending), the time boundaries of the splits, and which recipe they allow.

    ``kind`` is :data:`FULL` (train, calibration and test periods), :data:`ONE_PERIOD` (train and test;
    the evaluated model is calibrated by cross-fitting on train) or :data:`NO_PERIOD` (every cutoff is
    fitted on; evaluation and calibration by cross-fitting over customers, nothing held out in time).
    An empty period has ``from == to``.
    """

    cutoffs: list[int]
    step_ms: int
    horizon_ms: int
    test_from: int  # test: cutoffs > test_from
    cal_from: int  # calibration: cal_from < cutoff <= cal_to
    cal_to: int
    train_to: int  # train: cutoff <= train_to
    prod_fit_to: int  # production fit: cutoff <= prod_fit_to
    kind: str = FULL
    span_ms: int = 0  # the events' span the plan was made for

    def masks(self, as_of: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "train": as_of <= self.train_to,
            "calibration": (as_of > self.cal_from) & (as_of <= self.cal_to),
            "test": as_of > self.test_from,
            "production_fit": as_of <= self.prod_fit_to,
        }

    def folds(self) -> list[tuple[str, str, str]]:
        """The rolling-origin splits models are compared on: (split, rows fitted on, rows scored).

        Every split fits on cutoffs at least ``H`` before the period it scores, as in deployment.
        """
        if self.kind == FULL:
            return [("calibration", "train", "calibration"), ("test", "production_fit", "test")]
        if self.kind == ONE_PERIOD:
            return [("test", "train", "test")]
        return []

    def fallback(self) -> Plan | None:
        """The same cutoffs under the next recipe down (when a period lacks one class), or None."""
        if self.kind == FULL:
            return _one_period(self.cutoffs, self.step_ms, self.horizon_ms, self.span_ms, _period_ms(self))
        if self.kind == ONE_PERIOD:
            return _no_period(self.cutoffs, self.step_ms, self.horizon_ms, self.span_ms)
        return None

    def describe(self) -> dict[str, Any]:
        """What the plan does and what it cannot check, for the log, the report and the model card."""
        h = f"{self.horizon_ms / DAY_MS:g}-day"
        if self.kind == FULL:
            summary = (
                "train, calibration and test periods, each H apart: models fitted on train, calibrated on "
                "calibration, scored on test; compared on the calibration and test periods"
            )
            unchecked: list[str] = []
        elif self.kind == ONE_PERIOD:
            summary = (
                f"one held-out test period, a {h} gap after train: models fitted on train and compared on "
                "test; the evaluated model is calibrated by cross-fitting over train's customers, the "
                "served one on test"
            )
            unchecked = [
                "calibration on a later period (the evaluated calibration map comes from train's own period)",
                "whether the model choice holds on a second period (one split to compare models on)",
            ]
        else:
            summary = (
                "no held-out period: the model is fitted on every cutoff, evaluated and calibrated by "
                "cross-fitting over customers; the default candidate is used, no selection"
            )
            unchecked = [
                "performance on a later period (nothing is held out in time: the metrics are in-period, "
                "customer cross-fitted, and flatter on new periods)",
                "model selection (no time split to compare candidates on; never a random split)",
            ]
        return {"kind": self.kind, "summary": summary, "unchecked": unchecked}


def _period_ms(plan: Plan) -> int:
    return plan.cutoffs[-1] - plan.test_from


def _full(cutoffs: list[int], step: int, horizon_ms: int, span: int, period: int) -> Plan | None:
    t_max = cutoffs[-1]
    test_from = t_max - period
    cal_to = test_from - horizon_ms
    cal_from = cal_to - period
    train_to = cal_from - horizon_ms
    # a train period shorter than a held-out one evaluates a model unlike the served one: one period then
    if sum(1 for c in cutoffs if c <= train_to) < max(2, sum(1 for c in cutoffs if c > test_from)):
        return None
    return Plan(
        cutoffs=cutoffs,
        step_ms=step,
        horizon_ms=horizon_ms,
        test_from=test_from,
        cal_from=cal_from,
        cal_to=cal_to,
        train_to=train_to,
        prod_fit_to=test_from - horizon_ms,
        kind=FULL,
        span_ms=span,
    )


def _one_period(cutoffs: list[int], step: int, horizon_ms: int, span: int, period: int) -> Plan | None:
    t_max = cutoffs[-1]
    # the default period if it leaves a training cutoff, else as many steps as do (at least one)
    for p in range(period, 0, -step):
        train_to = t_max - p - horizon_ms
        if cutoffs[0] <= train_to:
            return Plan(
                cutoffs=cutoffs,
                step_ms=step,
                horizon_ms=horizon_ms,
                test_from=t_max - p,
                cal_from=train_to,
                cal_to=train_to,
                train_to=train_to,
                prod_fit_to=train_to,
                kind=ONE_PERIOD,
                span_ms=span,
            )
    return None


def _no_period(cutoffs: list[int], step: int, horizon_ms: int, span: int) -> Plan:
    t_max = cutoffs[-1]
    return Plan(
        cutoffs=cutoffs,
        step_ms=step,
        horizon_ms=horizon_ms,
        test_from=t_max,
        cal_from=t_max,
        cal_to=t_max,
        train_to=t_max,
        prod_fit_to=t_max,
        kind=NO_PERIOD,
        span_ms=span,
    )


def _layout(start: int, end: int, horizon_ms: int, config: TrainConfig) -> Plan | None:
    t_max = end - horizon_ms
    t_min = start + int(config.warmup_days * DAY_MS)
    if t_max < t_min:
        return None
    span = t_max - t_min
    step_days = config.step_days or (7.0 if span < 365 * DAY_MS else 14.0)
    step = int(step_days * DAY_MS)
    period = max(2 * step, int(round(config.test_share * span / step)) * step)
    cutoffs = []
    t = t_max
    while t >= t_min:
        cutoffs.append(t)
        t -= step
    cutoffs.reverse()
    return (
        _full(cutoffs, step, horizon_ms, end - start, period)
        or _one_period(cutoffs, step, horizon_ms, end - start, period)
        or _no_period(cutoffs, step, horizon_ms, end - start)
    )


def history_needed(horizon_ms: int, config: TrainConfig) -> dict[str, int]:
    """Days of events each recipe needs at this horizon (the shortest span that allows it).

    >>> history_needed(90 * DAY_MS, TrainConfig())
    {'full': 379, 'one_held_out_period': 218, 'no_held_out_period': 120}
    """
    needed: dict[str, int] = {}
    days = int(config.warmup_days + horizon_ms / DAY_MS)
    while len(needed) < len(PLAN_KINDS) and days < 20_000:
        plan = _layout(0, days * DAY_MS, horizon_ms, config)
        if plan is not None:
            for kind in PLAN_KINDS[PLAN_KINDS.index(plan.kind) :]:
                needed.setdefault(kind, days)
        days += 1
    return {kind: needed[kind] for kind in PLAN_KINDS if kind in needed}


def plan_cutoffs(start: int, end: int, *, horizon_ms: int, config: TrainConfig) -> Plan:
    """Rolling-origin cutoffs and splits for events in [start, end], the best recipe the span allows.

    :class:`ModelError` only when not one labelled row can be built (the span is shorter than the
    warm-up plus one horizon).

    >>> p = plan_cutoffs(0, 400 * DAY_MS, horizon_ms=30 * DAY_MS, config=TrainConfig())
    >>> days = [p.step_ms, p.cutoffs[-1], p.test_from, p.cal_to, p.train_to]
    >>> p.kind, len(p.cutoffs), [d // DAY_MS for d in days]
    ('full', 49, [7, 370, 328, 298, 226])
    >>> p = plan_cutoffs(0, 365 * DAY_MS, horizon_ms=90 * DAY_MS, config=TrainConfig())
    >>> p.kind, len(p.cutoffs), p.test_from // DAY_MS, p.train_to // DAY_MS
    ('one_held_out_period', 36, 247, 157)
    """
    plan = _layout(start, end, horizon_ms, config)
    if plan is None:
        needed = history_needed(horizon_ms, config)
        raise ModelError(
            f"not enough history to build a single labelled example: events span "
            f"{(end - start) / DAY_MS:.0f} days, need at least {needed[NO_PERIOD]} (a "
            f"{config.warmup_days:g}-day warm-up and one {horizon_ms / DAY_MS:g}-day horizon); "
            f"about {needed[ONE_PERIOD]} days allow a held-out test period, {needed[FULL]} the full plan"
        )
    return plan


def _sample_fraction(events: Sequence[Any], cutoffs: Sequence[int], max_rows: int) -> tuple[float, int]:
    first: dict[str, int] = {}
    for e in events:
        first.setdefault(e.customer_id, e.timestamp)
    starts = np.sort(np.fromiter(first.values(), dtype=np.int64, count=len(first)))
    estimate = int(np.searchsorted(starts, np.asarray(cutoffs), side="right").sum())
    return min(1.0, max_rows / max(estimate, 1)), estimate


def _in_sample(customer_id: str, fraction: float, seed: int) -> bool:
    return zlib.crc32(f"{seed}:{customer_id}".encode()) < fraction * 2**32


def crossfit_folds(customer_ids: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """A fold number in ``range(folds)`` per row, by a stable hash of the customer: all of a customer's
    rows (at every cutoff) fall in one fold, so a fold's scores never come from a model that saw them.

    >>> crossfit_folds(["a", "b", "a", "c", "d"], 3, 0).tolist()
    [2, 2, 2, 1, 0]
    """
    cache: dict[str, int] = {}
    out = np.empty(len(customer_ids), dtype=np.int64)
    for i, cid in enumerate(customer_ids):
        fold = cache.get(cid)
        if fold is None:
            fold = cache[cid] = zlib.crc32(f"{seed}:fold:{cid}".encode()) % folds
        out[i] = fold
    return out


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

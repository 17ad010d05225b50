"""Where a training run's rows come from: rolling-origin cutoffs, their time split, and the labelled table.

:func:`plan_cutoffs` places cutoffs every ``step`` days and splits them into ``train``, ``calibration``,
``test`` and ``production_fit`` with a horizon-long gap between periods, so no label looks into the period
it is evaluated on (the recipe is in :mod:`churnstream.models.train`); :func:`build_table` computes the
point-in-time rows at those cutoffs, customer-sampled to ``max_rows``.
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

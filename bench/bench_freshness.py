"""Benchmark: how fresh the latest score of every customer is, and what a sweep cadence costs.

    .venv/bin/python bench/bench_freshness.py [--cadences "7,14,30,60,90,180;7,14,30,60,90,180,270,365"]
                                              [--tickets simulated|none] [--max-silence-days 365]

A silent customer is rescored when its silence reaches each milestone (``CHURN_SWEEP_MILESTONES_DAYS``);
the latest prediction of a customer is that of its latest event or milestone. On CDNOW (H = 90 days),
for each cutoff (1997-12-31 and 1998-03-31) and each cadence, it replays the scorer's own rows
(:func:`churnstream.features.offline.serving_rows`, the same sweep rule the worker runs) up to the cutoff
and prints: milestones, sweep predictions per customer (the cost: each is a prediction and, for a horizon,
a pending label), the median and 90th-percentile age of the latest prediction at the cutoff, and the
ROC-AUC of one fixed model scored on those latest rows against the same model scored fresh as of the
cutoff. The model is a gradient-boosted model on the stored features, trained at cutoff - H on labels
in (cutoff - H, cutoff], so only the rows it is scored on differ between cadences. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402

from churnstream.events import Event, OrderEvent, parse_time  # noqa: E402
from churnstream.features.definitions import FEATURE_NAMES, features_as_of  # noqa: E402
from churnstream.features.offline import read_events, replay, serving_rows  # noqa: E402
from churnstream.models.evaluation import roc_auc  # noqa: E402
from churnstream.sources.cdnow import convert_cdnow  # noqa: E402

DAY_MS = 86_400_000
HORIZON_MS = 90 * DAY_MS
LATENESS_MS = 2 * DAY_MS
CUTOFFS = ("1997-12-31T23:59:59Z", "1998-03-31T23:59:59Z")
DEFAULT_CADENCES = (
    "7,14,30,60,90,180;7,14,30,60,90,180,270,365;7,14,21,28,42,56,70,90,120,150,180,240,300,365"
)


def _matrix(rows: dict[str, dict[str, Any]], ids: list[str]) -> np.ndarray:
    """Features as floats; a missing value is -1 (HistGB cannot bin a column with no value at all)."""
    return np.array(
        [[-1.0 if rows[c].get(f) is None else float(rows[c][f]) for f in FEATURE_NAMES] for c in ids]
    )


def _buyers(events: list[Event], after: int, until: int) -> set[str]:
    return {
        e.customer_id
        for e in events
        if isinstance(e, OrderEvent) and after < e.timestamp <= until and e.status == "completed"
    }


def _as_of(events: list[Event], t: int) -> dict[str, dict[str, Any]]:
    states = replay((e for e in events if e.timestamp <= t), lateness_ms=LATENESS_MS)
    return {c: dict(features_as_of(s, t)) for c, s in states.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cadences", default=DEFAULT_CADENCES, help="';'-separated milestone lists (days)")
    parser.add_argument("--tickets", choices=("simulated", "none"), default="none")
    parser.add_argument("--max-silence-days", type=float, default=365.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        convert_cdnow(tmp, tickets=args.tickets)
        events = read_events(tmp).events
    print(f"CDNOW, tickets: {args.tickets}, H = 90 days; model: HistGB on the stored features")
    header = f"{'cutoff':10} {'cadence (days of silence)':52} {'n':>3} {'sweeps/cust':>11} {'age p50':>8}"
    print(header + f" {'age p90':>8} {'ROC-AUC':>8}")
    print("-" * (len(header) + 18))
    for cutoff_text in CUTOFFS:
        cutoff = parse_time(cutoff_text)
        train_at = cutoff - HORIZON_MS
        train = _as_of(events, train_at)
        ids = sorted(train)
        bought = _buyers(events, train_at, cutoff)
        model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0)
        model.fit(_matrix(train, ids), [c not in bought for c in ids])
        fresh = _as_of(events, cutoff)
        ids = sorted(fresh)
        y = np.array([c not in _buyers(events, cutoff, cutoff + HORIZON_MS) for c in ids], dtype=float)
        fresh_auc = roc_auc(y, model.predict_proba(_matrix(fresh, ids))[:, 1])
        print(
            f"{cutoff_text[:10]:10} {'fresh: all scored at the cutoff':52} {'':>3} {'':>11} {0:>8}",
            end="",
        )
        print(f" {0:>8} {fresh_auc:8.4f}")
        before = [e for e in events if e.timestamp <= cutoff]
        for cadence in args.cadences.split(";"):
            days = [float(d) for d in cadence.split(",") if float(d) <= args.max_silence_days]
            latest: dict[str, dict[str, Any]] = {}
            sweeps = 0
            for row in serving_rows(
                before,
                before[0].timestamp,
                cutoff,
                lateness_ms=LATENESS_MS,
                milestones_ms=[int(d * DAY_MS) for d in days],
                tick_ms=DAY_MS,
            ):
                latest[row["customer_id"]] = row
                sweeps += row["trigger"] == "sweep"
            ages = sorted((cutoff - latest[c]["as_of"]) / DAY_MS for c in ids)
            auc = roc_auc(y, model.predict_proba(_matrix(latest, ids))[:, 1])
            label = cadence if len(cadence) <= 52 else cadence[:49] + "..."
            print(
                f"{'':10} {label:52} {len(days):3d} {sweeps / len(ids):11.1f} {statistics.median(ages):8.0f}"
                f" {ages[int(0.9 * len(ages))]:8.0f} {auc:8.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

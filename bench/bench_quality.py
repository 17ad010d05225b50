"""Benchmark: churn-prediction quality on held-out time, batch vs online vs blend vs simple baselines.

    .venv/bin/python bench/bench_quality.py [--customers 5000] [--days 540] [--seed 7] [--drift-at 420]
                                            [--skip-cdnow] [--skip-drift]

For each data set (a simulated shop; the same shop drifting at ``--drift-at``; CDNOW's real orders with
simulated tickets) it builds the point-in-time table and the time split exactly as ``churnstream train``
does (train, calibration, test; each ``H`` apart) and reports, on the test period:

- the batch candidates, fitted on train and calibrated on calibration (``*`` = chosen by PR-AUC);
- ``online (frozen)``: the River model after learning, prequentially, every label resolved before the
  test period starts; ``online (live)``: the same model, which keeps learning labels as they resolve
  (``as_of + H``) while the test period is scored — what the scorer does;
- ``blend (live)``: the :class:`churnstream.models.blend.Blender` over the chosen batch model and the live
online
  model, its weights learned from resolved labels since the calibration period;
- baselines: recency only; a logistic regression on the contract's required features only; the base rate.

Columns: ROC-AUC and PR-AUC (churn = positive class), Brier score, expected calibration error (10 bins),
and ROC-AUC among *active* customers (a completed order in the last 90 days), who matter most for
retention. It prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from churnstream.events import parse_time  # noqa: E402
from churnstream.features.definitions import FEATURE_NAMES  # noqa: E402
from churnstream.features.offline import read_events  # noqa: E402
from churnstream.models.blend import Blender  # noqa: E402
from churnstream.models.evaluation import evaluate  # noqa: E402
from churnstream.models.online import OnlineModel  # noqa: E402
from churnstream.models.train import (  # noqa: E402
    TrainConfig,
    build_table,
    candidates,
    feature_medians,
    fit_candidate,
    plan_cutoffs,
)
from churnstream.settings import Settings  # noqa: E402


def _metrics(y: np.ndarray, p: np.ndarray, active: np.ndarray) -> dict[str, Any]:
    out = evaluate(y, p)
    out["roc_auc_active"] = evaluate(y[active], p[active])["roc_auc"] if active.any() else None
    return out


def run(
    name: str, events_dir: Path, settings: Settings, config: TrainConfig
) -> list[tuple[str, dict[str, Any]]]:
    began = time.perf_counter()
    log = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours)
    plan = plan_cutoffs(log.start, log.end, horizon_ms=settings.horizon_ms, config=config)
    table, sampling = build_table(log.events, plan, settings=settings, config=config, progress=False)
    table = table.sort_values(["as_of", "customer_id"], kind="stable").reset_index(drop=True)
    X = table[list(FEATURE_NAMES)].to_numpy(dtype=np.float64, na_value=np.nan)
    y = table["label"].to_numpy(dtype=np.int64)
    as_of = table["as_of"].to_numpy(dtype=np.int64)
    masks = plan.masks(as_of)
    test = masks["test"]
    active = np.nan_to_num(X[test][:, FEATURE_NAMES.index("orders_90d")]) > 0
    results: list[tuple[str, dict[str, Any]]] = []

    medians = feature_medians(X[masks["train"]], FEATURE_NAMES)
    fitted = {}
    for cand in candidates(config):
        model = fit_candidate(
            cand,
            list(FEATURE_NAMES),
            X[masks["train"]],
            y[masks["train"]],
            X[masks["calibration"]],
            y[masks["calibration"]],
            medians,
        )
        fitted[cand.name] = (cand, model, _metrics(y[test], model.predict_proba(X[test]), active))
    chosen = max((v for v in fitted.values() if v[0].role == "candidate"), key=lambda v: v[2]["pr_auc"])
    for cand, _model, metrics in fitted.values():
        if cand.role == "candidate":
            results.append((f"batch {cand.name}{'*' if cand is chosen[0] else ''}", metrics))
    batch = chosen[1]

    # The stream: at each cutoff, first learn every label resolved by then, then score the cutoff's rows.
    batch_p = batch.predict_proba(X)
    online = OnlineModel()
    online_p = np.full(len(y), np.nan)
    blender = Blender()
    blend_p = np.full(len(y), np.nan)
    frozen: OnlineModel | None = None
    out_of_sample = as_of > plan.train_to  # the batch model never saw these rows' labels
    resolved = 0
    bounds = np.searchsorted(as_of, np.unique(as_of), side="left").tolist() + [len(as_of)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        t = int(as_of[start])
        if frozen is None and t > plan.test_from:
            frozen = OnlineModel.from_bytes(online.to_bytes())
        upto = int(np.searchsorted(as_of, t - plan.horizon_ms, side="right"))
        if upto > resolved:
            online.learn_matrix(X[resolved:upto], y[resolved:upto])
            for i in np.flatnonzero(out_of_sample[resolved:upto]) + resolved:
                o = online_p[i]
                blender.observe(float(batch_p[i]), None if np.isnan(o) else float(o), int(y[i]))
            resolved = upto
        if online.ready:
            online_p[start:stop] = online.predict_matrix(X[start:stop])
        blend_p[start:stop] = blender.blend(batch_p[start:stop], online_p[start:stop])
    assert frozen is not None
    results.append(("online (frozen)", _metrics(y[test], frozen.predict_matrix(X[test]), active)))
    results.append(("online (live)", _metrics(y[test], online_p[test], active)))
    blend_metrics = _metrics(y[test], blend_p[test], active)
    blend_metrics["note"] = f"online weight at the end {blender.weights()['online']:.2f}"
    results.append(("blend (live)", blend_metrics))
    for cand, _model, metrics in fitted.values():
        if cand.role == "baseline":
            results.append((f"baseline {cand.name}", metrics))
    base_rate = float(y[masks["train"]].mean())
    results.append(("baseline base rate", _metrics(y[test], np.full(int(test.sum()), base_rate), active)))

    print(
        f"\n## {name}: {len(log.events):,} events, {sampling['customers']:,} customers "
        f"(sample {sampling['customer_fraction']:.2f}); test {int(test.sum()):,} rows over "
        f"{len(np.unique(as_of[test]))} cutoffs, churn rate {y[test].mean():.3f}, "
        f"{active.mean():.0%} active; {time.perf_counter() - began:.0f} s"
    )
    print(f"| {'model':<36} | ROC-AUC | PR-AUC | Brier |   ECE | ROC-AUC active | note")
    print(f"|{'-' * 38}|---------|--------|-------|-------|----------------|-----")
    for label, m in results:
        print(
            f"| {label:<36} | {_f(m['roc_auc']):>7} | {_f(m['pr_auc']):>6} | {_f(m['brier']):>5} "
            f"| {_f(m['ece']):>5} | {_f(m['roc_auc_active']):>14} | {m.get('note', '')}"
        )
    return results


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drift-at", type=int, default=420)
    parser.add_argument("--skip-cdnow", action="store_true")
    parser.add_argument("--skip-drift", action="store_true")
    args = parser.parse_args()

    import sklearn.ensemble  # noqa: F401  (load OpenMP before limiting its threads)

    from churnstream.sources.cdnow import convert_cdnow
    from churnstream.sources.simulate import SimulationConfig, simulate

    settings = Settings()
    config = TrainConfig()
    start = parse_time("2024-01-01T00:00:00Z")
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        root = Path(tmp)
        sim = SimulationConfig(customers=args.customers, days=args.days, seed=args.seed, start_ms=start)
        simulate(sim, root / "sim", progress_bar=False)
        run(f"simulated shop ({args.customers} customers, {args.days} days)", root / "sim", settings, config)
        if not args.skip_drift:
            drifting = SimulationConfig(
                customers=args.customers,
                days=args.days,
                seed=args.seed,
                start_ms=start,
                drift_at=args.drift_at,
            )
            simulate(drifting, root / "drift", progress_bar=False)
            run(f"the same shop drifting at day {args.drift_at}", root / "drift", settings, config)
        if not args.skip_cdnow:
            convert_cdnow(root / "cdnow")
            run("CDNOW (real orders, simulated tickets)", root / "cdnow", settings, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

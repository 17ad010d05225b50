"""Benchmark: how much of an alert's score its top three reasons explain, and what explaining costs.

    .venv/bin/python bench/bench_reasons.py [--data cdnow,cdnow-tickets,simulator] [--customers 5000]
                                            [--permutations 8] [--seed 7]

For each data set the batch model is trained by the project's own code (``churnstream train --until T``),
every customer's features are taken as of a scoring time S (:func:`churnstream.features.offline.snapshot`,
the store's feature code), and the alerts are the customers an alert policy with a budget would pick: the
10 % of *active* customers (a completed order in the past year) with the most value at risk
(:func:`churnstream.models.value.value_at_risk`), and, for comparison, the 10 % with the highest probability.

- ``cdnow``: the real CDNOW orders alone (``churnstream dataset cdnow --tickets none``), trained on events
  before 1998-01-01, scored as of 1998-03-31;
- ``cdnow-tickets``: the same with the simulated support tickets;
- ``simulator``: ``churnstream simulate`` (``--customers`` over a year), trained on the first 270 days, scored
  at the end of the year.

For each alert set and each way of forming reasons (the default
:data:`~churnstream.models.explain.REASON_GROUPS`, or one reason per feature) the table prints how many
reasons an alert shows (``shown``, mean; :func:`~churnstream.models.explain.shown_reasons`: those raising
the risk first, then what lowers it most), the share of the total absolute contribution they carry (median,
25th percentile, fraction of alerts at or above one half; ``(3 by size)``: the median for the three largest
by size, as alerts listed them before), the share of alerts whose reasons shown include one that raises the
risk (``raising``: something to act on; ``(3 by size)``: the same before), the largest additivity error
``|base + sum(contributions) - logit p|`` over all reasons, the sampling error (median, over the first 300
alerts, of the largest difference from the contributions with 256 orderings, as a share of the total
absolute contribution), the time per alert of :func:`~churnstream.models.explain.explain` over batches of 50
alerts and over single alerts (one thread), and the lead reason with its sign. The explanations are of the
batch model: the blend adds the online model's inputs to the same vectorised calls. ``--cost`` adds a table
of the same times for every model family ``train`` may choose (each fitted, for timing only, on the scored
customers' own labels). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from churnstream.events import parse_time  # noqa: E402
from churnstream.models.explain import shown_reasons  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402

HORIZON_DAYS = 90.0
BUDGET_SHARE = 0.10
BATCH = 50


def top_share(contributions: Sequence[float], shown: Sequence[int]) -> float:
    """The share of the total absolute contribution carried by the reasons ``shown`` (indices; 1.0 when all
    contributions are 0).

    >>> top_share([2.0, -1.0, 0.5, 0.5], [0, 1, 2])
    0.875
    >>> top_share([0.5, 0.5, -1.0, 2.0], [3, 0, 1, 2])
    1.0
    """
    total = sum(abs(c) for c in contributions)
    return 1.0 if total == 0 else sum(abs(contributions[i]) for i in shown) / total


def by_size(contributions: Sequence[float], k: int = 3) -> list[int]:
    """The ``k`` largest contributions by size: the reasons alerts listed before they listed those raising
    the risk first (the baseline).

    >>> by_size([0.5, -2.0, 0.1, 1.0])
    [1, 3, 0]
    """
    return [int(i) for i in np.argsort(-np.abs(np.asarray(contributions)), kind="stable")[:k]]


def pick_alerts(features: Sequence[dict[str, Any]], p: np.ndarray, *, by: str) -> np.ndarray:
    """Indices of the ``BUDGET_SHARE`` of active customers with the most value at risk (``by="value"``) or
    the highest probability (``by="probability"``), largest first."""
    from churnstream.models.value import value_at_risk

    active = np.array([(f.get("recency_days") is not None and f["recency_days"] <= 365) for f in features])
    if by == "value":
        score = np.array(
            [value_at_risk(float(q), f, horizon_days=HORIZON_DAYS) for q, f in zip(p, features, strict=True)]
        )
    else:
        score = np.asarray(p, dtype=np.float64)
    score = np.where(active, score, -np.inf)
    n = int(BUDGET_SHARE * active.sum())
    return np.argsort(-score, kind="stable")[:n]


def measure(
    model: Any, features: Sequence[dict[str, Any]], idx: np.ndarray, *, groups: Any, permutations: int
) -> dict[str, Any]:
    from churnstream.models.blend import Blender
    from churnstream.models.explain import explain

    rows = [features[i] for i in idx]
    X = model.vectorize(rows)
    p = model.predict_proba(X)
    kw = {"groups": groups, "permutations": permutations, "top_k": len(model.feature_names)}
    began = time.perf_counter()
    explained = []
    for lo in range(0, len(rows), BATCH):
        explained += explain(model, None, Blender(), X[lo : lo + BATCH], rows[lo : lo + BATCH], **kw)
    batched_ms = 1000 * (time.perf_counter() - began) / max(1, len(rows))
    singles = []
    for i in range(min(200, len(rows))):
        began = time.perf_counter()
        explain(model, None, Blender(), X[i : i + 1], rows[i : i + 1], **kw)
        singles.append(1000 * (time.perf_counter() - began))
    exact = explain(model, None, Blender(), X[:300], rows[:300], **{**kw, "permutations": 256})
    sampling = [
        max(abs(a - b) for a, b in zip(_by_name(e), _by_name(x), strict=True)) / _total(x)
        for e, x in zip(explained, exact, strict=False)  # exact: the first 300
        if _total(x) > 0
    ]
    contributions = [[r.contribution for r in e.reasons] for e in explained]
    shown = [shown_reasons(c) for c in contributions]
    before = [by_size(c) for c in contributions]
    shares = np.array([top_share(c, s) for c, s in zip(contributions, shown, strict=True)])
    shares_before = np.array([top_share(c, s) for c, s in zip(contributions, before, strict=True)])
    logit = np.log(p / (1 - p))
    error = max(
        (
            abs(e.base + sum(r.contribution for r in e.reasons) - z)
            for e, z in zip(explained, logit, strict=True)
        ),
        default=0.0,
    )
    # alerts whose reasons shown include one that raises the risk (something to act on), now and before
    acting = float(
        np.mean([any(c[i] > 0 for i in s) for c, s in zip(contributions, shown, strict=True)] or [0])
    )
    acting_before = float(
        np.mean([any(c[i] > 0 for i in s) for c, s in zip(contributions, before, strict=True)] or [0])
    )
    leads: dict[str, int] = {}
    for e, s in zip(explained, shown, strict=True):
        lead = e.reasons[s[0]]
        name = f"{lead.feature} {'+' if lead.contribution > 0 else '-'}"
        leads[name] = leads.get(name, 0) + 1
    return {
        "alerts": len(rows),
        "median": float(np.median(shares)) if len(shares) else float("nan"),
        "p25": float(np.quantile(shares, 0.25)) if len(shares) else float("nan"),
        "half": float(np.mean(shares >= 0.5)) if len(shares) else float("nan"),
        "error": error,
        "sampling": float(np.median(sampling)) if sampling else 0.0,
        "median_before": float(np.median(shares_before)) if len(shares) else float("nan"),
        "shown": float(np.mean([len(x) for x in shown])) if shown else float("nan"),
        "acting": acting,
        "acting_before": acting_before,
        "batched_ms": batched_ms,
        "single_ms": float(np.median(singles)) if singles else float("nan"),
        "leads": ", ".join(
            f"{k} {v / len(explained):.0%}" for k, v in sorted(leads.items(), key=lambda kv: -kv[1])[:3]
        ),
    }


def _by_name(e: Any) -> list[float]:
    return [c for _, c in sorted((r.feature, r.contribution) for r in e.reasons)]


def _total(e: Any) -> float:
    return float(sum(abs(r.contribution) for r in e.reasons))


def format_table(title: str, rows: Sequence[tuple[str, str, dict[str, Any]]]) -> str:
    head = (
        f"{'alerts picked by':<20} {'reasons':<12} {'alerts':>6} {'shown':>5} {'share: median':>13} "
        f"{'p25':>6} {'>= 0.5':>7} {'(3 by size)':>11} {'raising':>7} {'(3 by size)':>11} "
        f"{'max |sum err|':>13} {'sampling':>8} {'ms/alert (50)':>13} {'ms (1)':>7}  lead reason (sign)"
    )
    lines = [title, head, "-" * len(head)]
    for picked, reasons, m in rows:
        lines.append(
            f"{picked:<20} {reasons:<12} {m['alerts']:>6} {m['shown']:>5.2f} {m['median']:>13.3f} "
            f"{m['p25']:>6.3f} {m['half']:>7.1%} {m['median_before']:>11.3f} {m['acting']:>7.1%} "
            f"{m['acting_before']:>11.1%} {m['error']:>13.1e} {m['sampling']:>8.3f} {m['batched_ms']:>13.3f} "
            f"{m['single_ms']:>7.2f}  {m['leads']}"
        )
    return "\n".join(lines)


def run(
    name: str, events_dir: Path, registry: Path, until: int, score_at: int, args: argparse.Namespace
) -> None:
    from churnstream.features.offline import read_events, snapshot
    from churnstream.models.explain import REASON_GROUPS
    from churnstream.models.registry import ModelRegistry
    from churnstream.models.train import train

    settings = dataclasses.replace(Settings.from_env(), horizon_days=HORIZON_DAYS)
    out = io.StringIO()
    version = train(events_dir, registry, settings=settings, until=until, progress=False, out=out)
    loaded = ModelRegistry(registry).load(version)
    model = loaded.model
    events = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours).events
    features = list(snapshot(events, score_at, lateness_ms=settings.lateness_ms).values())
    p = model.predict_proba(model.vectorize(features))
    rows = []
    for by, label in (("value", "value at risk"), ("probability", "probability")):
        idx = pick_alerts(features, p, by=by)
        for groups, reasons in ((REASON_GROUPS, "grouped"), ((), "per feature")):
            rows.append(
                (label, reasons, measure(model, features, idx, groups=groups, permutations=args.permutations))
            )
    title = (
        f"\n{name}: {loaded.metadata.get('chosen', '?')} ({len(model.feature_names)} features), "
        f"{len(features):,} customers, alerts = top {BUDGET_SHARE:.0%} of active customers, "
        f"{args.permutations} orderings"
    )
    print(format_table(title, rows), flush=True)


def cost_table(events_dir: Path, score_at: int, permutations: int) -> str:
    """ms per alert of explaining the value-at-risk alerts with each candidate model family."""
    from bench_quality import Cutoff, scene  # the protocol's labels and features

    from churnstream.features.definitions import FEATURE_NAMES
    from churnstream.features.offline import read_events
    from churnstream.models.batch import BatchModel, Calibration
    from churnstream.models.candidates import candidates
    from churnstream.models.explain import REASON_GROUPS
    from churnstream.models.time_split import TrainConfig

    settings = dataclasses.replace(Settings.from_env(), horizon_days=HORIZON_DAYS)
    events = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours).events
    sc = scene(events, Cutoff("cost", score_at, score_at), settings)
    names = list(FEATURE_NAMES)
    X = np.array([[np.nan if f.get(n) is None else float(f[n]) for n in names] for f in sc.features])
    present = ~np.all(np.isnan(X), axis=0)  # e.g. age: CDNOW has no profiles
    medians = {n: float(np.nanmedian(X[:, j])) if present[j] else 0.0 for j, n in enumerate(names)}
    lines = [f"\n{'model family':<32} {'ms/alert (50)':>13} {'ms (1)':>7}", "-" * 54]
    for candidate in candidates(TrainConfig()):
        if candidate.role != "candidate":
            continue
        model = BatchModel(estimator=candidate.make(names).fit(X, sc.y), feature_names=names, medians=medians)
        model.calibration = Calibration.fit(model.raw_score(X), sc.y, "isotonic")
        model.warm_up()
        idx = pick_alerts(sc.features, model.predict_proba(X), by="value")
        m = measure(model, sc.features, idx, groups=REASON_GROUPS, permutations=permutations)
        lines.append(f"{candidate.name:<32} {m['batched_ms']:>13.3f} {m['single_ms']:>7.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="cdnow,cdnow-tickets,simulator")
    parser.add_argument("--customers", type=int, default=5000, help="simulated customers")
    parser.add_argument("--permutations", type=int, default=8, help="orderings per explanation")
    parser.add_argument("--seed", type=int, default=7, help="seed of the tickets and the simulator")
    parser.add_argument("--cost", action="store_true", help="also time every model family on CDNOW")
    args = parser.parse_args(argv)

    import sklearn.ensemble  # noqa: F401  (load OpenMP before limiting its threads)
    from threadpoolctl import threadpool_limits

    from churnstream.sources.cdnow import convert_cdnow
    from churnstream.sources.simulate import SimulationConfig, simulate

    print("$ .venv/bin/python bench/bench_reasons.py " + " ".join(sys.argv[1:] if argv is None else argv))
    wanted = args.data.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-reasons-") as tmp, threadpool_limits(limits=1):
        work = Path(tmp)
        train_until, score_at = parse_time("1998-01-01T00:00:00Z"), parse_time("1998-03-31T23:59:59Z")
        for data, tickets, name in (
            ("cdnow", "none", "CDNOW orders alone"),
            ("cdnow-tickets", "simulated", "CDNOW orders + simulated tickets"),
        ):
            if data in wanted:
                convert_cdnow(work / data, seed=args.seed, tickets=tickets)
                run(name, work / data, work / f"models-{data}", train_until, score_at, args)
                if args.cost and data == "cdnow":
                    print(cost_table(work / data, score_at, args.permutations), flush=True)
        if "simulator" in wanted:
            start = parse_time("2024-01-01T00:00:00Z")
            config = SimulationConfig(customers=args.customers, days=365, seed=args.seed, start_ms=start)
            simulate(config, work / "simulator", progress_bar=False)
            run(
                f"simulator ({args.customers:,} customers, a year)",
                work / "simulator",
                work / "models-simulator",
                start + 270 * DAY_MS,
                start + 365 * DAY_MS - 1000,
                args,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

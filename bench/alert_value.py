"""Benchmark: are the alerts worth working? The alert policies of issue #20 on the CDNOW protocol.

    .venv/bin/python bench/alert_value.py [--live] [--tickets simulated|none] [--seed 7]
                                          [--png docs/profit_curve.png] [--save-rate 0.2] [--contact-cost 10]
    (or .venv/bin/python bench/bench_quality.py --alerts-only [--skip-live])

For each cutoff of the scores protocol (``CHURN_HORIZON_DAYS=90``; A: train on events before 1998-01-01,
alert over Jan-Mar 1998; B: train before 1997-10-01, alert over Oct-Dec 1997) the model ``churnstream
train`` registers scores the rows a scorer serves over the three months (every event and every silence
milestone, :func:`churnstream.features.offline.serving_rows`, batch model), and each policy is replayed
over them with the scorer's own decision code (:class:`churnstream.streams.scoring.AlertRule`,
:mod:`churnstream.models.alert_policy`, per-customer state as the scorer keeps it):

- ``value_at_risk`` (the default): priority = value at risk, the model's priority threshold for
  ``CHURN_ALERT_BUDGET_SHARE`` (10 %), once per customer and month, outside the cooldown;
- ``high_risk``: turns HIGH, with the model's own HIGH threshold and with the old fixed 0.7;
- ``top 10% at month start``: the offline reference, the active customers ranked by value at risk as of
  the first instant of each month, the top tenth;
- ``random``: a random list of the same size, as its expectation: the mean over the month's active base.

Columns: alerts per month (mean and max), share of the active customers (a completed order in the past 365
days, at some time in the month) alerted (mean and max), precision (alerted customers with no completed
order in the 90 days after the alert), value lost per alert (the alerted customer's spend over the 365 days
before the alert when they then churn, else 0; the issue's measure), and lift = value lost per alert over
the random list's. The profit curve (``--png``) ranks the active customers at each month start by value at
risk, by probability, and at random, and draws value saved minus contact cost against the list size under
stated assumptions (an offer keeps ``--save-rate`` of the would-be churners contacted; a contact costs
``--contact-cost``). Nothing is asserted. ``--live`` adds the row the scorer itself gives: the events up to
the window's end published to Kafka and scored by one ``churnstream score`` process (real Kafka and Redis,
the batch model blended with the online one, the per-partition cap), its ``churn_alerts`` read back (point
``CHURN_REDIS_URL`` at a private Redis; the run deletes its topics at the end).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import io
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from churnstream.events import Event, OrderEvent, parse_time  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402

HORIZON_DAYS = 90.0
YEAR_MS = 365 * DAY_MS


@dataclass(frozen=True, slots=True)
class Window:
    """Train on events before ``train_until``; alert over the months starting at ``months``."""

    name: str
    train_until: int
    months: tuple[int, ...]


WINDOWS = (
    Window(
        "A",
        parse_time("1998-01-01T00:00:00Z"),
        tuple(parse_time(f"1998-{m:02d}-01T00:00:00Z") for m in (1, 2, 3, 4)),
    ),
    Window(
        "B",
        parse_time("1997-10-01T00:00:00Z"),
        (*(parse_time(f"1997-{m}-01T00:00:00Z") for m in (10, 11, 12)), parse_time("1998-01-01T00:00:00Z")),
    ),
)
"""``months`` holds the starts of the alerting months and the end of the last one."""


class Orders:
    """Every customer's completed orders (times and amounts), for labels and value lost."""

    def __init__(self, events: Sequence[Event]) -> None:
        times: dict[str, list[int]] = {}
        amounts: dict[str, list[float]] = {}
        for e in events:
            if isinstance(e, OrderEvent) and e.status == "completed":
                times.setdefault(e.customer_id, []).append(e.timestamp)
                amounts.setdefault(e.customer_id, []).append(float(e.amount))
        self.times = times
        self.cumulative = {c: np.concatenate([[0.0], np.cumsum(a)]) for c, a in amounts.items()}

    def spend(self, cid: str, start: int, end: int) -> float:
        """Completed order amounts in (start, end]."""
        t = self.times.get(cid)
        if not t:
            return 0.0
        cum = self.cumulative[cid]
        return float(cum[bisect.bisect_right(t, end)] - cum[bisect.bisect_right(t, start)])

    def churned(self, cid: str, t: int, horizon_ms: int) -> bool:
        times = self.times.get(cid, [])
        i = bisect.bisect_right(times, t)
        return i >= len(times) or times[i] > t + horizon_ms

    def lost(self, cid: str, t: int, horizon_ms: int) -> float:
        """The issue's measure: the past year's spend when the customer then churns, else 0."""
        return self.spend(cid, t - YEAR_MS, t) if self.churned(cid, t, horizon_ms) else 0.0

    def active(self, start: int, end: int) -> list[str]:
        """Customers with a completed order in the 365 days before some instant of [start, end)."""
        out = []
        for cid, t in self.times.items():
            i = bisect.bisect_left(t, end)
            if i and t[i - 1] > start - YEAR_MS:
                out.append(cid)
        return out


def replay_alerts(
    rows: Sequence[dict[str, Any]], probabilities: np.ndarray, *, settings: Settings, metadata: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """The alerts the scorer would raise over ``rows`` (in serving order) scored ``probabilities``: its
    decision code and per-customer state (risk, last alert); returns them and the policy's description."""
    from churnstream.features.layout import partition_of
    from churnstream.models.alert_policy import Budget, pick_under_budget, should_alert
    from churnstream.models.value import value_at_risk
    from churnstream.streams.scoring import AlertRule

    rule = AlertRule.of(settings, metadata)
    model_risk = metadata.get("risk_thresholds")
    held: dict[str, Any] = {}
    budgets = [Budget() for _ in range(settings.topic_partitions)]
    alerts = []
    for row, p in zip(rows, probabilities.tolist(), strict=True):
        cp = round(float(p), 6)
        cid, as_of = row["customer_id"], row["as_of"]
        risk = settings.risk_category(cp, model_risk)
        var = value_at_risk(cp, row, horizon_days=settings.horizon_days)
        state = held.setdefault(cid, {})
        previous = state.get("risk")
        state["risk"] = risk
        last = state.get("alerted")
        if rule.threshold is not None:
            picked = pick_under_budget(
                state,
                budgets[partition_of(cid, settings.topic_partitions)],
                priority=var,
                as_of=as_of,
                recency_days=row["recency_days"],
                threshold=rule.threshold,
                share=settings.alert_budget_share,
                cooldown_ms=settings.cooldown_ms,
            )
        else:
            picked = should_alert(
                risk, previous_risk=previous, last_alerted=last, as_of=as_of, cooldown_ms=settings.cooldown_ms
            )
        if picked:
            state["alerted"] = as_of
            alerts.append({"customer_id": cid, "as_of": as_of, "value_at_risk": var, "probability": cp})
    return alerts, rule.describe


def measure(
    alerts: Sequence[dict[str, Any]], orders: Orders, months: Sequence[int], horizon_ms: int
) -> dict[str, Any]:
    """The table's columns for one list of alerts (each ``customer_id``, ``as_of``)."""
    counts, shares, random_lost = [], [], []
    lost, churned = 0.0, 0
    for start, end in zip(months, months[1:], strict=False):
        base = orders.active(start, end)
        in_month = [a for a in alerts if start <= a["as_of"] < end]
        counts.append(len(in_month))
        shares.append(len(in_month) / max(len(base), 1))
        random_lost.append(
            (np.mean([orders.lost(c, start, horizon_ms) for c in base]) if base else 0.0, len(in_month))
        )
        for a in in_month:
            value = orders.lost(a["customer_id"], a["as_of"], horizon_ms)
            lost += value
            churned += orders.churned(a["customer_id"], a["as_of"], horizon_ms)
    n = sum(counts)
    random_per_alert = sum(v * k for v, k in random_lost) / n if n else float("nan")
    per_alert = lost / n if n else float("nan")
    return {
        "per_month": np.mean(counts),
        "max_month": max(counts),
        "share": np.mean(shares),
        "max_share": max(shares),
        "precision": churned / n if n else float("nan"),
        "lost_per_alert": per_alert,
        "random_per_alert": random_per_alert,
        "lift": per_alert / random_per_alert if n and random_per_alert else float("nan"),
    }


def month_start_lists(
    model: Any, events: Sequence[Event], orders: Orders, months: Sequence[int], settings: Settings
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The offline reference (top share by value at risk of the active base as of each month start), and
    for the profit curve each month's (value at risk, probability, value lost) over the active base."""
    from churnstream.features.offline import snapshot
    from churnstream.models.value import value_at_risk

    alerts: list[dict[str, Any]] = []
    per_month = []
    for start, end in zip(months, months[1:], strict=False):
        at = start - 1
        base = set(orders.active(start, start + 1))
        snap = snapshot(events, at, lateness_ms=settings.lateness_ms)
        feats = {c: f for c, f in snap.items() if c in base}
        ids = sorted(feats)
        if not ids:
            continue
        rows = [feats[c] for c in ids]
        p = np.round(model.predict_proba(model.vectorize(rows)), 6)
        var = np.array(
            [
                value_at_risk(float(pi), r, horizon_days=settings.horizon_days)
                for pi, r in zip(p, rows, strict=True)
            ]
        )
        lost = np.array([orders.lost(c, at, settings.horizon_ms) for c in ids])
        per_month.append((var, p, lost))
        k = int(settings.alert_budget_share * len(ids))
        for i in np.argsort(-var, kind="stable")[:k]:
            alerts.append({"customer_id": ids[i], "as_of": at + 1})
        del end
    return alerts, per_month


def profit_curve(
    per_month: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    png: Path,
    *,
    save_rate: float,
    contact_cost: float,
    title: str,
) -> str:
    """Draw value saved minus contact cost against the share of the active base contacted; returns a note."""
    try:
        import matplotlib
    except ImportError:
        return "no profit curve: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(7)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    best = {}
    for label, key in (("by value at risk", 0), ("by probability", 1), ("random", None)):
        curves = []
        for month in per_month:
            var, prob, lost = month
            order = rng.permutation(len(lost)) if key is None else np.argsort(-month[key], kind="stable")
            saved = np.concatenate([[0.0], np.cumsum(save_rate * lost[order] - contact_cost)])
            grid = np.linspace(0, len(lost), 101).astype(int)
            curves.append(saved[grid] / max(len(lost), 1) * 1000)
            del var, prob
        mean = np.mean(curves, axis=0)
        ax.plot(np.linspace(0, 100, 101), mean, label=label)
        best[label] = (int(np.argmax(mean)), float(mean.max()))
    ax.axvline(10, color="grey", linestyle=":", linewidth=1, label="default budget (10 %)")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("list size: % of the active customers contacted in the month")
    ax.set_ylabel("profit per 1,000 active customers")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    share, value = best["by value at risk"]
    return f"profit curve -> {png}: by value at risk peaks at {share}% of the base ({value:.0f} per 1,000)"


def format_table(title: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    head = (
        f"{'policy':<66} {'alerts/mo':>9} {'max':>5} {'share':>6} {'max':>6} {'precision':>9} "
        f"{'lost/alert':>10} {'random':>7} {'lift':>5}"
    )
    lines = [title, head, "-" * len(head)]
    for name, m in rows:
        lines.append(
            f"{name[:66]:<66} {m['per_month']:>9.0f} {m['max_month']:>5} {m['share']:>6.1%} "
            f"{m['max_share']:>6.1%} {m['precision']:>9.3f} {m['lost_per_alert']:>10.2f} "
            f"{m['random_per_alert']:>7.2f} {m['lift']:>5.2f}"
        )
    return "\n".join(lines)


def live_alerts(
    events_dir: Path, end: int, settings: Settings, registry: Path, work: Path
) -> tuple[list[dict[str, Any]], str]:
    """Publish the events before ``end`` to Kafka, score them with one ``churnstream score`` process (real
    Kafka, real Redis, the batch model blended with the online one) and read ``churn_alerts`` back."""
    import time
    import uuid

    import orjson
    from bench_scorer import clean_up, committed, lines_in_time_order, produce_backlog, start_workers

    from churnstream.streams.alerts import read_topic
    from churnstream.streams.processes import stop_workers
    from churnstream.streams.topics import create_topics

    s = dataclasses.replace(
        settings, topic_prefix=f"ba{uuid.uuid4().hex[:8]}.", model_dir=registry, metrics_port=-1
    )
    create_topics(s)
    try:
        records = [r for r in lines_in_time_order(events_dir) if parse_time(r[3]) < end]
        log_path = work / f"score-{s.topic_prefix.rstrip('.')}.log"
        workers = start_workers(s, log_path)
        began = time.perf_counter()
        try:
            produce_backlog(s, records)
            while committed(s, s.consumer_group)[0] < len(records):
                if any(w.poll() is not None for w in workers):
                    raise SystemExit(f"the scorer exited; see {log_path}")
                time.sleep(0.5)
            elapsed = time.perf_counter() - began
        finally:
            stop_workers(workers)
        alerts = []
        for _key, value in read_topic(s, s.topics.churn_alerts):
            a = orjson.loads(value or b"{}")
            a["as_of"] = parse_time(a["as_of"])
            alerts.append(a)
    finally:
        clean_up([s])
    return alerts, f"{len(records):,} events scored live in {elapsed:.0f} s"


def run_window(
    events_dir: Path,
    events: Sequence[Event],
    window: Window,
    settings: Settings,
    work: Path,
    *,
    live: bool = False,
) -> tuple[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    from churnstream.features.offline import serving_rows
    from churnstream.models.registry import ModelRegistry
    from churnstream.models.train import train

    registry = work / f"models-{events_dir.name}-{window.name}"
    out = io.StringIO()
    version = train(
        events_dir, registry, settings=settings, until=window.train_until, progress=False, out=out
    )
    loaded = ModelRegistry(registry).load(version)
    model, metadata = loaded.model, loaded.metadata
    start, end = window.months[0], window.months[-1]
    rows = list(
        serving_rows(
            [e for e in events if e.timestamp < end],
            start,
            end,
            lateness_ms=settings.lateness_ms,
            milestones_ms=settings.sweep_milestones_ms,
            tick_ms=int(settings.sweep_interval_days * DAY_MS),
        )
    )
    p = model.predict_proba(model.vectorize(rows))
    orders = Orders(events)
    horizon = settings.horizon_ms
    table: list[tuple[str, dict[str, Any]]] = []
    for policy_settings, said in (
        (settings, ""),
        (dataclasses.replace(settings, alert_policy="high_risk"), " (the model's own HIGH)"),
        (
            dataclasses.replace(settings, alert_policy="high_risk", high_threshold=0.7, medium_threshold=0.4),
            " (the old rule)",
        ),
    ):
        alerts, described = replay_alerts(rows, p, settings=policy_settings, metadata=metadata)
        table.append((described + said, measure(alerts, orders, window.months, horizon)))
    note = ""
    if live:
        alerts, note = live_alerts(events_dir, end, settings, registry, work)
        policies = sorted({str(a.get("policy")) for a in alerts if start <= a["as_of"] < end})
        table.append((f"live: {'; '.join(policies)}", measure(alerts, orders, window.months, horizon)))
        held = [a for a in alerts if a.get("holdout") and start <= a["as_of"] < end]
        if held:
            note += f"; {len(held)} held back as a control group"
    reference, per_month = month_start_lists(model, events, orders, window.months, settings)
    share = f"{settings.alert_budget_share:.0%}"
    table.append(
        (f"top {share} at month start (offline)", measure(reference, orders, window.months, horizon))
    )
    title = (
        f"{events_dir.name}, window {window.name}: model trained before {_day(window.train_until)} "
        f"({metadata.get('chosen', '?')}), alerts over {_day(start)} .. {_day(end - 1)}, "
        f"{len(rows):,} served rows, H = {settings.horizon_days:g} d{f'; {note}' if note else ''}"
    )
    return format_table(title, table), per_month


def _day(ms: int) -> str:
    from churnstream.events import format_time

    return format_time(ms)[:10]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tickets", choices=("simulated", "none"), default="none")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--live", action="store_true", help="also replay through Kafka and Redis")
    parser.add_argument("--png", type=Path, default=Path("docs/profit_curve.png"), help="'' to skip")
    parser.add_argument("--save-rate", type=float, default=0.2, help="share of contacted churners kept")
    parser.add_argument("--contact-cost", type=float, default=10.0, help="cost of one contact")
    args = parser.parse_args(argv)
    run(args)
    return 0


def run(args: argparse.Namespace) -> None:
    import sklearn.ensemble  # noqa: F401  (load OpenMP before limiting its threads)
    from threadpoolctl import threadpool_limits

    from churnstream.features.offline import read_events
    from churnstream.sources.cdnow import convert_cdnow

    settings = dataclasses.replace(Settings.from_env(), horizon_days=HORIZON_DAYS)
    with tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp, threadpool_limits(limits=1):
        work = Path(tmp)
        events_dir = work / f"cdnow-{args.tickets}"
        convert_cdnow(events_dir, seed=args.seed, tickets=args.tickets)
        events = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours).events
        pooled = []
        for window in WINDOWS:
            text, per_month = run_window(
                events_dir, events, window, settings, work, live=getattr(args, "live", False)
            )
            pooled += per_month
            print("\n" + text, flush=True)
        if str(args.png):
            title = (
                f"CDNOW {'orders alone' if args.tickets == 'none' else 'orders + simulated tickets'}, "
                f"{len(pooled)} months: profit = {args.save_rate:g} x value "
                f"lost by contacted churners - {args.contact_cost:g} per contact"
            )
            note = profit_curve(
                pooled, args.png, save_rate=args.save_rate, contact_cost=args.contact_cost, title=title
            )
            print("\n" + note, flush=True)


if __name__ == "__main__":
    sys.exit(main())

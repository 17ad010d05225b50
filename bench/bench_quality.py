"""Benchmark: the churn-scoring protocol of issue #19 on the real CDNOW orders, anchors in the same run.

    .venv/bin/python bench/bench_quality.py [--skip-live] [--tickets both|simulated|none]
                                            [--resamples 1000] [--seed 7] [--alerts-only]

At the end (or alone, ``--alerts-only``) the alert policies of issue #20: ``bench/alert_value.py``'s tables
(offline, and live through Kafka unless ``--skip-live``) and ``docs/profit_curve.png``.

The task (``CHURN_HORIZON_DAYS=90``): at a scoring cutoff S, rank every customer with an event at or before
S by churn risk, using only the events up to S; churned = 1 when the customer has no completed order in
(S, S + 90 d] (the contract's label rule, :class:`churnstream.features.labels.AnswerLog`). Two cutoffs, so
that no choice is tuned to one period:

- A: train on events <= 1997-12-31T23:59:59Z, score as of 1998-03-31T23:59:59Z;
- B: train on events <= 1997-09-30T23:59:59Z, score as of 1997-12-31T23:59:59Z.

Rows of each table (ROC-AUC and PR-AUC with churn = positive, each with a percentile bootstrap 95 %
interval over customers, fixed seed: :func:`churnstream.models.evaluation.bootstrap_interval`):

- ``recency alone``: days since the last completed order;
- ``BG/NBD`` and ``Pareto/NBD``: minus the expected purchases in (S, S + 90 d], fitted by
  :mod:`churnstream.models.btyd` on every order up to S (they need no labels, so that is fair to them);
  purchases counted per calendar day, times in days, as the BTYD literature does for CDNOW;
- ``HistGB on RFM``: scikit-learn's ``HistGradientBoostingClassifier`` (defaults) on recency, frequency,
  monetary value and tenure, trained on weekly cutoffs whose labels are known by the training end, from
  the training events only (the rule our model trains under);
- ``batch``: the model ``churnstream train --until <training end>`` registers (the same code), scored on
  features as of S (:func:`churnstream.features.offline.snapshot`, the store's feature code);
- ``online`` and ``blend`` offline: the River model and the blender as the scorer runs them, replayed
  over the rows a scorer serves up to S (:func:`churnstream.features.offline.serving_rows`: every event
  and every silence milestone), each row's label learned when it resolves, one model and blender per
  input partition as in the scorer, then scored on the features as of S;
- ``live``: the events up to S published to Kafka and scored by one ``churnstream score`` process (real
  Kafka, real Redis) with the trained model; the latest prediction of each customer with ``as_of <= S``,
  read back from ``churn_predictions``: its batch, online and blend probabilities. ``staleness`` is the
  median age of that latest prediction at S.

Each table is printed twice: CDNOW with its simulated tickets (whose planted signal is this project's
invention) and CDNOW's real orders alone (``churnstream dataset cdnow --tickets none``). ``--skip-live``
leaves Kafka out (10-15 minutes instead of 20-30). Nothing is asserted. The live part uses its own
topic prefix, so it needs no clean topics; point ``CHURN_REDIS_URL`` at a private Redis to keep other users'
keys apart (the benchmark deletes its own keys and topics at the end).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from churnstream.errors import ModelError  # noqa: E402
from churnstream.events import Event, OrderEvent, parse_time  # noqa: E402
from churnstream.features.labels import AnswerLog  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402

HORIZON_DAYS = 90.0
RFM = ("recency_days", "orders_total", "spent_total", "tenure_days")


@dataclass(frozen=True, slots=True)
class Cutoff:
    """Train on events before ``train_until`` (exclusive); score every customer as of ``score_at``."""

    name: str
    train_until: int
    score_at: int


CUTOFFS = (
    Cutoff("A", parse_time("1998-01-01T00:00:00Z"), parse_time("1998-03-31T23:59:59Z")),
    Cutoff("B", parse_time("1997-10-01T00:00:00Z"), parse_time("1997-12-31T23:59:59Z")),
)


# -- the pure parts: labels, BTYD inputs, metrics -----------------------------------------------------


def protocol_labels(events: Sequence[Event], score_at: int, *, horizon_ms: int) -> dict[str, int]:
    """churned (1/0) of every customer with an event at or before ``score_at``, by the contract's rule over
    the whole log ``events`` (sorted by time); raises when the log ends before a label is known.

    >>> from churnstream.events import OrderEvent
    >>> log = [OrderEvent("1", "a", 0, "o1", 5.0), OrderEvent("2", "b", 1, "o2", 5.0),
    ...        OrderEvent("3", "a", 15, "o3", 5.0), OrderEvent("4", "c", 12, "o4", 5.0),
    ...        OrderEvent("5", "b", 40, "o5", 5.0)]
    >>> protocol_labels(log, 10, horizon_ms=20)  # c arrives after the cutoff; b's order comes too late
    {'a': 0, 'b': 1}
    """
    answers = AnswerLog.from_events(events)
    out: dict[str, int] = {}
    for event in events:
        if event.timestamp > score_at:
            break
        if event.customer_id not in out:
            known = answers.label(event.customer_id, score_at, horizon_ms=horizon_ms)
            if known is None:
                raise SystemExit(f"the log ends before the label of {event.customer_id} is known")
            out[event.customer_id] = known.label
    return out


def btyd_inputs(
    events: Sequence[Event], customers: Sequence[str], score_at: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in days of ``customers`` from their completed orders up to ``score_at``: x = distinct
    purchase days after the first, t_x = first to last purchase day, T = first purchase day to the day of
    ``score_at``; a customer without an order gets (0, 0, 0).

    >>> from churnstream.events import OrderEvent
    >>> log = [OrderEvent("1", "a", 0, "o1", 5.0), OrderEvent("2", "a", 3600_000, "o2", 5.0),
    ...        OrderEvent("3", "a", 2 * DAY_MS, "o3", 5.0), OrderEvent("4", "a", 9 * DAY_MS, "o4", 5.0)]
    >>> [v.tolist() for v in btyd_inputs(log, ["a", "z"], 5 * DAY_MS)]
    [[1.0, 0.0], [2.0, 0.0], [5.0, 0.0]]
    """
    days: dict[str, set[int]] = {}
    for event in events:
        if event.timestamp > score_at:
            break
        if isinstance(event, OrderEvent) and event.status == "completed":
            days.setdefault(event.customer_id, set()).add(event.timestamp // DAY_MS)
    today = score_at // DAY_MS
    x, t_x, T = (np.zeros(len(customers)) for _ in range(3))
    for i, cid in enumerate(customers):
        seen = days.get(cid)
        if seen:
            first = min(seen)
            x[i], t_x[i], T[i] = len(seen) - 1, max(seen) - first, today - first
    return x, t_x, T


def metrics(y: np.ndarray, score: np.ndarray, *, resamples: int, seed: int) -> dict[str, Any]:
    """ROC-AUC and PR-AUC of ``score`` (higher = more likely to churn), each with its bootstrap interval."""
    from sklearn.metrics import average_precision_score

    from churnstream.models.evaluation import bootstrap_interval, roc_auc

    return {
        "rows": len(y),
        "roc_auc": roc_auc(y, score),
        "roc_ci": bootstrap_interval(y, score, "roc_auc", resamples=resamples, seed=seed),
        "pr_auc": float(average_precision_score(y, score)),
        "pr_ci": bootstrap_interval(y, score, "pr_auc", resamples=resamples, seed=seed),
    }


def format_table(title: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The protocol table as Markdown.

    >>> print(format_table("t", [("recency", {"rows": 3, "roc_auc": 0.8, "roc_ci": (0.7, 0.9),
    ...                                       "pr_auc": 0.5, "pr_ci": None})]))
    #### t
    | model | ROC-AUC | 95 % interval | PR-AUC | 95 % interval | rows | note |
    |---|---|---|---|---|---|---|
    | recency | 0.8000 | 0.700–0.900 | 0.5000 | - | 3 |  |
    """
    lines = [
        f"#### {title}",
        "| model | ROC-AUC | 95 % interval | PR-AUC | 95 % interval | rows | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in rows:
        lines.append(
            f"| {name} | {_f(m['roc_auc'])} | {_ci(m['roc_ci'])} | {_f(m['pr_auc'])} | {_ci(m['pr_ci'])} "
            f"| {m['rows']:,} | {m.get('note', '')} |"
        )
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _ci(interval: tuple[float, float] | None) -> str:
    return "-" if interval is None else f"{interval[0]:.3f}–{interval[1]:.3f}"


# -- the offline rows --------------------------------------------------------------------------------


@dataclass
class Scene:
    """One cutoff of one data set: the customers scored, their labels and features as of S."""

    cutoff: Cutoff
    customers: list[str]
    y: np.ndarray
    features: list[dict[str, Any]]


def scene(events: Sequence[Event], cutoff: Cutoff, settings: Settings) -> Scene:
    from churnstream.features.offline import snapshot

    labels = protocol_labels(events, cutoff.score_at, horizon_ms=settings.horizon_ms)
    customers = sorted(labels)
    feats = snapshot(events, cutoff.score_at, lateness_ms=settings.lateness_ms)
    return Scene(
        cutoff=cutoff,
        customers=customers,
        y=np.array([labels[c] for c in customers], dtype=np.int64),
        features=[feats[c] for c in customers],
    )


def column(rows: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    return np.array([np.nan if r.get(name) is None else float(r[name]) for r in rows], dtype=np.float64)


def btyd_scores(events: Sequence[Event], sc: Scene) -> dict[str, np.ndarray]:
    from churnstream.models.btyd import BGNBD, ParetoNBD

    x, t_x, T = btyd_inputs(events, sc.customers, sc.cutoff.score_at)
    buyers = T > 0  # a customer whose first order is on the scoring day has nothing to fit
    out = {}
    for name, model in (("BG/NBD", BGNBD), ("Pareto/NBD", ParetoNBD)):
        fitted = model.fit(x[buyers], t_x[buyers], T[buyers])
        expected = np.zeros(len(x))
        expected[buyers] = fitted.expected_purchases(HORIZON_DAYS, x[buyers], t_x[buyers], T[buyers])
        out[name] = -expected
    return out


def weekly_cutoffs(start: int, last: int, step_days: float = 7.0, warmup_days: float = 30.0) -> list[int]:
    """Cutoffs every ``step_days`` counted back from ``last`` to ``start + warmup_days``, ascending."""
    out = []
    t = last
    while t >= start + int(warmup_days * DAY_MS):
        out.append(t)
        t -= int(step_days * DAY_MS)
    return out[::-1]


def hgb_rfm(events: Sequence[Event], sc: Scene, settings: Settings, seed: int) -> np.ndarray:
    """P(churn) of a default HistGB on RFM, trained on weekly cutoffs labelled within the training events."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from churnstream.features.offline import training_table

    train_events = [e for e in events if e.timestamp < sc.cutoff.train_until]
    cutoffs = weekly_cutoffs(train_events[0].timestamp, sc.cutoff.train_until - 1 - settings.horizon_ms)
    table = training_table(
        train_events,
        cutoffs,
        horizon_ms=settings.horizon_ms,
        lateness_ms=settings.lateness_ms,
        progress=False,
    )
    X = table[list(RFM)].to_numpy(dtype=np.float64, na_value=np.nan)
    model = HistGradientBoostingClassifier(random_state=seed).fit(X, table["label"].to_numpy())
    X_now = np.column_stack([column(sc.features, n) for n in RFM])
    return np.asarray(model.predict_proba(X_now)[:, 1])


def online_and_blend(
    events: Sequence[Event], sc: Scene, batch: Any, settings: Settings
) -> tuple[np.ndarray, np.ndarray, str]:
    """The online models and blenders as the scorer would have them at S, replayed over its served rows:
    one pair per input partition (``CHURN_TOPIC_PARTITIONS``), each learning its own customers' labels.

    Rows are taken a day at a time: first every label that resolved before the day learned (and seen by
    the blender with the probabilities its row carried), then the day's rows scored.
    """
    from churnstream.features.layout import partition_of
    from churnstream.features.offline import serving_rows
    from churnstream.models.blend import Blender
    from churnstream.models.online import OnlineModel

    S = sc.cutoff.score_at
    upto = [e for e in events if e.timestamp <= S]
    answers = AnswerLog.from_events(upto)
    rows = list(
        serving_rows(
            upto,
            upto[0].timestamp,
            S + 1,
            lateness_ms=settings.lateness_ms,
            milestones_ms=settings.sweep_milestones_ms,
            tick_ms=int(settings.sweep_interval_days * DAY_MS),
        )
    )
    parts = settings.topic_partitions
    onlines = [OnlineModel() for _ in range(parts)]
    blenders = [Blender() for _ in range(parts)]
    names = onlines[0].feature_names
    X = np.array([[np.nan if r.get(n) is None else r[n] for n in names] for r in rows])
    part = np.array([partition_of(r["customer_id"], parts) for r in rows], dtype=np.int64)
    batch_p = batch.predict_proba(batch.vectorize(rows))
    as_of = np.array([r["as_of"] for r in rows], dtype=np.int64)
    labeled_at = np.full(len(rows), np.iinfo(np.int64).max)
    label = np.zeros(len(rows), dtype=np.int64)
    for i, r in enumerate(rows):
        known = answers.label(r["customer_id"], int(as_of[i]), horizon_ms=settings.horizon_ms)
        if known is not None:
            labeled_at[i], label[i] = known.labeled_at, known.label
    online_p = np.full(len(rows), np.nan)
    by_resolution = np.argsort(labeled_at, kind="stable")
    resolved = 0

    def learn(idx: np.ndarray) -> None:
        for p in range(parts):
            mine = idx[part[idx] == p]
            for i in mine.tolist():
                o = online_p[i]
                blenders[p].observe(float(batch_p[i]), None if np.isnan(o) else float(o), int(label[i]))
            onlines[p].learn_matrix(X[mine], label[mine])

    days = as_of // DAY_MS
    bounds = np.flatnonzero(np.diff(days)) + 1
    for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(rows)], strict=True):
        upto_i = int(np.searchsorted(labeled_at[by_resolution], int(days[start]) * DAY_MS, side="left"))
        if upto_i > resolved:
            learn(by_resolution[resolved:upto_i])
            resolved = upto_i
        for p in range(parts):
            if onlines[p].ready:
                day = np.arange(start, stop)[part[start:stop] == p]
                online_p[day] = onlines[p].predict_matrix(X[day])
    learn(by_resolution[resolved : int(np.searchsorted(labeled_at[by_resolution], S, side="right"))])
    X_now = np.array([[np.nan if f.get(n) is None else f[n] for n in names] for f in sc.features])
    part_now = np.array([partition_of(c, parts) for c in sc.customers], dtype=np.int64)
    batch_now = batch.predict_proba(batch.vectorize(sc.features))
    on_now = np.full(len(sc.customers), np.nan)
    bl_now = np.full(len(sc.customers), np.nan)
    for p in range(parts):
        mine = part_now == p
        on_now[mine] = onlines[p].predict_matrix(X_now[mine])
        bl_now[mine] = blenders[p].blend(batch_now[mine], on_now[mine])
    weights = ", ".join(f"{b.weights()['online']:.2f}" for b in blenders)
    note = (
        f"{sum(o.n_learned for o in onlines):,} labels learned from {len(rows):,} served rows by "
        f"{parts} partitions' learners; online weights {weights}"
    )
    return on_now, bl_now, note


def train_batch(events_dir: Path, registry: Path, cutoff: Cutoff, settings: Settings) -> tuple[Any, str]:
    """``churnstream train --until <training end>`` into ``registry``; the model and a one-line note."""
    from churnstream.models.registry import ModelRegistry
    from churnstream.models.train import train

    out = io.StringIO()
    began = time.perf_counter()
    version = train(
        events_dir, registry, settings=settings, until=cutoff.train_until, progress=False, out=out
    )
    loaded = ModelRegistry(registry).load(version)
    chosen = loaded.metadata.get("chosen", "?")
    print(out.getvalue(), file=sys.stderr)
    return loaded.model, f"{chosen}, trained in {time.perf_counter() - began:.0f} s"


# -- the live rows -----------------------------------------------------------------------------------


def live_predictions(
    events_dir: Path, sc: Scene, settings: Settings, registry: Path, work: Path
) -> tuple[dict[str, dict[str, Any]], str]:
    """Publish the events up to S, score them with one ``churnstream score`` process, and return the latest
    prediction of each customer with ``as_of <= S`` (``as_of`` in ms) and a note on the run."""
    import orjson
    from bench_scorer import clean_up, committed, lines_in_time_order, produce_backlog, start_workers
    from confluent_kafka import KafkaError, TopicPartition

    from churnstream.streams.kafka import end_offsets, make_consumer
    from churnstream.streams.processes import stop_workers
    from churnstream.streams.topics import create_topics

    S = sc.cutoff.score_at
    s = dataclasses.replace(
        settings, topic_prefix=f"bq{uuid.uuid4().hex[:8]}.", model_dir=registry, metrics_port=-1
    )
    create_topics(s)
    try:
        records = [r for r in lines_in_time_order(events_dir) if parse_time(r[3]) <= S]
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
        latest: dict[str, dict[str, Any]] = {}
        total = 0
        consumer = make_consumer(s, f"bq-reader-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True})
        try:
            topic = s.topics.churn_predictions
            marks = end_offsets(consumer, topic)
            consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _hi) in marks.items()])
            at_end = {p: hi <= lo for p, (lo, hi) in marks.items()}
            while not all(at_end.values()):
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end[msg.partition() or 0] = True
                    continue
                total += 1
                body = orjson.loads(msg.value() or b"{}")
                as_of = parse_time(body["as_of"])
                seen = latest.get(body["customer_id"])
                if as_of <= S and (seen is None or as_of >= seen["as_of"]):
                    body["as_of"] = as_of
                    latest[body["customer_id"]] = body
        finally:
            consumer.close()
    finally:
        clean_up([s])
    note = f"{len(records):,} events scored in {elapsed:.0f} s; {total:,} predictions"
    return latest, note


def live_rows(sc: Scene, latest: dict[str, dict[str, Any]], note: str, **kw: Any) -> list[tuple[str, Any]]:
    have = [i for i, c in enumerate(sc.customers) if c in latest]
    y = sc.y[have]
    rows = []
    for field, name in (
        ("batch_probability", "live batch"),
        ("online_probability", "live online"),
        ("churn_probability", "live blend"),
    ):
        p = np.array([latest[sc.customers[i]].get(field) for i in have], dtype=np.float64)
        known = ~np.isnan(p)
        m = metrics(y[known], p[known], **kw)
        if known.sum() < len(sc.customers):
            m["note"] = f"{len(sc.customers) - int(known.sum()):,} customers without one"
        rows.append((name, m))
    ages = np.array([(sc.cutoff.score_at - latest[sc.customers[i]]["as_of"]) / DAY_MS for i in have])
    rows[-1][1]["note"] = (
        f"{note}; latest prediction's age at S: median {np.median(ages):.0f} d, "
        f"p90 {np.quantile(ages, 0.9):.0f} d"
    )
    return rows


# -- the run -----------------------------------------------------------------------------------------


def run(name: str, events_dir: Path, settings: Settings, args: argparse.Namespace, work: Path) -> None:
    from churnstream.features.offline import read_events

    events = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours).events
    kw = {"resamples": args.resamples, "seed": args.seed}
    for cutoff in CUTOFFS:
        began = time.perf_counter()
        sc = scene(events, cutoff, settings)
        rows: list[tuple[str, dict[str, Any]]] = [
            (
                "recency alone",
                metrics(sc.y, np.nan_to_num(column(sc.features, "recency_days"), nan=1e9), **kw),
            )
        ]
        for model, score in btyd_scores(events, sc).items():
            rows.append((f"{model} (fitted up to S)", metrics(sc.y, score, **kw)))
        rows.append(("HistGB on RFM", metrics(sc.y, hgb_rfm(events, sc, settings, args.seed), **kw)))
        registry = work / f"models-{events_dir.name}-{cutoff.name}"
        try:
            batch, trained = train_batch(events_dir, registry, cutoff, settings)
        except ModelError as exc:
            refused = {"rows": len(sc.y), "roc_auc": None, "roc_ci": None, "pr_auc": None, "pr_ci": None}
            rows.append(("batch (offline)", {**refused, "note": f"train refused: {exc}"}))
            batch = None
        if batch is not None:
            batch_m = metrics(sc.y, batch.predict_proba(batch.vectorize(sc.features)), **kw)
            batch_m["note"] = trained
            rows.append(("batch (offline)", batch_m))
            online_p, blend_p, note = online_and_blend(events, sc, batch, settings)
            rows.append(("online (offline)", metrics(sc.y, online_p, **kw)))
            rows.append(("blend (offline)", {**metrics(sc.y, blend_p, **kw), "note": note}))
            if not args.skip_live:
                latest, live_note = live_predictions(events_dir, sc, settings, registry, work)
                rows.extend(live_rows(sc, latest, live_note, **kw))
        title = (
            f"{name}, cutoff {cutoff.name}: train <= {_day(cutoff.train_until - 1)}, score at "
            f"{_day(cutoff.score_at)}, {len(sc.y):,} customers, churn rate {sc.y.mean():.3f} "
            f"({time.perf_counter() - began:.0f} s)"
        )
        print("\n" + format_table(title, rows), flush=True)


def _day(ms: int) -> str:
    from churnstream.events import format_time

    return format_time(ms)[:10]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-live", action="store_true", help="leave out scoring through Kafka")
    parser.add_argument("--tickets", choices=("both", "simulated", "none"), default="both")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=7, help="seed of the tickets, the bootstrap and HistGB")
    parser.add_argument("--alerts-only", action="store_true", help="only the alert policies (alert_value.py)")
    args = parser.parse_args(argv)
    from alert_value import main as alerts_main  # the alerts tables and the profit curve (issue #20)

    alert_argv = [
        "--tickets",
        "simulated" if args.tickets == "simulated" else "none",
        "--seed",
        str(args.seed),
    ]
    alert_argv += [] if args.skip_live else ["--live"]
    if args.alerts_only:
        return alerts_main(alert_argv)

    import sklearn.ensemble  # noqa: F401  (load OpenMP before limiting its threads)
    from threadpoolctl import threadpool_limits

    from churnstream.sources.cdnow import convert_cdnow

    print("$ .venv/bin/python bench/bench_quality.py " + " ".join(sys.argv[1:] if argv is None else argv))
    settings = dataclasses.replace(Settings.from_env(), horizon_days=HORIZON_DAYS)
    variants = [("simulated", "CDNOW orders + simulated tickets"), ("none", "CDNOW orders alone")]
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp, threadpool_limits(limits=1):
        work = Path(tmp)
        for tickets, name in variants:
            if args.tickets in ("both", tickets):
                convert_cdnow(work / f"cdnow-{tickets}", seed=args.seed, tickets=tickets)
                run(name, work / f"cdnow-{tickets}", settings, args, work)
    return alerts_main(alert_argv)


if __name__ == "__main__":
    sys.exit(main())

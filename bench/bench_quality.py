"""Benchmark: the churn-scoring protocol of issue #19 on the real CDNOW orders, anchors in the same run;
then the alert policies of issue #20 on CDNOW and on a simulated shop with its ground truth.

    .venv/bin/python bench/bench_quality.py [--skip-live] [--tickets both|simulated|none]
                                            [--resamples 1000] [--seed 7] [--alerts-only]
                                            [--alerts-on cdnow,simulator] [--sim-customers 5000]
                                            [--sim-days 456] [--png docs/profit_curve.png]
                                            [--save-rate 0.2] [--contact-cost 10]

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

**Alerts** (issue #20; alone with ``--alerts-only``, ``--alerts-on`` picks the data). Each window's model is
the one ``churnstream train`` registers on the events before it; it scores the rows a scorer serves over the
window's three calendar months (every event and every silence milestone, batch model), and each policy is
replayed over them with the scorer's own decision code (:class:`churnstream.streams.scoring.AlertRule`,
:mod:`churnstream.models.alert_policy`, per-customer state as the scorer keeps it):

- ``value_at_risk`` (the default): priority = value at risk, the model's priority threshold for
  ``CHURN_ALERT_BUDGET_SHARE`` (10 %), once per customer and month, outside the cooldown;
- ``high_risk``: turns HIGH, with the model's own HIGH threshold and with the old fixed 0.7;
- ``live`` (unless ``--skip-live``): what the scorer itself sends, the events up to the window's end
  published to Kafka and scored by one ``churnstream score`` process (real Kafka and Redis, the batch
  model blended with the online one, the per-partition cap), read back from ``churn_alerts``;
- ``top 10% at month start``: the offline reference, the active customers ranked by value at risk as of
  the first instant of each month, the top tenth;
- ``random``: a random list of the same size, as its expectation: the mean over the month's active base.

Columns (:func:`measure`): alerts per month (mean and max), share of the active customers (a completed
order in the past 365 days, at some time in the month) alerted (mean and max), precision (alerted customers
who then churn), value lost per alert (the alerted customer's spend over the 365 days before the alert when
they then churn, else 0; the issue's measure), lift = value lost per alert over the random list's, and
``gone``: alerts sent to customers who had already left, then the same share of a random list, and ``lift
there``: the lift when only the customers still there at the alert (or the month's start) count, those a
retention offer could reach (only the simulator knows who left). Each table says what "then churn" means
(``then churn =``): on CDNOW, as observed (no completed order in the 90 days after the alert,
:class:`Orders`); on the simulator, by its ground truth (the customer's hidden dropout time in
``truth.jsonl`` is at most 90 days after the alert, :class:`Truth`), then as observed for comparison.

- CDNOW (``--tickets simulated`` adds the simulated tickets, else the orders alone): window A trains on
  events before 1998-01-01 and alerts over Jan-Mar 1998, B trains before 1997-10-01 and alerts over
  Oct-Dec 1997; the profit curve (``--png``) ranks the active customers at each month start by value at
  risk, by probability and at random, and draws value saved minus contact cost against the list size
  (an offer keeps ``--save-rate`` of the would-be churners contacted; a contact costs ``--contact-cost``).
- Simulator: ``churnstream simulate --customers N --days D --seed S`` from 2024-01-01; the window is the
  last three calendar months whose 90-day horizons end inside the period (with the default 456 days:
  train before 2024-10-01, alert over Oct-Dec 2024).
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import io
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
YEAR_MS = 365 * DAY_MS
SIM_START = "2024-01-01T00:00:00Z"
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
            tick_ms=settings.sweep_interval_ms,
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


def train_batch(
    events_dir: Path, registry: Path, until: int, settings: Settings
) -> tuple[Any, dict[str, Any], str]:
    """``churnstream train --until <training end>`` into ``registry``; the model, its metadata and a note."""
    from churnstream.models.registry import ModelRegistry
    from churnstream.models.train import train

    out = io.StringIO()
    began = time.perf_counter()
    version = train(events_dir, registry, settings=settings, until=until, progress=False, out=out)
    loaded = ModelRegistry(registry).load(version)
    chosen = loaded.metadata.get("chosen", "?")
    print(out.getvalue(), file=sys.stderr)
    return loaded.model, loaded.metadata, f"{chosen}, trained in {time.perf_counter() - began:.0f} s"


# -- the live rows -----------------------------------------------------------------------------------


@contextmanager
def scored_live(
    events_dir: Path, settings: Settings, registry: Path, work: Path, *, before: int
) -> Iterator[tuple[Settings, str]]:
    """The events of ``events_dir`` before ``before`` (event time) published to topics of their own and
    scored by one ``churnstream score`` process with the model in ``registry`` until every offset is
    committed; yields the run's settings (to read its topics) and a note; deletes the topics at the end."""
    from bench_scorer import clean_up, committed, lines_in_time_order, produce_backlog, start_workers

    from churnstream.streams.processes import stop_workers
    from churnstream.streams.topics import create_topics

    s = dataclasses.replace(
        settings, topic_prefix=f"bq{uuid.uuid4().hex[:8]}.", model_dir=registry, metrics_port=-1
    )
    create_topics(s)
    try:
        records = [r for r in lines_in_time_order(events_dir) if parse_time(r[3]) < before]
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
        yield s, f"{len(records):,} events scored live in {elapsed:.0f} s"
    finally:
        clean_up([s])


def live_predictions(
    events_dir: Path, sc: Scene, settings: Settings, registry: Path, work: Path
) -> tuple[dict[str, dict[str, Any]], str]:
    """Score the events up to S live (:func:`scored_live`) and return the latest prediction of each customer
    with ``as_of <= S`` (``as_of`` in ms) and a note on the run."""
    import orjson
    from confluent_kafka import KafkaError, TopicPartition

    from churnstream.streams.kafka import end_offsets, make_consumer

    S = sc.cutoff.score_at
    with scored_live(events_dir, settings, registry, work, before=S + 1) as (s, note):
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
    return latest, f"{note}; {total:,} predictions"


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


# -- the alert policies of issue #20: are the alerts worth working? ---------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Train on events before ``train_until``; alert over the months starting at ``months``."""

    name: str
    train_until: int
    months: tuple[int, ...]
    """The starts of the alerting months and the end of the last one."""


def month_starts(first: int, count: int) -> tuple[int, ...]:
    """The starts of ``count`` calendar months (UTC) from the month of ``first`` on, and the end of the last.

    >>> [_day(m) for m in month_starts(parse_time("1997-11-15T08:00:00Z"), 2)]
    ['1997-11-01', '1997-12-01', '1998-01-01']
    """
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(first / 1000, tz=UTC)
    out = []
    for k in range(count + 1):
        year, month = divmod(at.month - 1 + k, 12)
        out.append(int(datetime(at.year + year, month + 1, 1, tzinfo=UTC).timestamp() * 1000))
    return tuple(out)


ALERT_WINDOWS = (
    Window("A", parse_time("1998-01-01T00:00:00Z"), month_starts(parse_time("1998-01-01T00:00:00Z"), 3)),
    Window("B", parse_time("1997-10-01T00:00:00Z"), month_starts(parse_time("1997-10-01T00:00:00Z"), 3)),
)
"""CDNOW: A alerts over Jan-Mar 1998 with a model trained before, B over Oct-Dec 1997."""


def simulator_window(start: int, end: int, horizon_ms: int, months: int = 3) -> Window:
    """The last ``months`` whole calendar months of a simulated period from ``start`` to ``end`` whose
    alerts' horizons end inside it; the model is trained on the events before them.

    >>> start, end = parse_time("2024-01-01T00:00:00Z"), parse_time("2025-04-01T00:00:00Z")
    >>> w = simulator_window(start, end, 90 * DAY_MS)
    >>> w.name, [_day(m) for m in (w.train_until, *w.months)]
    ('sim', ['2024-10-01', '2024-10-01', '2024-11-01', '2024-12-01', '2025-01-01'])
    """
    last = month_starts(end - horizon_ms, 0)[0]  # the first of the month that holds end - horizon
    first = last
    for _ in range(months):
        first = month_starts(first - 1, 0)[0]
    if first - start < horizon_ms + 30 * DAY_MS:
        raise SystemExit("the simulated period is too short: give --sim-days at least 300")
    return Window("sim", first, month_starts(first, months))


class Orders:
    """What the customers did (their completed orders), and "then churn" as the contract labels it: no
    completed order in the horizon after the alert.

    >>> from churnstream.events import OrderEvent
    >>> orders = Orders([OrderEvent("1", "a", 0, "o1", 5.0), OrderEvent("2", "a", 10, "o2", 7.0)])
    >>> orders.spend("a", 0, 10), orders.churned("a", 0, horizon_ms=10), orders.lost("a", 10, horizon_ms=5)
    (7.0, False, 12.0)
    """

    label = "observed (no completed order in the {h:g} d after)"

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

    def gone(self, cid: str, t: int) -> bool | None:
        """Whether the customer had already left for good at ``t`` (None: the orders cannot tell)."""
        return None

    def active(self, start: int, end: int) -> list[str]:
        """Customers with a completed order in the 365 days before some instant of [start, end)."""
        out = []
        for cid, t in self.times.items():
            i = bisect.bisect_left(t, end)
            if i and t[i - 1] > start - YEAR_MS:
                out.append(cid)
        return out


class Truth(Orders):
    """The simulator's ground truth: "then churn" = the customer's hidden dropout time (``truth.jsonl``) is
    at most the horizon after the alert (a customer who already left counts as churned).

    >>> from churnstream.events import OrderEvent
    >>> truth = Truth([OrderEvent("1", "a", 0, "o1", 5.0)], {"a": 30, "b": None})
    >>> truth.churned("a", 0, horizon_ms=20), truth.churned("a", 10, horizon_ms=20), truth.lost("a", 10, 20)
    (False, True, 5.0)
    """

    label = "simulator's truth (dropped out by {h:g} d after)"

    def __init__(self, events: Sequence[Event], dropouts: dict[str, int | None]) -> None:
        super().__init__(events)
        self.dropouts = dropouts

    @classmethod
    def read(cls, events: Sequence[Event], path: Path) -> Truth:
        import orjson

        dropouts = {}
        for line in path.read_bytes().splitlines():
            row = orjson.loads(line)
            dropouts[row["customer_id"]] = None if row["dropout"] is None else parse_time(row["dropout"])
        return cls(events, dropouts)

    def churned(self, cid: str, t: int, horizon_ms: int) -> bool:
        dropout = self.dropouts.get(cid)
        return dropout is not None and dropout <= t + horizon_ms

    def gone(self, cid: str, t: int) -> bool:
        return self.churned(cid, t, 0)


def replay_alerts(
    rows: Sequence[dict[str, Any]], probabilities: np.ndarray, *, settings: Settings, metadata: dict[str, Any]
) -> tuple[list[dict[str, Any]], str]:
    """The alerts the scorer would raise over ``rows`` (in serving order) scored ``probabilities``: its
    decision code and per-customer state (risk, last alert); returns them and the policy's description."""
    from churnstream.features.layout import partition_of
    from churnstream.models.alert_policy import Budget
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
        if rule.picks(
            held.setdefault(cid, {}),
            risk,
            budget=budgets[partition_of(cid, settings.topic_partitions)],
            priority=var,
            as_of=as_of,
            recency_days=row["recency_days"],
            share=settings.alert_budget_share,
            cooldown_ms=settings.cooldown_ms,
        ):
            alerts.append({"customer_id": cid, "as_of": as_of, "value_at_risk": var, "probability": cp})
    return alerts, rule.describe


def measure(
    alerts: Sequence[dict[str, Any]], outcomes: Orders, months: Sequence[int], horizon_ms: int
) -> dict[str, Any]:
    """The alert table's columns for one list of alerts (each ``customer_id``, ``as_of``) over the months
    ``months`` (starts, then the end of the last): alerts per month, their share of the month's active
    customers, precision and value lost per alert by ``outcomes``, the same for a random list of the same
    size (its expectation: the mean over the month's active customers as of the month's start), lift, and
    the share of alerts sent to customers who had already left, and of a random list's, and the lift when
    only customers still there count (when ``outcomes`` knows who left).
    """
    counts, shares, random_lost, random_gone, random_there = [], [], [], [], []
    lost, churned, gone, there = 0.0, 0, 0, 0.0
    knows_gone = True
    for start, end in zip(months, months[1:], strict=False):
        base = outcomes.active(start, end)
        in_month = [a for a in alerts if start <= a["as_of"] < end]
        counts.append(len(in_month))
        shares.append(len(in_month) / max(len(base), 1))
        random_lost.append(
            (np.mean([outcomes.lost(c, start, horizon_ms) for c in base]) if base else 0.0, len(in_month))
        )
        gone_at_start = [bool(outcomes.gone(c, start)) for c in base]
        random_gone.append(np.mean(gone_at_start) if base else 0.0)
        there_at_start = [
            0.0 if g else outcomes.lost(c, start, horizon_ms)
            for c, g in zip(base, gone_at_start, strict=True)
        ]
        random_there.append(np.mean(there_at_start) if base else 0.0)
        for a in in_month:
            value = outcomes.lost(a["customer_id"], a["as_of"], horizon_ms)
            lost += value
            churned += outcomes.churned(a["customer_id"], a["as_of"], horizon_ms)
            left = outcomes.gone(a["customer_id"], a["as_of"])
            knows_gone &= left is not None
            gone += bool(left)
            there += 0.0 if left else value
    n = sum(counts)
    random_per_alert = sum(v * k for v, k in random_lost) / n if n else float("nan")
    random_there_per_alert = sum(v * k for v, k in zip(random_there, counts, strict=True)) / n if n else 0.0
    per_alert = lost / n if n else float("nan")
    return {
        "per_month": float(np.mean(counts)),
        "max_month": max(counts),
        "share": float(np.mean(shares)),
        "max_share": max(shares),
        "precision": churned / n if n else float("nan"),
        "lost_per_alert": per_alert,
        "random_per_alert": random_per_alert,
        "lift": per_alert / random_per_alert if n and random_per_alert else float("nan"),
        "gone": gone / n if n and knows_gone else None,
        "random_gone": sum(g * k for g, k in zip(random_gone, counts, strict=True)) / n
        if n and knows_gone
        else None,
        "lift_there": there / n / random_there_per_alert
        if n and knows_gone and random_there_per_alert
        else None,
    }


def month_start_lists(
    model: Any, events: Sequence[Event], outcomes: Orders, months: Sequence[int], settings: Settings
) -> tuple[list[dict[str, Any]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The offline reference (top share by value at risk of the active base as of each month start), and
    for the profit curve each month's (value at risk, probability, value lost) over the active base."""
    from churnstream.features.offline import snapshot
    from churnstream.models.value import value_at_risk

    alerts: list[dict[str, Any]] = []
    per_month = []
    for start in months[:-1]:
        at = start - 1
        base = set(outcomes.active(start, start + 1))
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
        lost = np.array([outcomes.lost(c, at, settings.horizon_ms) for c in ids])
        per_month.append((var, p, lost))
        k = int(settings.alert_budget_share * len(ids))
        for i in np.argsort(-var, kind="stable")[:k]:
            alerts.append({"customer_id": ids[i], "as_of": at + 1})
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
            lost = month[2]
            order = rng.permutation(len(lost)) if key is None else np.argsort(-month[key], kind="stable")
            saved = np.concatenate([[0.0], np.cumsum(save_rate * lost[order] - contact_cost)])
            grid = np.linspace(0, len(lost), 101).astype(int)
            curves.append(saved[grid] / max(len(lost), 1) * 1000)
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


def format_alert_table(title: str, label: str, rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The alert table as text; ``label`` says what "then churn" means in its precision and value columns.

    >>> m = {"per_month": 3.0, "max_month": 4, "share": 0.05, "max_share": 0.06, "precision": 0.5,
    ...      "lost_per_alert": 20.0, "random_per_alert": 5.0, "lift": 4.0, "gone": 0.5, "random_gone": None,
    ...      "lift_there": 2.5}
    >>> table = format_alert_table("t", "observed", [("value_at_risk", m)]).splitlines()
    >>> table[1]
    'then churn = observed'
    >>> table[-1].split()
    ['value_at_risk', '3', '4', '5.0%', '6.0%', '0.500', '20.00', '5.00', '4.00', '50%', '-', '2.50']
    """
    head = (
        f"{'policy':<66} {'alerts/mo':>9} {'max':>5} {'share':>6} {'max':>6} {'precision':>9} "
        f"{'lost/alert':>10} {'random':>7} {'lift':>5} {'gone':>5} {'random':>6} {'lift there':>10}"
    )
    lines = [title, f"then churn = {label}", head, "-" * len(head)]
    for name, m in rows:
        lines.append(
            f"{name[:66]:<66} {m['per_month']:>9.0f} {m['max_month']:>5} {m['share']:>6.1%} "
            f"{m['max_share']:>6.1%} {m['precision']:>9.3f} {m['lost_per_alert']:>10.2f} "
            f"{m['random_per_alert']:>7.2f} {m['lift']:>5.2f} "
            f"{_pct(m.get('gone')):>5} {_pct(m.get('random_gone')):>6} "
            f"{'-' if m.get('lift_there') is None else format(m['lift_there'], '.2f'):>10}"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def alert_tables(
    events_dir: Path,
    events: Sequence[Event],
    window: Window,
    outcomes: Sequence[Orders],
    settings: Settings,
    work: Path,
    *,
    live: bool = False,
) -> tuple[list[str], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """One window's alert tables, one per entry of ``outcomes`` (what "then churn" means): the model
    ``churnstream train`` registers on the events before the window scores the rows a scorer serves over
    it; each policy replayed over them (and, ``live``, the scorer's own ``churn_alerts``); the offline
    reference. Also the profit curve's months by ``outcomes[0]``."""
    from churnstream.features.offline import serving_rows

    registry = work / f"models-{events_dir.name}-alerts-{window.name}"
    model, metadata, _ = train_batch(events_dir, registry, window.train_until, settings)
    start, end = window.months[0], window.months[-1]
    rows = list(
        serving_rows(
            [e for e in events if e.timestamp < end],
            start,
            end,
            lateness_ms=settings.lateness_ms,
            milestones_ms=settings.sweep_milestones_ms,
            tick_ms=settings.sweep_interval_ms,
        )
    )
    p = model.predict_proba(model.vectorize(rows))
    lists: list[tuple[str, Sequence[dict[str, Any]]]] = []
    for policy_settings, said in (
        (settings, ""),
        (dataclasses.replace(settings, alert_policy="high_risk"), " (the model's own HIGH)"),
        (
            dataclasses.replace(settings, alert_policy="high_risk", high_threshold=0.7, medium_threshold=0.4),
            " (the old rule)",
        ),
    ):
        alerts, described = replay_alerts(rows, p, settings=policy_settings, metadata=metadata)
        lists.append((described + said, alerts))
    note = ""
    if live:
        import orjson

        with scored_live(events_dir, settings, registry, work, before=end) as (s, note):
            from churnstream.streams.alerts import read_topic

            alerts = []
            for _key, value in read_topic(s, s.topics.churn_alerts):
                a = orjson.loads(value or b"{}")
                a["as_of"] = parse_time(a["as_of"])
                alerts.append(a)
        policies = sorted({str(a.get("policy")) for a in alerts if start <= a["as_of"] < end})
        lists.append((f"live: {'; '.join(policies)}", alerts))
        held = [a for a in alerts if a.get("holdout") and start <= a["as_of"] < end]
        if held:
            note += f"; {len(held)} held back as a control group"
    reference, per_month = month_start_lists(model, events, outcomes[0], window.months, settings)
    lists.append((f"top {settings.alert_budget_share:.0%} at month start (offline)", reference))
    title = (
        f"{events_dir.name}, window {window.name}: model trained before {_day(window.train_until)} "
        f"({metadata.get('chosen', '?')}), alerts over {_day(start)} .. {_day(end - 1)}, "
        f"{len(rows):,} served rows, H = {settings.horizon_days:g} d{f'; {note}' if note else ''}"
    )
    tables = [
        format_alert_table(
            title,
            o.label.format(h=settings.horizon_days),
            [(name, measure(a, o, window.months, settings.horizon_ms)) for name, a in lists],
        )
        for o in outcomes
    ]
    return tables, per_month


def cdnow_alerts(args: argparse.Namespace, settings: Settings, work: Path) -> None:
    """The alert tables on CDNOW's two windows and the profit curve."""
    from churnstream.features.offline import read_events
    from churnstream.sources.cdnow import convert_cdnow

    tickets = "simulated" if args.tickets == "simulated" else "none"
    events_dir = work / f"cdnow-alerts-{tickets}"
    convert_cdnow(events_dir, seed=args.seed, tickets=tickets)
    events = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours).events
    outcomes = Orders(events)
    pooled = []
    for window in ALERT_WINDOWS:
        tables, per_month = alert_tables(
            events_dir, events, window, [outcomes], settings, work, live=not args.skip_live
        )
        pooled += per_month
        print("\n" + "\n\n".join(tables), flush=True)
    if str(args.png):
        title = (
            f"CDNOW {'orders alone' if tickets == 'none' else 'orders + simulated tickets'}, "
            f"{len(pooled)} months: profit = {args.save_rate:g} x value "
            f"lost by contacted churners - {args.contact_cost:g} per contact"
        )
        note = profit_curve(
            pooled, args.png, save_rate=args.save_rate, contact_cost=args.contact_cost, title=title
        )
        print("\n" + note, flush=True)


def simulator_alerts(args: argparse.Namespace, settings: Settings, work: Path) -> None:
    """The alert tables on a simulated shop, "then churn" by its ground truth and as observed."""
    from churnstream.features.offline import read_events
    from churnstream.sources.simulate import SimulationConfig, simulate

    config = SimulationConfig(
        customers=args.sim_customers, days=args.sim_days, seed=args.seed, start_ms=parse_time(SIM_START)
    )
    window = simulator_window(config.start_ms, config.end_ms, settings.horizon_ms)
    events_dir = work / "simulator"
    manifest = simulate(config, events_dir, progress_bar=False)
    events = read_events(events_dir, max_future_skew_hours=settings.max_future_skew_hours).events
    truth = Truth.read(events, events_dir / "truth.jsonl")
    tables, _ = alert_tables(
        events_dir, events, window, [truth, Orders(events)], settings, work, live=not args.skip_live
    )
    counts = manifest["counts"]
    print(
        f"\nsimulated shop: {config.customers:,} customers over {config.days} days from {SIM_START[:10]} "
        f"(seed {config.seed}), {counts['events']:,} events, {counts['dropped_out']:,} dropped out",
        flush=True,
    )
    print("\n" + "\n\n".join(tables), flush=True)


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
            batch, _, trained = train_batch(events_dir, registry, cutoff.train_until, settings)
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
    parser.add_argument("--alerts-only", action="store_true", help="only the alert policies (issue #20)")
    parser.add_argument(
        "--alerts-on",
        default="cdnow,simulator",
        help="where the alert policies are measured: cdnow, simulator or both (comma-separated)",
    )
    parser.add_argument("--sim-customers", type=int, default=5000, help="simulated customers (alerts)")
    parser.add_argument(
        "--sim-days", type=int, default=456, help="simulated days from 2024-01-01 (alerts; at least 300)"
    )
    parser.add_argument("--png", type=Path, default=Path("docs/profit_curve.png"), help="'' to skip")
    parser.add_argument("--save-rate", type=float, default=0.2, help="profit curve: contacted churners kept")
    parser.add_argument("--contact-cost", type=float, default=10.0, help="profit curve: cost of one contact")
    args = parser.parse_args(argv)
    alerts_on = set(args.alerts_on.split(","))
    if alerts_on - {"cdnow", "simulator"}:
        parser.error(f"--alerts-on: unknown {', '.join(sorted(alerts_on - {'cdnow', 'simulator'}))}")

    import sklearn.ensemble  # noqa: F401  (load OpenMP before limiting its threads)
    from threadpoolctl import threadpool_limits

    from churnstream.sources.cdnow import convert_cdnow

    print("$ .venv/bin/python bench/bench_quality.py " + " ".join(sys.argv[1:] if argv is None else argv))
    settings = dataclasses.replace(Settings.from_env(), horizon_days=HORIZON_DAYS)
    variants = [("simulated", "CDNOW orders + simulated tickets"), ("none", "CDNOW orders alone")]
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp, threadpool_limits(limits=1):
        work = Path(tmp)
        for tickets, name in variants:
            if not args.alerts_only and args.tickets in ("both", tickets):
                convert_cdnow(work / f"cdnow-{tickets}", seed=args.seed, tickets=tickets)
                run(name, work / f"cdnow-{tickets}", settings, args, work)
        if "cdnow" in alerts_on:
            cdnow_alerts(args, settings, work)
        if "simulator" in alerts_on:
            simulator_alerts(args, settings, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the drift monitor say what to do, and does it keep up with the scorer at full speed?

``verdicts`` (the default) prints the table of issue #21. Four simulated shops
(:mod:`churnstream.sources.simulate`, same seed): a stationary one; one whose inputs alone shift on the drift
day (``--drift-kind inputs``: amounts x1.4, tickets x2; the model still ranks well); one whose
ticket-to-churn link alone changes (``--drift-kind link --link-factor F``, default 0.25: badly handled
tickets, which drove most dropouts and which the model learned to read, now drive a quarter as many, and
the rest follows ticket outcomes no feature shows, so the model ranks worse); and one where frequent
buyers start to leave (``--drift-kind loyalty``: the relation the model leans on most breaks). For each,
``churnstream train --until`` learns the days before
``--train-days``; then every event is scored in this process by the real scorer
(:class:`churnstream.streams.scorer.ChurnScorer`: features, labels, sweeps, online learners and blend, on an
in-memory feature store, one partition), and the ``monitoring_batches`` records it would send once the
model is deployed (at the training end, in event time: its sweeps of the last days of training, which come
a lateness late, included, as in every later window) go to the real
:class:`~churnstream.monitoring.monitor.DriftMonitor`
built by :func:`churnstream.streams.monitor.build_monitor` (reference from the registry, weekly windows),
without Kafka and without drawing Evidently HTML (what the monitor decides does not depend on either). The
table says, per world, how many windows drifted and got each action, how far each window's estimated
ROC-AUC was from its realized one, and whether the issue's expectation holds::

    .venv/bin/python bench/bench_monitor.py [verdicts] [--customers 8000] [--days 330] [--train-days 150] \\
        [--drift-day 190] [--link-factor 0.25] [--seed 7] [--worlds stationary,inputs only,...]

``throughput``: for each way of drawing the Evidently reports (``process``: the monitor's report worker
process, as shipped; ``thread``: the old way, in a thread of the monitor's own process; ``none``: not drawn
at all, windows still judged and published, to show what the rest costs) this starts the real monitor
(:class:`churnstream.streams.monitor.MonitorApp`, against a synthetic reference) as its own process, and then,
from another process, produces what a scorer at ``--rate`` predictions/s sends: one MonitoringBatch record
per micro-batch of ``--batch-rows`` predictions, ``created_at`` stamped when sent. Afterwards it waits
until the monitor has consumed every record and published every closed window, and prints, per mode:
the monitor's lag (record ``created_at`` to consumption: p50, p99, max), the windows closed, reported
(``drift_reports`` messages), drawn as Evidently reports, sharing a report with other windows, and
skipped (never, by design), and how long it took to drain. Needs Kafka (``./run infra up``)::

    .venv/bin/python bench/bench_monitor.py throughput [--rate 20000] [--seconds 30] [--batch-rows 500] \\
        [--window-rows 5000] [--modes none,process,thread]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from churnstream.features.definitions import FEATURE_NAMES  # noqa: E402
from churnstream.messages import MonitoringBatch  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402
from churnstream.streams.processes import start_worker  # noqa: E402

T0 = 1_717_200_000_000
VERSION = "bench-v1"


def synthetic_rows(n: int, seed: int) -> dict[str, list[Any]]:
    """Prediction columns with every feature, plausible scales, 10 s of event time apart."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[Any]] = {
        "as_of": [T0 + i * 10_000 for i in range(n)],
        "customer_id": [f"c{rng.integers(1_000_000)}" for _ in range(n)],
        "trigger": ["event"] * n,
    }
    for k, name in enumerate(FEATURE_NAMES):
        cols[name] = np.round(rng.lognormal(1 + k % 4, 0.7, n), 3).tolist()
    p = rng.uniform(0, 1, n)
    cols["batch_probability"] = p.tolist()
    cols["online_probability"] = np.clip(p + rng.normal(0, 0.05, n), 0, 1).tolist()
    cols["churn_probability"] = p.tolist()
    return cols


def produce(env: dict[str, str], topic: str, rate: int, batch_rows: int, seconds: float, out: Any) -> None:
    """Producer process: ``rate`` predictions/s for ``seconds``, one record per ``batch_rows``."""
    from churnstream.streams.kafka import make_producer

    producer = make_producer(Settings.from_env(env), linger_ms=5)
    batch = MonitoringBatch("@ID@", 0, VERSION, list(FEATURE_NAMES), synthetic_rows(batch_rows, seed=1), {})
    head, tail = json.dumps(batch.to_json()).encode().split(b'"@ID@", "created_at": 0', 1)
    ticks_per_s = rate / batch_rows
    sent = rows = 0
    start = time.perf_counter()
    while True:
        due = start + sent / ticks_per_s
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        stamp = f'"b{sent}", "created_at": {int(time.time() * 1000)}'.encode()
        while True:
            try:
                producer.produce(topic, key=VERSION.encode(), value=head + stamp + tail)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        rows += batch_rows
        producer.poll(0)
    producer.flush(60)
    out.put({"sent": sent, "rows": rows, "elapsed": time.perf_counter() - start})


class DrawsNothing:
    """A stand-in for the report worker that draws nothing: what the monitor costs without Evidently."""

    mode = "none"
    restarts = 0

    def start(self) -> Any:
        from concurrent.futures import Future

        done: Future[float] = Future()
        done.set_result(0.0)
        return done

    def submit(self, job: Any) -> Any:
        from concurrent.futures import Future

        from churnstream.monitoring.render import Rendered

        done: Future[Rendered] = Future()
        done.set_result(Rendered(job.job_id, "/dev/null", 0.0))
        return done

    def restart(self) -> None: ...

    def close(self) -> None: ...


def serve(mode: str) -> int:
    """The monitor process of one run: the real app, reference from ``synthetic_rows``, until SIGTERM."""
    import faust
    import pandas as pd

    from churnstream.monitoring.monitor import DriftMonitor, MonitorConfig
    from churnstream.monitoring.reference import FrameSource
    from churnstream.monitoring.report import ReportStore
    from churnstream.monitoring.state import MonitorState
    from churnstream.streams.monitor import MonitorApp, later_dir, references_dir, state_dir

    settings = Settings.from_env()
    ref = synthetic_rows(20_000, seed=2)
    reference = pd.DataFrame({c: ref[c] for c in (*FEATURE_NAMES, "churn_probability")})
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=ReportStore(settings.report_dir),
        config=MonitorConfig(window_rows=settings.drift_window_rows, drift_share=settings.drift_share),
        state=MonitorState(
            state_dir(settings), references=references_dir(settings), later=later_dir(settings)
        ),
    )
    built = MonitorApp.build(
        settings,
        monitor=monitor,
        render_in_thread=mode == "thread",
        renderer=DrawsNothing() if mode == "none" else None,  # type: ignore[arg-type]
    )
    worker = faust.Worker(built.app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    profile = os.environ.get("BENCH_MONITOR_PROFILE")  # a file for cProfile stats of the monitor process
    try:
        if profile:
            import cProfile

            cProfile.runctx("worker.execute_from_commandline()", globals(), locals(), profile)
        else:
            worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        built.service.close()
    return 0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system, s) of process ``pid`` and of its children, from /proc (0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def of(p: int) -> tuple[int, float]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return -1, 0.0
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / tick

    own = of(pid)[1]
    children = 0.0
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit() and int(entry.name) != pid:
            parent, seconds = of(int(entry.name))
            if parent == pid:
                children += seconds
    return own, children


def get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def run(mode: str, base: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    from churnstream.streams.topics import create_topics, topic_specs

    work = Path(tempfile.mkdtemp(prefix=f"bench-monitor-{mode}-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = dataclasses.replace(
        base,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        var_dir=work / "var",
        report_dir=work / "reports",
        web_host="127.0.0.1",
        web_port=port,
        drift_window_rows=args.window_rows,
    )
    create_topics(settings)
    log_append_time(settings, settings.topics.monitoring_batches)
    health_url = f"http://127.0.0.1:{port}/health"
    monitor = start_worker(
        ["--serve-monitor", mode], settings, log=work / "monitor.log", program=[sys.executable, __file__]
    )
    try:
        deadline = time.monotonic() + 120
        while not ((h := get_json(health_url)) and h["report_worker"]["ready"]):
            if monitor.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the monitor did not start; see {work / 'monitor.log'}")
            time.sleep(0.5)
        cpu_before, worker_before = cpu_seconds(monitor.pid)
        started = time.monotonic()
        out: Any = mp.get_context("spawn").Queue()
        producer = mp.get_context("spawn").Process(
            target=produce,
            args=(
                settings.to_env(),
                settings.topics.monitoring_batches,
                args.rate,
                args.batch_rows,
                args.seconds,
                out,
            ),
        )
        producer.start()
        produced = out.get()
        producer.join()
        at_end = get_json(health_url) or {}
        ended = time.monotonic()
        deadline = ended + args.drain
        while True:
            health = get_json(health_url) or {}
            drained = health.get("records", 0) >= produced["sent"] and health.get("reports_pending") == 0
            if drained or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        cpu_after, worker_after = cpu_seconds(monitor.pid)
        wall = time.monotonic() - started
        drained_at = time.monotonic()
        caught_up = drained  # then the light windows it kept are drawn in full, one at a time
        while caught_up and (get_json(health_url) or {}).get("windows_awaiting_full_report"):
            caught_up = time.monotonic() < deadline
            time.sleep(0.5)
        later = get_json(health_url) or health
        return {
            "mode": mode,
            **produced,
            "consumed_at_end": at_end.get("records", 0),
            "drain_s": drained_at - ended if drained else None,
            "later_s": time.monotonic() - drained_at if caught_up else None,
            "health": health,
            "later": later,
            "monitor_cpu": (cpu_after - cpu_before) / wall,
            "worker_cpu": (worker_after - worker_before) / wall,
            "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
        }
    finally:
        monitor.stop(60)
        admin = AdminClient(settings.kafka_config())
        names = {spec.name for spec in topic_specs(settings)}  # and the monitor's changelog topic
        names |= {t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)}
        for future in admin.delete_topics(sorted(names), operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result()


def log_append_time(settings: Settings, topic: str) -> None:
    """Let the broker stamp records as it appends them, so the monitor's ``delay_ms`` (Kafka timestamp
    to consumption) tells the consumer's share of the lag from the producer's and broker's."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    entry = ConfigEntry(
        "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin = AdminClient(settings.kafka_config())  # must outlive its futures
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    nan = float("nan")
    print()
    print(
        f"scorer at {args.rate:,} predictions/s for {args.seconds:g} s as MonitoringBatch records of "
        f"{args.batch_rows} rows ({args.rate / args.batch_rows:,.0f} records/s); windows of "
        f"{args.window_rows:,} rows; {os.cpu_count()} cores"
    )
    print("\nlag of the monitor (ms)                 created_at -> consumed   broker append -> consumed")
    header = (
        f"{'reports in':<10} {'rows/s':>7} {'records':>8} {'behind':>7} {'p50':>7} {'p99':>7} {'max':>7}"
        f" {'p50':>9} {'p99':>7} {'max':>7} {'CPU main':>9} {'worker':>7} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        h = r["health"]
        lag, cons = h.get("lag_ms") or {}, h.get("delay_ms") or {}
        print(
            f"{r['mode']:<10} {r['rows'] / r['elapsed']:>7,.0f} {r['sent']:>8,} "
            f"{r['sent'] - r['consumed_at_end']:>7,} {lag.get('p50', nan):>7,.0f} "
            f"{lag.get('p99', nan):>7,.0f} {lag.get('max', nan):>7,.0f} {cons.get('p50', nan):>9,.0f} "
            f"{cons.get('p99', nan):>7,.0f} {cons.get('max', nan):>7,.0f} {r['monitor_cpu']:>9.0%} "
            f"{r['worker_cpu']:>7.0%} {r['load']:>5.1f}"
        )
    print("\nwindows")
    header = (
        f"{'reports in':<10} {'closed':>7} {'reported':>9} {'drawn':>6} {'shared':>7} {'skipped':>8} "
        f"{'s/report':>9} {'drained':>8} {'light':>6} {'in full later':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        h = r["health"]
        render = (h.get("report_worker") or {}).get("render_seconds") or {}
        drained = f"{r['drain_s']:.1f} s" if r["drain_s"] is not None else "no"
        later = r["later"]
        in_full = f"{later.get('windows_drawn_later', 0):,}" + (
            f" in {r['later_s']:.0f} s" if r["later_s"] is not None else " (not all)"
        )
        print(
            f"{r['mode']:<10} {h.get('windows_done', 0):>7,} {h.get('windows_reported', 0):>9,} "
            f"{h.get('reports_rendered', 0):>6,} {h.get('windows_merged', 0):>7,} "
            f"{h.get('windows_skipped', 0):>8,} {render.get('p50', nan):>8.1f}s {drained:>8} "
            f"{later.get('windows_light', 0):>6,} {in_full:>14}"
        )
    print(
        "\nbehind: records not yet consumed once the producer had flushed; CPU main / worker: the monitor's "
        "process and its\nreport worker, share of one core from the start of production until drained; "
        "load: 1-minute load average\nat the end. closed: windows; reported: drift_reports messages (one "
        "per window); drawn: Evidently HTML reports;\nshared: windows whose HTML covers more than one "
        "window; "
        "s/report: median time to draw one; drained: time after\nthe producer stopped until every record "
        "was consumed and every window reported; light: windows published with a light page;\nin full "
        "later: of them, drawn in full once the monitor had caught up (the latest are kept for it, up to 64\n"
        "MiB), and how long after it had drained."
    )


# -- the verdict table (issue #21): does the monitor's action say what to do? ----------------------------

WORLDS = (
    ("stationary", None),
    ("inputs only", "inputs"),
    ("link only", "link"),
    ("loyalty only", "loyalty"),
)


@dataclasses.dataclass
class World:
    name: str
    reports: list[dict[str, Any]]
    drift_ms: int | None
    model: str
    predictions: int
    seconds: float


def score_offline(events: list[Any], settings: Settings, *, batch_size: int = 500) -> list[MonitoringBatch]:
    """The scorer's monitoring records for ``events``: the real :class:`ChurnScorer` (its scoring, labels,
    sweeps, online learners and blend) run in-process on an in-memory feature store, one partition,
    ``batch_size`` events a batch, what it would produce on ``monitoring_batches`` kept in order."""
    import functools

    import orjson

    from churnstream.events import LabelEvent, OrderEvent, ProfileEvent
    from churnstream.features.memory_store import MemoryFeatureStore
    from churnstream.models.registry import ModelRegistry
    from churnstream.streams.ingest import Batch, Coordinates
    from churnstream.streams.scorer import ChurnScorer, ModelSet, restore_learner
    from churnstream.streams.worker import Worker

    class _Consumer:
        def commit(self, **kwargs: Any) -> None: ...

    class _Reader:
        consumer = _Consumer()

    store = MemoryFeatureStore(lateness_ms=settings.lateness_ms)
    models = ModelSet(
        registry=ModelRegistry(settings.model_dir), load_learner=functools.partial(restore_learner, store)
    )
    worker = Worker(
        settings=settings,
        store=store,
        reader=_Reader(),  # type: ignore[arg-type]
        quiet=True,
        handler=lambda w: ChurnScorer(worker=w, settings=settings, store=store, models=models),
    )
    records: list[MonitoringBatch] = []
    topic = settings.topics.monitoring_batches

    def emit(to: str, key: Any, value: Any) -> None:
        if to == topic:
            records.append(MonitoringBatch.from_json(orjson.loads(orjson.dumps(value))))

    worker.emit = emit  # type: ignore[method-assign,assignment]
    scorer = worker.handler
    worker.assigned.add(0)
    topics = settings.topics
    offsets: dict[str, int] = {}
    for start in range(0, len(events), batch_size):
        batch = Batch()
        for event in events[start : start + batch_size]:
            if isinstance(event, OrderEvent):
                name = topics.orders
            elif isinstance(event, ProfileEvent):
                name = topics.customer_profiles
            elif isinstance(event, LabelEvent):
                name = topics.churn_labels
            else:
                name = topics.support_tickets
            offsets[name] = offsets.get(name, -1) + 1
            batch.events.append((event, Coordinates(name, 0, offsets[name])))
            batch.offsets[(name, 0)] = offsets[name] + 1
        scorer.process(batch)
        scorer.sweep()
    return records


def run_world(name: str, kind: str | None, base: Settings, args: argparse.Namespace, work: Path) -> World:
    """Simulate, train on the days before ``--train-days``, score every event offline, and feed the
    monitoring records sent after the training end to the drift monitor, in process."""
    from churnstream.events import parse_time
    from churnstream.features.offline import read_events
    from churnstream.models.train import train
    from churnstream.sources.simulate import SimulationConfig, simulate
    from churnstream.streams.monitor import build_monitor

    began = time.perf_counter()
    here = work / name.replace(" ", "-")
    start = parse_time("2024-01-01T00:00:00Z")
    config = SimulationConfig(
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        start_ms=start,
        drift_at=args.drift_day if kind else None,
        drift_kind=kind or "both",
        link_factor=args.link_factor if kind == "link" else None,
    )
    simulate(config, here / "events", progress_bar=False)
    settings = dataclasses.replace(
        base,
        model_dir=here / "models",
        report_dir=here / "reports",
        var_dir=here / "var",
        drift_window_rows=10**6,  # windows of a week of event time (CHURN_DRIFT_WINDOW_DAYS)
        drift_window_days=7.0,
    )
    train_end = start + args.train_days * DAY_MS
    out = io.StringIO()
    version = train(
        here / "events", settings.model_dir, settings=settings, until=train_end, progress=False, out=out
    )
    events = read_events(here / "events").events
    records = score_offline(events, settings)
    monitor = build_monitor(settings)
    reports: list[dict[str, Any]] = []
    predictions = 0
    clock = -1  # the scorer's event time when it sent a record: the latest as_of it had sent before
    for record in records:
        as_of = record.predictions.get("as_of") or []
        sent_after_training = clock >= train_end
        clock = max([clock, *as_of])
        if not sent_after_training:
            # sent before the model was deployed: not monitored. The records sent after it are, sweeps of
            # the last week of training included (they come a lateness late), as in every later window.
            continue
        predictions += len(as_of)
        for pending in monitor.add(record).pending:
            reports.append(pending.report(created_at=0, html_path="", url=None).to_json())
    return World(name, reports, config.drift_ms, version, predictions, time.perf_counter() - began)


def verdict_rows(world: World) -> dict[str, Any]:
    """What the table shows of one world: counts of verdicts, estimate against realized, and (with a
    drift day) when the first post-drift window's labels were known and when ``retrain`` first came."""
    from churnstream.events import format_time

    reports = world.reports
    actions = [r["action"] for r in reports]
    estimates = {(r["window_start"], r["window_end"]): r["estimated_performance"] for r in reports}
    gaps: dict[tuple[str, str], float] = {}  # window -> its estimate minus its realized ROC-AUC
    for r in reports:
        realized = r.get("realized_performance")
        if realized is None:
            continue
        window = (realized["window_start"], realized["window_end"])
        est = estimates.get(window)
        if est is not None and est["value"] is not None and realized["value"] is not None:
            gaps[window] = est["value"] - realized["value"]
    row: dict[str, Any] = {
        "windows": len(reports),
        "drift": sum(bool(r["dataset_drift"]) for r in reports),
        "none": actions.count("none"),
        "watch": actions.count("watch"),
        "retrain": actions.count("retrain"),
        "labelled": len(gaps),
        "max_gap": max((abs(g) for g in gaps.values()), default=None),
        "close": sum(abs(g) <= 0.03 for g in gaps.values()),
        "mean_gap": float(np.mean(list(gaps.values()))) if gaps else None,
        "reference": reports[-1].get("performance_reference") if reports else None,
    }
    late = [r["realized_performance"]["value"] for r in reports if r.get("realized_performance")][-5:]
    row["realized_late"] = float(np.mean(late)) if late else None
    if world.drift_ms is not None:
        cut = format_time(world.drift_ms)
        after = [i for i, r in enumerate(reports) if r["window_start"] >= cut]
        row["windows_after"] = len(after)
        row["drift_after"] = sum(bool(reports[i]["dataset_drift"]) for i in after)
        known = [
            i
            for i, r in enumerate(reports)
            if r.get("realized_performance") and r["realized_performance"]["window_end"] >= cut
        ]
        row["labels_after"] = known[0] if known else None
        row["first_retrain"] = actions.index("retrain") if "retrain" in actions else None
    return row


def _holds(world: World, r: dict[str, Any]) -> tuple[str, bool]:
    if world.drift_ms is None:
        return "none in >= 10 of 10, |gap| <= 0.03", (
            r["windows"] >= 10
            and r["none"] == r["windows"]
            and r["max_gap"] is not None
            and r["max_gap"] <= 0.03
        )
    if world.name.startswith("inputs"):
        return "drift, not retrain", r["drift_after"] > 0 and r["retrain"] == 0
    first, labels = r["first_retrain"], r["labels_after"]
    return (
        "retrain <= 2 windows after labels",
        first is not None and labels is not None and first - labels <= 2,
    )


def _f(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def verdict_table(worlds: list[World], args: argparse.Namespace) -> None:
    print(
        f"\nsimulated shop: {args.customers:,} customers over {args.days} days (seed {args.seed}); the model "
        f"learns days < {args.train_days}; the world shifts (if it does) on day {args.drift_day}, the "
        f"link-only world's ticket-to-churn link by x{args.link_factor:g}; windows of 7 days; a window's "
        "labels are known "
        "horizon + lateness after it"
    )
    header = (
        f"{'world':<12} {'windows':>7} {'drift':>6} {'none':>5} {'watch':>6} {'retrain':>8} {'labelled':>9} "
        f"{'<=0.03':>7} {'|est-real| max':>15} {'mean':>7} {'real. late':>10}  {'expected':<35} {'holds':>5}"
    )
    print(header)
    print("-" * len(header))
    for world in worlds:
        r = verdict_rows(world)
        expected, holds = _holds(world, r)
        print(
            f"{world.name:<12} {r['windows']:>7} {r['drift']:>6} {r['none']:>5} {r['watch']:>6} "
            f"{r['retrain']:>8} {r['labelled']:>9} {r['close']:>7} {_f(r['max_gap']):>15} "
            f"{_f(r['mean_gap']):>7} {_f(r.get('realized_late')):>10}  "
            f"{expected:<35} {'yes' if holds else 'NO':>5}"
        )
    print(
        "\ndrift: windows with dataset drift; labelled: windows whose realized ROC-AUC became known; "
        "|est-real|: a window's estimated\nROC-AUC (at its close, no labels) against its realized one (once "
        "its labels are known): windows within 0.03, largest gap,\nmean signed gap; real. late: mean "
        "realized ROC-AUC of the last 5 windows whose labels are known (after any shift).\n"
    )
    for world in worlds:
        r = verdict_rows(world)
        ref = r["reference"] or {}
        print(
            f"{world.name}: model {world.model}, {world.predictions:,} predictions monitored in "
            f"{world.seconds:.0f} s; "
            f"reference ROC-AUC estimated {_f(ref.get('estimated'))}, realized {_f(ref.get('realized'))}"
        )
        if world.drift_ms is not None:
            print(
                f"  drift in {r['drift_after']} of {r['windows_after']} windows from the drift day; the "
                "labels of the first "
                f"window with post-drift predictions known at window #{r['labels_after']}, first retrain at "
                f"#{r['first_retrain']}; realized ROC-AUC of the last 5 labelled windows "
                f"{_f(r['realized_late'])}"
            )
        cells = []
        for i, rep in enumerate(world.reports):
            est = (rep.get("estimated_performance") or {}).get("value")
            real = (rep.get("realized_performance") or {}).get("value")
            cells.append(f"{i}:{rep['action'][0].upper()} {_f(est, '.2f')}/{_f(real, '.2f')}")
        for lo in range(0, len(cells), 8):
            print("  " + "  ".join(cells[lo : lo + 8]))
    print(
        "\nper window: #:action (N none, W watch, R retrain) estimated/realized ROC-AUC, the realized one "
        "being "
        "that of the\nmost recent earlier window whose labels are known"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "table",
        nargs="?",
        choices=("verdicts", "throughput"),
        default="verdicts",
        help="verdicts (default): the monitor's action on simulated worlds; throughput: keeping up with "
        "Kafka",
    )
    parser.add_argument("--customers", type=int, default=8000, help="verdicts: simulated customers")
    parser.add_argument("--days", type=int, default=330, help="verdicts: simulated days")
    parser.add_argument("--train-days", type=int, default=150, help="verdicts: the model learns days before")
    parser.add_argument("--drift-day", type=int, default=190, help="verdicts: the day the world shifts")
    parser.add_argument("--seed", type=int, default=7, help="verdicts: the simulation's seed")
    parser.add_argument(
        "--link-factor",
        type=float,
        default=0.25,
        help="verdicts: the link-only world's ticket-to-churn factor",
    )
    parser.add_argument(
        "--worlds",
        default=",".join(name for name, _ in WORLDS),
        help="verdicts: which worlds (comma-separated)",
    )
    parser.add_argument("--rate", type=int, default=20_000, help="scorer predictions per second")
    parser.add_argument("--batch-rows", type=int, default=500, help="rows per scorer micro-batch")
    parser.add_argument("--window-rows", type=int, default=5000, help="CHURN_DRIFT_WINDOW_ROWS")
    parser.add_argument("--seconds", type=float, default=30.0, help="production time per mode")
    parser.add_argument("--drain", type=float, default=120.0, help="longest wait for the monitor afterwards")
    parser.add_argument(
        "--modes", default="none,process,thread", help="comma-separated: none, process, thread"
    )
    parser.add_argument("--serve-monitor", choices=("none", "process", "thread"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_monitor:
        return serve(args.serve_monitor)
    base = Settings.from_env()
    if args.table == "verdicts":
        chosen = [w.strip() for w in args.worlds.split(",")]
        work = Path(tempfile.mkdtemp(prefix="bench-monitor-verdicts-"))
        worlds = []
        for name, kind in WORLDS:
            if name in chosen:
                print(f"{name}: simulating, training, scoring, monitoring ...", flush=True)
                worlds.append(run_world(name, kind, base, args, work))
        verdict_table(worlds, args)
        return 0
    results = []
    for mode in args.modes.split(","):
        print(f"{mode}: running ({args.seconds:g} s of production) ...", flush=True)
        results.append(run(mode.strip(), base, args))
    print_table(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

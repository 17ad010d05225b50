"""Can the drift monitor keep up with the scorer at full speed? Batched records vs one message per prediction.

Runs the monitor's faust app in this process (the real :class:`streams.monitor.MonitorApp`, reports and
all, against a synthetic reference) plus a second agent on a per-row topic, then in two phases produces,
from a separate process, what a scorer at ``--rate`` predictions/s would send:

1. batched: one MonitoringBatch record per scorer micro-batch (``--batch-rows`` rows), as the scorer does;
2. per row: one JSON message per prediction, through the same faust machinery (decode + window).

and prints, per phase, what was produced and consumed and how late (Kafka timestamp to agent) records
were seen. Needs Kafka (``./run infra up``)::

    .venv/bin/python bench/bench_monitor.py [--rate 20000] [--seconds 20] [--batch-rows 500]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from churnstream.messages import MonitoringBatch  # noqa: E402
from churnstream.settings import Settings  # noqa: E402
from features.definitions import FEATURE_NAMES  # noqa: E402

T0 = 1_717_200_000_000


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


def produce(
    kind: str, env: dict[str, str], topic: str, rate: int, batch_rows: int, seconds: float, out: Any
) -> None:
    """Producer process: ``rate`` predictions/s for ``seconds``, batched or one message per row."""
    from streams.kafka import make_producer

    producer = make_producer(Settings.from_env(env), linger_ms=5)
    cols = synthetic_rows(batch_rows, seed=1)
    if kind == "batched":
        batch = MonitoringBatch("b", 0, "bench-v1", list(FEATURE_NAMES), cols, {})
        payloads = [json.dumps(batch.to_json()).encode()]
        per_tick_rows = batch_rows
    else:
        names = list(cols)
        payloads = [json.dumps({n: cols[n][i] for n in names}).encode() for i in range(batch_rows)]
        per_tick_rows = 1
    ticks_per_s = rate / batch_rows
    sent = rows = 0
    start = time.perf_counter()
    tick = 0
    while True:
        due = start + tick / ticks_per_s
        now = time.perf_counter()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        for payload in payloads:
            while True:
                try:
                    producer.produce(topic, key=b"bench-v1", value=payload)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
            rows += per_tick_rows
        producer.poll(0)
        tick += 1
    producer.flush(60)
    out.put({"sent": sent, "rows": rows, "elapsed": time.perf_counter() - start})


@dataclasses.dataclass
class Seen:
    """What an agent saw: count, rows, and delay (Kafka timestamp to agent) of each message."""

    messages: int = 0
    rows: int = 0
    delays: list[float] = dataclasses.field(default_factory=list)

    def see(self, timestamp: float, rows: int) -> None:
        self.messages += 1
        self.rows += rows
        self.delays.append(time.time() - timestamp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=20_000, help="scorer predictions per second")
    parser.add_argument("--batch-rows", type=int, default=500, help="rows per scorer micro-batch")
    parser.add_argument("--seconds", type=float, default=20.0, help="production time per phase")
    parser.add_argument("--drain", type=float, default=20.0, help="longest wait for the consumer afterwards")
    args = parser.parse_args()

    import faust  # noqa: F401
    import pandas as pd
    from confluent_kafka.admin import AdminClient, NewTopic

    from monitoring.monitor import DriftMonitor, MonitorConfig
    from monitoring.reference import FrameSource
    from monitoring.report import ReportStore
    from monitoring.window import DriftWindow
    from streams.monitor import MonitorApp
    from streams.topics import create_topics, topic_specs

    base = Settings.from_env()
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    settings = dataclasses.replace(
        base,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        var_dir=work / "var",
        report_dir=work / "reports",
        web_port=18_000 + os.getpid() % 1000,
    )
    create_topics(settings)
    rows_topic = f"{settings.topic_prefix}bench.monitor_rows"
    admin = AdminClient(settings.kafka_config())
    for future in admin.create_topics(
        [NewTopic(rows_topic, num_partitions=settings.topic_partitions)]
    ).values():
        future.result()

    ref = synthetic_rows(20_000, seed=2)
    reference = pd.DataFrame({c: ref[c] for c in (*FEATURE_NAMES, "churn_probability")})
    monitor = DriftMonitor(
        references=FrameSource(reference),
        store=ReportStore(settings.report_dir),
        config=MonitorConfig(window_rows=settings.drift_window_rows, drift_share=settings.drift_share),
    )
    built = MonitorApp.build(settings, monitor=monitor)
    app = built.app
    seen = {"batched": Seen(), "per row": Seen()}
    row_window = DriftWindow(max_rows=settings.drift_window_rows)
    ready = threading.Event()

    import orjson

    rows_source = app.topic(
        rows_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(rows_source, name="bench-rows", concurrency=1)
    async def per_row(stream: Any) -> None:
        async for event in stream.events():
            row = orjson.loads(event.message.value)
            cols = {k: [v] for k, v in row.items()}
            row_window.add(MonitoringBatch("r", 0, "bench-v1", list(FEATURE_NAMES), cols, {}))
            seen["per row"].see(event.message.timestamp, 1)

    results: dict[str, dict[str, Any]] = {}

    def count(kind: str) -> int:
        return built.service.records if kind == "batched" else seen["per row"].messages

    def run_phases() -> None:
        ready.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            len(app.consumer.assignment()) < 2 * settings.topic_partitions or not built.service.warmed_up
        ):
            time.sleep(0.2)  # measure the steady state: partitions assigned and Evidently imported
        ctx = mp.get_context("spawn")
        for kind, topic in (("batched", settings.topics.monitoring_batches), ("per row", rows_topic)):
            out = ctx.Queue()
            proc = ctx.Process(
                target=produce,
                args=(kind, settings.to_env(), topic, args.rate, args.batch_rows, args.seconds, out),
            )
            proc.start()
            t_start = time.monotonic()
            time.sleep(args.seconds)
            consumed_at_end = count(kind)
            produced = out.get()
            proc.join()
            deadline = time.monotonic() + args.drain
            while count(kind) < produced["sent"] and time.monotonic() < deadline:
                time.sleep(0.2)
            results[kind] = {
                **produced,
                "consumed_in_time": consumed_at_end,
                "consumed": count(kind),
                "drain_s": time.monotonic() - t_start - args.seconds,
                "health": built.service.health() if kind == "batched" else None,
            }
        os.kill(os.getpid(), signal.SIGTERM)

    @app.task
    async def _mark_ready() -> None:
        ready.set()

    threading.Thread(target=run_phases, daemon=True).start()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()
    names = [spec.name for spec in topic_specs(settings)] + [rows_topic]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result()
    seen["batched"].delays = list(built.service.delays)
    print_table(results, seen, args)
    return 0


def print_table(results: dict[str, dict[str, Any]], seen: dict[str, Seen], args: Any) -> None:
    print()
    print(f"scorer at {args.rate:,} predictions/s for {args.seconds:g} s; monitor: one faust agent per path")
    header = (
        f"{'path':<9} {'msgs/s':>8} {'rows/s':>8} {'produced':>9} {'consumed':>9} {'lag at end':>10} "
        f"{'drained':>8} {'p50 ms':>8} {'p99 ms':>9} {'max ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for kind, r in results.items():
        delays = np.asarray(seen[kind].delays) * 1000
        p50, p99, top = np.percentile(delays, [50, 99, 100]) if len(delays) else (np.nan,) * 3
        lag = r["sent"] - r["consumed_in_time"]
        drained = "yes" if r["consumed"] >= r["sent"] else f"no ({r['sent'] - r['consumed']:,} left)"
        print(
            f"{kind:<9} {r['sent'] / r['elapsed']:>8,.0f} {r['rows'] / r['elapsed']:>8,.0f} {r['sent']:>9,} "
            f"{r['consumed_in_time']:>9,} {lag:>10,} {drained:>8} {p50:>8,.0f} {p99:>9,.0f} {top:>9,.0f}"
        )
    health = results.get("batched", {}).get("health")
    if health:
        print(
            f"\nbatched path: {health['windows_done']} windows closed, {health['windows_reported']} "
            f"Evidently reports, {health['windows_skipped']} windows skipped while reports ran behind"
        )


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the scoring worker end to end on real Kafka and Redis, against a naive per-event worker.

    .venv/bin/python bench/bench_scorer.py [--customers 5000] [--days 365] [--rate 2000] [--seconds 15]

Same run, same data, same model, same Kafka and Redis:

* throughput: a backlog of simulated events on the input topics, drained by one worker; events/s from
  the first to the last committed offset;
* latency: events produced at a steady ``--rate`` per second; latency = wall time from produce to the
  prediction arriving on ``churn_predictions`` (p50, p99, max);
* the baseline is a naive worker: per event one ``json.loads`` + validation, one feature-store call
  (one read and one write round trip), a one-row DataFrame and one ``predict_proba``, one produce.

Prints a table; peak RSS of this process (both workers run in it, one after the other).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import redis  # noqa: E402

from churnstream.settings import DAY_MS, Settings  # noqa: E402
from features.offline import read_events  # noqa: E402
from features.store import RedisFeatureStore  # noqa: E402
from streams.ingest import decode_message  # noqa: E402
from streams.kafka import end_offsets, make_consumer, make_producer  # noqa: E402
from streams.topics import create_topics  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def lines_in_time_order(events_dir: Path) -> list[tuple[str, bytes, bytes, int]]:
    """(topic kind, key, value, event time) of every event, merged by event time."""
    import json

    out = []
    for kind in ("customer_profiles", "orders", "support_tickets"):
        for line in (events_dir / f"{kind}.jsonl").read_bytes().splitlines():
            if line:
                obj = json.loads(line)
                out.append((kind, obj["customer_id"].encode(), line, obj["timestamp"]))
    out.sort(key=lambda r: r[3])
    return out


def produce_backlog(settings: Settings, records: list[tuple[str, bytes, bytes, Any]]) -> None:
    producer = make_producer(settings)
    for kind, key, value, _ in records:
        while True:
            try:
                producer.produce(getattr(settings.topics, kind), key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def committed(settings: Settings, group: str) -> tuple[int, int]:
    from confluent_kafka import TopicPartition

    consumer = make_consumer(settings, group)
    try:
        done = total = 0
        for topic in settings.topics.inputs:
            marks = end_offsets(consumer, topic)
            total += sum(hi for _, hi in marks.values())
            parts = [TopicPartition(topic, p) for p in marks]
            done += sum(max(0, tp.offset) for tp in consumer.committed(parts, timeout=10))
        return done, total
    finally:
        consumer.close()


class NaiveWorker:
    """One event at a time: decode, one store call, a one-row DataFrame, one predict_proba, one produce."""

    def __init__(self, settings: Settings, model: Any) -> None:
        import pandas as pd

        self.pd = pd
        self.settings = settings
        self.model = model
        self.consumer = make_consumer(settings, f"naive-{uuid.uuid4().hex[:6]}")
        self.consumer.subscribe(list(settings.topics.inputs))
        self.producer = make_producer(settings, linger_ms=0)
        client = redis.Redis.from_url(settings.redis_url)
        self.store = RedisFeatureStore(
            client=client, namespace=settings.topic_prefix + "naive", lateness_ms=settings.lateness_ms
        )
        self.processed = 0
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        names = self.model.feature_names
        while not self.stop.is_set():
            msg = self.consumer.poll(0.05)
            if self.consumer.assignment():
                self.ready.set()
            if msg is None or msg.error() is not None:
                continue
            event, _ = decode_message(msg, self.settings)
            if event is None:
                continue
            result = self.store.update([event])[0]
            self.store.flush()
            if result.features is not None:
                frame = self.pd.DataFrame([result.features])[names]
                p = float(self.model.predict_proba(frame.to_numpy(dtype=float))[0])
                self.producer.produce(
                    self.settings.topics.churn_predictions,
                    key=event.customer_id,
                    value=orjson.dumps({"event_id": event.event_id, "churn_probability": p}),
                )
                self.producer.poll(0)
            self.consumer.commit(msg, asynchronous=True)
            self.processed += 1
        self.producer.flush(10)
        self.consumer.close()
        self.store.close()


def latency_probe(
    settings: Settings, records: list[Any], rate: int, seconds: float, drain_seconds: float = 30
) -> dict[str, float]:
    """Produce ``rate`` events/s for ``seconds``; measure produce -> prediction wall time."""
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    consumer = make_consumer(settings, f"probe-{uuid.uuid4().hex[:6]}", auto_offset_reset="latest")
    consumer.subscribe([settings.topics.churn_predictions])
    while not consumer.assignment():
        consumer.poll(0.1)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                event_id = orjson.loads(msg.value()).get("event_id")
                if event_id is not None:
                    received.setdefault(event_id, time.time())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = make_producer(settings, linger_ms=0)
    import json

    n = int(rate * seconds)
    start = time.time()
    for i, (kind, key, value, _) in enumerate(records[:n]):
        due = start + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        sent[json.loads(value)["event_id"]] = time.time()
        producer.produce(getattr(settings.topics, kind), key=key, value=value)
        producer.poll(0)
    producer.flush(30)
    deadline = time.time() + drain_seconds
    while len(received) < len(sent) and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    reader.join()
    consumer.close()
    lat = [(received[e] - t) * 1000 for e, t in sent.items() if e in received]
    return {
        "sent": len(sent),
        "scored": len(lat),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rate", type=int, default=2000, help="events/s of the latency probe")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency probe")
    parser.add_argument(
        "--baseline-events", type=int, default=10_000, help="backlog size for the naive worker"
    )
    args = parser.parse_args()

    from churnstream.cli import main as churnstream
    from models.registry import ModelRegistry
    from models.train import train
    from streams.scorer import build_scorer

    work = Path(tempfile.mkdtemp(prefix="bench-scorer-"))
    events_dir = work / "events"
    churnstream(
        [
            "simulate",
            "--customers",
            str(args.customers),
            "--days",
            str(args.days),
            "--seed",
            "3",
            "--out",
            str(events_dir),
        ]
    )
    base = Settings.from_env()
    start = read_events(events_dir).start
    print("training the batch model ...", file=sys.stderr)
    train(
        events_dir,
        work / "models",
        settings=base,
        until=start + int(args.days * 0.6) * DAY_MS,
        progress=False,
    )
    model = ModelRegistry(work / "models").load().model
    records = lines_in_time_order(events_dir)
    rows = []

    def settings_for(tag: str) -> Settings:
        s = dataclasses.replace(
            base,
            topic_prefix=f"bench{tag}{uuid.uuid4().hex[:6]}.",
            model_dir=work / "models",
            metrics_port=-1,
        )
        create_topics(s)
        return s

    # -- throughput, micro-batched worker (driven from this thread: poll, process, sweep)
    s = settings_for("t")
    produce_backlog(s, records)
    scorer = build_scorer(s)
    total = len(records)
    t0 = time.perf_counter()
    while scorer.totals.events < total or scorer.sweeping:
        batch = scorer.reader.poll_batch()
        if batch.size:
            scorer.process(batch)
        scorer.sweep()
    elapsed = time.perf_counter() - t0
    scorer.close()
    rows.append(("churnstream worker", "throughput", {"events": total, "events_per_s": total / elapsed}))
    print(f"  churnstream worker: {total:,} events in {elapsed:.1f} s; {scorer.totals}", file=sys.stderr)

    # -- throughput, naive worker (a smaller backlog: it is slow)
    s = settings_for("n")
    produce_backlog(s, records[: args.baseline_events])
    naive = NaiveWorker(s, model)
    thread = threading.Thread(target=naive.run, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    while naive.processed < args.baseline_events:
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    naive.stop.set()
    thread.join(60)
    print(f"  naive worker: {args.baseline_events:,} events in {elapsed:.1f} s", file=sys.stderr)
    rows.append(
        (
            "naive per-event worker",
            "throughput",
            {"events": args.baseline_events, "events_per_s": args.baseline_events / elapsed},
        )
    )

    # -- latency at a steady rate, both workers
    probe_records = records[len(records) // 2 :]
    s = settings_for("l")
    scorer = build_scorer(s)
    thread = threading.Thread(target=scorer.run, daemon=True)
    thread.start()
    while not scorer.assigned:
        time.sleep(0.1)
    lat = latency_probe(s, probe_records, args.rate, args.seconds)
    scorer.stop()
    thread.join(60)
    rows.append(("churnstream worker", f"latency @ {args.rate}/s", lat))
    print(f"  churnstream worker latency: {lat}", file=sys.stderr)

    s = settings_for("m")
    naive = NaiveWorker(s, model)
    thread = threading.Thread(target=naive.run, daemon=True)
    thread.start()
    while naive.processed == 0 and not naive.ready.is_set():
        time.sleep(0.1)
    lat = latency_probe(s, probe_records, args.rate, args.seconds, drain_seconds=10)
    naive.stop.set()
    thread.join(30)
    rows.append(("naive per-event worker", f"latency @ {args.rate}/s", lat))

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nscorer benchmark: {len(records):,} simulated events ({args.customers:,} customers, {args.days} days)\n"
    )
    header = (
        f"{'worker':24} {'run':18} {'events':>8} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, run, r in rows:
        events = r.get("events", r.get("scored", 0))
        eps = r.get("events_per_s")
        print(
            f"{name:24} {run:18} {events:>8,.0f} {'' if eps is None else f'{eps:,.0f}':>10} "
            f"{r.get('p50_ms', float('nan')):>8.1f} {r.get('p99_ms', float('nan')):>8.1f} {r.get('max_ms', float('nan')):>8.1f}"
        )
    print(f"\npeak RSS of the benchmark process: {rss:.0f} MB (both workers, models, data)")
    print("latency rows: events = predictions that arrived within the probe (+ drain time) of those sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())

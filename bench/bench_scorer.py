"""Benchmark: the scoring worker end to end on real Kafka and Redis, against a naive per-event worker.

    .venv/bin/python bench/bench_scorer.py [--customers 5000] [--days 365] [--rate 2000] [--seconds 15]

Same run, same data, same model, same Kafka and Redis:

* throughput: a backlog of simulated events on the input topics, drained by one worker; events/s from
  the first batch received to the last event processed (the floor's clock: neither counts the join of
  the consumer group);
* latency: events produced at a steady ``--rate`` per second; latency = wall time from produce to the
  prediction arriving on ``churn_predictions`` (p50, p99, max) of the events sent after a warm-up of
  ``--warmup`` seconds at the same rate (the warm-up's own numbers are printed on stderr);
* scale-out: the same backlog drained by one and by two ``churnstream score`` processes in one consumer
  group (the clock runs from the first event produced to the last offset committed);
* the baseline is a naive worker: per event one ``json.loads`` + validation, one feature-store call
  (one read and one write round trip), a one-row DataFrame and one ``predict_proba``, one produce;
* a ceiling, the "Kafka + JSON floor": the same backlog consumed and validated, and as many output
  messages of a prediction's size produced (and acknowledged) as the worker emitted — no Redis, no
  features, no models. No worker on this machine can beat it. It takes about a second, so a hiccup of
  the machine moves it by half: the row is the median of three runs (each printed on stderr);
* a second ceiling, "+ Redis + models floor": the Kafka + JSON floor plus what any design of the worker
  must also do, at the worker's own volumes from the throughput run: as many bytes written to Redis per
  event (its ``total_net_input_bytes`` over the worker's drain), as many rows scored by the batch model
  (the served fast path) and the online model, as many labels learned by an online model. What lies
  between this row and the worker is the worker's own logic (features, the label book, sweeps, alerts,
  explanations, ids, messages); the per-event figures under the table say how much of it a goal leaves.

Prints a table; peak RSS of this process (both workers run in it, one after the other).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import resource
import statistics
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

from churnstream.features.offline import read_events  # noqa: E402
from churnstream.features.redis_store import RedisFeatureStore  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402
from churnstream.streams.ingest import decode_message  # noqa: E402
from churnstream.streams.kafka import group_offsets, make_consumer, make_producer  # noqa: E402
from churnstream.streams.processes import WorkerProcess, start_worker, stop_workers  # noqa: E402
from churnstream.streams.topics import create_topics  # noqa: E402


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


def simulate_and_train(work: Path, customers: int, days: int) -> None:
    """The benchmark's data: ``customers`` simulated over ``days`` (seed 3) into ``work/events``, and the
    batch model trained on their first 60% into ``work/models`` (``bench_revisions.py`` uses it too)."""
    from churnstream.models.train import train
    from churnstream.sources.simulate import SimulationConfig, simulate

    events_dir = work / "events"
    print(f"simulating {customers:,} customers over {days} days ...", file=sys.stderr)
    simulate(SimulationConfig(customers=customers, days=days, seed=3), events_dir, progress_bar=False)
    start = read_events(events_dir).start
    print("training the batch model ...", file=sys.stderr)
    train(
        events_dir,
        work / "models",
        settings=Settings.from_env(),
        until=start + int(days * 0.6) * DAY_MS,
        progress=False,
    )


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
    """(offsets ``group`` committed, end offsets), summed over the input topics."""
    positions = group_offsets(settings, group, settings.topics.inputs).values()
    return sum(done for done, _ in positions), sum(end for _, end in positions)


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


def prediction_template() -> dict[str, Any]:
    """A prediction message of the usual size: what the floors produce for each of the worker's outputs."""
    from churnstream.features.definitions import FEATURE_NAMES
    from churnstream.messages import Prediction

    return Prediction(
        prediction_id=str(uuid.uuid4()),
        customer_id="c",
        as_of=1_700_000_000_000,
        scored_at=1_700_000_000_000,
        trigger="event",
        event_id="e",
        model_version="v",
        batch_probability=0.123456,
        online_probability=0.234567,
        churn_probability=0.345678,
        risk_category="LOW",
        features={name: 12.345678 for name in FEATURE_NAMES},
    ).to_json()


def io_floor(settings: Settings, total: int, outputs: int, extra: StackWork | None = None) -> float:
    """Events/s of consuming and validating ``total`` events and producing ``outputs`` prediction-sized
    messages for them (acknowledged per batch of 500): Kafka and JSON only, the ceiling of any worker.
    ``extra``: more work per batch, inside the clock (:class:`StackWork`: the second ceiling)."""
    template = prediction_template()
    consumer = make_consumer(settings, f"floor-{uuid.uuid4().hex[:6]}")
    consumer.subscribe(list(settings.topics.inputs))
    producer = make_producer(settings)
    topic = settings.topics.churn_predictions
    done = made = 0
    t0 = None
    while done < total:
        messages = consumer.consume(num_messages=500, timeout=0.5)
        if not messages:
            continue
        t0 = t0 or time.perf_counter()
        customers = []
        for msg in messages:
            if msg.error() is not None:
                continue
            event, _ = decode_message(msg, settings)
            done += 1
            if event is not None:
                customers.append(event.customer_id)
            owed = done * outputs // total - made  # spread the outputs evenly over the events
            for _ in range(owed):
                body = dict(template, event_id=None if event is None else event.event_id)
                producer.produce(topic, key=msg.key(), value=orjson.dumps(body))
            made += owed
        if extra is not None:
            extra.batch(done, customers)
        producer.flush(30)
        consumer.commit(asynchronous=True)
    if extra is not None:
        extra.finish()
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return total / elapsed


def redis_input_bytes(settings: Settings) -> int:
    """Bytes Redis has read from its clients since it started (``INFO stats``)."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.info("stats")["total_net_input_bytes"])
    finally:
        client.close()


class StackWork:
    """What no design of the worker can leave out, at the worker's own volumes, per batch of the floor
    (:func:`io_floor`): one pipeline writing each event's customer key with as many bytes as the worker
    sent Redis per event (in a background thread, one write in flight, as the worker's store does; plain
    SETs, lighter for Redis than the worker's script), the batch model scoring as many rows as the worker
    scored (``volumes["scored"]``, through the served fast path) and the online model predicting them, and
    an online model learning as many labels as the worker resolved (``volumes["labels"]``). No features,
    no label book, no sweeps, alerts, explanations or ids: what is left between the second ceiling and the
    worker is the worker's own logic."""

    def __init__(
        self, settings: Settings, total: int, volumes: dict[str, int], model: Any, redis_bytes: int
    ) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        import numpy as np

        from churnstream.models.online import OnlineModel

        self.prefix = f"churn:{settings.topic_prefix}stack:"
        self.client = redis.Redis.from_url(settings.redis_url)
        self.writer = ThreadPoolExecutor(1)
        self.in_flight: Future[Any] | None = None
        self.model = model
        self.online = OnlineModel(feature_names=model.feature_names)
        self.rng = np.random.default_rng(0)
        self.width = len(model.feature_names)
        self.blob = b"x" * max(1, redis_bytes // total)
        self.total, self.volumes = total, volumes
        self.scored = self.learned = 0

    def batch(self, done: int, customers: list[str]) -> None:
        rows = done * self.volumes["scored"] // self.total - self.scored
        X = self.rng.random((rows, self.width)) * 100
        self.model.predict_proba(X)
        self.online.predict_matrix(X)
        self.scored += rows
        labels = done * self.volumes["labels"] // self.total - self.learned
        self.online.learn_matrix(self.rng.random((labels, self.width)) * 100, self.rng.integers(0, 2, labels))
        self.learned += labels
        if self.in_flight is not None:
            self.in_flight.result()
        self.in_flight = self.writer.submit(self._write, [self.prefix + c for c in customers])

    def _write(self, keys: list[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, self.blob)
        pipe.execute()

    def finish(self) -> None:
        if self.in_flight is not None:
            self.in_flight.result()
        self.writer.shutdown()
        self.client.close()


def start_workers(settings: Settings, log_path: Path, n: int = 1) -> list[WorkerProcess]:
    """``n`` ``churnstream score`` processes in one group (as deployed), once each owns input partitions."""
    from confluent_kafka.admin import AdminClient

    # one id per worker: workers of a group that share an id (the host name) fence each other
    workers = [
        start_worker("score", settings, log=log_path, worker_id=f"bench-{i + 1}", stdout="discard")
        for i in range(n)
    ]
    admin = AdminClient(settings.kafka_config())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        group = admin.describe_consumer_groups([settings.consumer_group])[settings.consumer_group]
        try:
            members = group.result(timeout=10).members
        except Exception:  # the group does not exist until the worker joins
            members = []
        if sum(1 for m in members if m.assignment.topic_partitions) == n:
            return workers
        time.sleep(0.2)
    for worker in workers:
        worker.kill()
    raise SystemExit(f"the workers did not all join their group; see {log_path}")


def drain_with_processes(settings: Settings, records: list[Any], n: int, log_path: Path) -> float:
    """Seconds for ``n`` worker processes in one group to process and commit a backlog of ``records``.

    The workers join first (start-up is not counted); the clock runs from the first event produced
    (producing is ~20x faster than scoring) to the last offset committed.
    """
    workers = start_workers(settings, log_path, n)
    try:
        t0 = time.perf_counter()
        produce_backlog(settings, records)
        while committed(settings, settings.consumer_group)[0] < len(records):
            if any(w.poll() is not None for w in workers):
                raise SystemExit(f"a worker exited; see {log_path}")
            time.sleep(0.25)
        elapsed = time.perf_counter() - t0
        PEAK_RSS_MB[n] = max(peak_rss_mb(w.pid) for w in workers)
        return elapsed
    finally:
        stop_workers(workers)


REDIS_PER_CUSTOMER: list[tuple[int, float]] = []  # (customers, bytes each) after the x1 run
PEAK_RSS_MB: dict[int, float] = {}  # workers in the group -> the largest worker's peak RSS (MB)
PER_EVENT_US: dict[str, float] = {}  # the throughput rows per event: floor, stack floor, worker


def peak_rss_mb(pid: int) -> float:
    """A running process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def redis_bytes_per_customer(settings: Settings) -> tuple[int, float]:
    """(customers, bytes of every Redis key of the run per customer): what one customer costs in Redis,
    their state plus their share of the partitions' records and indexes."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        keys = list(client.scan_iter(match=f"churn:{settings.topic_prefix}*", count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        total = sum(size or 0 for size in pipe.execute())
        customers = sum(1 for key in keys if b"}:c:" in key)
    finally:
        client.close()
    return customers, total / max(customers, 1)


def latency_probe(
    settings: Settings,
    records: list[Any],
    rate: int,
    seconds: float,
    drain_seconds: float = 30,
    live: bool = True,
    warmup_seconds: float = 2.0,
) -> dict[str, float]:
    """Produce ``rate`` events/s for ``warmup_seconds`` + ``seconds``; measure produce -> prediction wall
    time of the events sent after the warm-up (a worker's first seconds on fresh topics pay one-off
    costs: the broker's first writes to each partition, the first reads of each customer).

    ``live``: each event is stamped with the time it is produced, as in production, where event time
    advances one second per second. Otherwise the events keep their historical times: a replay in
    which event time runs days per second, so daily sweeps and label deadlines come many times a second.
    """
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    scored: dict[str, Any] = {}
    consumer = make_consumer(settings, f"probe-{uuid.uuid4().hex[:6]}", auto_offset_reset="latest")
    consumer.subscribe([settings.topics.churn_predictions])
    while not consumer.assignment():
        consumer.poll(0.1)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is not None and msg.error() is None:
                body = orjson.loads(msg.value())
                event_id = body.get("event_id")
                if event_id is not None:
                    received.setdefault(event_id, time.time())
                    scored.setdefault(event_id, body.get("scored_at"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    producer = make_producer(settings, linger_ms=0)
    import json

    warm = int(rate * warmup_seconds)
    n = warm + int(rate * seconds)
    if len(records) < n:
        raise SystemExit(
            f"the latency probe needs {n:,} events, the data has {len(records):,}: simulate more"
        )
    start = time.time()
    for i, (kind, key, value, _) in enumerate(records[:n]):
        due = start + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        obj = json.loads(value)
        sent[obj["event_id"]] = time.time()
        if live:
            obj["timestamp"] = int(sent[obj["event_id"]] * 1000)
            value = json.dumps(obj).encode()
        producer.produce(getattr(settings.topics, kind), key=key, value=value)
        producer.poll(0)
    producer.flush(30)
    deadline = time.time() + drain_seconds
    while len(received) < len(sent) and time.time() < deadline:
        time.sleep(0.1)
    stop.set()
    reader.join()
    consumer.close()
    from churnstream.events import parse_time

    warming = list(sent.items())[:warm]
    measured = list(sent.items())[warm:]
    lat = [(received[e] - t) * 1000 for e, t in measured if e in received]
    to_score = [(parse_time(scored[e]) / 1000 - t) * 1000 for e, t in measured if scored.get(e)]
    during_warmup = [(received[e] - t) * 1000 for e, t in warming if e in received]
    print(
        f"  of which produce -> scored_at p50 {percentile(to_score, 50):.1f} ms, "
        f"p99 {percentile(to_score, 99):.1f} ms (scored_at has ms resolution); "
        f"during the {warmup_seconds:g} s warm-up p50 {percentile(during_warmup, 50):.1f} ms, "
        f"p99 {percentile(during_warmup, 99):.1f} ms",
        file=sys.stderr,
    )
    return {
        "sent": len(measured),
        "scored": len(lat),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat) if lat else float("nan"),
    }


def in_process_throughput(settings: Settings, records: list[Any]) -> float:
    """Events/s of one in-process worker draining ``records`` (as the throughput row)."""
    from churnstream.streams.scorer import build_scorer, settle_heap

    produce_backlog(settings, records)
    worker = build_scorer(settings)
    settle_heap()  # as `churnstream score` does before its first batch
    elapsed = drain(worker, len(records))
    worker.close()
    return len(records) / elapsed


def drain(worker: Any, total: int) -> float:
    """Seconds one in-process worker takes to process ``total`` backlogged events: poll, process, sweep,
    as ``Worker.run`` does. The clock starts at the first batch received, as the floor's does, so
    neither row counts the consumer group's join."""
    scorer = worker.handler
    t0 = None
    while scorer.totals.events < total:  # after_batch() sweeps, finishing its tick before returning
        batch = worker.reader.poll_batch()
        if batch.size:
            t0 = t0 or time.perf_counter()
            scorer.process(batch)
        scorer.after_batch()
    return time.perf_counter() - (t0 or time.perf_counter())


def shadow_cost(
    args: argparse.Namespace, records: list[Any], settings_for: Any, work: Path
) -> list[tuple[str, str, dict[str, Any]]]:
    """``--only shadow`` (#24): the in-process throughput without and with a model in shadow (a second
    version of the same model: the same cost as a candidate of its kind), alternated, twice each."""
    from churnstream.models.registry import ModelRegistry

    registry = ModelRegistry(work / "models")
    shadow = registry.register(registry.load().model, {"note": "bench: shadow of the current model"})
    rates: dict[bool, list[float]] = {False: [], True: []}
    for with_shadow in (False, True, False, True):
        registry.shadow(shadow if with_shadow else None)
        rates[with_shadow].append(in_process_throughput(settings_for("s"), records))
        print(f"  shadow={with_shadow}: {rates[with_shadow][-1]:,.0f} events/s", file=sys.stderr)
    registry.shadow(None)
    return [
        (
            f"churnstream worker{' + shadow' if with_shadow else ''}",
            "throughput",
            {"events": len(records), "events_per_s": max(rates[with_shadow])},
        )
        for with_shadow in (False, True)
    ]


def run_benchmark(
    args: argparse.Namespace, records: list[Any], model: Any, settings_for: Any, work: Path
) -> list[tuple[str, str, dict[str, Any]]]:
    from churnstream.streams.scorer import build_scorer, settle_heap

    if args.only == "shadow":
        return shadow_cost(args, records, settings_for, work)
    rows: list[tuple[str, str, dict[str, Any]]] = []
    if args.only != "latency":
        # -- throughput, micro-batched worker (driven from this thread: poll, process, sweep)
        s = settings_for("t")
        produce_backlog(s, records)
        worker = build_scorer(s)
        settle_heap()  # as `churnstream score` does before its first batch
        scorer = worker.handler
        total = len(records)
        profiler = None
        if args.profile:  # the row then counts the profiler's overhead too: compare profiles, not rates
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        redis_before = redis_input_bytes(s)
        elapsed = drain(worker, total)
        redis_bytes = redis_input_bytes(s) - redis_before
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
            print(f"  profile of the throughput run: {args.profile} (python -m pstats)", file=sys.stderr)
        worker.close()
        rows.append(("churnstream worker", "throughput", {"events": total, "events_per_s": total / elapsed}))
        print(f"  churnstream worker: {total:,} events in {elapsed:.1f} s; {scorer.totals}", file=sys.stderr)
        t = scorer.totals
        outputs = t.predictions + t.sweeps + t.outcomes + t.alerts
        s = settings_for("f")
        produce_backlog(s, records)
        floors = [io_floor(s, total, outputs) for _ in range(3)]  # each a new group, from the start
        print(f"  Kafka + JSON floor: {', '.join(f'{f:,.0f}' for f in floors)} events/s", file=sys.stderr)
        rows.append(
            (
                "Kafka + JSON floor",
                "throughput",
                {"events": total, "events_per_s": statistics.median(floors), "outputs": outputs},
            )
        )
        # the floor plus Redis and the models at the worker's volumes: what is left is the worker's logic
        volumes = {"outputs": outputs, "scored": t.predictions + t.sweeps, "labels": t.outcomes}
        stacks = [
            io_floor(s, total, outputs, StackWork(s, total, volumes, model, redis_bytes)) for _ in range(3)
        ]
        print(
            f"  Kafka + JSON + Redis + models floor: {', '.join(f'{f:,.0f}' for f in stacks)} events/s "
            f"({redis_bytes / total:,.0f} bytes to Redis an event, {volumes['scored']:,} rows scored, "
            f"{volumes['labels']:,} labels learned)",
            file=sys.stderr,
        )
        rows.append(
            (
                "+ Redis + models floor",
                "throughput",
                {"events": total, "events_per_s": statistics.median(stacks)},
            )
        )
        PER_EVENT_US.update(
            worker=1e6 * elapsed / total,
            floor=1e6 / statistics.median(floors),
            stack=1e6 / statistics.median(stacks),
        )

        # -- scale-out: the same backlog drained by 1 and by 2 `churnstream score` processes in one group
        for n in (1, 2):
            s = settings_for(f"w{n}")
            elapsed = drain_with_processes(s, records, n, work / "worker.log")
            rows.append(
                (
                    f"churnstream x{n} process",
                    "throughput",
                    {"events": total, "events_per_s": total / elapsed},
                )
            )
            if n == 1:
                REDIS_PER_CUSTOMER.append(redis_bytes_per_customer(s))
            print(f"  {n} worker process(es): {total:,} events in {elapsed:.1f} s", file=sys.stderr)

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

    if args.only != "throughput":
        # -- latency at a steady rate, both workers; ours as `churnstream score` in a process of its own
        probe_records = records[len(records) // 3 :]
        for live in (True, False):
            s = settings_for("l")
            workers = start_workers(s, work / "worker.log")
            lat = latency_probe(
                s, probe_records, args.rate, args.seconds, live=live, warmup_seconds=args.warmup
            )
            stop_workers(workers)
            run = f"{'live' if live else 'replay'} @ {args.rate}/s"
            rows.append(("churnstream worker", run, lat))
            print(f"  churnstream worker latency ({run}): {lat}", file=sys.stderr)

        s = settings_for("m")
        naive = NaiveWorker(s, model)
        thread = threading.Thread(target=naive.run, daemon=True)
        thread.start()
        while naive.processed == 0 and not naive.ready.is_set():
            time.sleep(0.1)
        lat = latency_probe(
            s, probe_records, args.rate, args.seconds, drain_seconds=10, warmup_seconds=args.warmup
        )
        naive.stop.set()
        thread.join(30)
        rows.append(("naive per-event worker", f"live @ {args.rate}/s", lat))

    return rows


def clean_up(made: list[Settings]) -> None:
    """Delete the benchmark's topics and Redis keys: thousands of idle partitions slow a broker down."""
    from confluent_kafka.admin import AdminClient

    from churnstream.streams.topics import topic_specs

    for s in made:
        admin = AdminClient(s.kafka_config())
        for future in admin.delete_topics([t.name for t in topic_specs(s)], operation_timeout=30).values():
            try:
                future.result()
            except Exception as exc:
                print(f"  could not delete a topic: {exc}", file=sys.stderr)
        client = redis.Redis.from_url(s.redis_url)
        for pattern in (f"churn:{s.topic_prefix}*",):  # the naive worker's keys too
            keys = list(client.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 1000):
                client.unlink(*keys[i : i + 1000])
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rate", type=int, default=2000, help="events/s of the latency probe")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the latency probe")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds at --rate before the latency probe measures"
    )
    parser.add_argument(
        "--baseline-events", type=int, default=10_000, help="backlog size for the naive worker"
    )
    parser.add_argument(
        "--only",
        choices=("throughput", "latency", "shadow"),
        help="run one half of the benchmark (default: both); shadow: the cost of a model in shadow",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="write a cProfile of the worker's throughput run to FILE"
    )
    args = parser.parse_args()
    # The table and the progress lines are the output. The workers this process runs log every rebalance
    # ("assigned ...", "revoked ...") at INFO: only warnings and errors of the libraries get through.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )

    from churnstream.models.registry import ModelRegistry

    work = Path(tempfile.mkdtemp(prefix="bench-scorer-"))
    events_dir = work / "events"
    simulate_and_train(work, args.customers, args.days)
    base = Settings.from_env()
    model = ModelRegistry(work / "models").load().model
    records = lines_in_time_order(events_dir)

    made: list[Settings] = []

    def settings_for(tag: str) -> Settings:
        s = dataclasses.replace(
            base,
            topic_prefix=f"bench{tag}{uuid.uuid4().hex[:6]}.",
            model_dir=work / "models",
            metrics_port=-1,
        )
        create_topics(s)
        made.append(s)
        return s

    try:
        rows = run_benchmark(args, records, model, settings_for, work)
    finally:
        clean_up(made)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nscorer benchmark: {len(records):,} simulated events "
        f"({args.customers:,} customers, {args.days} days)\n"
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
            f"{r.get('p50_ms', float('nan')):>8.1f} {r.get('p99_ms', float('nan')):>8.1f} "
            f"{r.get('max_ms', float('nan')):>8.1f}"
        )
    print(f"\npeak RSS of the benchmark process: {rss:.0f} MB (both workers, models, data)")
    for n, mb in sorted(PEAK_RSS_MB.items()):
        print(f"peak RSS of one `churnstream score` process (x{n} run): {mb:.0f} MB")
    for customers, each in REDIS_PER_CUSTOMER:
        print(
            f"Redis memory per customer (x1 run, every key / {customers:,} customers): {each / 1024:.1f} KiB"
        )
    if PER_EVENT_US:
        us = PER_EVENT_US
        print(
            f"per event (throughput rows): Kafka + JSON {us['floor']:.0f} us, + Redis + models "
            f"{us['stack']:.0f} us, the worker {us['worker']:.0f} us, so its own logic "
            f"{us['worker'] - us['stack']:.0f} us; 30% of the floor is {us['floor'] / 0.3:.0f} us an "
            f"event, which leaves the logic {us['floor'] / 0.3 - us['stack']:.0f} us"
        )
    print("latency rows: events = predictions that arrived within the probe (+ drain time) of those sent")
    print(f"  after {args.warmup:g} s of warm-up at the same rate;")
    print("  live = events stamped at produce time (production); replay = historical times, days per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak benchmark: a long simulated stream through one ``churnstream score`` process; does anything grow?

    .venv/bin/python bench/bench_soak.py [--customers 3000] [--days 720] [--new-until 360] [--slice-days 30]

A simulated business (``churnstream simulate``) over ``--days`` days. The simulator signs customers up
over the whole period, so the benchmark simulates more of them and streams only those who signed up
before day ``--new-until`` (about ``--customers``): from then on customers stop being new, and only
their events, their dropping out and their silence go on. A batch model is trained on the first
``--train-days`` days of that stream. One more customer, ``storm``, files ``--storm`` support tickets
(opening events) every slice, spread over it, and never orders: without a cap on pending predictions it
would hold one for each of its events of the last horizon plus lateness.

One worker (``churnstream score``, its own topic prefix and consumer group) scores the stream, published
in event-time order ``--slice-days`` of event time at a time; after each slice the benchmark waits until
the worker has committed every input offset, then prints a row:

* ``customers``: customers the worker keeps state for (Redis keys ``churn:<prefix>:{p<partition>}:c:*``);
* ``ns MB``: this deployment's Redis memory, the sum of ``MEMORY USAGE <key> SAMPLES 0`` (exact) over
  every key SCAN finds under ``churn:<prefix>:``; ``blobs MB`` of it are the online models' snapshots
  and logs (per partition, not per customer: a log grows to 1,024 labels, then a snapshot empties it);
* ``B/cust``: the rest (customer states, the active and due indexes, meta) per customer; ``state B`` is
  the mean size of one customer's state alone;
* ``used MB``: Redis ``used_memory`` (INFO), the whole server: other deployments on it count too;
* ``RSS MB``: the worker's resident memory (``VmRSS`` in ``/proc/<pid>/status``);
* ``pending``: pending predictions per customer (mean / max over all customers, read from their states)
  and ``storm``'s.

Ends with the slope of per-customer memory (``B/cust``) and of the worker's RSS over the second half of
the stream, and a verdict. Deletes its topics and Redis keys (and its temporary directory unless ``--keep``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
from bench_scorer import clean_up, committed, produce_backlog, start_workers  # noqa: E402

from churnstream.events import parse_time  # noqa: E402
from churnstream.features.labels import MAX_PENDING  # noqa: E402
from churnstream.features.redis_store import RedisFeatureStore  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402
from churnstream.streams.processes import stop_workers  # noqa: E402
from churnstream.streams.topics import create_topics  # noqa: E402

KINDS = ("customer_profiles", "orders", "support_tickets")
PRESENT_AT_START = 0.3  # the simulator's share of customers who are customers before day 0
STORM = "storm"


def day_zero(days: int) -> int:
    """2024-01-01, or a midnight early enough for ``days`` to end in the past (events may not lie ahead)."""
    from churnstream.events import now_ms

    return min(parse_time("2024-01-01T00:00:00Z"), (now_ms() // DAY_MS - days - 1) * DAY_MS)


def simulate_established(args: argparse.Namespace, out: Path) -> tuple[int, int]:
    """Simulate, then keep the customers who signed up before ``--new-until``; returns (simulated, kept)."""
    from churnstream.sources.simulate import SimulationConfig, simulate

    share = PRESENT_AT_START + (1 - PRESENT_AT_START) * min(1.0, args.new_until / args.days)
    n = round(args.customers / share)
    raw = out.parent / "simulated"
    config = SimulationConfig(customers=n, days=args.days, seed=args.seed, start_ms=day_zero(args.days))
    simulate(config, raw, progress_bar=False)
    cutoff = config.start_ms + args.new_until * DAY_MS
    keep = set()
    for line in (raw / "truth.jsonl").read_text().splitlines():
        row = json.loads(line)
        if parse_time(row["signup"]) < cutoff:
            keep.add(row["customer_id"])
    out.mkdir(parents=True)
    for kind in KINDS:
        with (raw / f"{kind}.jsonl").open("rb") as src, (out / f"{kind}.jsonl").open("wb") as dst:
            for line in src:
                if json.loads(line)["customer_id"] in keep:
                    dst.write(line)
    shutil.rmtree(raw)
    return n, len(keep)


def records_by_time(events_dir: Path) -> list[tuple[str, bytes, bytes, int]]:
    """(topic kind, key, value, event time in ms) of every event, in event-time order."""
    out = []
    for kind in KINDS:
        for line in (events_dir / f"{kind}.jsonl").read_bytes().splitlines():
            obj = json.loads(line)
            out.append((kind, obj["customer_id"].encode(), line, parse_time(obj["timestamp"])))
    out.sort(key=lambda r: r[3])
    return out


def storm_records(args: argparse.Namespace, start: int) -> list[tuple[str, bytes, bytes, int]]:
    """``--storm`` ticket openings of customer ``storm`` in every slice, at random times within it."""
    import random

    from churnstream.events import format_time

    rng = random.Random(args.seed)
    out = []
    for day in range(0, args.days, args.slice_days):
        span = min(args.slice_days, args.days - day) * DAY_MS
        for _ in range(args.storm):
            n = len(out)
            ts = start + day * DAY_MS + rng.randrange(span) // 1000 * 1000
            body = {
                "event_id": f"storm-s-{n}",
                "customer_id": STORM,
                "ticket_id": f"storm-ticket-{n}",
                "timestamp": format_time(ts),
                "resolution_time_hours": None,
            }
            out.append(("support_tickets", STORM.encode(), json.dumps(body).encode(), ts))
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def namespace_bytes(client: redis.Redis, namespace: str) -> dict[str, int]:
    """Bytes of every key under ``churn:<namespace>:`` (``all``), of the customer states and of the blobs;
    how many customer states."""
    prefix = f"churn:{namespace}:".encode()
    keys = list(client.scan_iter(match=prefix + b"*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    sizes = [size or 0 for size in pipe.execute()]
    # <prefix>{p<partition>}:<kind>:... (see churnstream.features.layout)
    kinds = [(key[len(prefix) :].split(b":", 2) + [b""])[1] for key in keys]
    return {
        "all": sum(sizes),
        "states": sum(size for kind, size in zip(kinds, sizes, strict=True) if kind == b"c"),
        "blobs": sum(size for kind, size in zip(kinds, sizes, strict=True) if kind == b"learner"),
        "customers": kinds.count(b"c"),
    }


def measure(settings: Settings, client: redis.Redis, pid: int) -> dict[str, Any]:
    ns = namespace_bytes(client, settings.topic_prefix)
    customers = max(1, ns["customers"])
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        states = store.states(store.customers())
        pending = {cid: len(s.get("scoring", {}).get("pend", ())) for cid, s in states.items()}
    finally:
        store.close()
    info = client.info("memory")
    return {
        "customers": ns["customers"],
        "ns_bytes": ns["all"],
        "blob_bytes": ns["blobs"],
        "per_customer": (ns["all"] - ns["blobs"]) / customers,
        "state_bytes": ns["states"] / customers,
        "used_memory": int(info["used_memory"]),
        "rss_mb": rss_mb(pid),
        "pending_mean": sum(pending.values()) / max(1, len(pending)),
        "pending_max": max(pending.values(), default=0),
        "pending_storm": pending.get(STORM, 0),
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def wait_committed(settings: Settings, worker: Any, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done, total = committed(settings, settings.consumer_group)
        if done >= total:
            return
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited ({worker.returncode}); see {log_path}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker did not commit {total - done:,} messages in {timeout:.0f} s")
        time.sleep(0.2)


HEADER = (
    f"{'day':>5} {'events':>9} {'customers':>9} {'ns MB':>7} {'blobs MB':>8} {'B/cust':>7} {'state B':>8} "
    f"{'used MB':>8} {'RSS MB':>7} {'pending mean/max':>17} {'storm':>5} {'s':>5}"
)


def row(day: int, events: int, m: dict[str, Any], seconds: float) -> str:
    pending = f"{m['pending_mean']:.2f} / {m['pending_max']}"
    return (
        f"{day:>5} {events:>9,} {m['customers']:>9,} {m['ns_bytes'] / 2**20:>7.2f} "
        f"{m['blob_bytes'] / 2**20:>8.2f} {m['per_customer']:>7,.0f} {m['state_bytes']:>8,.0f} "
        f"{m['used_memory'] / 2**20:>8.1f} {m['rss_mb']:>7.1f} {pending:>17} {m['pending_storm']:>5} "
        f"{seconds:>5.1f}"
    )


def verdict(rows: list[tuple[int, dict[str, Any]]], days: int) -> list[str]:
    """Least-squares slope over the second half, per 30 days of event time: flat within 1% of the mean."""
    half = [(day, m) for day, m in rows if day > days / 2]
    xs = [day / 30 for day, _ in half]  # per 30 days of event time
    lines = []
    for name, key, unit in (
        ("Redis memory per customer (B/cust)", "per_customer", "B"),
        ("worker RSS", "rss_mb", "MB"),
    ):
        ys = [m[key] for _, m in half]
        if not ys:
            continue
        s = slope(xs, ys)
        mean = sum(ys) / len(ys)
        share = 100 * s / mean if mean else 0.0
        word = "flat" if abs(share) < 1.0 else ("falling" if share < 0 else "GROWING")
        lines.append(
            f"{name}, days {half[0][0]}-{half[-1][0]}: slope {s:+,.1f} {unit} per 30 days "
            f"({share:+.2f}% of its mean {mean:,.1f} {unit}): {word}"
        )
    return lines


def soak(
    args: argparse.Namespace, work: Path, began: float
) -> tuple[list[tuple[int, dict[str, Any]]], int, int]:
    """Simulate, train, run the worker over the stream slice by slice; returns the rows, the customers
    streamed and the events. Deletes its topics and Redis keys."""
    from churnstream.models.train import train

    events_dir = work / "events"
    simulated, kept = simulate_established(args, events_dir)
    start = day_zero(args.days)
    records = sorted(records_by_time(events_dir) + storm_records(args, start), key=lambda r: r[3])
    print(
        f"simulated {simulated:,} customers over {args.days} days; streaming the {kept:,} who signed up "
        f"before day {args.new_until}, and {STORM!r}: {len(records):,} events",
        file=sys.stderr,
    )
    base = Settings.from_env()
    print(f"training the batch model on days 0-{args.train_days} ...", file=sys.stderr)
    train(events_dir, work / "models", settings=base, until=start + args.train_days * DAY_MS, progress=False)
    settings = dataclasses.replace(
        base, topic_prefix=f"benchsoak{uuid.uuid4().hex[:6]}.", model_dir=work / "models", metrics_port=-1
    )
    create_topics(settings)
    client = redis.Redis.from_url(settings.redis_url)
    log_path = work / "worker.log"
    rows: list[tuple[int, dict[str, Any]]] = []
    workers = []
    try:
        workers = start_workers(settings, log_path)
        worker = workers[0]
        print(f"set up in {time.perf_counter() - began:.0f} s; worker pid {worker.pid}\n", file=sys.stderr)
        print(HEADER)
        print("-" * len(HEADER))
        sys.stdout.flush()
        sent = 0
        for day in range(0, args.days, args.slice_days):
            end = start + (day + args.slice_days) * DAY_MS
            part = []
            while sent + len(part) < len(records) and records[sent + len(part)][3] < end:
                part.append(records[sent + len(part)])
            t0 = time.perf_counter()
            produce_backlog(settings, part)
            sent += len(part)
            wait_committed(settings, worker, log_path, args.timeout)
            time.sleep(0.5)  # a sweep after the last batch is written just after that batch's commit
            m = measure(settings, client, worker.pid)
            shown = min(day + args.slice_days, args.days)
            rows.append((shown, m))
            print(row(shown, sent, m, time.perf_counter() - t0))
            sys.stdout.flush()
    finally:
        if workers:
            stop_workers(workers)
        client.close()
        clean_up([settings])
    return rows, kept, len(records)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=3000, help="about this many customers streamed")
    parser.add_argument("--days", type=int, default=720, help="days of event time")
    parser.add_argument("--new-until", type=int, default=360, help="no new customers from this day on")
    parser.add_argument("--slice-days", type=int, default=30, help="event time published per row")
    parser.add_argument("--train-days", type=int, default=180, help="the batch model's training days")
    parser.add_argument("--storm", type=int, default=500, help="tickets of customer 'storm' per slice")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one slice")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (events, log)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    began = time.perf_counter()
    try:
        rows, kept, events = soak(args, work, began)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    worst = max(m["pending_max"] for _, m in rows)
    settings = Settings.from_env()
    window = (settings.horizon_ms + settings.lateness_ms) / DAY_MS
    print(
        f"{kept:,} customers (new until day {args.new_until}) and {STORM!r} ({args.storm} tickets per "
        f"{args.slice_days} days, ~{args.storm * window / args.slice_days:.0f} within any {window:g} days "
        f"of horizon plus lateness), {events:,} events in {time.perf_counter() - began:.0f} s"
    )
    print(f"most pending predictions of one customer at a row: {worst} (cap {MAX_PENDING})")
    print("ns MB: sum of MEMORY USAGE over every key of this prefix (SCAN); B/cust: without the blobs")
    for line in verdict(rows, args.days):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

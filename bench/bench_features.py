"""Benchmark: feature updates per second in Redis, batched store vs one call per event.

    .venv/bin/python bench/bench_features.py [--events DIR] [--limit N] [--batch 500]

Reads validated events from DIR (e.g. written by ``churnstream simulate``) or, without DIR, makes a
synthetic stream; applies them in event-time order through
:class:`churnstream.features.store.RedisFeatureStore` in micro-batches, and — as the baseline, in the same run
— through the same store one event per call (one read and one write round trip per event, as a naive consumer
would). Prints a table of events/s, per-batch latency percentiles, peak RSS and Redis memory per customer.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from churnstream.events import Event, OrderEvent, TicketEvent  # noqa: E402
from churnstream.features.offline import read_events  # noqa: E402
from churnstream.features.redis_store import RedisFeatureStore  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402


def synthetic(n_events: int, n_customers: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    t0 = 1_700_000_000_000
    span = 365 * DAY_MS
    events: list[Event] = []
    for i in range(n_events):
        cid = f"c{rng.randrange(n_customers)}"
        ts = t0 + int(span * i / n_events)
        if rng.random() < 0.85:
            events.append(
                OrderEvent(
                    event_id=f"o{i}",
                    customer_id=cid,
                    timestamp=ts,
                    order_id=f"o{i}",
                    amount=round(rng.lognormvariate(3, 0.8), 2),
                    status=rng.choice(["completed"] * 18 + ["returned", "cancelled"]),
                )
            )
        else:
            events.append(
                TicketEvent(
                    event_id=f"t{i}",
                    customer_id=cid,
                    timestamp=ts,
                    ticket_id=f"t{i}",
                    resolution_time_hours=rng.choice([None, round(rng.expovariate(1 / 20), 1)]),
                    satisfaction_score=rng.choice([None, 1, 2, 3, 4, 5]),
                )
            )
    return events


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def run(store: RedisFeatureStore, events: list[Event], batch: int) -> dict[str, float]:
    latencies = []
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        t = time.perf_counter()
        store.update(events[i : i + batch])
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - start
    return {
        "events": len(events),
        "seconds": elapsed,
        "events_per_s": len(events) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", help="directory of event files (default: synthetic)")
    parser.add_argument("--limit", type=int, default=200_000, help="events in the batched run")
    parser.add_argument("--customers", type=int, default=20_000, help="customers of the synthetic stream")
    parser.add_argument("--baseline-limit", type=int, default=20_000, help="events in the per-event run")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    if args.events:
        events = read_events(args.events).events[: args.limit]
    else:
        events = synthetic(args.limit, args.customers)
    customers = len({e.customer_id for e in events})

    rows = []
    for name, limit, batch in (
        ("one call per event (baseline)", args.baseline_limit, 1),
        (f"micro-batches of {args.batch}", args.limit, args.batch),
    ):
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        store = RedisFeatureStore(client=client, namespace=ns, lateness_ms=settings.lateness_ms)
        before = int(client.info("memory")["used_memory"])
        subset = events[:limit]
        result = run(store, subset, batch)
        used = int(client.info("memory")["used_memory"]) - before
        result["customers"] = len({e.customer_id for e in subset})
        result["bytes_per_customer"] = used / max(1, result["customers"])
        rows.append((name, result))
        store.clear()

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\nfeature updates: {len(events)} events, {customers} customers, "
        f"Redis {settings.redacted_redis_url}\n"
    )
    header = f"{'run':32} {'events':>8} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'B/customer':>11}"
    print(header)
    print("-" * len(header))
    for name, r in rows:
        print(
            f"{name:32} {r['events']:>8.0f} {r['events_per_s']:>10,.0f} {r['p50_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['bytes_per_customer']:>11,.0f}"
        )
    speedup = rows[1][1]["events_per_s"] / rows[0][1]["events_per_s"]
    print(f"\nspeed-up of micro-batches over the baseline: {speedup:.1f}x; peak RSS {rss_mb:.0f} MB")
    print("(latency columns: per call — one event for the baseline, one micro-batch otherwise)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

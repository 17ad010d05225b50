"""Benchmark: the HTTP API (``churnstream serve``) at fixed request rates, against reading Redis directly.

    .venv/bin/python bench/bench_api.py [--customers 2000] [--days 365] [--rates 100,250,500,1000]
                                        [--seconds 6] [--work-dir var/bench_api]

Builds a served state without Kafka (a simulated business applied to the Redis feature store through the
same store code the scorer uses, and a model trained on it), starts ``churnstream serve`` as its own
process, and drives it **open loop** with httpx (keep-alive connections, asyncio): requests are sent on a
fixed schedule whatever the answers do, and each latency runs from the request's scheduled time, so a
server that falls behind shows it (no coordinated omission). Per rate and request kind it prints p50, p99
and the rate achieved. Kinds: ``GET /customers/{id}``, ``POST /customers/{id}/score`` and, as the
baseline in the same run, ``redis GET`` of the same customer's raw state key (redis.asyncio, same driver).

A rate is *held* when the answers kept up with the schedule: at least 95% of the target rate achieved and
p99 under 50 ms (a backlog grows the p99 by seconds). Uses ``CHURN_REDIS_URL`` (a private redis-server is
best: ``redis-server --port 6316 --save '' --appendonly no --daemonize yes``) under a prefix of its own,
deleted at the end; the client and the server share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import random
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from churnstream.features.layout import KeyLayout, partition_of  # noqa: E402
from churnstream.features.offline import read_events  # noqa: E402
from churnstream.features.redis_store import RedisFeatureStore, redis_client  # noqa: E402
from churnstream.models.registry import ModelRegistry  # noqa: E402
from churnstream.settings import DAY_MS, Settings  # noqa: E402
from churnstream.streams.processes import start_worker  # noqa: E402

PARTITIONS = 6
HELD_P99_MS = 50.0


@dataclasses.dataclass
class Run:
    kind: str
    rate: int
    sent: int
    errors: int
    achieved: float
    p50_ms: float
    p99_ms: float

    @property
    def held(self) -> bool:
        return self.errors == 0 and self.achieved >= 0.95 * self.rate and self.p99_ms < HELD_P99_MS


def build_state(settings: Settings, work: Path, customers: int, days: int) -> list[str]:
    """A simulated business in Redis (features as the scorer keeps them) and a trained model; the ids."""
    from churnstream.cli import main as churnstream
    from churnstream.models.train import train

    events_dir = work / "events"
    if not (events_dir / "orders.jsonl").exists():
        argv = ["simulate", "--customers", str(customers), "--days", str(days), "--seed", "3"]
        assert churnstream([*argv, "--out", str(events_dir)]) == 0
    log = read_events(events_dir)
    if ModelRegistry(settings.model_dir).current_version() is None:
        train(events_dir, settings.model_dir, settings=settings, until=log.end - 60 * DAY_MS, progress=False)
    client = redis_client(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    store.check_layout(partitions=PARTITIONS)
    events = sorted(log.events, key=lambda e: e.timestamp)
    for i in range(0, len(events), 2000):
        store.update(events[i : i + 2000])
    tx = store.begin({})
    for p in range(PARTITIONS):
        tx.set_partition_time(p, log.end)
    store.commit(tx)
    store.close()
    client.close()
    return sorted({e.customer_id for e in events})


async def open_loop(
    call: Callable[[str], Awaitable[bool]], ids: list[str], rate: int, seconds: float, kind: str
) -> Run:
    """Send ``rate`` requests a second for ``seconds`` on a fixed schedule; latency from the schedule."""
    rng = random.Random(rate)
    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(at: float, cid: str) -> None:
        nonlocal errors
        try:
            ok = await call(cid)
        except Exception:  # a refused or timed-out request counts as an error, never stops the run
            ok = False
        if not ok:
            errors += 1
        latencies.append(loop.time() - at)

    tasks = []
    for i in range(n):
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(at, rng.choice(ids))))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    ms = np.asarray(latencies) * 1000
    return Run(
        kind=kind,
        rate=rate,
        sent=n,
        errors=errors,
        achieved=n / elapsed,
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
    )


async def drive(base: str, settings: Settings, ids: list[str], rates: list[int], seconds: float) -> list[Run]:
    keys = KeyLayout(settings.topic_prefix)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    runs: list[Run] = []
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10.0) as http:
        r = aioredis.Redis.from_url(settings.redis_url, max_connections=64)

        async def get_customer(cid: str) -> bool:
            return (await http.get(f"/customers/{cid}")).status_code == 200

        async def score(cid: str) -> bool:
            return (await http.post(f"/customers/{cid}/score")).status_code == 200

        async def score_bare(cid: str) -> bool:
            return (await http.post(f"/customers/{cid}/score?reasons=false")).status_code == 200

        async def raw(cid: str) -> bool:
            return await r.get(keys.customer(partition_of(cid, PARTITIONS), cid)) is not None

        kinds = [
            ("redis GET (raw state)", raw),
            ("GET /customers/{id}", get_customer),
            ("POST .../score", score),
            ("POST .../score?reasons=false", score_bare),
        ]
        for _, call in kinds:  # warm up: connections, model paths
            for cid in ids[:50]:
                assert await call(cid), "the warm-up request failed"
        for rate in rates:
            for kind, call in kinds:
                run = await open_loop(call, ids, rate, seconds, kind)
                runs.append(run)
                print(
                    f"  {kind:<30} {rate:>5}/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:8.2f} ms  "
                    f"achieved {run.achieved:7.1f}/s  errors {run.errors}",
                    flush=True,
                )
        await r.aclose()
    return runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rates", default="100,250,500,1000")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--work-dir", default="var/bench_api")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(
        Settings.from_env(), topic_prefix=f"benchapi{uuid.uuid4().hex[:6]}.", model_dir=work / "models"
    )
    rates = [int(r) for r in args.rates.split(",")]
    ids = build_state(settings, work, args.customers, args.days)
    port = free_port()
    log = work / "serve.log"
    server = start_worker(
        "serve", settings, log=log, env={"CHURN_API_PORT": str(port)}, stdout="discard", name="api"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            server.check()
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not become ready; log:\n{server.tail()}")
            time.sleep(0.2)
        print(
            f"{len(ids)} customers, {PARTITIONS} partitions, Redis {settings.redacted_redis_url}, "
            f"{args.seconds:g} s per rate, open loop, httpx keep-alive (64 connections)"
        )
        runs = asyncio.run(drive(base, settings, ids, rates, args.seconds))
    finally:
        server.stop(30)
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"churn:{settings.topic_prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()

    print()
    print("| request | rate/s | p50 ms | p99 ms | achieved/s | held |")
    print("|---|---:|---:|---:|---:|---|")
    for run in runs:
        print(
            f"| {run.kind} | {run.rate} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {run.achieved:.0f} | "
            f"{'yes' if run.held else 'no'} |"
        )
    print()
    for kind in dict.fromkeys(r.kind for r in runs):
        held = [r.rate for r in runs if r.kind == kind and r.held]
        print(f"highest rate held, {kind}: {max(held) if held else 'none'}/s")


if __name__ == "__main__":
    main()

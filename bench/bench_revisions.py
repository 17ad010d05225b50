"""Benchmark: this checkout's scorer against another revision's, in one run, and whether their outputs agree.

    .venv/bin/python bench/bench_revisions.py --against HEAD~3 [--runs 3] [--customers 3000] [--days 300]

For a change meant to make the worker faster without changing what it emits. Numbers of one run only
compare with each other (Kafka, Redis and the worker share the machine's cores), and a change of a few
percent hides in the spread between runs; so both revisions drain the same backlog here, alternately:

* the events are simulated and the batch model trained once, by this checkout, and both revisions use them;
* ``--against`` is checked out in a temporary ``git worktree``; each run is a fresh process that imports
  ``churnstream`` from one revision or the other, produces the backlog to fresh topics, and drains it with
  one in-process worker (``bench_scorer.drain``: the throughput row's clock);
* main-thread CPU seconds are printed beside events/s: the worker's own cost, less exposed to what else
  the machine does than wall time;
* after each revision's first run, ``churn_predictions``, ``churn_outcomes`` and ``churn_alerts`` are read
  to the end, and hashed as JSON lines sorted by content, without the fields that hold wall-clock time.
  Outcomes labelled by inactivity come out in a different order from run to run (in whichever unit
  reaches their due time), so the comparison is by content.

Exits 1 when the outputs differ, 2 when a run failed or an output topic read back empty. The other
revision must have what this script and this checkout's ``bench_scorer`` import from ``churnstream``
(``build_scorer``, ``settle_heap``, ``streams.processes``, ``streams.ingest.decode_message``, ...): a
revision from before 2026-12-04 may not. Its temporary directory, worktree, topics and Redis keys are
removed at the end (its consumer groups are left; they hold no data).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("churn_predictions", "churn_outcomes", "churn_alerts")
# fields that hold wall-clock time (or who and how fast), not what was decided
VOLATILE = frozenset({"scored_at", "produced_at", "emitted_at", "processed_at", "worker", "latency_ms"})


def content_digest(values: list[bytes | None]) -> tuple[int, str]:
    """How many JSON messages, and a sha256 prefix of them as lines sorted by content, without the
    :data:`VOLATILE` fields (tombstones skipped).

    >>> content_digest([b'{"a":1,"scored_at":"x"}', b'{"a":2}', None])
    (2, '5b8f82d3cc66')
    >>> content_digest([b'{"a":2}', b'{"scored_at":"y","a":1}'])
    (2, '5b8f82d3cc66')
    """
    lines = []
    for value in values:
        if value is None:
            continue
        body = {k: v for k, v in json.loads(value).items() if k not in VOLATILE}
        lines.append(json.dumps(body, sort_keys=True))
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode() + b"\n")
    return len(lines), h.hexdigest()[:12]


def child(root: Path, work: Path, digest: bool) -> dict[str, Any]:
    """One run in this process: ``churnstream`` from ``root``, the backlog of ``work`` drained once."""
    sys.path.insert(0, str(root))
    import churnstream  # noqa: F401  (first: bench_scorer's imports then resolve to ``root``)

    sys.path.insert(1, str(ROOT / "bench"))
    import bench_scorer

    from churnstream.settings import Settings
    from churnstream.streams.reading import read_to_end
    from churnstream.streams.scorer import build_scorer, settle_heap
    from churnstream.streams.topics import create_topics

    settings = dataclasses.replace(
        Settings.from_env(),
        topic_prefix=f"benchrev{uuid.uuid4().hex[:6]}.",
        model_dir=work / "models",
        metrics_port=-1,
    )
    try:
        create_topics(settings)
        records = bench_scorer.lines_in_time_order(work / "events")
        bench_scorer.produce_backlog(settings, records)
        worker = build_scorer(settings)
        settle_heap()
        cpu = time.thread_time()
        seconds = bench_scorer.drain(worker, len(records))
        cpu = time.thread_time() - cpu
        worker.close()
        out: dict[str, Any] = {
            "from": str(Path(churnstream.__file__).resolve().parents[1]),
            "events": len(records),
            "events_per_s": len(records) / seconds,
            "cpu_s": cpu,
        }
        if digest:
            topics = [getattr(settings.topics, name) for name in OUTPUTS]
            values: dict[str, list[bytes | None]] = {t: [] for t in topics}
            for msg in read_to_end(settings, topics):
                values[msg.topic()].append(msg.value())
            out["outputs"] = {
                name: content_digest(values[t]) for name, t in zip(OUTPUTS, topics, strict=True)
            }
        return out
    finally:
        bench_scorer.clean_up([settings])


def prepare(work: Path, customers: int, days: int) -> None:
    """Simulate and train once, with this checkout (both revisions read what is written here), as
    ``bench_scorer.py`` does."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_scorer

    bench_scorer.simulate_and_train(work, customers, days)


def run_child(root: Path, work: Path, digest: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(root), "--work", str(work)]
    done = subprocess.run(command + (["--digest"] if digest else []), capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        print(f"the run of {root} failed (exit {done.returncode})", file=sys.stderr)
        raise SystemExit(2)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["from"]) != root.resolve():
        print(f"the run meant for {root} imported churnstream from {result['from']}", file=sys.stderr)
        raise SystemExit(2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="the git revision to compare this checkout with (e.g. HEAD~3)")
    parser.add_argument("--runs", type=int, default=3, help="runs per revision, alternating")
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--days", type=int, default=300)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.child is not None:
        print(json.dumps(child(args.child, args.work, args.digest)))
        return 0
    if not args.against:
        parser.error("--against REVISION is required")

    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.against],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True
    ).stdout
    this = f"{here}{'+changes' if dirty.strip() else ''}"
    if this == rev:
        rev, this = f"{rev} (worktree)", f"{this} (checkout)"
    work = Path(tempfile.mkdtemp(prefix="bench-revisions-"))
    tree = work / "against"
    rows: list[tuple[str, int, dict[str, Any]]] = []
    try:
        prepare(work, args.customers, args.days)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev.split()[0]], check=True
        )
        for i in range(args.runs):
            pair = [(rev, tree), (this, ROOT)]
            for name, root in pair if i % 2 == 0 else pair[::-1]:  # neither always goes first
                result = run_child(root, work, digest=i == 0)
                rows.append((name, i + 1, result))
                print(f"  {name} run {i + 1}: {result['events_per_s']:,.0f} events/s", file=sys.stderr)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)

    events = rows[0][2]["events"]
    print(
        f"\nscorer revisions: {events:,} simulated events ({args.customers:,} customers, {args.days} days)\n"
    )
    header = f"{'revision':18} {'run':>4} {'events/s':>10} {'main-thread CPU s':>18}"
    print(header)
    print("-" * len(header))
    for name, i, r in rows:
        print(f"{name:18} {i:>4} {r['events_per_s']:>10,.0f} {r['cpu_s']:>18.2f}")
    for name in (rev, this):
        rate = statistics.median(r["events_per_s"] for n, _, r in rows if n == name)
        cpu = statistics.median(r["cpu_s"] for n, _, r in rows if n == name)
        print(f"{name:18} {'med':>4} {rate:>10,.0f} {cpu:>18.2f}")
    before = next(r["outputs"] for n, _, r in rows if n == rev)
    after = next(r["outputs"] for n, _, r in rows if n == this)
    print("\noutputs (messages, sha256 of their content sorted, wall-clock fields left out):")
    for topic in OUTPUTS:
        same = "same" if before[topic] == after[topic] else "DIFFERENT"
        (n0, h0), (n1, h1) = before[topic], after[topic]
        print(f"  {topic:18} {rev}: {n0:,} {h0}   {this}: {n1:,} {h1}   {same}")
    if not all(before[topic][0] and after[topic][0] for topic in OUTPUTS):
        print("an output topic read back empty: nothing was compared", file=sys.stderr)
        return 2
    return 0 if before == after else 1


if __name__ == "__main__":
    raise SystemExit(main())

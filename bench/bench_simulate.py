"""Benchmark: events per second written by the simulator, for a few world sizes.

    .venv/bin/python bench/bench_simulate.py [--sizes 2000x365,20000x365,50000x365] [--repeat 2]

Runs :func:`churnstream.sources.simulate.simulate` into a temporary directory (files included) and prints
a table of events, best wall time and events/s per size. Never a timed assertion: the numbers depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from churnstream.events import parse_time  # noqa: E402
from churnstream.sources.simulate import SimulationConfig, simulate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000x365,20000x365,50000x365", help="CUSTOMERSxDAYS,...")
    parser.add_argument("--repeat", type=int, default=2, help="runs per size; the best one counts")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'customers':>10} {'days':>5} {'events':>10} {'best s':>8} {'events/s':>10}")
    for size in args.sizes.split(","):
        customers, days = (int(x) for x in size.split("x"))
        config = SimulationConfig(
            customers=customers, days=days, seed=args.seed, start_ms=parse_time("2024-01-01T00:00:00Z")
        )
        best = float("inf")
        events = 0
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                began = time.perf_counter()
                manifest = simulate(config, out, progress_bar=False)
                best = min(best, time.perf_counter() - began)
                events = manifest["counts"]["events"]
        print(f"{customers:>10} {days:>5} {events:>10,} {best:>8.2f} {events / best:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Watching the demo's workers through their health endpoints and their groups' offsets until they have
caught up, and the small HTTP and port probes that needs."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

from churnstream.errors import InfraError
from churnstream.events import format_time
from churnstream.settings import Settings
from churnstream.streams.demo.console import Console
from churnstream.streams.kafka import group_offsets
from churnstream.streams.processes import WorkerProcess


def end_offsets(settings: Settings, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset of every partition of ``topics``."""
    return {tp: end for tp, (_done, end) in group_offsets(settings, group, topics).items()}


def scorer_caught_up(
    settings: Settings, scorer: WorkerProcess, console: Console, desc: str, *, timeout_s: float
) -> dict[str, int]:
    """Wait until the scorer committed every input offset and its totals stopped moving (sweeps); returns
    the totals of its health endpoint."""
    topics = list(settings.topics.inputs)
    group = settings.consumer_group
    health = f"http://{settings.web_host}:{settings.metrics_port}/health"
    ends = end_offsets(settings, group, topics)
    total = sum(ends.values())
    bar = console.progress(total, desc)
    deadline = time.monotonic() + timeout_s
    previous: dict[str, int] | None = None
    try:
        while True:
            scorer.check()
            committed = group_offsets(settings, group, topics)
            done = sum(min(committed.get(tp, (0, 0))[0], end) for tp, end in ends.items())
            state = get_json(health) or {}
            totals = state.get("totals") or {}
            watermark = state.get("watermark")
            bar.set(done, f"event time {format_time(watermark)[:10]}" if watermark else "")
            if done >= total and totals == previous:
                return dict(totals)
            previous = dict(totals) if done >= total else None
            if time.monotonic() > deadline:
                raise InfraError(
                    f"the scorer is still {total - done:,} messages behind after "
                    f"{timeout_s:.0f} s; "
                    f"last lines of {scorer.log}:\n{scorer.tail()}"
                )
            time.sleep(1.0)
    finally:
        bar.close()


def monitor_caught_up(
    settings: Settings,
    monitor: WorkerProcess,
    console: Console,
    *,
    group: str,
    start: dict[tuple[str, int], int],
    timeout_s: float,
) -> dict[str, Any]:
    """Wait until the monitor has read every batch since ``start`` and has no report pending; returns
    its health."""
    batches = settings.topics.monitoring_batches
    ends = end_offsets(settings, group, [batches])
    health = f"http://{settings.web_host}:{settings.web_port}/health"
    total = sum(ends.values()) - sum(start.values())
    bar = console.progress(total, "monitor", unit="batch")
    deadline = time.monotonic() + timeout_s
    stable = 0
    state: dict[str, Any] = {}
    try:
        while True:
            monitor.check()
            state = get_json(health) or {}
            # how far it has read: its committed offsets stay behind the window still open
            read = {
                tp: int(state.get("read_offsets", {}).get(f"{tp[0]}/{tp[1]}", start.get(tp, 0)))
                for tp in ends
            }
            done = sum(min(read[tp], end) - start.get(tp, 0) for tp, end in ends.items())
            bar.set(
                done,
                f"{state.get('windows_reported', 0)} reports, {state.get('reports_pending', '?')} pending",
            )
            # idle: every window reported, and those published light drawn in full since
            idle = (
                bool(state)
                and state.get("reports_pending") == 0
                and not state.get("windows_awaiting_full_report")
            )
            stable = stable + 1 if done >= total and idle else 0
            if stable >= 2:
                break
            if time.monotonic() > deadline:
                raise InfraError(
                    f"the monitor did not finish within {timeout_s:.0f} s; "
                    f"last lines of {monitor.log}:\n{monitor.tail()}"
                )
            time.sleep(1.0)
    finally:
        bar.close()
    return state


def free_port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens there, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise InfraError(f"no free TCP port on {host}")


def get_json(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The JSON at ``url``, or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (OSError, ValueError):
        return None

"""``churnstream alerts`` against a real topic: a snapshot by default, ``tail -f`` with ``--follow``."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from churnstream.settings import Settings, Topics, child_env
from churnstream.streams.processes import start_worker
from tests.integration.conftest import CHURNSTREAM, produce_raw

pytestmark = pytest.mark.integration


def _alert(n: int) -> bytes:
    return json.dumps({"alert_id": f"A{n}", "customer_id": f"C{n}", "churn_probability": 0.9}).encode()


def _follow(
    settings: Settings, log: Path, *extra: str, limit: int = 1, first: int = 100
) -> tuple[list[str], int]:
    """Run ``alerts --follow --json --limit N`` and keep producing new alerts (``A<first>`` on) until it
    has printed N; the ids printed, and how many alerts were produced."""
    proc = start_worker(
        ["alerts", "--follow", "--json", "--limit", str(limit), *extra],
        settings,
        log=log,
        program=[CHURNSTREAM],
        stdout="pipe",
    )
    n = first
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            produce_raw(settings, settings.topics.churn_alerts, [(f"C{n}".encode(), _alert(n))])
            n += 1
            try:
                proc.wait(0.5)
            except subprocess.TimeoutExpired:
                continue
        assert proc.poll() == 0, log.read_text(errors="replace")
        assert proc.stdout is not None
        return [json.loads(line)["alert_id"] for line in proc.stdout.read().splitlines()], n - first
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_alerts_prints_the_topic_then_exits_and_follow_starts_at_the_end(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    produce_raw(settings, topics.churn_alerts, [(f"C{n}".encode(), _alert(n)) for n in (1, 2)])

    snapshot = subprocess.run(
        [CHURNSTREAM, "alerts", "--json"], env=child_env(settings), capture_output=True, text=True, timeout=60
    )
    followed, produced = _follow(settings, tmp_path / "follow.log")
    # from the beginning: every alert already on the topic, then one new. The topic has several
    # partitions, read in no set order, so the limit covers all of them (with a limit of 3 the replay
    # could stop before reaching A1's partition)
    held = 2 + produced
    replayed, _ = _follow(settings, tmp_path / "replay.log", "--from-beginning", limit=held + 1, first=1000)

    assert snapshot.returncode == 0, snapshot.stderr
    assert sorted(json.loads(line)["alert_id"] for line in snapshot.stdout.splitlines()) == ["A1", "A2"]
    assert len(followed) == 1 and followed[0] not in ("A1", "A2")  # like tail -f: only what is new
    existing = {"A1", "A2", *(f"A{n}" for n in range(100, 100 + produced))}
    assert len(replayed) == held + 1 and existing <= set(replayed)  # the existing ones as well
    (new,) = set(replayed) - existing
    assert int(new[1:]) >= 1000  # and one produced while it followed


def test_alerts_prints_in_event_time_and_a_limit_takes_the_earliest(
    settings: Settings, topics: Topics
) -> None:
    """The topic's partitions are read in no set order: ``--limit 3`` printed three alerts of whichever
    partition came first (the review: C001, C004, C011, skipping earlier ones). An alert emitted twice
    (a replay after a crash) is printed once: a team working the list called five customers twice."""
    days = [9, 3, 27, 1, 14, 6, 21, 2, 30, 11]
    records = [
        (
            f"C{n}".encode(),
            json.dumps(
                {"alert_id": f"A{n}", "customer_id": f"C{n}", "as_of": f"2024-05-{day:02d}T10:00:00Z"}
            ).encode(),
        )
        for n, day in enumerate(days)
    ]
    # records[1] again: a worker's replay after a crash emits an alert again, with its id (printed once)
    where = produce_raw(settings, topics.churn_alerts, [*records, records[1], (b"C99", b"[1, 2]")])
    assert len({p for p, _ in where}) > 1, "the alerts should spread over several partitions"

    def printed(*extra: str) -> list[str]:
        done = subprocess.run(
            [CHURNSTREAM, "alerts", "--json", *extra],
            env=child_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "skipping a message that is not a JSON object: b'[1, 2]'" in done.stderr
        return [json.loads(line)["alert_id"] for line in done.stdout.splitlines()]

    by_time = [f"A{n}" for n in sorted(range(len(days)), key=lambda n: days[n])]
    assert printed() == by_time
    assert printed("--limit", "3") == by_time[:3] == ["A3", "A7", "A1"]

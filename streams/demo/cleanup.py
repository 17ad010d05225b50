"""A clean start: stop the workers a killed demo left running, and clear what a previous demo left behind
(its topics, consumer groups, Redis keys and work directory)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from churnstream.errors import ConfigError, InfraError
from churnstream.settings import Settings


def stop_leftover_workers(logs: Path) -> list[tuple[str, int]]:
    """Stop workers a previous demo started and left running (it was killed before it could stop them)."""
    stopped = []
    for pid_file in sorted(logs.glob("*.pid")) if logs.is_dir() else []:
        try:
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue  # gone (or not Linux): nothing to stop
        if b"churnstream.cli" not in cmdline:
            continue  # the pid was reused by something else
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        stopped.append((pid_file.stem, pid))
    return stopped


DEMO_MARKER = ".churnstream-demo"  # in a demo's work directory: one the next demo may delete


def is_demo_dir(path: Path) -> bool:
    """Whether ``path`` is a demo's work directory (marked, or laid out as demos before the mark were)."""
    return (path / DEMO_MARKER).is_file() or (path / "cdnow" / "manifest.json").is_file()


def mark_demo_dir(path: Path) -> None:
    """Create ``path`` as the demo's work directory, marked so that the next demo may clear it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / DEMO_MARKER).write_text("the churnstream demo's work directory: the next demo deletes it\n")


def clear_previous(settings: Settings, groups: list[str], work_dir: Path) -> list[str]:
    """Delete the prefix's topics, the groups, the prefix's Redis keys and ``work_dir``; says what went.

    Redis is reached as the workers reach it (:func:`~churnstream.features.redis_store.redis_client`), so
    a ``redis+cluster://`` URL clears the prefix's keys on every node of the cluster.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from churnstream.features.redis_store import redis_client
    from churnstream.streams.topics import existing_topics

    prefix = settings.topic_prefix
    if not prefix.endswith("."):  # "demo" would also match demography.orders
        raise ConfigError(
            f"the demo's topic prefix must end in '.' (e.g. demo2.), got {prefix!r}: it deletes every "
            "topic, consumer group and Redis key under it"
        )
    if work_dir.is_dir() and not is_demo_dir(work_dir) and any(work_dir.iterdir()):
        raise ConfigError(
            f"{work_dir} is not empty and is not a demo's work directory (no {DEMO_MARKER} in it); the demo "
            "deletes its work directory at the start: give a new or empty one"
        )
    done = []
    admin = AdminClient(settings.kafka_config())
    doomed = [name for name in existing_topics(settings) if name.startswith(prefix)]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):
                future.result()
        deadline = time.monotonic() + 60
        while any(name.startswith(prefix) for name in existing_topics(settings)):
            if time.monotonic() > deadline:
                raise InfraError(f"topics under {prefix} were not deleted within 60 s")
            time.sleep(0.2)
        done.append(f"{len(doomed)} topics")
    gone = 0
    for future in admin.delete_consumer_groups(groups, request_timeout=15).values():
        with contextlib.suppress(KafkaException):  # GROUP_ID_NOT_FOUND: nothing to clear
            future.result()
            gone += 1
    if gone:
        done.append(f"{gone} consumer groups")
    client = redis_client(settings.redis_url)
    try:
        keys = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"churn:{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                keys += client.unlink(*batch)
                batch = []
        if batch:
            keys += client.unlink(*batch)
    finally:
        client.close()
    if keys:
        done.append(f"{keys:,} Redis keys churn:{prefix}*")
    if work_dir.exists():
        shutil.rmtree(work_dir)
        done.append(str(work_dir))
    return done

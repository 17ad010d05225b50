"""The settings-level surface used by the CLI, tests and the demo: ensure, status and stop both services,
and ``churnstream infra up|down|status``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from churnstream.errors import InfraError
from churnstream.local_infra._kafka import KafkaNode, kafka_status, start_kafka, stop_kafka
from churnstream.local_infra._processes import port_open
from churnstream.local_infra._redis import (
    RedisNode,
    redis_answers,
    redis_problem,
    redis_status,
    start_redis,
    stop_redis,
)
from churnstream.local_infra._status import ServiceStatus
from churnstream.settings import Settings

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def _local(host: str) -> bool:
    return host in _LOCAL_HOSTS


def ensure_kafka(settings: Settings, *, timeout: float = 120.0) -> ServiceStatus:
    """Make sure the Kafka of ``settings`` answers, starting a local broker when it is not running."""
    node = KafkaNode.from_settings(settings)
    if not port_open(node.host, node.port) and not _local(node.host):
        raise InfraError(f"Kafka at {settings.kafka_bootstrap} is not reachable and is not on this machine")
    return start_kafka(node, timeout=timeout)


def ensure_redis(settings: Settings, *, timeout: float = 30.0) -> ServiceStatus:
    """Make sure the Redis of ``settings`` answers PING, starting a local server when it is not running."""
    parts = urlsplit(settings.redis_url)
    if parts.scheme != "redis" or not _local(parts.hostname or "127.0.0.1"):
        problem = redis_problem(settings.redis_url)
        if problem is None:
            host, port = parts.hostname or "", parts.port or 6379
            return ServiceStatus("redis", f"{host}:{port}", True, None, False)
        raise InfraError(
            f"Redis at {settings.redacted_redis_url} does not answer and cannot be started locally "
            f"({problem})"
        )
    return start_redis(RedisNode.from_settings(settings), url=settings.redis_url, timeout=timeout)


def ensure_all(settings: Settings) -> list[ServiceStatus]:
    """Kafka and Redis both up (started when needed)."""
    return [ensure_kafka(settings), ensure_redis(settings)]


def status_all(settings: Settings) -> list[ServiceStatus]:
    """Current state of both services, without changing anything."""
    out = [kafka_status(KafkaNode.from_settings(settings))]
    if urlsplit(settings.redis_url).scheme == "redis":
        out.append(redis_status(RedisNode.from_settings(settings)))
    else:
        out.append(
            ServiceStatus(
                "redis", settings.redacted_redis_url, redis_answers(settings.redis_url), None, False
            )
        )
    return out


def stop_all(settings: Settings) -> dict[str, bool]:
    """Stop what this checkout started (Kafka first, then Redis); returns service -> was stopped."""
    stopped = {"kafka": stop_kafka(KafkaNode.from_settings(settings))}
    if urlsplit(settings.redis_url).scheme == "redis":
        stopped["redis"] = stop_redis(RedisNode.from_settings(settings))
    else:
        stopped["redis"] = False
    return stopped


def cli(args: Any, settings: Settings) -> int:
    """``churnstream infra up|down|status``."""
    if args.action == "up":
        for status in ensure_all(settings):
            print(status.describe(), flush=True)
        return 0
    if args.action == "down":
        before = status_all(settings)
        stopped = stop_all(settings)
        for status in before:
            if stopped.get(status.name):
                print(f"{status.name:<6} {status.address:<22} stopped (pid {status.pid})")
            elif status.reachable:
                print(f"{status.name:<6} {status.address:<22} left running (not started by churnstream here)")
            else:
                print(f"{status.name:<6} {status.address:<22} not running")
        return 0
    statuses = status_all(settings)
    for status in statuses:
        print(status.describe())
    return 0 if all(s.reachable for s in statuses) else 1

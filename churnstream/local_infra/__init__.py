"""Development tooling: one local Kafka broker and one local Redis server, for the demo, tests and
``churnstream infra``. The worker, the monitor and the API never import this package; in production Kafka
and Redis are yours, reached through ``CHURN_KAFKA_BOOTSTRAP`` and ``CHURN_REDIS_URL``.

``churnstream infra up`` starts each service only when its address (``CHURN_KAFKA_BOOTSTRAP``,
``CHURN_REDIS_URL``) does not answer yet, and waits until Kafka serves metadata and Redis answers PING.
Kafka is Apache Kafka 4.1.1 in KRaft mode (one node that is both broker and controller); its jars are
fetched once with Maven into ``~/.cache/churnstream/kafka-4.1.1/libs``, outside the repository. Data, logs
and pid files live under ``CHURN_VAR_DIR`` (``var/kafka``, ``var/redis``). ``down`` stops only processes
this checkout started, by their recorded pid.

A node is described by :class:`KafkaNode` / :class:`RedisNode`, so code and tests can run a second broker
on another port and directory (``KafkaNode(port=29092, data_dir=...)``) with extra server properties, e.g.
SASL listeners, without touching the default one. The tests describe such a broker whose only client
listener is SASL_SSL (``tests/integration/secured.py``: SCRAM users created when its storage is formatted,
TLS from throwaway PEM files); a :class:`RedisNode` with a ``password`` starts with ``requirepass``.
Secrets go to files readable only by their owner, never onto a command line that ``ps`` shows (the SCRAM
users of ``kafka-storage format`` excepted, for the second it runs).

The package is read one room at a time: ``_processes`` (pids, ports, locks, spawning, private files),
``_status`` (the status line), ``_kafka_jars`` (Kafka's jars), ``_kafka`` (the broker), ``_redis`` (the
Redis server) and ``_services`` (ensure, status, stop and ``churnstream infra``); everything public is
re-exported here.
"""

from __future__ import annotations

from churnstream.local_infra._kafka import (
    KafkaNode,
    kafka_answers,
    kafka_status,
    start_kafka,
    stop_kafka,
)
from churnstream.local_infra._kafka_jars import KAFKA_VERSION, kafka_cache_dir, kafka_libs

# The secured-broker test helper (tests/integration/secured.py) and test_infra use these two.
from churnstream.local_infra._processes import _require as _require
from churnstream.local_infra._processes import _write_private as _write_private
from churnstream.local_infra._processes import port_open
from churnstream.local_infra._redis import (
    RedisNode,
    redis_answers,
    redis_problem,
    redis_status,
    start_redis,
    stop_redis,
)
from churnstream.local_infra._services import (
    cli,
    ensure_all,
    ensure_kafka,
    ensure_redis,
    status_all,
    stop_all,
)
from churnstream.local_infra._status import ServiceStatus

__all__ = [
    "KAFKA_VERSION",
    "KafkaNode",
    "RedisNode",
    "ServiceStatus",
    "cli",
    "ensure_all",
    "ensure_kafka",
    "ensure_redis",
    "kafka_answers",
    "kafka_cache_dir",
    "kafka_libs",
    "kafka_status",
    "port_open",
    "redis_answers",
    "redis_problem",
    "redis_status",
    "start_kafka",
    "start_redis",
    "status_all",
    "stop_all",
    "stop_kafka",
    "stop_redis",
]

"""The contract's topics: creating them (idempotently) and listing what exists.

Names come from ``settings.topics`` so ``CHURN_TOPIC_PREFIX`` applies everywhere. Input and output
topics get ``settings.topic_partitions`` partitions (6) unless told otherwise; ``dead_letter`` and the
internal monitoring topic get the same, so per-customer ordering is kept on every topic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from churnstream.errors import ConfigError, InfraError
from churnstream.settings import Settings
from churnstream.streams.kafka import DEAD_LETTER_TOPIC_MAX_BYTES, INPUT_TOPIC_MAX_BYTES, raise_on_refusal


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic to create: name, partitions and topic-level config."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class TopicsResult:
    """What :func:`create_topics` did: names created now and names that already existed."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def topic_specs(settings: Settings, partitions: int | None = None) -> list[TopicSpec]:
    """Every topic of the contract (plus the internal monitoring topic) with its settings."""
    n = partitions or settings.topic_partitions
    topics = settings.topics
    inputs = {"max.message.bytes": str(INPUT_TOPIC_MAX_BYTES)}
    specs = [TopicSpec(name, n, dict(inputs)) for name in topics.inputs]
    for name in topics.outputs:
        config = {"max.message.bytes": str(DEAD_LETTER_TOPIC_MAX_BYTES)} if name == topics.dead_letter else {}
        specs.append(TopicSpec(name, n, config))
    specs.append(
        TopicSpec(topics.monitoring_batches, n, {"max.message.bytes": str(DEAD_LETTER_TOPIC_MAX_BYTES)})
    )
    return specs


def make_admin(settings: Settings) -> AdminClient:
    """An admin client; its ``poll`` raises :class:`InfraError` once the broker refuses our credentials."""
    return AdminClient(settings.kafka_config(error_cb=raise_on_refusal(settings)))


def existing_topics(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count of every topic the cluster has (internal ones excluded).

    Raises :class:`InfraError` when Kafka does not answer within ``timeout``, and within about a second
    when it refuses our credentials or certificate.
    """
    admin = make_admin(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            break
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: a refused login raises here rather than at the deadline
            if time.monotonic() >= deadline:
                error = exc.args[0]
                reason = error.str() if isinstance(error, KafkaError) else str(error)
                raise InfraError(
                    f"Kafka at {settings.kafka_bootstrap} does not answer ({reason}); "
                    "check CHURN_KAFKA_BOOTSTRAP (for a local development broker: churnstream infra up)"
                ) from None
    return {name: len(t.partitions) for name, t in metadata.topics.items() if not name.startswith("__")}


def input_partitions(settings: Settings) -> int:
    """The input topics' partition count. A customer's state lives with its partition, so every input
    topic must be partitioned alike (co-partitioned, as Kafka Streams requires of joined topics)."""
    counts = existing_topics(settings)
    found = {name: counts[name] for name in settings.topics.inputs if name in counts}
    if len(set(found.values())) > 1:
        raise ConfigError(
            f"the input topics have different partition counts ({found}): a customer's events must all "
            "land in one partition; recreate them with one count (churnstream topics create --partitions N)"
        )
    return next(iter(found.values()), settings.topic_partitions)


def create_topics(settings: Settings, partitions: int | None = None, timeout: float = 30.0) -> TopicsResult:
    """Create every missing topic of the contract; topics that already exist are left as they are."""
    admin = make_admin(settings)
    have = existing_topics(settings)
    result = TopicsResult()
    wanted = []
    for spec in topic_specs(settings, partitions):
        if spec.name in have:
            result.existing.append(spec.name)
        else:
            wanted.append(
                NewTopic(spec.name, num_partitions=spec.partitions, replication_factor=-1, config=spec.config)
            )
    if not wanted:
        return result
    futures = admin.create_topics(wanted, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
            result.created.append(name)
        except KafkaException as exc:
            error: Any = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result.existing.append(name)  # created concurrently by another process
            else:
                raise InfraError(f"could not create topic {name}: {error}") from None
    _wait_until_ready(admin, result.created, timeout)
    return result


def _wait_until_ready(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Block until every topic in ``names`` is in the broker's metadata with a leader for each partition.

    CreateTopics returns once the controller has the topic; the broker that serves clients learns of it a
    moment later, and a producer or consumer that looks in between sees no such topic.
    """
    deadline = time.monotonic() + timeout
    waiting = set(names)
    while waiting:
        metadata = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        for name in list(waiting):
            meta = metadata.topics.get(name)
            if meta is None or meta.error is not None or not meta.partitions:
                continue
            if all(p.leader >= 0 and p.error is None for p in meta.partitions.values()):
                waiting.discard(name)
        if not waiting:
            return
        if time.monotonic() >= deadline:
            raise InfraError(
                f"topics {', '.join(sorted(waiting))} were created but have no leader after {timeout:g} s"
            )
        time.sleep(0.1)


def cli(args: Any, settings: Settings) -> int:
    """``churnstream topics create [--partitions N]`` and ``churnstream topics list``."""
    if args.action == "create":
        if args.partitions is not None and args.partitions < 1:
            print("churnstream topics: --partitions must be at least 1")
            return 2
        result = create_topics(settings, partitions=args.partitions)
        for name in result.created:
            print(f"created   {name}")
        for name in result.existing:
            print(f"exists    {name}")
        print(f"{len(result.created)} created, {len(result.existing)} already existed")
        return 0
    have = existing_topics(settings)
    ours = {spec.name for spec in topic_specs(settings)}
    for name in sorted(have):
        if settings.topic_prefix and not name.startswith(settings.topic_prefix):
            continue
        mark = "" if name in ours else "  (not a churnstream topic)"
        print(f"{name:<50} {have[name]:>3} partitions{mark}")
    missing = sorted(ours - set(have))
    for name in missing:
        print(f"{name:<50}   - MISSING (run: churnstream topics create)")
    return 0

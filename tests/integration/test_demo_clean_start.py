"""The demo's clean start on real Kafka and Redis: only what is under its prefix goes.

``churnstream demo`` deletes every topic, the consumer groups and the Redis keys under its prefix, and its
work directory, at the start (README: "Nothing outside the ``demo.`` prefix is touched"). Neighbours whose
names share the prefix's letters but not the prefix (``<p>demo2.``, ``x<p>demo.``) must stay, with their
data, groups and keys.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import redis
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from churnstream.settings import Settings
from churnstream.streams.demo.cleanup import DEMO_MARKER, clear_previous
from churnstream.streams.kafka import group_offsets, make_consumer, make_producer
from churnstream.streams.topics import existing_topics


def _topic_with_a_group(settings: Settings, admin: AdminClient, topic: str, group: str) -> None:
    """``topic`` with one message, and ``group`` having committed past it."""
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result()
    producer = make_producer(settings)
    producer.produce(topic, key=b"k", value=b"{}")
    assert producer.flush(30) == 0
    consumer = make_consumer(settings, group)
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                break
        assert message is not None and not message.error(), message
        consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        consumer.close()


def test_the_clean_start_deletes_only_what_is_under_the_prefix(
    base_settings: Settings, tmp_path: Path
) -> None:
    run = f"t{uuid.uuid4().hex[:8]}."
    prefix, neighbours = f"{run}demo.", [f"{run}demo2.", f"x{run}demo."]
    settings = dataclasses.replace(base_settings, topic_prefix=prefix)
    admin = AdminClient(settings.kafka_config())
    client = redis.Redis.from_url(settings.redis_url)
    every = [prefix, *neighbours]
    try:
        for p in every:
            _topic_with_a_group(settings, admin, f"{p}orders", f"{p}churnstream-scorer")
            client.set(f"churn:{p}{{p0}}:c:C1", b"{}")
        work = tmp_path / "demo"
        work.mkdir()
        (work / DEMO_MARKER).write_text("")
        (work / "left-over").write_text("x")

        done = clear_previous(settings, [f"{prefix}churnstream-scorer"], work)

        topics = existing_topics(settings)
        assert f"{prefix}orders" not in topics
        assert all(f"{p}orders" in topics for p in neighbours), sorted(t for t in topics if run in t)
        groups = {g.group_id for g in admin.list_consumer_groups(request_timeout=15).result().valid}
        assert f"{prefix}churnstream-scorer" not in groups
        assert all(f"{p}churnstream-scorer" in groups for p in neighbours), groups
        for p in neighbours:
            committed = group_offsets(settings, f"{p}churnstream-scorer", [f"{p}orders"])
            assert [c for c, _ in committed.values()] == [1], (p, committed)
        assert client.get(f"churn:{prefix}{{p0}}:c:C1") is None
        assert all(client.get(f"churn:{p}{{p0}}:c:C1") == b"{}" for p in neighbours)
        assert not work.exists()
        assert done[0] == "1 topics" and "1 consumer groups" in done, done
    finally:
        leftover = [t for t in existing_topics(settings) if run in t]
        if leftover:
            for future in admin.delete_topics(leftover, operation_timeout=30).values():
                future.exception()
        admin.delete_consumer_groups([f"{p}churnstream-scorer" for p in every], request_timeout=15)
        for p in every:
            client.delete(f"churn:{p}{{p0}}:c:C1")
        client.close()

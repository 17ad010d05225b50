"""The shadow's evidence reader (``streams.retrain.OutcomeFollower``) on a real broker: it reads
``churn_outcomes`` to the end of every partition, adds only what was published since its last read, and
follows partitions added to the topic later (a fake consumer cannot show that the broker's metadata names
them)."""

from __future__ import annotations

import orjson
from confluent_kafka.admin import AdminClient, NewPartitions

from churnstream.settings import Settings, Topics
from churnstream.streams.retrain import OutcomeFollower
from tests.integration.conftest import produce_raw
from tests.unit.test_monitoring_evidence import _outcomes, outcome_messages


def _records(messages: list[dict[str, object]]) -> list[tuple[bytes | None, bytes | None]]:
    return [(str(m["customer_id"]).encode(), orjson.dumps(m)) for m in messages]


def test_the_follower_reads_every_partition_to_its_end_and_follows_partitions_added_later(
    settings: Settings, topics: Topics
) -> None:
    messages = outcome_messages(_outcomes(120, shadow_better=True))
    shadowed = [m for m in messages if m["shadow_probability"] is not None]
    first, second = shadowed[:60], shadowed[60:]
    where = produce_raw(settings, topics.churn_outcomes, _records(first))
    partitions = len({p for p, _ in where})
    assert partitions > 1, "the first outcomes should spread over the topic's partitions"
    follower = OutcomeFollower(settings)
    try:
        assert follower.poll() == 60 and follower.caught_up
        assert follower.poll(max_seconds=0.5) == 0 and follower.caught_up  # nothing new

        admin = AdminClient(settings.kafka_config())
        before = len(
            admin.list_topics(topics.churn_outcomes, timeout=10).topics[topics.churn_outcomes].partitions
        )
        grown = before + 2
        for future in admin.create_partitions([NewPartitions(topics.churn_outcomes, grown)]).values():
            future.result(timeout=30)
        where = produce_raw(settings, topics.churn_outcomes, _records(second))
        assert any(p >= before for p, _ in where), "some outcomes should land in the added partitions"
        assert follower.poll() == 60 and follower.caught_up
        times = {row["as_of"] for row in follower.rows}  # one prediction per as_of: each read once
        assert len(follower.rows) == 120 and len(times) == 120
    finally:
        follower.close()

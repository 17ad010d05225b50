"""``churnstream features`` answers and refuses as ``GET /customers/{id}`` does, from the Redis store."""

from __future__ import annotations

import argparse
import json

import pytest
import redis

from churnstream.events import OrderEvent, format_time
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.feature_lookup import NotServable
from churnstream.streams.feature_lookup import cli as features_cli

T = 1_700_000_000_000


def test_the_features_command_refuses_a_time_the_api_refuses(
    settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms, partitions=3
    )
    store.update([OrderEvent("e1", "c1", T, "o1", 20.0)])
    tx = store.begin([])
    tx.set_partition_time(store.partition_of("c1"), T + DAY_MS)
    store.commit(tx)
    store.flush()

    def show(as_of: int | None, customer: str = "c1") -> int:
        raw = None if as_of is None else str(as_of)
        return features_cli(argparse.Namespace(customer_id=customer, as_of=raw), settings)

    assert show(None) == 0  # as of the time the partition has reached
    shown = json.loads(capsys.readouterr().out)
    assert shown["as_of"] == format_time(T + DAY_MS) and shown["features"]["recency_days"] == 1.0
    with pytest.raises(NotServable, match="after the event time the customer's partition has reached"):
        show(T + 2 * DAY_MS)  # events up to then may still be on their way
    with pytest.raises(NotServable, match=f"before the customer's first event \\({format_time(T)}\\)"):
        show(T - DAY_MS)
    assert show(None, "nobody") == 1
    assert "unknown customer 'nobody'" in capsys.readouterr().err

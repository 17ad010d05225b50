"""The scoring worker on a real three-node Redis Cluster (``CHURN_REDIS_URL=redis+cluster://...``).

Three ``redis-server`` processes in cluster mode, joined by ``redis-cli --cluster create``: every
partition's keys share a hash tag, so each write script runs on one node, and the scorer's results
are those of a single Redis. Skipped only where ``redis-server`` is not installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from churnstream.events import format_time
from churnstream.features.offline import read_events, snapshot
from churnstream.features.redis_store import RedisFeatureStore, redis_client
from churnstream.settings import Settings, Topics
from churnstream.streams.feature_lookup import cli as features_cli
from churnstream.streams.rebuild import rebuild
from churnstream.streams.scorer import build_scorer
from tests.integration.conftest import (
    check_every_event_accounted_for,
    check_state_equals_offline,
    committed_everything,
    publish_world,
    redis_cluster,
    simulate_world,
    wait_until,
)

PORTS = (6401, 6402, 6403)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-node Redis Cluster on ports 6401-6403 (no replicas, no persistence); its URL."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster"), PORTS) as url:
        yield url


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate_world(tmp_path_factory.mktemp("world"), customers=300, days=240, train_days=160, seed=5)


def test_the_scorer_on_a_redis_cluster_equals_the_offline_reference(
    settings: Settings, topics: Topics, world: Path, cluster: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dataclasses.replace(settings, redis_url=cluster, model_dir=world / "models", metrics_port=-1)
    log = read_events(world / "events")
    publish_world(settings, world / "events")
    scorer = build_scorer(settings)
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 240, "the scorer to finish"
        )
    finally:
        scorer.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the scorer did not stop"

    check_every_event_accounted_for(settings, log.events)  # every event answered once, nothing else
    state = check_state_equals_offline(settings, log.events)  # features, labels, learned: as offline
    assert state.customers > 0 and state.labels > 0

    # the state is spread over the three nodes, every key in its partition's slot
    prefix = f"churn:{settings.topic_prefix}:"
    per_node = []
    for port in PORTS:
        keys = [k.decode() for k in redis.Redis(port=port).scan_iter(match=f"{prefix}*", count=1000)]
        per_node.append(keys)
        assert all(k == f"{prefix}layout" or k.startswith(f"{prefix}{{p") for k in keys)
    assert all(per_node), "a node holds none of the state: the cluster was not used"

    # `churnstream features` finds a customer's partition the way producers do
    client = redis_client(cluster)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        customers = store.customers()
        assert len(customers) == state.customers
        t = store.watermark()
        assert t == log.end
        cid = customers[len(customers) // 2]
        reached = store.partition_time(store.partition_of(cid))  # the default as_of, as the API's
        assert reached is not None
    finally:
        store.close()
        client.close()
    capsys.readouterr()
    assert features_cli(argparse.Namespace(customer_id=cid, as_of=None), settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["as_of"] == format_time(reached)
    assert shown["features"] == snapshot(log.events, reached, lateness_ms=settings.lateness_ms)[cid]

    # `churnstream rebuild` clears every node and restores the same state from the input topics
    client = redis_client(cluster)
    client.set(f"{prefix}{{p0}}:c:ghost", b"1|{}")  # a key rebuild must delete
    client.close()
    totals = rebuild(settings, progress=False)
    assert totals["events"] == len(log.events) and totals["predictions"] > 0
    check_state_equals_offline(settings, log.events)
    client = redis_client(cluster)
    assert client.get(f"{prefix}{{p0}}:c:ghost") is None
    client.close()

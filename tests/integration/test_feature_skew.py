"""Training/serving skew: features built online from Kafka into Redis equal the offline builder's."""

from __future__ import annotations

import random
from pathlib import Path

import redis

from churnstream.features.offline import read_events, snapshot
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.settings import Settings, Topics
from churnstream.streams.publish import publish_file
from churnstream.streams.replay import replay_features
from tests.integration.conftest import produce_raw


def _simulate(out: Path, customers: int, days: int, seed: int) -> None:
    from churnstream.sources.simulate import SimulationConfig, simulate

    simulate(SimulationConfig(customers=customers, days=days, seed=seed), out, progress_bar=False)


def test_online_features_equal_offline_features_for_every_customer(
    tmp_path: Path, settings: Settings, topics: Topics, redis_client: redis.Redis
) -> None:
    _simulate(tmp_path, customers=5000, days=365, seed=11)
    for name in ("customer_profiles", "orders", "support_tickets"):
        result = publish_file(tmp_path / f"{name}.jsonl", settings)
        assert result.ok, result
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        replayed = replay_features(settings, store)
        log = read_events(tmp_path)
        assert replayed.applied == len(log.events)
        assert replayed.rejected == 0 and replayed.invalid == 0
        t = store.watermark()
        assert t == log.end
        offline = snapshot(log.events, t, lateness_ms=settings.lateness_ms)
        assert len(offline) == 5000
        online = store.features_many(offline, t)
        mismatches = [cid for cid in offline if online.get(cid) != offline[cid]]
        assert mismatches == [], f"{len(mismatches)} customers differ, e.g. {mismatches[:3]}"
        # the comparison covers the gap features over folded history, not only their missing values
        with_gaps = [c for c in offline if offline[c]["recency_gap_z"] is not None]
        assert len(with_gaps) > 1000, len(with_gaps)
        # and at an earlier time every customer can still be served exactly: within the allowed lateness
        earlier = t - settings.lateness_ms // 2
        offline_earlier = snapshot(log.events, earlier, lateness_ms=settings.lateness_ms)
        online_earlier = store.features_many(offline_earlier, earlier)
        assert all(online_earlier[c] == offline_earlier[c] for c in offline_earlier)
    finally:
        store.close()


def test_redelivered_and_reordered_messages_give_identical_features(
    tmp_path: Path, settings: Settings, topics: Topics, redis_client: redis.Redis
) -> None:
    _simulate(tmp_path, customers=300, days=120, seed=5)
    log = read_events(tmp_path)
    lines = []
    for name in ("customer_profiles", "orders", "support_tickets"):
        lines += [(name, line) for line in (tmp_path / f"{name}.jsonl").read_bytes().splitlines() if line]
    events_by_line = {}
    import json

    for name, line in lines:
        obj = json.loads(line)
        events_by_line[line] = (name, obj["customer_id"])
    # every event twice, and shuffled within windows shorter than the allowed lateness (one day of events)
    by_time = sorted(lines, key=lambda nl: json.loads(nl[1])["timestamp"])
    rng = random.Random(9)
    shuffled = []
    window = 40
    for i in range(0, len(by_time), window):
        chunk = by_time[i : i + window] * 2
        rng.shuffle(chunk)
        shuffled.extend(chunk)
    for name in ("customer_profiles", "orders", "support_tickets"):
        records = [(events_by_line[line][1].encode(), line) for n, line in shuffled if n == name]
        produce_raw(settings, getattr(settings.topics, name), records)
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        replayed = replay_features(settings, store)
        assert replayed.duplicates == len(log.events)
        assert replayed.rejected == 0
        t = log.end
        offline = snapshot(log.events, t, lateness_ms=settings.lateness_ms)
        assert store.features_many(offline, t) == offline
    finally:
        store.close()

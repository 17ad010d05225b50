"""A partition's learner (online model and blender) checkpointed through the feature store into the real
Redis comes back the same through ``restore_learner`` (what a worker taking the partition over runs), and
a checkpoint damaged in Redis (its snapshot or its log) is refused rather than loaded."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from churnstream.errors import ModelIntegrityError
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.models.blend import Blender
from churnstream.models.learner import Learner
from churnstream.models.online import OnlineModel
from churnstream.models.serving import restore_learner
from churnstream.settings import Settings

NAMES = ["recency_days", "orders_90d", "negative_tickets_total"]


def _trained() -> tuple[OnlineModel, Blender, list[dict[str, float | None]]]:
    rng = np.random.default_rng(3)
    X = np.column_stack([rng.exponential(20, 3000), rng.poisson(2, 3000), rng.poisson(0.4, 3000)])
    y = (
        rng.random(3000) < 1 / (1 + np.exp(-(-1.5 + 0.06 * X[:, 0] + 0.8 * X[:, 2] - 0.3 * X[:, 1])))
    ).astype(int)
    rows = [dict(zip(NAMES, x, strict=True)) for x in X.tolist()]
    rows[5]["orders_90d"] = None
    model = OnlineModel(feature_names=NAMES)
    model.learn_many(rows[:2500], y[:2500].tolist())
    blender = Blender(min_pairs=50)
    for row, label, p in zip(rows[2500:], y[2500:], model.predict_many(rows[2500:]), strict=True):
        blender.observe(min(0.99, row["recency_days"] / 60), p, int(label))
    return model, blender, rows[2500:]


def _store(settings: Settings, redis_client: redis.Redis) -> RedisFeatureStore:
    return RedisFeatureStore(
        client=redis_client, namespace=f"{settings.topic_prefix}ckpt", lateness_ms=0, partitions=2
    )


def _checkpoint(store: RedisFeatureStore, partition: int, learner: Learner) -> None:
    """What the scorer writes for a partition's learner: its snapshot, then a line of its log."""
    tx = store.begin({})
    tx.save_learner(partition, *learner.snapshot_bytes())
    store.commit(tx)
    store.flush()


def _key(redis_client: redis.Redis, settings: Settings, partition: int, name: str) -> bytes:
    """The real key of ``partition``'s learner blob ``name``, found by scanning (not by the layout code)."""
    (key,) = redis_client.scan_iter(
        match=f"churn:{settings.topic_prefix}ckpt:{{p{partition}}}:learner:{name}"
    )
    return key


def test_checkpoints_roundtrip_through_redis(settings: Settings, redis_client: redis.Redis) -> None:
    model, blender, held_out = _trained()
    store = _store(settings, redis_client)
    _checkpoint(store, 1, Learner(online=model, blender=blender))

    restored = restore_learner(store, 1)  # as a worker taking the partition over restores it
    assert restored.online.predict_many(held_out) == model.predict_many(held_out)
    assert restored.online.n_learned == model.n_learned == 2500
    assert restored.online.metrics() == model.metrics()
    assert restored.blender.weights() == blender.weights()
    assert restore_learner(store, 0).online.n_learned == 0  # the other partition: new models


def test_a_checkpoint_damaged_in_redis_is_refused(settings: Settings, redis_client: redis.Redis) -> None:
    model, blender, _ = _trained()
    store = _store(settings, redis_client)
    _checkpoint(store, 1, Learner(online=model, blender=blender))
    key = _key(redis_client, settings, 1, "online")
    data = redis_client.get(key)
    assert data
    redis_client.setrange(key, len(data) - 100, b"\x00\x01\x02")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        restore_learner(store, 1)
    redis_client.set(key, data[: len(data) // 2])  # e.g. a truncated write
    with pytest.raises(ModelIntegrityError):
        restore_learner(store, 1)
    redis_client.set(key, data)
    redis_client.set(_key(redis_client, settings, 1, "log"), b"[not a log line\n")
    with pytest.raises(ModelIntegrityError, match="malformed"):
        restore_learner(store, 1)

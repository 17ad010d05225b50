"""The online model and blender checkpoints survive a round trip through the real Redis, and a
checkpoint damaged in Redis is refused rather than loaded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import redis

from churnstream.errors import ModelIntegrityError
from churnstream.models.blend import Blender
from churnstream.models.online import OnlineModel
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


def test_checkpoints_roundtrip_through_redis(settings: Settings, redis_client: redis.Redis) -> None:
    model, blender, held_out = _trained()
    key = f"{settings.topic_prefix}models:online"
    redis_client.set(key, model.to_bytes())
    redis_client.set(f"{key}:blender", json.dumps(blender.to_dict()))

    restored = OnlineModel.from_bytes(redis_client.get(key))
    restored_blender = Blender.from_dict(json.loads(redis_client.get(f"{key}:blender")))
    assert restored.predict_many(held_out) == model.predict_many(held_out)
    assert restored.n_learned == model.n_learned == 2500
    assert restored.metrics() == model.metrics()
    assert restored_blender.weights() == blender.weights()


def test_a_checkpoint_damaged_in_redis_is_refused(settings: Settings, redis_client: redis.Redis) -> None:
    model, _, _ = _trained()
    key = f"{settings.topic_prefix}models:online"
    data = model.to_bytes()
    redis_client.set(key, data)
    redis_client.setrange(key, len(data) - 100, b"\x00\x01\x02")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        OnlineModel.from_bytes(redis_client.get(key))
    redis_client.set(key, data[: len(data) // 2])  # e.g. a truncated write
    with pytest.raises(ModelIntegrityError):
        OnlineModel.from_bytes(redis_client.get(key))

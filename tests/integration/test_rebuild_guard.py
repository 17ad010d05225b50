"""``churnstream rebuild`` deletes Redis state only once it knows it can replay it."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import redis

from churnstream.errors import ChurnstreamError
from churnstream.settings import Settings, Topics
from churnstream.streams.kafka import make_consumer
from churnstream.streams.rebuild import cli as rebuild_cli
from churnstream.streams.rebuild import rebuild


def test_rebuild_with_kafka_unreachable_keeps_redis_untouched(
    settings: Settings, redis_client: redis.Redis
) -> None:
    key = f"churn:{settings.topic_prefix}c:someone"
    redis_client.set(key, b"1|{}")
    unreachable = dataclasses.replace(settings, kafka_bootstrap="127.0.0.1:1")
    with pytest.raises(ChurnstreamError, match="Kafka"):
        rebuild(unreachable, progress=False)
    assert redis_client.get(key) == b"1|{}"


def test_rebuild_while_a_scorer_is_in_the_group_keeps_redis_untouched(
    settings: Settings, topics: Topics, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"churn:{settings.topic_prefix}c:someone"
    redis_client.set(key, b"1|{}")
    member = make_consumer(settings, settings.consumer_group)
    member.subscribe([topics.orders])
    try:
        while not member.assignment():  # joined: the group has an active member
            member.poll(0.2)
        with pytest.raises(ChurnstreamError, match="active members"):
            rebuild(settings, progress=False)
        # the command refuses before it asks (it asked "Continue?" first, then refused the yes)
        asked: list[str] = []
        monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "y")
        with pytest.raises(ChurnstreamError, match="active members"):
            rebuild_cli(argparse.Namespace(yes=False), settings)
        assert asked == []
    finally:
        member.close()
    assert redis_client.get(key) == b"1|{}"

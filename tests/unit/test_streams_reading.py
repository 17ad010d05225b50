"""Following a topic: a quiet topic and a broker gone look the same from a consumer, so it asks the broker."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from churnstream.streams import reading


class Stop(Exception):
    pass


class Consumer:
    """No message ever; the broker answers metadata requests as ``answers`` says, one per request."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.polls = 0

    def assign(self, partitions: Any) -> None:
        pass

    def poll(self, timeout: float) -> None:
        self.polls += 1
        if self.polls > 1000:  # a reader that never asks the broker
            raise Stop
        return None

    def list_topics(self, timeout: float) -> None:
        if not self.answers:
            raise Stop
        if not self.answers.pop(0):
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))


def test_following_says_when_kafka_stops_answering_and_when_it_answers_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reading, "STALL_SECONDS", 0.0)
    consumer = Consumer([True, False, False, True, True])
    with caplog.at_level(logging.WARNING), pytest.raises(Stop):
        for _ in reading._read(
            consumer,
            [TopicPartition("alerts", 0)],
            {},
            follow=True,
            poll_timeout=0,
            what="alerts",  # type: ignore[arg-type]
        ):
            pass
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "Kafka does not answer; still waiting for alerts",
        "Kafka answers again; waiting for alerts",
    ]

"""A scorer's identity in its consumer group: CHURN_WORKER_ID, the session timeout, and the errors that
end a worker instead of leaving it idle in the group (the broker side is in tests/integration/test_resume)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from confluent_kafka import KafkaError

from churnstream.errors import ConfigError, InfraError
from churnstream.settings import Settings
from churnstream.streams import kafka

# Nothing listens here: building a consumer must not need a broker.
UNREACHABLE = "127.0.0.1:1"


def test_the_worker_id_defaults_to_the_host_name_and_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "9f2c4e1ab7d3")  # a container's: its id
    assert Settings.from_env({}).worker_name == "9f2c4e1ab7d3"
    assert Settings.from_env({"CHURN_WORKER_ID": ""}).worker_name == "9f2c4e1ab7d3"
    assert Settings.from_env({"CHURN_WORKER_ID": "scorer-2"}).worker_name == "scorer-2"
    monkeypatch.setattr(socket, "gethostname", lambda: "Büro PC")  # what Kafka refuses is replaced
    assert Settings.from_env({}).worker_name == "B_ro_PC"


def test_the_settings_round_trip_through_a_child_environment() -> None:
    s = Settings.from_env({"CHURN_WORKER_ID": "w1", "CHURN_SESSION_TIMEOUT_MS": "12000"})
    assert (s.worker_id, s.session_timeout_ms) == ("w1", 12000)
    assert Settings.from_env(s.to_env()) == s
    assert Settings.from_env(Settings().to_env()).worker_id == ""  # the child derives its own


@pytest.mark.parametrize("bad", ["two words", "a/b", "x" * 129, "ünïcode"])
def test_a_worker_id_kafka_would_refuse_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="CHURN_WORKER_ID"):
        Settings.from_env({"CHURN_WORKER_ID": bad})


def test_the_session_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="CHURN_SESSION_TIMEOUT_MS"):
        Settings.from_env({"CHURN_SESSION_TIMEOUT_MS": "0"})


@pytest.fixture
def configs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The configurations of the group workers :func:`kafka.make_consumer` builds from now on."""
    seen: list[dict[str, Any]] = []

    class Recording(kafka._GroupWorker):
        def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
            seen.append(dict(config))
            super().__init__(config, **kwargs)

    monkeypatch.setattr(kafka, "_GroupWorker", Recording)
    return seen


def test_a_worker_is_a_static_member_with_a_short_session_on_the_classic_protocol(
    configs: list[dict[str, Any]],
) -> None:
    settings = Settings(kafka_bootstrap=UNREACHABLE, session_timeout_ms=9000)
    kafka.make_consumer(settings, "prod.churnstream-scorer", worker_id="scorer-1").close()
    [config] = configs
    assert config["group.instance.id"] == "prod.churnstream-scorer-scorer-1"
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == (9000, 3000)
    assert "group.protocol" not in config  # librdkafka's default: classic

    plain = kafka.make_consumer(settings, "a-reader")  # any other consumer: a dynamic member, as before
    plain.close()
    assert not isinstance(plain, kafka._GroupWorker) and len(configs) == 1


def test_a_group_name_kafka_would_refuse_in_an_instance_id_is_cleaned(configs: list[dict[str, Any]]) -> None:
    kafka.make_consumer(Settings(kafka_bootstrap=UNREACHABLE), "team a/scorers", worker_id="w1").close()
    assert configs[0]["group.instance.id"] == "team_a_scorers-w1"


def fenced(settings: Settings, **props: str) -> kafka._GroupWorker:
    consumer = kafka.make_consumer(settings, "g", worker_id="twin", **props)
    assert isinstance(consumer, kafka._GroupWorker)
    return consumer


def test_a_fenced_worker_raises_a_config_error_naming_its_worker_id_and_keeps_raising() -> None:
    consumer = fenced(Settings(kafka_bootstrap=UNREACHABLE))
    try:
        error = KafkaError(
            KafkaError._FATAL,
            "Fatal error: Broker: Static consumer fenced by other consumer with same group.instance.id",
        )
        with pytest.raises(ConfigError, match="CHURN_WORKER_ID='twin'") as raised:
            consumer._check(error)
        assert "'g-twin'" in str(raised.value)
        with pytest.raises(ConfigError, match="fenced"):
            consumer.poll(0)
        with pytest.raises(ConfigError, match="fenced"):
            consumer.consume(1, 0)
    finally:
        consumer.close()


def test_a_session_timeout_the_broker_refuses_and_other_fatal_errors_end_the_worker() -> None:
    consumer = fenced(Settings(kafka_bootstrap=UNREACHABLE, session_timeout_ms=3000))
    try:
        with pytest.raises(ConfigError, match="CHURN_SESSION_TIMEOUT_MS=3000"):
            consumer._check(KafkaError(KafkaError.INVALID_SESSION_TIMEOUT, "JoinGroup failed"))
    finally:
        consumer.close()
    consumer = fenced(Settings(kafka_bootstrap=UNREACHABLE))
    try:
        with pytest.raises(InfraError, match="failed for good"):
            consumer._check(KafkaError(KafkaError._FATAL, "Fatal error: something else"))
    finally:
        consumer.close()


def test_transient_errors_are_left_to_librdkafka() -> None:
    consumer = fenced(Settings(kafka_bootstrap=UNREACHABLE))
    try:
        consumer._check(KafkaError(KafkaError._TRANSPORT, "connection refused"))
        consumer._check(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalancing"))
        assert consumer.poll(0) is None
    finally:
        consumer.close()


def test_on_the_consumer_protocol_the_broker_owns_the_session_and_the_worker_joins_dynamically(
    configs: list[dict[str, Any]],
) -> None:
    settings = Settings(kafka_bootstrap=UNREACHABLE, kafka_properties={"group.protocol": "consumer"})
    kafka.make_consumer(settings, "g", worker_id="w1").close()  # librdkafka refuses session.timeout.ms
    [config] = configs
    assert config["group.protocol"] == "consumer" and config["group.remote.assignor"] == "range"
    assert not {"group.instance.id", "session.timeout.ms", "heartbeat.interval.ms"} & set(config)

"""Secured services: Kafka over SASL_SSL (SCRAM-SHA-512 on TLS) and Redis with a password.

A second, secured Kafka broker and a second Redis server are started for this module (on free ports, in
``tmp_path``; the shared ones are not touched). The broker's only client listener is SASL_SSL with a
throwaway CA made by ``openssl``; its SCRAM users are created when its storage is formatted. Every client
here is configured only the way users configure churnstream: ``CHURN_KAFKA_*`` pass-through variables and
a ``redis://:password@host:port/0`` URL.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from confluent_kafka import TopicPartition

from churnstream import local_infra as infra
from churnstream.errors import InfraError, StoreError
from churnstream.events import OrderEvent, decode_json, infer_kind
from churnstream.features.definitions import FEATURE_NAMES
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.messages import OUTCOME_COLUMNS, MonitoringBatch
from churnstream.settings import DAY_MS, Settings, child_env
from churnstream.streams.kafka import DeliveryTracker, make_consumer, make_producer
from churnstream.streams.publish import publish_file
from churnstream.streams.topics import create_topics, existing_topics
from tests.integration import secured
from tests.integration.conftest import consume_all, produce_raw

ROOT = Path(__file__).resolve().parents[2]
CHURNSTREAM = str(Path(sys.executable).with_name("churnstream"))
EVENTS = ROOT / "examples" / "events.jsonl"
MECHANISM = "SCRAM-SHA-512"
USER = "app"
T0 = 1_700_000_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class SecureKafka:
    node: infra.KafkaNode
    tls: secured.TlsFiles
    admin_password: str
    password: str  # of USER, the account every client here logs in with

    def env(self, *, password: str | None = None, ca: Path | None = None) -> dict[str, str]:
        """The ``CHURN_*`` variables of a deployment that uses this broker (unique topic prefix)."""
        return {
            "CHURN_KAFKA_BOOTSTRAP": self.node.address,
            "CHURN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CHURN_KAFKA_SASL_MECHANISM": MECHANISM,
            "CHURN_KAFKA_SASL_USERNAME": USER,
            "CHURN_KAFKA_SASL_PASSWORD": self.password if password is None else password,
            "CHURN_KAFKA_SSL_CA_LOCATION": str(ca or self.tls.ca),
            "CHURN_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:10]}.",
        }


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A broker whose only client listener is SASL_SSL (SCRAM-SHA-512), for this module only."""
    root = tmp_path_factory.mktemp("sasl-ssl-kafka")
    tls = secured.make_tls_files(root / "tls")
    admin_password, password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    node = secured.sasl_ssl_node(
        root / "kafka",
        port=free_port(),
        controller_port=free_port(),
        tls=tls,
        users={"admin": admin_password, USER: password},
        mechanism=MECHANISM,
        heap="256m",
    )
    infra.start_kafka(node, timeout=120)
    try:
        yield SecureKafka(node, tls, admin_password, password)
    finally:
        gc.collect()  # clients kept alive by reference cycles close before their broker goes
        assert infra.stop_kafka(node), "the secured broker was not running at the end"


@pytest.fixture
def secure_settings(secure_kafka: SecureKafka, base_settings: Settings, tmp_path: Path) -> Settings:
    env = secure_kafka.env()
    env.update({"CHURN_REDIS_URL": base_settings.redis_url, "CHURN_VAR_DIR": str(tmp_path / "var")})
    return Settings.from_env(env)


@pytest.fixture(scope="module")
def secure_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose ``CHURN_REDIS_URL`` carries a password, with that Redis started from them."""
    root = tmp_path_factory.mktemp("redis-auth")
    password = secrets.token_urlsafe(18) + "/@:%"  # characters that a URL must percent-encode
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{free_port()}/0"
    settings = Settings.from_env({"CHURN_REDIS_URL": url, "CHURN_VAR_DIR": str(root)})
    node = infra.RedisNode.from_settings(settings)
    assert node.password == password
    status = infra.ensure_redis(settings)
    assert status.started_now
    try:
        yield settings
    finally:
        assert infra.stop_redis(node)


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``churnstream ARGS`` with exactly the given ``CHURN_*`` variables; returns the process and seconds."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    full.update(env)
    started = time.monotonic()
    proc = subprocess.run(
        [CHURNSTREAM, *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return proc, time.monotonic() - started


def release(error: pytest.ExceptionInfo[BaseException]) -> None:
    """Drop the frames of a caught error raised in a Kafka client callback.

    confluent-kafka (2.16) keeps a reference to every exception raised in a callback; its traceback would
    keep the failed client alive, reconnecting, for the rest of the session.
    """
    exc: BaseException | None = error.value
    while exc is not None:
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        exc = exc.__context__


def redis_password(settings: Settings) -> str:
    node = infra.RedisNode.from_settings(settings)
    assert node.password
    return node.password


# --- Kafka over SASL_SSL -----------------------------------------------------------------------------


def test_publish_and_consume_over_sasl_ssl(secure_settings: Settings, secure_kafka: SecureKafka) -> None:
    env = child_env(secure_settings)
    lines = [line for line in EVENTS.read_bytes().splitlines() if line.strip()]
    expected: dict[str, list[bytes]] = {}
    for line in lines:
        expected.setdefault(secure_settings.topic_prefix + infer_kind(decode_json(line)), []).append(line)

    created, _ = run_cli(env, "topics", "create")
    published, _ = run_cli(env, "publish", str(EVENTS))

    assert created.returncode == 0, created.stdout + created.stderr
    assert "10 created" in created.stdout
    assert published.returncode == 0, published.stdout + published.stderr
    assert f"{len(lines)} records read, {len(lines)} delivered" in published.stdout
    for topic, values in expected.items():
        messages = consume_all(secure_settings, topic, expected=len(values), timeout=30)
        assert sorted(m.value() or b"" for m in messages) == sorted(values), topic
        assert all(m.key() == decode_json(m.value())["customer_id"].encode() for m in messages)
    for proc in (created, published):
        assert secure_kafka.password not in proc.stdout + proc.stderr


def test_producer_and_group_consumer_over_sasl_ssl(secure_settings: Settings) -> None:
    create_topics(secure_settings)
    topic = secure_settings.topics.dead_letter
    producer = make_producer(secure_settings)
    tracker = DeliveryTracker()
    for n in range(20):
        producer.produce(topic, key=f"C{n}".encode(), value=f"v{n}".encode(), on_delivery=tracker.on_delivery)
    tracker.flush_or_raise(producer, timeout=30)

    # A subscribing member: group coordination, fetches and commits all over SASL_SSL.
    consumer = make_consumer(secure_settings, f"secure-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    got: dict[bytes, bytes] = {}
    try:
        deadline = time.monotonic() + 45
        while len(got) < 20 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[msg.key() or b""] = msg.value() or b""
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    finally:
        consumer.close()

    assert tracker.acked == 20 and tracker.failed == 0
    assert got == {f"C{n}".encode(): f"v{n}".encode() for n in range(20)}
    assert sum(max(tp.offset, 0) for tp in committed) == 20


def test_a_wrong_password_fails_fast_with_a_clear_error(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    wrong = "not-" + secure_kafka.password
    env = secure_kafka.env(password=wrong)
    settings = Settings.from_env(env)

    proc, _ = run_cli(env, "publish", str(EVENTS))

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "churnstream publish: error: Kafka at" in proc.stderr
    assert "authentication failed" in proc.stderr  # the refusal, not a timeout
    assert wrong not in proc.stdout + proc.stderr

    with pytest.raises(InfraError, match="authentication failed") as admin_error:  # not the timeout's error
        existing_topics(settings, timeout=30)

    producer = make_producer(settings)
    producer.produce("anything", value=b"x")
    with pytest.raises(InfraError, match="authentication failed") as producer_error:
        DeliveryTracker().flush_or_raise(producer, timeout=30)

    consumer = make_consumer(settings, "never-joins")
    consumer.subscribe([settings.topics.orders])
    started = time.monotonic()
    with pytest.raises(InfraError, match="authentication failed") as consumer_error:
        while time.monotonic() - started < 30:  # raises on the refusal; never ends the loop otherwise
            consumer.poll(0.5)
    consumer.close()
    producer.purge()
    messages = [str(error.value) for error in (admin_error, producer_error, consumer_error)]
    for error in (admin_error, producer_error, consumer_error):
        release(error)
    for message in messages:
        assert wrong not in message
        assert "CHURN_KAFKA_SASL_PASSWORD" in message  # says what to fix


def test_a_certificate_from_another_ca_is_refused_clearly(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    other = secured.make_tls_files(tmp_path / "other-ca")
    settings = Settings.from_env(secure_kafka.env(ca=other.ca))

    with pytest.raises(InfraError, match="TLS certificate verification failed") as error:  # not a timeout
        existing_topics(settings, timeout=30)

    message = str(error.value)
    release(error)
    assert "CHURN_KAFKA_SSL_CA_LOCATION" in message


def test_kafka_secrets_stay_out_of_reprs_logs_and_cli_output(
    secure_settings: Settings, secure_kafka: SecureKafka, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    password = secure_kafka.password
    env = child_env(secure_settings)
    create_topics(secure_settings)
    caplog.set_level(logging.DEBUG)

    result = publish_file(EVENTS, secure_settings, progress=False)
    listed, _ = run_cli(env, "-v", "topics", "list")
    status, _ = run_cli(env, "-v", "infra", "status")

    assert result.ok and result.delivered > 0
    assert listed.returncode == 0 and secure_settings.topics.orders in listed.stdout
    assert secure_kafka.node.address in status.stdout
    shown = {
        "repr": repr(secure_settings),
        "str": str(secure_settings),
        "node repr": repr(secure_kafka.node),
        "python logs": caplog.text,
        "topics list": listed.stdout + listed.stderr,
        "infra status": status.stdout + status.stderr,
    }
    for name in ("server.log", "stdout.log"):
        shown[f"broker {name}"] = (secure_kafka.node.data_dir / name).read_text(errors="replace")
    assert "sasl.password" in shown["repr"] and "***" in shown["repr"]
    assert "sasl_ssl" in shown["broker server.log"].lower()  # the log is the broker's real one
    for where, text in shown.items():
        assert password not in text, f"the SASL password appears in {where}"
        assert secure_kafka.admin_password not in text, f"the broker's password appears in {where}"
    config = secure_kafka.node.data_dir / "server.properties"
    assert secure_kafka.admin_password in config.read_text()  # the broker needs it ...
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # ... and only its owner can read it


# --- the faust monitor over SASL_SSL -------------------------------------------------------------------


def test_monitor_app_gets_the_sasl_credentials_and_a_verifying_tls_context(
    secure_settings: Settings, secure_kafka: SecureKafka
) -> None:
    import ssl

    import faust

    from churnstream.streams.monitor import MonitorApp

    built = MonitorApp.build(secure_settings)
    credentials = built.app.conf.broker_credentials

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == MECHANISM
    assert credentials.username == USER and credentials.password == secure_kafka.password
    context = credentials.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert secure_kafka.password not in repr(credentials)
    built.service.close()


def _monitoring_batch(rows: int) -> MonitoringBatch:
    predictions: dict[str, list[Any]] = {
        "as_of": [T0 + i * DAY_MS for i in range(rows)],
        "customer_id": [f"C{i}" for i in range(rows)],
        "trigger": ["event"] * rows,
        **{name: [1.0] * rows for name in FEATURE_NAMES},
        "batch_probability": [0.2] * rows,
        "online_probability": [None] * rows,
        "churn_probability": [0.2] * rows,
    }
    outcomes: dict[str, list[Any]] = {name: [] for name in OUTCOME_COLUMNS}
    return MonitoringBatch(
        uuid.uuid4().hex, int(time.time() * 1000), "v-sec", list(FEATURE_NAMES), predictions, outcomes
    )


def test_monitor_consumes_and_produces_over_sasl_ssl(
    secure_settings: Settings, secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    port = free_port()
    env = child_env(secure_settings)
    env.update(
        {
            "CHURN_WEB_PORT": str(port),
            "CHURN_REPORT_DIR": str(tmp_path / "reports"),
            "CHURN_MODEL_DIR": str(tmp_path / "models"),
        }
    )
    log_path = tmp_path / "monitor.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CHURNSTREAM, "monitor"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
        )

    def health() -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{port}/health"
        with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))
        return None

    try:
        deadline = time.monotonic() + 50
        while health() is None:
            assert process.poll() is None, f"monitor exited early:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"monitor never came up:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.2)
        batch = _monitoring_batch(3)
        produce_raw(
            secure_settings,
            secure_settings.topics.monitoring_batches,
            [(b"v-sec", json.dumps(batch.to_json()).encode()), (b"v-sec", b"this is not a batch")],
        )

        letters = consume_all(secure_settings, secure_settings.topics.dead_letter, expected=1, timeout=30)
        deadline = time.monotonic() + 15
        state = health()
        while not (state and state["records"] >= 2) and time.monotonic() < deadline:
            time.sleep(0.2)
            state = health()
    finally:
        process.send_signal(signal.SIGTERM)
        code: int | None = None
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = log_path.read_text(errors="replace")

    assert [json.loads(m.value() or b"")["value"] for m in letters] == ["this is not a batch"], output[-3000:]
    assert state is not None and state["records"] == 2 and state["rows_seen"] == 3, (state, output[-3000:])
    assert state["dead_letters"] == 1
    assert code == 0, output[-3000:]
    assert secure_kafka.password not in output


# --- Redis with a password -----------------------------------------------------------------------------


def _order(n: int, cid: str, day: float, amount: float) -> OrderEvent:
    return OrderEvent(
        event_id=f"o{n}-{cid}",
        customer_id=cid,
        timestamp=T0 + int(day * DAY_MS),
        order_id=f"ord{n}",
        amount=amount,
    )


def test_feature_store_works_with_a_password_in_the_url(secure_redis: Settings) -> None:
    namespace = f"sec-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(secure_redis.redis_url)
    store = RedisFeatureStore(client=client, namespace=namespace, lateness_ms=secure_redis.lateness_ms)
    try:
        store.update([_order(1, "C1", 0, 10.0), _order(2, "C1", 5, 30.0), _order(3, "C2", 1, 7.5)])
        store.flush()
        fresh = RedisFeatureStore(
            client=redis.Redis.from_url(secure_redis.redis_url), namespace=namespace, lateness_ms=1
        )
        features = fresh.features("C1", as_of=T0 + 6 * DAY_MS)
        customers = fresh.customers()
    finally:
        store.clear()
        store.close()
        client.close()
    anonymous = redis.Redis(host="127.0.0.1", port=infra.RedisNode.from_settings(secure_redis).port)

    assert features is not None
    assert features["orders_total"] == 2 and features["spent_total"] == 40.0
    assert customers == ["C1", "C2"]
    with pytest.raises(redis.AuthenticationError):  # the server really requires the password
        anonymous.ping()


def test_a_wrong_redis_password_fails_clearly_without_the_password(secure_redis: Settings) -> None:
    password = redis_password(secure_redis)
    wrong_password = "wrong-" + secrets.token_hex(8)
    node = infra.RedisNode.from_settings(secure_redis)
    wrong_url = f"redis://:{wrong_password}@{node.host}:{node.port}/0"
    wrong = Settings.from_env({"CHURN_REDIS_URL": wrong_url, "CHURN_VAR_DIR": str(node.data_dir.parent)})
    store = RedisFeatureStore(
        client=redis.Redis.from_url(wrong.redis_url, socket_timeout=5), namespace="x", lateness_ms=1
    )

    with pytest.raises(StoreError) as store_error:
        store.features("C1", as_of=T0)
    with pytest.raises(InfraError) as infra_error:
        infra.ensure_redis(wrong)
    proc, _ = run_cli({"CHURN_REDIS_URL": wrong_url}, "features", "C1")
    store.close()

    assert "invalid username-password pair" in str(store_error.value)
    assert "authentication failed" in str(infra_error.value)
    assert "CHURN_REDIS_URL" in str(infra_error.value)
    assert proc.returncode == 1
    assert "churnstream features: error: Redis at redis://:***@" in proc.stderr
    assert "invalid username-password pair" in proc.stderr  # the refusal, not a timeout
    for text in (str(store_error.value), str(infra_error.value), proc.stdout + proc.stderr):
        assert wrong_password not in text and password not in text


def test_redis_password_never_printed(
    secure_redis: Settings, base_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    password = redis_password(secure_redis)
    quoted = quote(password, safe="")
    caplog.set_level(logging.DEBUG)
    env = {"CHURN_REDIS_URL": secure_redis.redis_url, "CHURN_KAFKA_BOOTSTRAP": base_settings.kafka_bootstrap}
    status, _ = run_cli(env, "-v", "infra", "status")
    features, _ = run_cli(env, "-v", "features", "C1")
    in_query = Settings.from_env({"CHURN_REDIS_URL": f"redis://127.0.0.1:6390/0?password={quoted}&db=0"})

    assert secure_redis.redacted_redis_url.startswith("redis://:***@127.0.0.1:")
    assert in_query.redacted_redis_url == "redis://127.0.0.1:6390/0?password=***&db=0"
    assert status.returncode == 0, status.stdout + status.stderr
    assert "redis" in status.stdout and " reachable " in status.stdout.split("redis", 1)[1]
    assert (
        features.returncode == 1 and "holds nothing yet; no scorer has written there" in features.stderr
    )  # logged in, found an empty namespace
    shown = {
        "repr": repr(secure_redis),
        "redacted url": secure_redis.redacted_redis_url,
        "query redacted": in_query.redacted_redis_url + repr(in_query),
        "node repr": repr(infra.RedisNode.from_settings(secure_redis)),
        "infra status": status.stdout + status.stderr,
        "features": features.stdout + features.stderr,
        "python logs": caplog.text,
        "redis log": infra.RedisNode.from_settings(secure_redis).log_file.read_text(errors="replace"),
    }
    for where, text in shown.items():
        assert password not in text and quoted not in text, f"the Redis password appears in {where}"
    auth = infra.RedisNode.from_settings(secure_redis).data_dir / "auth.conf"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600

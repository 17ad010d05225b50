"""``churnstream infra``: status, idempotent ``up``, and extra nodes on other ports and directories."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from churnstream import local_infra as infra
from churnstream.errors import InfraError
from churnstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("churnstream")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "churnstream.cli"]
    env = dict(os.environ)
    env.update({"CHURN_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "CHURN_REDIS_URL": settings.redis_url})
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_reports_both_services_reachable(settings: Settings) -> None:
    proc = run_cli(settings, "infra", "status")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert set(lines) == {"kafka", "redis"}
    assert " reachable " in lines["kafka"] and "NOT" not in lines["kafka"]
    assert " reachable " in lines["redis"] and "NOT" not in lines["redis"]


def test_up_when_already_up_changes_nothing(settings: Settings) -> None:
    before = {s.name: s for s in infra.status_all(settings)}

    proc = run_cli(settings, "infra", "up")

    after = {s.name: s for s in infra.status_all(settings)}
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "started now" not in proc.stdout
    for name in ("kafka", "redis"):
        assert after[name].reachable
        assert after[name].pid == before[name].pid
        assert after[name].ours == before[name].ours


def test_ensure_functions_return_the_running_services(settings: Settings) -> None:
    kafka = infra.ensure_kafka(settings)
    redis_status = infra.ensure_redis(settings)

    assert kafka.reachable and not kafka.started_now
    assert redis_status.reachable and not redis_status.started_now


def test_a_second_redis_on_another_port_starts_persists_and_stops(tmp_path: Path) -> None:
    node = infra.RedisNode(data_dir=tmp_path / "redis", port=free_port())

    started = infra.start_redis(node)
    try:
        assert started.started_now and started.ours and started.pid is not None
        client = redis.Redis(host=node.host, port=node.port)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.close()
        again = infra.start_redis(node)
        assert not again.started_now and again.pid == started.pid
    finally:
        stopped = infra.stop_redis(node)

    assert stopped
    assert not infra.port_open(node.host, node.port)
    assert not node.pid_file.exists()
    assert infra.stop_redis(node) is False


def test_a_second_kafka_broker_on_another_port_and_directory(tmp_path: Path) -> None:
    node = infra.KafkaNode(
        data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port(), heap="256m"
    )

    started = infra.start_kafka(node, timeout=120)
    try:
        assert started.started_now and started.ours
        assert infra.kafka_answers(node)
        assert (node.data_dir / "data" / "meta.properties").exists()
        assert f"PLAINTEXT://127.0.0.1:{node.port}" in (node.data_dir / "server.properties").read_text()
        assert node.log_file.exists()
    finally:
        stopped = infra.stop_kafka(node)

    assert stopped
    assert not infra.port_open(node.host, node.port)


def test_server_properties_can_be_extended_for_other_listeners(tmp_path: Path) -> None:
    node = infra.KafkaNode(
        data_dir=tmp_path,
        port=29092,
        server_properties={"listener.security.protocol.map": "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"},
    )
    props = node.properties()
    assert props["listener.security.protocol.map"] == "PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_missing_tools_are_reported_with_how_to_install_them() -> None:
    with pytest.raises(InfraError, match="apt-get install -y openjdk-17-jre-headless maven redis-server"):
        infra._require("surely-not-an-installed-tool")


def test_redis_that_cannot_be_started_locally_is_reported(settings: Settings) -> None:
    remote = Settings.from_env({"CHURN_REDIS_URL": "redis://192.0.2.1:6379/0"})
    with pytest.raises(InfraError, match="cannot be started locally"):
        infra.ensure_redis(remote)

"""One local single-node KRaft Kafka broker: its description, its process, and SCRAM users at format time."""

from __future__ import annotations

import base64
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnstream.errors import InfraError
from churnstream.local_infra._kafka_jars import kafka_libs
from churnstream.local_infra._processes import (
    _hide,
    _host_port,
    _lock,
    _recorded_pid,
    _require,
    _spawn,
    _stop_pid,
    _tail,
    _write_private,
    port_open,
)
from churnstream.local_infra._status import ServiceStatus
from churnstream.settings import Settings


@dataclass(frozen=True, slots=True)
class KafkaNode:
    """One local single-node KRaft Kafka: where it listens, where it keeps data, extra server properties."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int | None = None
    server_properties: Mapping[str, str] = field(default_factory=dict, repr=False)
    client_config: Mapping[str, str] = field(default_factory=dict, repr=False)
    heap: str = "512m"
    # SCRAM users (name -> password) written into the metadata log when the storage is formatted.
    scram_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    scram_mechanism: str = "SCRAM-SHA-512"

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaNode:
        """The node that ``CHURN_KAFKA_BOOTSTRAP`` (first address) and ``CHURN_VAR_DIR`` describe."""
        host, port = _host_port(settings.kafka_bootstrap.split(",")[0].strip(), 9092)
        return cls(
            data_dir=(settings.var_dir / "kafka").absolute(),
            host=host,
            port=port,
            client_config=dict(settings.kafka_properties),
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def controller(self) -> int:
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def properties(self) -> dict[str, str]:
        """The ``server.properties`` of this node; ``server_properties`` override the defaults."""
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics come from `churnstream topics create` with the right partition counts; an
            # auto-created one-partition topic would hide a missing set-up step.
            "auto.create.topics.enable": "false",
            # Replayed history carries old record timestamps; time-based retention would delete it at once.
            "log.retention.ms": "-1",
            "log.retention.bytes": str(2 * 1024**3),
            "log.segment.bytes": str(256 * 1024**2),
        }
        props.update(self.server_properties)
        return props


def _cluster_id() -> str:
    while True:  # Kafka's own Uuid.randomUuid avoids ids that start with '-' (they look like CLI flags)
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):
            return text


def kafka_answers(node: KafkaNode, timeout: float = 5.0) -> bool:
    """True when the broker at ``node`` serves metadata (a real Kafka answer, not just an open port)."""
    from confluent_kafka.admin import AdminClient

    config: dict[str, Any] = {"bootstrap.servers": node.address, "socket.timeout.ms": 3000}
    config.update(node.client_config)
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException of every flavour means "not yet"
        return False
    return True


def kafka_status(node: KafkaNode) -> ServiceStatus:
    pid = _recorded_pid(node.pid_file, "kafka.Kafka")
    return ServiceStatus(
        name="kafka",
        address=node.address,
        reachable=port_open(node.host, node.port),
        pid=pid,
        ours=pid is not None,
        data_dir=node.data_dir,
    )


def start_kafka(node: KafkaNode, *, timeout: float = 120.0) -> ServiceStatus:
    """Start ``node`` if its address does not answer yet; wait until it serves metadata."""
    with _lock(node.data_dir):
        status = kafka_status(node)
        if status.reachable:
            if not kafka_answers(node, timeout=timeout):
                raise InfraError(f"something listens on {node.address} but does not answer as a Kafka broker")
            return status
        java = _require("java")
        libs = kafka_libs()
        node.data_dir.mkdir(parents=True, exist_ok=True)
        props = node.properties()
        config = node.data_dir / "server.properties"
        _write_private(config, "".join(f"{k}={v}\n" for k, v in props.items()))  # may hold a JAAS password
        log4j = node.data_dir / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={node.log_file}\n"
            "log4j.appender.file.MaxFileSize=20MB\n"
            "log4j.appender.file.MaxBackupIndex=3\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
        )
        classpath = f"{libs}/*"
        jvm = [java, f"-Xms{node.heap}", f"-Xmx{node.heap}", "-Djava.awt.headless=true"]
        jvm += [f"-Dlog4j.configuration=file:{log4j}", "-cp", classpath]
        log_dirs = Path(props["log.dirs"])
        if not (log_dirs / "meta.properties").exists():
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)]
                + _scram_format_args(node),
                capture_output=True,
                text=True,
            )
            if fmt.returncode != 0:
                output = _hide(fmt.stdout + fmt.stderr, node.scram_users.values())
                raise InfraError(f"formatting Kafka storage in {log_dirs} failed:\n{output[-2000:]}")
        proc = _spawn([*jvm, "kafka.Kafka", str(config)], node.data_dir / "stdout.log", node.data_dir)
        node.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                node.pid_file.unlink(missing_ok=True)
                if kafka_answers(node, timeout=5):
                    return kafka_status(node)  # another process won the race for the port
                raise InfraError(
                    f"Kafka exited with code {proc.returncode} while starting; "
                    f"last lines of {node.log_file}:\n"
                    + _tail(node.log_file)
                    + "\n"
                    + _tail(node.data_dir / "stdout.log", 10)
                )
            if port_open(node.host, node.port, timeout=0.5) and kafka_answers(node, timeout=5):
                return ServiceStatus("kafka", node.address, True, proc.pid, True, True, node.data_dir)
            time.sleep(0.3)
        _stop_pid(proc.pid, "kafka", 10)
        node.pid_file.unlink(missing_ok=True)
        raise InfraError(
            f"Kafka did not answer on {node.address} within {timeout:.0f} s; see {node.log_file}"
        )


def stop_kafka(node: KafkaNode, *, timeout: float = 60.0) -> bool:
    """Stop the broker this checkout started at ``node`` (SIGTERM, wait, SIGKILL); False if none ran."""
    with _lock(node.data_dir):
        pid = _recorded_pid(node.pid_file, "kafka.Kafka")
        if pid is None:
            node.pid_file.unlink(missing_ok=True)
            return False
        _stop_pid(pid, "kafka", timeout)
        node.pid_file.unlink(missing_ok=True)
        return True


_SCRAM_SAFE = re.compile(r"[A-Za-z0-9_.@-]{1,128}")


def _scram_format_args(node: KafkaNode) -> list[str]:
    """``--add-scram`` arguments of ``kafka-storage format`` for the node's SCRAM users."""
    args = []
    for name, password in node.scram_users.items():
        if not (_SCRAM_SAFE.fullmatch(name) and _SCRAM_SAFE.fullmatch(password)):
            raise InfraError(
                f"SCRAM user {name!r}: names and passwords created at format time may use only letters, "
                "digits and _.@- (create other users with kafka-configs --alter --add-config)"
            )
        args += ["--add-scram", f"{node.scram_mechanism}=[name={name},password={password}]"]
    return args

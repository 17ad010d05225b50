"""Development tooling: one local Kafka broker and one local Redis server, for the demo, tests and
``churnstream infra``. The worker, the monitor and the API never import this module; in production Kafka
and Redis are yours, reached through ``CHURN_KAFKA_BOOTSTRAP`` and ``CHURN_REDIS_URL``.

``churnstream infra up`` starts each service only when its address (``CHURN_KAFKA_BOOTSTRAP``,
``CHURN_REDIS_URL``) does not answer yet, and waits until Kafka serves metadata and Redis answers PING.
Kafka is Apache Kafka 4.1.1 in KRaft mode (one node that is both broker and controller); its jars are
fetched once with Maven into ``~/.cache/churnstream/kafka-4.1.1/libs``, outside the repository. Data, logs
and pid files live under ``CHURN_VAR_DIR`` (``var/kafka``, ``var/redis``). ``down`` stops only processes
this checkout started, by their recorded pid.

A node is described by :class:`KafkaNode` / :class:`RedisNode`, so code and tests can run a second broker
on another port and directory (``KafkaNode(port=29092, data_dir=...)``) with extra server properties, e.g.
SASL listeners, without touching the default one. The tests describe such a broker whose only client
listener is SASL_SSL (``tests/integration/secured.py``: SCRAM users created when its storage is formatted,
TLS from throwaway PEM files); a :class:`RedisNode` with a ``password`` starts with ``requirepass``.
Secrets go to files readable only by their owner, never onto a command line that ``ps`` shows (the SCRAM
users of ``kafka-storage format`` excepted, for the second it runs).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from churnstream.errors import InfraError
from churnstream.settings import Settings

KAFKA_VERSION = "4.1.1"
_KAFKA_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
)
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
_INSTALL_HINT = "install it with: sudo apt-get install -y openjdk-17-jre-headless maven redis-server"


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


@dataclass(frozen=True, slots=True)
class RedisNode:
    """One local Redis server with append-only persistence."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 6379
    # Started with ``requirepass`` when set (from the password of a redis://:pw@host URL).
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisNode:
        parts = urlsplit(settings.redis_url)
        if parts.scheme != "redis":
            raise InfraError(
                f"cannot start a local Redis for {settings.redacted_redis_url}: only redis://host:port URLs "
                "of this machine can be started by churnstream"
            )
        return cls(
            data_dir=(settings.var_dir / "redis").absolute(),
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``redis://`` URL of this node, with its password when it has one (not for printing)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What ``infra status`` reports about one service."""

    name: str
    address: str
    reachable: bool
    pid: int | None
    ours: bool
    started_now: bool = False
    data_dir: Path | None = None

    def describe(self) -> str:
        state = "reachable" if self.reachable else "NOT reachable"
        if self.ours:
            owner = f"pid {self.pid}, started by churnstream, data in {self.data_dir}"
        elif self.reachable:
            owner = "not started by churnstream (left alone)"
        else:
            owner = "not running"
        verb = "  (started now)" if self.started_now else ""
        return f"{self.name:<6} {self.address:<22} {state:<14} {owner}{verb}"


# --- helpers ---------------------------------------------------------------------------------------


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    if "://" in address:
        address = address.split("://", 1)[1]
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise InfraError(f"cannot read host:port from {address!r}") from None


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _recorded_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` when that process is alive and is what we started (guards pid reuse)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    cmd = _cmdline(pid)
    if cmd and marker not in cmd:
        return None
    return pid


@contextmanager
def _lock(directory: Path) -> Iterator[None]:
    """Serialise concurrent ``infra up``/``down`` calls of this checkout."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InfraError(f"{tool} is not installed; {_INSTALL_HINT}")
    return path


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _stop_pid(pid: int, name: str, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        raise InfraError(f"{name} (pid {pid}) did not stop even after SIGKILL")


def _spawn(argv: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session so Ctrl-C in the starting terminal does not reach it."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (the file may hold a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _hide(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (for error messages that quote tool output)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- Kafka -----------------------------------------------------------------------------------------


def kafka_cache_dir() -> Path:
    return Path.home() / ".cache" / "churnstream" / f"kafka-{KAFKA_VERSION}"


def kafka_libs(cache_dir: Path | None = None) -> Path:
    """The directory of Kafka's runtime jars, fetched with Maven on first use."""
    cache = cache_dir or kafka_cache_dir()
    libs = cache / "libs"
    if (cache / "libs.complete").exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = _require("mvn")
    cache.mkdir(parents=True, exist_ok=True)
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in _KAFKA_ARTIFACTS
    )
    (cache / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>churnstream</groupId><artifactId>kafka-runtime</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars with Maven into {libs} (once, ~45 MB)", flush=True)
    proc = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        cwd=cache,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        raise InfraError(
            f"Maven could not fetch the Kafka jars (exit {proc.returncode}); is Maven Central reachable?\n"
            + (proc.stdout + proc.stderr)[-2000:]
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (cache / "libs.complete").write_text(f"{KAFKA_VERSION}\n")
    return libs


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


# --- Redis -----------------------------------------------------------------------------------------


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """True when the Redis at ``url`` answers PING."""
    return redis_problem(url, timeout) is None


def redis_problem(url: str, timeout: float = 2.0) -> str | None:
    """None when the Redis at ``url`` answers PING, else why not, in words without the URL's password;
    a refused login reads "authentication failed: ..."."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
            return None
        finally:
            client.close()
    except redis.RedisError as exc:
        text = Settings(redis_url=url).redact(str(exc))
        refused = isinstance(exc, redis.AuthenticationError) or any(
            word in text for word in ("NOAUTH", "WRONGPASS", "AUTH ")
        )
        return f"authentication failed: {text}" if refused else text


def redis_status(node: RedisNode) -> ServiceStatus:
    pid = _recorded_pid(node.pid_file, "redis-server")
    return ServiceStatus(
        name="redis",
        address=node.address,
        reachable=port_open(node.host, node.port),
        pid=pid,
        ours=pid is not None,
        data_dir=node.data_dir,
    )


def start_redis(node: RedisNode, *, url: str | None = None, timeout: float = 30.0) -> ServiceStatus:
    """Start ``node`` (append-only persistence) if its address does not answer yet; wait for PING."""
    url = url or node.url
    with _lock(node.data_dir):
        status = redis_status(node)
        if status.reachable:
            problem = redis_problem(url)
            if problem is not None and problem.startswith("authentication failed"):
                raise InfraError(
                    f"Redis at {node.address}: {problem} (check the password in CHURN_REDIS_URL)"
                )
            if problem is not None:
                raise InfraError(f"something listens on {node.address} but does not answer Redis PING")
            return status
        server = _require("redis-server")
        node.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [server]
        if node.password:  # from a private file: a --requirepass argument would show in `ps`
            argv.append(str(_redis_auth_file(node)))
        argv += ["--bind", node.host, "--port", str(node.port), "--dir", str(node.data_dir)]
        argv += ["--appendonly", "yes", "--daemonize", "no", "--logfile", str(node.log_file)]
        argv += ["--save", "", "--protected-mode", "yes"]
        proc = _spawn(argv, node.data_dir / "stdout.log", node.data_dir)
        node.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                node.pid_file.unlink(missing_ok=True)
                if redis_answers(url):
                    return redis_status(node)
                raise InfraError(
                    f"redis-server exited with code {proc.returncode}; last lines of {node.log_file}:\n"
                    + _tail(node.log_file)
                )
            if port_open(node.host, node.port, timeout=0.2) and redis_answers(url):
                return ServiceStatus("redis", node.address, True, proc.pid, True, True, node.data_dir)
            time.sleep(0.1)
        _stop_pid(proc.pid, "redis", 10)
        node.pid_file.unlink(missing_ok=True)
        raise InfraError(
            f"Redis did not answer on {node.address} within {timeout:.0f} s; see {node.log_file}"
        )


def stop_redis(node: RedisNode, *, timeout: float = 30.0) -> bool:
    """Stop the Redis this checkout started at ``node``; False if none was running."""
    with _lock(node.data_dir):
        pid = _recorded_pid(node.pid_file, "redis-server")
        if pid is None:
            node.pid_file.unlink(missing_ok=True)
            return False
        _stop_pid(pid, "redis", timeout)
        node.pid_file.unlink(missing_ok=True)
        return True


# --- secured nodes: SASL/SCRAM over TLS for Kafka, a password for Redis --------------------------------

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


def _redis_auth_file(node: RedisNode) -> Path:
    password = node.password or ""
    if any(c in password for c in "\r\n\0"):
        raise InfraError("a Redis password cannot contain line breaks or NUL")
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    path = node.data_dir / "auth.conf"
    _write_private(path, f'requirepass "{escaped}"\n')
    return path


# --- the settings-level surface used by the CLI, tests and the demo -----------------------------------


def _local(host: str) -> bool:
    return host in _LOCAL_HOSTS


def ensure_kafka(settings: Settings, *, timeout: float = 120.0) -> ServiceStatus:
    """Make sure the Kafka of ``settings`` answers, starting a local broker when it is not running."""
    node = KafkaNode.from_settings(settings)
    if not port_open(node.host, node.port) and not _local(node.host):
        raise InfraError(f"Kafka at {settings.kafka_bootstrap} is not reachable and is not on this machine")
    return start_kafka(node, timeout=timeout)


def ensure_redis(settings: Settings, *, timeout: float = 30.0) -> ServiceStatus:
    """Make sure the Redis of ``settings`` answers PING, starting a local server when it is not running."""
    parts = urlsplit(settings.redis_url)
    if parts.scheme != "redis" or not _local(parts.hostname or "127.0.0.1"):
        problem = redis_problem(settings.redis_url)
        if problem is None:
            host, port = parts.hostname or "", parts.port or 6379
            return ServiceStatus("redis", f"{host}:{port}", True, None, False)
        raise InfraError(
            f"Redis at {settings.redacted_redis_url} does not answer and cannot be started locally "
            f"({problem})"
        )
    return start_redis(RedisNode.from_settings(settings), url=settings.redis_url, timeout=timeout)


def ensure_all(settings: Settings) -> list[ServiceStatus]:
    """Kafka and Redis both up (started when needed)."""
    return [ensure_kafka(settings), ensure_redis(settings)]


def status_all(settings: Settings) -> list[ServiceStatus]:
    """Current state of both services, without changing anything."""
    out = [kafka_status(KafkaNode.from_settings(settings))]
    if urlsplit(settings.redis_url).scheme == "redis":
        out.append(redis_status(RedisNode.from_settings(settings)))
    else:
        out.append(
            ServiceStatus(
                "redis", settings.redacted_redis_url, redis_answers(settings.redis_url), None, False
            )
        )
    return out


def stop_all(settings: Settings) -> dict[str, bool]:
    """Stop what this checkout started (Kafka first, then Redis); returns service -> was stopped."""
    stopped = {"kafka": stop_kafka(KafkaNode.from_settings(settings))}
    if urlsplit(settings.redis_url).scheme == "redis":
        stopped["redis"] = stop_redis(RedisNode.from_settings(settings))
    else:
        stopped["redis"] = False
    return stopped


def cli(args: Any, settings: Settings) -> int:
    """``churnstream infra up|down|status``."""
    if args.action == "up":
        for status in ensure_all(settings):
            print(status.describe(), flush=True)
        return 0
    if args.action == "down":
        before = status_all(settings)
        stopped = stop_all(settings)
        for status in before:
            if stopped.get(status.name):
                print(f"{status.name:<6} {status.address:<22} stopped (pid {status.pid})")
            elif status.reachable:
                print(f"{status.name:<6} {status.address:<22} left running (not started by churnstream here)")
            else:
                print(f"{status.name:<6} {status.address:<22} not running")
        return 0
    statuses = status_all(settings)
    for status in statuses:
        print(status.describe())
    return 0 if all(s.reachable for s in statuses) else 1

"""One local Redis server with append-only persistence: its description, its process, its password."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from churnstream.errors import InfraError
from churnstream.local_infra._processes import (
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
        """``redis://`` URL of this node, with its password when it has one (not for printing).

        >>> RedisNode(data_dir=Path("var/redis"), port=6380, password="p@ss word").url
        'redis://:p%40ss%20word@127.0.0.1:6380/0'
        """
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"


def redis_answers(url: str, timeout: float = 2.0) -> bool:
    """True when the Redis at ``url`` answers PING."""
    return redis_problem(url, timeout) is None


def redis_problem(url: str, timeout: float = 2.0) -> str | None:
    """None when the Redis at ``url`` answers PING, else why not, in words without the URL's password;
    a refused login reads "authentication failed: ...". A ``redis+cluster://`` URL is reached as the
    workers reach it (:func:`~churnstream.features.redis_store.redis_client`): any node of the cluster."""
    import redis
    from redis.exceptions import RedisClusterException

    from churnstream.features.redis_store import redis_client

    try:
        client = redis_client(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
            return None
        finally:
            client.close()
    except (redis.RedisError, RedisClusterException) as exc:
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


def _redis_auth_file(node: RedisNode) -> Path:
    password = node.password or ""
    if any(c in password for c in "\r\n\0"):
        raise InfraError("a Redis password cannot contain line breaks or NUL")
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    path = node.data_dir / "auth.conf"
    _write_private(path, f'requirepass "{escaped}"\n')
    return path

"""A worker's HTTP endpoints: ``/metrics`` (Prometheus), ``/health`` (liveness), ``/ready`` (readiness).

``/health`` answers 200 while the worker's loop keeps turning and 503 once it has been stuck longer than
its limit: a supervisor restarts it. ``/ready`` answers 200 only while what the worker depends on is
reachable right now (Kafka; Redis for the scorer) and its loop turned recently, else 503 with the
reasons: a load balancer or an operator looks there first. Both bodies are JSON. The checks run in the
server's thread with short timeouts of their own, so a hung Redis turns ``/ready`` to 503 within seconds
even while the worker's own loop is blocked on it.
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from churnstream.errors import ChurnstreamError
from churnstream.settings import Settings

Answer = tuple[bool, dict[str, Any]]  # (healthy or ready, the JSON body)


class DependencyProbe:
    """Reachability of Kafka and (optionally) Redis, each checked with a timeout of ``timeout`` seconds
    and remembered for ``cache_seconds`` so frequent probes do not load the services."""

    def __init__(self, settings: Settings, *, redis: bool, timeout: float = 1.0, cache_seconds: float = 1.0):
        self.settings = settings
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._redis_client: Any = None
        self._use_redis = redis
        self._admin: Any = None
        self._cached: tuple[float, dict[str, str | None]] | None = None
        self._lock = threading.Lock()

    def problems(self) -> dict[str, str | None]:
        """``{"kafka": None or why not, "redis": ...}``: None where the service answered in time."""
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            found = {"kafka": self._kafka()}
            if self._use_redis:
                found["redis"] = self._redis()
            self._cached = (time.monotonic(), found)
            return found

    def _kafka(self) -> str | None:
        from confluent_kafka import KafkaException

        from churnstream.streams.topics import make_admin

        if self._admin is None:
            self._admin = make_admin(self.settings)
        try:
            self._admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            return (
                f"Kafka at {self.settings.kafka_bootstrap} does not answer ({self.settings.redact(str(exc))})"
            )
        return None

    def _redis(self) -> str | None:
        from churnstream.features.redis_store import redis_client

        if self._redis_client is None:
            self._redis_client = redis_client(
                self.settings.redis_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        try:
            self._redis_client.ping()
        except Exception as exc:  # redis-py raises many types; all mean "not reachable now"
            why = self.settings.redact(str(exc))
            return f"Redis at {self.settings.redacted_redis_url} does not answer ({why})"
        return None


def listening_socket(host: str, port: int, *, setting: str, host_setting: str) -> socket.socket:
    """A socket listening on ``host:port``; :class:`ChurnstreamError` when it cannot, naming ``setting``
    (the variable that chose the port) when another process holds the port, else ``host_setting``.

    >>> names = {"setting": "CHURN_API_PORT", "host_setting": "CHURN_API_HOST"}
    >>> held = listening_socket("127.0.0.1", 0, **names)
    >>> listening_socket("127.0.0.1", held.getsockname()[1], **names)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    churnstream.errors.ChurnstreamError: cannot listen on 127.0.0.1:...: address already in use ...; set ...
    >>> held.close()
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn and http.server choose
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EADDRINUSE:
            raise ChurnstreamError(
                f"cannot listen on {host}:{port}: {why}; set {setting} to a free port, or stop what holds it"
            ) from None
        raise ChurnstreamError(f"cannot listen on {host}:{port}: {why}; check {host_setting}") from None


def serve_http(
    host: str,
    port: int,
    *,
    metrics: Callable[[], bytes],
    health: Callable[[], Answer],
    ready: Callable[[], Answer],
    name: str = "worker-http",
    setting: str = "CHURN_METRICS_PORT",
) -> ThreadingHTTPServer:
    """``/metrics``, ``/health`` and ``/ready`` in a daemon thread (see the module docstring); ``setting``
    names the variable that chose the port, for the error when it is taken."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            status = 200
            if self.path.startswith("/metrics"):
                body, ctype = metrics(), "text/plain; version=0.0.4"
            elif self.path.startswith(("/health", "/ready")):
                ok, answer = (health if self.path.startswith("/health") else ready)()
                status = 200 if ok else 503
                body, ctype = json.dumps(answer).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    sock = listening_socket(host, port, setting=setting, host_setting="CHURN_WEB_HOST")
    server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock  # the address family create_server chose: IPv6 hosts too
    server.server_name, server.server_port = host, sock.getsockname()[1]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server

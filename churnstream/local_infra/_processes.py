"""Process, pid-file, port and secret helpers shared by the local Kafka broker and Redis server."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from churnstream.errors import InfraError

_INSTALL_HINT = "install it with: sudo apt-get install -y openjdk-17-jre-headless maven redis-server"


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    """Host and port of a bootstrap address, with ``default_port`` when it names none.

    >>> _host_port("PLAINTEXT://broker:29092", 9092), _host_port("[::1]:9093", 9092)
    (('broker', 29092), ('::1', 9093))
    >>> _host_port("kafka", 9092)
    ('kafka', 9092)
    """
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
    """``text`` with every secret replaced by ``***`` (for error messages that quote tool output).

    >>> _hide("user=alice password=s3cret", ["s3cret", ""])
    'user=alice password=***'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text

"""Worker processes, started and stopped: the demo, the integration tests and the benchmarks start
``churnstream score`` / ``churnstream monitor`` (or any other command) through :func:`start_worker` and
stop them through :meth:`WorkerProcess.stop` (SIGTERM, wait, SIGKILL after a timeout).

A worker gets its settings as ``CHURN_*`` variables (:func:`churnstream.settings.child_env`), a
``CHURN_WORKER_ID`` when given one, and a log file: a file, never a pipe, since a full pipe would block
the worker.

>>> from churnstream.settings import Settings
>>> import tempfile, pathlib
>>> log = pathlib.Path(tempfile.mkdtemp()) / "version.log"
>>> worker = start_worker(["--version"], Settings(), log=log, worker_id="doc-1")
>>> worker.wait(60), worker.stop()
(0, 0)
>>> log.read_text().startswith("churnstream")
True
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

from churnstream.errors import InfraError
from churnstream.settings import Settings, child_env

CHURNSTREAM_MODULE = (sys.executable, "-m", "churnstream.cli")
LOG_TAIL_LINES = 30


class WorkerProcess:
    """A running (or finished) worker subprocess with its log file; ``poll``, ``wait``, ``send_signal``,
    ``kill`` and ``pid`` are the :class:`subprocess.Popen`'s."""

    def __init__(self, *, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.killed = False  # True once :meth:`stop` had to SIGKILL it

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.proc.stdout

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()

    def check(self) -> None:
        """Raise :class:`InfraError` with the end of the log when the process has exited."""
        code = self.proc.poll()
        if code is not None:
            raise InfraError(f"{self.name} exited with code {code}; last lines of {self.log}:\n{self.tail()}")

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log, indented."""
        return tail(self.log, lines)

    def stop(self, timeout: float = 30.0, kill_timeout: float = 30.0) -> int:
        """SIGTERM (when still running), wait up to ``timeout`` seconds, then SIGKILL (:attr:`killed`);
        returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_or_kill(timeout, kill_timeout)

    def wait_or_kill(self, timeout: float, kill_timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` seconds for the exit, then SIGKILL (:attr:`killed`); the exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.proc.kill()
            return self.proc.wait(kill_timeout)


def start_worker(
    command: str | Sequence[str],
    settings: Settings,
    *,
    log: Path,
    worker_id: str | None = None,
    env: Mapping[str, str | None] | None = None,
    program: Sequence[str] = CHURNSTREAM_MODULE,
    cwd: Path | None = None,
    stdout: Literal["log", "discard", "pipe"] = "log",
    own_session: bool = False,
    name: str | None = None,
) -> WorkerProcess:
    """Start ``program command`` (``churnstream <command>`` by default) with ``settings`` as ``CHURN_*``
    variables, plus ``CHURN_WORKER_ID=worker_id`` when given and the ``env`` overrides (which win; None
    removes a variable).

    Its stderr is appended to ``log``, and so is its stdout unless ``stdout`` says to discard it or to
    pipe it (:attr:`WorkerProcess.stdout`). ``own_session`` puts it in a session of its own, so Ctrl-C
    in a terminal reaches only the caller, which stops its workers in order.
    """
    argv = [*program, *([command] if isinstance(command, str) else command)]
    full = child_env(settings)
    if worker_id is not None:
        full["CHURN_WORKER_ID"] = worker_id
    for var, value in (env or {}).items():
        if value is None:
            full.pop(var, None)
        else:
            full[var] = value
    log.parent.mkdir(parents=True, exist_ok=True)
    out: int | IO[bytes]
    with log.open("ab") as handle:
        out = {"discard": subprocess.DEVNULL, "pipe": subprocess.PIPE}.get(stdout, handle)
        proc = subprocess.Popen(
            argv,
            env=full,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=handle,
            start_new_session=own_session,
        )
    label = name or (command if isinstance(command, str) else " ".join(command))
    return WorkerProcess(name=label, proc=proc, log=log)


def stop_workers(workers: Iterable[WorkerProcess], timeout: float = 60.0) -> list[int]:
    """SIGTERM to every worker at once, then wait for each (SIGKILL after ``timeout`` seconds), so a
    group stops in one rebalance rather than one per worker; returns the exit codes."""
    workers = list(workers)
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    return [worker.wait_or_kill(timeout) for worker in workers]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, indented."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text[-lines:])

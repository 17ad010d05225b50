"""The line ``churnstream infra up|status`` prints about one service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
        """One line of the status table.

        >>> ours = ServiceStatus("redis", "127.0.0.1:6379", True, 42, True, data_dir=Path("/srv/redis"))
        >>> print(ours.describe())
        redis  127.0.0.1:6379         reachable      pid 42, started by churnstream, data in /srv/redis
        >>> print(ServiceStatus("kafka", "10.0.0.5:9092", False, None, False).describe())
        kafka  10.0.0.5:9092          NOT reachable  not running
        """
        state = "reachable" if self.reachable else "NOT reachable"
        if self.ours:
            owner = f"pid {self.pid}, started by churnstream, data in {self.data_dir}"
        elif self.reachable:
            owner = "not started by churnstream (left alone)"
        else:
            owner = "not running"
        verb = "  (started now)" if self.started_now else ""
        return f"{self.name:<6} {self.address:<22} {state:<14} {owner}{verb}"

"""What a demo run is told (:class:`DemoConfig`) and what it saw (:class:`DemoResult`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENT_FILES = ("customer_profiles", "orders", "support_tickets")
TRAIN_UNTIL = "1997-10-01T00:00:00Z"
DEMO_PREFIX = "demo."
DEMO_DIR = Path("var/demo")
DRIFT_WINDOWS = 8
STEPS = 11


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What the demo does; the defaults are the full CDNOW data set under ``var/demo``."""

    prefix: str = DEMO_PREFIX
    work_dir: Path = DEMO_DIR
    customers: int | None = None
    train_until: str = TRAIN_UNTIL
    replay_until: str | None = None
    seed: int = 7
    chunk_days: float = 30.0
    # Silent customers are rescored when their silence reaches these days. The default milestones
    # (7, 14, 30, 60, 90, 180) make twice as many sweeps as events on this cohort, most of whom buy
    # once: more than the demo's five minutes allow on two cores.
    sweep_milestones_days: str = "30,90"
    drift_windows: int = DRIFT_WINDOWS
    keep_running: bool = False
    serve: bool = False
    timeout_s: float = 900.0
    progress: bool | None = None


@dataclass(slots=True)
class DemoResult:
    """What the demo saw on the topics; the summary prints it and the tests compare it with the topics."""

    model_version: str = ""
    events_history: int = 0
    events_replay: int = 0
    broken_sent: int = 0
    predictions: Counter[str] = field(default_factory=Counter)
    predictions_replay: Counter[str] = field(default_factory=Counter)
    alerts: int = 0
    alerts_replay: int = 0
    alerted_customers: int = 0
    outcomes: int = 0
    dead_letters: int = 0
    drift_reports: list[dict[str, Any]] = field(default_factory=list)
    auc: dict[str, float | None] = field(default_factory=dict)
    auc_rows: dict[str, int] = field(default_factory=dict)
    monitor_started: bool = False
    monitor_health: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

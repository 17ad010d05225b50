"""``./run``, the newcomer's entry point: its usage lists its commands and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_run_help_lists_the_commands_and_no_code() -> None:
    done = subprocess.run(["bash", str(ROOT / "run"), "--help"], capture_output=True, text=True, timeout=30)
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[1:]] == ["test", "demo", "infra", "setup"], done.stdout
    assert "set -euo pipefail" not in done.stdout

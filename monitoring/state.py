"""The monitor's local state: where reporting stopped, the detectors at that point, bootstrapped references.

The open window itself is not stored: its records stay uncommitted in Kafka, so a restarted monitor
reads them again. What Kafka offsets cannot say is kept here, in ``state.json`` (replaced atomically):

- per partition, the first record that is not yet wholly reported and how many of its predictions
  are (a record can straddle two windows), plus the offset known to be committed at that moment;
- the last reported window's number, and the concept-drift detector and rolling AUCs as they were
  when it closed (so the next window's ``concept_drift`` and ``model_auc`` continue where they were);
- counters shown on the monitor's pages.

A model version whose reference was taken from its first windows keeps it in ``references/``, so a
restart does not spend two more windows on a new one.

>>> import tempfile
>>> state = MonitorState(Path(tempfile.mkdtemp()))
>>> state.load() is None
True
>>> position = Position(offset=7, rows=120, committed=5)
>>> state.save(positions={"t/0": position}, seq=3, detectors=b"x", counters={})
>>> saved = state.load()
>>> saved.positions["t/0"], saved.seq, saved.detectors
(Position(offset=7, rows=120, committed=5), 3, b'x')
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Position:
    """Records before ``offset`` are reported; so are the first ``rows`` predictions of the one at it.

    ``committed`` is the consumer group's committed offset when this was written (None if unknown): a
    restarted monitor that finds its group anywhere in ``[committed, offset]`` resumes exactly here;
    elsewhere (offsets reset by hand) it ignores the position.
    """

    offset: int
    rows: int = 0
    committed: int | None = None

    def applies_to(self, first_offset: int) -> bool:
        """Whether a monitor whose first record of the partition is ``first_offset`` resumes here."""
        return (self.committed is None or first_offset >= self.committed) and first_offset <= self.offset


@dataclass(slots=True)
class SavedState:
    positions: dict[str, Position]
    seq: int
    detectors: bytes | None
    counters: dict[str, Any] = field(default_factory=dict)


class MonitorState:
    """Reads and writes the files of one monitor (one consumer group) under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> SavedState | None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable monitor state %s: %s", self.path, exc)
            return None
        detectors = raw.get("detectors")
        return SavedState(
            positions={
                key: Position(int(p["offset"]), int(p.get("rows", 0)), p.get("committed"))
                for key, p in raw.get("positions", {}).items()
            },
            seq=int(raw.get("seq", 0)),
            detectors=base64.b64decode(detectors) if detectors else None,
            counters=dict(raw.get("counters", {})),
        )

    def save(
        self,
        *,
        positions: dict[str, Position],
        seq: int,
        detectors: bytes | None,
        counters: dict[str, Any],
    ) -> None:
        """Replace the state file atomically (write, fsync, rename)."""
        record = {
            "positions": {
                key: {"offset": p.offset, "rows": p.rows, "committed": p.committed}
                for key, p in positions.items()
            },
            "seq": seq,
            "detectors": base64.b64encode(detectors).decode("ascii") if detectors else None,
            "counters": counters,
        }
        _atomic_write(self.path, json.dumps(record).encode("utf-8"))

    def reference_path(self, model_version: str) -> Path:
        return self.directory / "references" / f"{_UNSAFE.sub('_', model_version)}.parquet"

    def save_reference(self, model_version: str, frame: Any) -> None:
        path = self.reference_path(model_version)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)

    def load_reference(self, model_version: str) -> Any | None:
        path = self.reference_path(model_version)
        if not path.is_file():
            return None
        import pandas as pd

        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable reference %s: %s", path, exc)
            return None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)

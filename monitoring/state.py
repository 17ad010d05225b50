"""The monitor's durable state: where reporting stopped, the detectors at that point, bootstrapped references.

The open window itself is not stored: its records stay uncommitted in Kafka, so a restarted monitor
reads them again. What Kafka offsets cannot say is kept in one value (replaced whole, so a crash never
leaves half of it): in a table backed by a changelog topic when one is given (the running monitor's faust
table, :data:`STATE_KEY`; a monitor on a fresh machine reads it back from Kafka), else in the local
``state.json`` (replaced atomically; also read once when the table has nothing yet):

- per partition, the first record that is not yet wholly reported and how many of its predictions
  are (a record can straddle two windows), plus the offset known to be committed at that moment;
- the last reported window's number, and the concept-drift detector, rolling AUCs and the label book
  (:class:`~churnstream.monitoring.performance.LabelBook`: per window whose labels are still arriving,
  two small histograms) as they were when it closed (so the next window's ``concept_drift``,
  ``model_auc`` and ``realized_performance`` continue where they were);
- counters shown on the monitor's pages.

A model version whose reference was taken from its first windows keeps it as a Parquet file in the
``references`` directory (the running monitor's is beside its reports, ``<report dir>/references/<app
id>/``; never in the table: a reference is far larger than a Kafka message), so a restart does not spend two
more windows on a new one. So are the columns of windows published light while their full Evidently report is
still to be drawn (``<report dir>/later/<app id>/<report id>.arrow``, removed once drawn): a restarted
monitor draws them in full too.

The value is zlib-compressed JSON: the rolling AUCs hold at most 3 x 5,000 outcomes (about 170 KiB
pickled, 130 KiB in the value when full), the concept-drift detector about 2 KiB and the label book a few
histograms per window still waiting for labels (7 to 11 KiB on the tests' runs, whose values are 26 to 70
KiB), so it stays far below Kafka's default 1 MiB message limit; one over :data:`MAX_VALUE_BYTES` is
refused with an error rather than lost by the broker.

>>> import tempfile
>>> state = MonitorState(Path(tempfile.mkdtemp()))
>>> state.load() is None
True
>>> position = Position(offset=7, rows=120, committed=5)
>>> state.save(positions={"t/0": position}, seq=3, detectors=b"x", counters={})
>>> saved = state.load()
>>> saved.positions["t/0"], saved.seq, saved.detectors
(Position(offset=7, rows=120, committed=5), 3, b'x')
>>> table = {}
>>> in_table = MonitorState(Path(tempfile.mkdtemp()), table=table)
>>> in_table.save(positions={"t/0": position}, seq=4, detectors=b"y" * 1000, counters={"n": 1})
>>> list(table), len(table[STATE_KEY]) < 1000, in_table.load().seq, in_table.path.exists()
(['state'], True, 4, False)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
import zlib
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
STATE_KEY = "state"  # the key of the state in the monitor's table
MAX_VALUE_BYTES = 900 * 1024  # below the broker's default message.max.bytes (1 MiB)
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
    """Reads and writes the state of one monitor (one consumer group): in ``table`` (a mapping of bytes,
    such as a faust table backed by a changelog topic) when given, else in ``directory``; its references in
    ``references`` (default: ``directory/references``), the columns of light windows still to be drawn in
    full in ``later`` (default: ``directory/later``)."""

    def __init__(
        self,
        directory: Path,
        *,
        table: MutableMapping[str, bytes] | None = None,
        references: Path | None = None,
        later: Path | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.table = table
        self.references = Path(references) if references is not None else self.directory / "references"
        self.later = Path(later) if later is not None else self.directory / "later"

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def load(self) -> SavedState | None:
        """The saved state: the table's when it has one, else the local file's; None when neither has."""
        raw: dict[str, Any] | None = None
        if self.table is not None:
            value = self.table.get(STATE_KEY)
            if value is not None:
                try:
                    raw = json.loads(zlib.decompress(value))
                except (zlib.error, ValueError) as exc:
                    log.warning("ignoring the unreadable monitor state in the table: %s", exc)
        if raw is None:
            raw = self._load_file()
        if raw is None:
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
        """Replace the state whole: the table's value, or the local file atomically (write, fsync, rename)."""
        record = {
            "positions": {
                key: {"offset": p.offset, "rows": p.rows, "committed": p.committed}
                for key, p in positions.items()
            },
            "seq": seq,
            "detectors": base64.b64encode(detectors).decode("ascii") if detectors else None,
            "counters": counters,
        }
        data = json.dumps(record).encode("utf-8")
        if self.table is None:
            _atomic_write(self.path, data)
            return
        value = zlib.compress(data, 6)
        if len(value) > MAX_VALUE_BYTES:
            raise ValueError(
                f"the monitor's state is {len(value)} bytes compressed, more than a Kafka message may hold "
                f"({MAX_VALUE_BYTES}); lower the rolling AUC window"
            )
        self.table[STATE_KEY] = value

    def save_counters(self, counters: dict[str, Any]) -> bool:
        """Replace the saved state's counters, the rest as it is (counts that change between windows, as
        a light window drawn in full later); False when nothing is saved yet (the next :meth:`save`
        carries them)."""
        saved = self.load()
        if saved is None:
            return False
        self.save(positions=saved.positions, seq=saved.seq, detectors=saved.detectors, counters=counters)
        return True

    def _load_file(self) -> dict[str, Any] | None:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable monitor state %s: %s", self.path, exc)
            return None
        return raw if isinstance(raw, dict) else None

    def reference_path(self, model_version: str) -> Path:
        return self.references / f"{_UNSAFE.sub('_', model_version)}.parquet"

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

    # -- light windows still to be drawn in full ---------------------------------------------------
    def later_path(self, report_id: str) -> Path:
        return self.later / f"{_UNSAFE.sub('_', report_id)}.arrow"

    def later_ids(self) -> set[str]:
        """The report ids whose columns are saved to draw them in full later."""
        if not self.later.is_dir():
            return set()
        return {p.stem for p in self.later.glob("*.arrow")}

    def save_later(self, report_id: str, columns: dict[str, Any], meta: dict[str, Any]) -> None:
        """Save a light window's columns (numeric arrays of one length) and what drawing it needs besides
        its saved message (``meta``, JSON), replacing the file atomically. Arrow's file format, uncompressed:
        ~2.5 ms for 5,000 rows of 29 columns, 16 ms for 50,000 (Parquet: 13 and 150 ms), on the monitor's
        event loop."""
        import pyarrow as pa
        import pyarrow.feather as feather

        path = self.later_path(report_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(dict(columns)).replace_schema_metadata({LATER_META: json.dumps(meta)})
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        feather.write_feather(table, tmp, compression="uncompressed")
        os.replace(tmp, path)

    def load_later(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """Every saved light window: (report id, columns as numpy arrays, meta); unreadable files are
        logged and removed."""
        import pyarrow.feather as feather

        out = []
        for report_id in sorted(self.later_ids()):
            path = self.later_path(report_id)
            try:
                table = feather.read_table(path)
                meta = json.loads((table.schema.metadata or {})[LATER_META.encode()])
                columns = {name: table.column(name).to_numpy() for name in table.column_names}
                if not isinstance(meta, dict):
                    raise ValueError("its meta is not an object")
            except Exception as exc:  # anything pyarrow may raise on a file it did not write
                log.warning("ignoring the unreadable light window %s: %s", path, exc)
                self.drop_later(report_id)
                continue
            out.append((report_id, columns, meta))
        return out

    def drop_later(self, report_id: str) -> None:
        """Remove a light window's file; one that cannot be removed is logged (a read-only volume)."""
        try:
            self.later_path(report_id).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.later_path(report_id), exc)


LATER_META = "churnstream.later"  # the Arrow schema's metadata key of a light window's meta


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)

"""The feature store in this process's memory: the same semantics as the Redis one, for tests and
offline use (customers kept as the JSON a Redis store would hold, so both round-trip states alike).

>>> from churnstream.events import OrderEvent
>>> store = MemoryFeatureStore(lateness_ms=0)
>>> order = OrderEvent("e1", "c", 5, "o1", 9.5)
>>> [r.status for r in store.update([order, order])]  # the same event twice
['applied', 'duplicate']
>>> store.features("c")["orders_total"], store.watermark(), store.customers()
(1, 5, ['c'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from churnstream.errors import StoreError
from churnstream.features import layout
from churnstream.features.state import CustomerState, dump_state, new_state
from churnstream.features.store import CONFLICT, Due, FeatureStore, LearnerRecord, PartitionWrite, Transaction

__all__ = ["MemoryFeatureStore"]


class MemoryFeatureStore(FeatureStore):
    """In-process store with the same semantics as the Redis one (tests, offline use)."""

    def __init__(self, *, lateness_ms: int, partitions: int | None = None) -> None:
        super().__init__(lateness_ms=lateness_ms, partitions=partitions)
        self._data: dict[tuple[int, str], tuple[int, bytes]] = {}
        self._meta: dict[int, dict[str, str]] = {}
        self._blob: dict[tuple[int, str], bytes] = {}
        self._active: dict[int, dict[str, int]] = {}
        self._due: dict[int, dict[str, int]] = {}
        self._history: dict[int, dict[int, LearnerRecord]] = {}  # partition -> {time: learner record}
        self._layout_record: dict[str, Any] | None = None

    def _holders(self, places: set[tuple[str, int]]) -> set[tuple[str, int]]:
        return {(cid, p) for cid, p in places if (p, cid) in self._data}

    def _load(self, customers: Mapping[str, int]) -> dict[str, tuple[int, CustomerState]]:
        out = {}
        for cid, p in customers.items():
            version, blob = self._data.get((p, cid), (0, b""))
            out[cid] = (version, orjson.loads(blob) if blob else new_state())
        return out

    def _save(
        self, tx: Transaction, writes: dict[int, PartitionWrite], after: Callable[[], None] | None
    ) -> None:
        if after is not None:
            after()
        refused = False
        for p, w in writes.items():
            meta = self._meta.setdefault(p, {})
            if any(
                self._data.get((p, cid), (0, b""))[0] != tx.versions.get(cid, 0) for cid in w.customers
            ) or any(meta.get(name) != value for name, value in w.expect.items()):
                refused = True
                continue
            for cid in w.customers:
                state = tx.states[cid]
                tx.versions[cid] = tx.versions.get(cid, 0) + 1
                self._data[(p, cid)] = (tx.versions[cid], dump_state(state))
                if state["max"] is not None:
                    self._active.setdefault(p, {})[cid] = state["max"]
            meta.update(w.meta)
            for name, value, append in w.blobs:
                self._blob[(p, name)] = (self._blob.get((p, name), b"") if append else b"") + value
            for record in w.history:
                history = self._history.setdefault(p, {})
                if not history and not record.complete:
                    meta[layout.LEARNER_HISTORY_FROM] = str(record.at)
                history[record.at] = LearnerRecord(record.at, record.reached_by, record.state)
                if len(history) > record.keep:
                    for at in sorted(history)[: len(history) - record.keep]:
                        del history[at]
                    meta[layout.LEARNER_HISTORY_FROM] = str(min(history))
            due = self._due.setdefault(p, {})
            for cid, t in w.due.items():
                if t is None:
                    due.pop(cid, None)
                else:
                    due[cid] = t
            if w.latest is not None and int(meta.get(layout.LATEST, w.latest)) <= w.latest:
                meta[layout.LATEST] = str(w.latest)
        if refused:
            raise StoreError(CONFLICT)

    def forget(self, customer_id: str) -> bool:
        forgotten = False
        for p in self._partitions_of(customer_id):
            found = self._data.pop((p, customer_id), None) is not None
            for index in (self._active, self._due):
                found = index.get(p, {}).pop(customer_id, None) is not None or found
            if found:
                meta = self._meta.setdefault(p, {})
                meta[layout.ERASED] = str(int(meta.get(layout.ERASED, 0)) + 1)
            forgotten = forgotten or found
        return forgotten

    def erased_count(self, partition: int) -> int | None:
        return int(self._meta.get(partition, {}).get(layout.ERASED, 0))

    def watermark(self) -> int | None:
        times = [int(m[layout.LATEST]) for m in self._meta.values() if layout.LATEST in m]
        return max(times) if times else None

    def _field(self, partition: int, name: str) -> str | None:
        return self._meta.get(partition, {}).get(name)

    def _write_fields(self, values: Mapping[int, Mapping[str, str]]) -> None:
        for p, fields in values.items():
            self._meta.setdefault(p, {}).update(fields)

    def _blobs(self, partition: int, names: Sequence[str]) -> list[bytes | None]:
        return [self._blob.get((partition, name)) for name in names]

    def _learner_history(
        self, pairs: Sequence[tuple[int, int]]
    ) -> list[tuple[list[LearnerRecord] | None, int | None]]:
        out: list[tuple[list[LearnerRecord] | None, int | None]] = []
        for p, before in pairs:
            history = self._history.get(p)
            known_from = self._meta.get(p, {}).get(layout.LEARNER_HISTORY_FROM)
            found = (
                None
                if not history
                else [history[at] for at in sorted(history, reverse=True) if at < before][:2]
            )
            out.append((found, None if known_from is None else int(known_from)))
        return out

    def _layout(self) -> dict[str, Any] | None:
        return self._layout_record

    def _write_layout(self, record: dict[str, Any]) -> None:
        self._layout_record = dict(record)

    def _active_rows(
        self, windows: Sequence[tuple[int | None, int]], partitions: Sequence[int], *, wait: bool
    ) -> list[list[tuple[int, str, int]]]:
        out = []
        for since, before in windows:
            lo = -(2**62) if since is None else since
            out.append(
                [
                    (ts, cid, p)
                    for p in partitions
                    for cid, ts in self._active.get(p, {}).items()
                    if lo <= ts < before
                ]
            )
        return out

    def due_before(self, until: Mapping[int, int], *, limit: int) -> dict[int, Due]:
        found: dict[int, Due] = {}
        for p, t in until.items():
            rows = sorted((d, c) for c, d in self._due.get(p, {}).items())
            now = [cid for d, cid in rows if d <= t]
            # as Redis answers: it cannot tell "exactly limit" from "more", so both say "ask again at t"
            later = [t] if len(now) >= limit else [d for d, _ in rows if d > t][:1]
            found[p] = Due(now[:limit], later[0] if later else None)
        return found

    def customers(self) -> list[str]:
        return sorted({cid for _, cid in self._data})

    def clear(self) -> None:
        self.__init__(lateness_ms=self.lateness_ms, partitions=self.partitions)  # type: ignore[misc]

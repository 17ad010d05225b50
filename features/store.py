"""The feature store: per-customer state behind one small interface, in memory or in Redis.

:meth:`FeatureStore.update` takes a micro-batch of validated events and, per event, returns the
customer's features as of that event's time. It is

* idempotent per ``event_id`` — a redelivered event changes nothing (its features are recomputed, so a
  re-emitted prediction carries the same numbers);
* correct for out-of-order events within the allowed lateness — features as of t use only events <= t;
* atomic and batched — the Redis store reads every touched customer in one round trip and writes them
  back in one Lua script that checks each customer's version first (compare-and-set), so a batch is
  applied whole or not at all, and a zombie worker after a rebalance cannot overwrite newer state.

Memory stays bounded: old events are folded into totals (see :mod:`features.state`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from churnstream.errors import ProcessingError, StoreError
from churnstream.events import Event, LabelEvent
from features.definitions import features_as_of
from features.state import DUPLICATE, LONGEST_WINDOW_MS, apply_event, new_state

Features = dict[str, float | int | None]

_MAX_CONFLICT_RETRIES = 5


@dataclass(slots=True)
class UpdateResult:
    """What one event did: ``status`` is ``applied``, ``duplicate`` or ``rejected`` (see ``error``)."""

    event: Event
    status: str
    features: Features | None
    error: ProcessingError | None = None


class FeatureStore(ABC):
    """Per-customer feature state; subclasses only load and atomically save versioned states."""

    def __init__(self, *, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms

    # -- the interface ---------------------------------------------------------------------------
    def update(self, events: Sequence[Event]) -> list[UpdateResult]:
        """Apply a micro-batch and return, per event in order, its features as of its own time.

        The write may still be in flight when this returns; :meth:`flush` makes it durable.
        """
        customer_ids = {e.customer_id for e in events if not isinstance(e, LabelEvent)}
        for _ in range(_MAX_CONFLICT_RETRIES):
            loaded = self._load(customer_ids)
            states = {cid: state for cid, (_, state) in loaded.items()}
            try:
                results = [self._apply(states, e) for e in events]
            except BaseException:
                self.reset()  # states may be half-updated in place
                raise
            watermark = max((e.timestamp for e in events if not isinstance(e, LabelEvent)), default=None)
            changed = {
                cid: (loaded[cid][0], states[cid])
                for cid in {r.event.customer_id for r in results if r.status == "applied"}
                if cid in states
            }
            if not changed or self._save(changed, watermark):
                return results
            self.reset()
        raise StoreError(
            f"another writer kept changing the same customers ({len(customer_ids)} in this batch); "
            "is a second worker consuming the same partitions?"
        )

    def flush(self) -> None:
        """Block until every update so far is durable; :class:`StoreError` if any write was refused."""
        return None  # synchronous stores are durable on return

    def reset(self) -> None:
        """Forget anything cached in this process (after a rebalance or a failed write)."""
        return None  # nothing cached by default

    def features(self, customer_id: str, as_of: int | None = None) -> Features | None:
        """Features of one customer as of ``as_of`` (default: the latest event time seen); None if unknown."""
        loaded = self._load({customer_id})
        version, state = loaded[customer_id]
        if version == 0:
            return None
        t = self.watermark() if as_of is None else as_of
        if t is None:
            return None
        check_servable(state, t)
        return features_as_of(state, t)

    def features_many(self, customer_ids: Iterable[str], as_of: int) -> dict[str, Features]:
        """Features of several known customers as of one time (for sweeps and comparisons)."""
        loaded = self._load(set(customer_ids))
        return {cid: features_as_of(state, as_of) for cid, (v, state) in loaded.items() if v > 0}

    def states(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Raw states of known customers (read-only use)."""
        return {cid: state for cid, (v, state) in self._load(set(customer_ids)).items() if v > 0}

    @abstractmethod
    def watermark(self) -> int | None:
        """The latest event time this store has applied."""

    @abstractmethod
    def customers_active_before(self, before: int, *, limit: int) -> list[str]:
        """Customers whose latest event time is < ``before``, oldest first (for sweeps)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every customer (for rebuilds)."""

    # -- what subclasses provide -----------------------------------------------------------------
    @abstractmethod
    def _load(self, customer_ids: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """``{customer_id: (version, state)}``, version 0 and a new state for unknown customers."""

    @abstractmethod
    def _save(self, changed: dict[str, tuple[int, dict[str, Any]]], watermark: int | None) -> bool:
        """Write states whose stored version still equals the given one, all or none; False on conflict."""

    # -- shared logic ----------------------------------------------------------------------------
    def _apply(self, states: dict[str, dict[str, Any]], event: Event) -> UpdateResult:
        if isinstance(event, LabelEvent):
            return UpdateResult(event, "applied", None)
        state = states[event.customer_id]
        try:
            status = apply_event(state, event, lateness_ms=self.lateness_ms)
        except ProcessingError as exc:
            return UpdateResult(event, "rejected", None, exc)
        if status == DUPLICATE and not is_servable(state, event.timestamp):
            return UpdateResult(event, status, None)
        return UpdateResult(event, status, features_as_of(state, event.timestamp))


def is_servable(state: dict[str, Any], t: int) -> bool:
    """Whether features as of ``t`` can still be computed exactly (nothing folded lies in a window)."""
    return state["fu"] is None or t >= state["fu"] + LONGEST_WINDOW_MS


def check_servable(state: dict[str, Any], t: int) -> None:
    """Raise :class:`ProcessingError` when features as of ``t`` can no longer be computed exactly."""
    fu = state["fu"]
    if not is_servable(state, t):
        raise ProcessingError(
            f"as-of time {t} ms is before the retained history of this customer "
            f"(exact from {fu + LONGEST_WINDOW_MS} ms on)"
        )


class MemoryFeatureStore(FeatureStore):
    """In-process store with the same semantics as :class:`RedisFeatureStore` (tests, offline use)."""

    def __init__(self, *, lateness_ms: int) -> None:
        super().__init__(lateness_ms=lateness_ms)
        self._data: dict[str, tuple[int, bytes]] = {}
        self._watermark: int | None = None

    def _load(self, customer_ids: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        out = {}
        for cid in customer_ids:
            version, blob = self._data.get(cid, (0, b""))
            out[cid] = (version, orjson.loads(blob) if blob else new_state())
        return out

    def _save(self, changed: dict[str, tuple[int, dict[str, Any]]], watermark: int | None) -> bool:
        if any(self._data.get(cid, (0, b""))[0] != v for cid, (v, _) in changed.items()):
            return False
        for cid, (v, state) in changed.items():
            self._data[cid] = (v + 1, orjson.dumps(state))
        if watermark is not None and (self._watermark is None or watermark > self._watermark):
            self._watermark = watermark
        return True

    def watermark(self) -> int | None:
        return self._watermark

    def customers_active_before(self, before: int, *, limit: int) -> list[str]:
        rows = sorted(
            (state["max"], cid)
            for cid, (_, blob) in self._data.items()
            if (state := orjson.loads(blob))["max"] is not None and state["max"] < before
        )
        return [cid for _, cid in rows[:limit]]

    def clear(self) -> None:
        self._data.clear()
        self._watermark = None


# KEYS: meta, activity index, then one state key per customer ("<version>|<state JSON>").
# ARGV: watermark ('' for none), a JSON header [[expected version, state length, latest event time,
# customer_id], ...] and all states concatenated — three arguments, because Redis pays per argument.
_SAVE_LUA = """
local head = cjson.decode(ARGV[2])
local body = ARGV[3]
local n = #KEYS - 2
for i = 1, n do
  local cur = redis.call('GET', KEYS[i + 2])
  local v = 0
  if cur then v = tonumber(string.sub(cur, 1, string.find(cur, '|', 1, true) - 1)) end
  if v ~= head[i][1] then return 0 end
end
local pos = 1
local zargs = {}
for i = 1, n do
  local h = head[i]
  redis.call('SET', KEYS[i + 2], (h[1] + 1) .. '|' .. string.sub(body, pos, pos + h[2] - 1))
  pos = pos + h[2]
  zargs[2 * i - 1] = h[3]
  zargs[2 * i] = h[4]
end
for i = 1, #zargs, 400 do
  redis.call('ZADD', KEYS[2], unpack(zargs, i, math.min(i + 399, #zargs)))
end
if ARGV[1] ~= '' then
  local w = redis.call('HGET', KEYS[1], 'watermark')
  if (not w) or tonumber(ARGV[1]) > tonumber(w) then redis.call('HSET', KEYS[1], 'watermark', ARGV[1]) end
end
return 1
"""


class RedisFeatureStore(FeatureStore):
    """Feature state in Redis: one string per customer, ``<version>|<state JSON>``.

    Keys live under ``churn:{namespace}:`` so deployments with different topic prefixes can share a
    server. Writes are compare-and-set on each customer's version, in one Lua script per micro-batch,
    sent from a background thread so that Redis works while this process computes the next batch.
    The customers this process wrote are cached (write-through), so a worker reads from Redis only
    customers it has not seen; :meth:`reset` drops the cache (call it when partitions move).
    """

    def __init__(
        self, *, client: Any, namespace: str = "", lateness_ms: int, cache_size: int = 200_000
    ) -> None:
        super().__init__(lateness_ms=lateness_ms)
        self._redis = client
        self._ns = f"churn:{namespace}"
        self._meta = f"{self._ns}:meta"
        self._active = f"{self._ns}:active"
        self._script = client.register_script(_SAVE_LUA)
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}
        self._cache_size = cache_size
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-store-writer")
        self._pending: list[Future[bool]] = []

    def _key(self, customer_id: str) -> str:
        return f"{self._ns}:c:{customer_id}"

    def _load(self, customer_ids: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        out = {}
        missing = []
        for cid in customer_ids:
            hit = self._cache.get(cid)
            if hit is None:
                missing.append(cid)
            else:
                out[cid] = hit
        if not missing:
            return out
        try:
            blobs = self._redis.mget([self._key(cid) for cid in missing])
        except Exception as exc:  # redis-py raises many types; all mean the same here
            raise StoreError(f"reading feature state from Redis failed: {exc}") from exc
        for cid, blob in zip(missing, blobs, strict=True):
            if blob is None:
                out[cid] = (0, new_state())
            else:
                version, _, body = blob.partition(b"|")
                out[cid] = (int(version), orjson.loads(body))
        return out

    def _save(self, changed: dict[str, tuple[int, dict[str, Any]]], watermark: int | None) -> bool:
        keys = [self._meta, self._active]
        head = []
        bodies = []
        for cid, (version, state) in changed.items():
            body = orjson.dumps(state)
            keys.append(self._key(cid))
            head.append((version, len(body), state["max"], cid))
            bodies.append(body)
            self._cache[cid] = (version + 1, state)
        args = ["" if watermark is None else watermark, orjson.dumps(head), b"".join(bodies)]
        if self._pending:  # one write in flight at a time: Redis overlaps our next batch, no more
            self.flush()
        self._pending.append(self._writer.submit(self._script, keys=keys, args=args))
        return True

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        refused = 0
        error: BaseException | None = None
        for future in pending:
            try:
                refused += not future.result()
            except Exception as exc:
                error = exc
        if error is not None or refused:
            self._cache.clear()
            if error is not None:
                raise StoreError(f"writing feature state to Redis failed: {error}") from error
            raise StoreError(
                "another writer changed customers this worker was updating (a rebalance moved their "
                "partition?); the batch was not written"
            )
        if len(self._cache) > self._cache_size:
            self._cache.clear()

    def reset(self) -> None:
        try:
            self.flush()
        finally:
            self._cache.clear()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)

    def watermark(self) -> int | None:
        self.flush()
        value = self._redis.hget(self._meta, "watermark")
        return None if value is None else int(value)

    def customers_active_before(self, before: int, *, limit: int) -> list[str]:
        self.flush()
        rows = self._redis.zrangebyscore(self._active, "-inf", f"({before}", start=0, num=limit)
        return [r.decode() if isinstance(r, bytes) else r for r in rows]

    def clear(self) -> None:
        self.reset()
        cursor = 0
        while True:
            cursor, keys = self._redis.scan(cursor, match=f"{self._ns}:*", count=1000)
            if keys:
                self._redis.unlink(*keys)
            if cursor == 0:
                break

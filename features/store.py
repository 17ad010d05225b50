"""The feature store: per-customer state behind one small interface, in memory or in Redis.

A micro-batch is one :class:`Transaction`: :meth:`FeatureStore.begin` loads the customers it touches,
:meth:`Transaction.apply` applies each event and returns the customer's features as of that event's
time, and :meth:`FeatureStore.commit` writes everything back at once. Updates are

* idempotent per ``event_id`` — a redelivered event changes nothing (its features are recomputed, so a
  re-emitted prediction carries the same numbers);
* correct for out-of-order events within the allowed lateness — features as of t use only events <= t;
* atomic and batched — the Redis store reads every touched customer in one MGET and writes them back in
  one Lua script that first checks each customer's version (compare-and-set): a batch is applied whole
  or not at all, and a stale worker after a rebalance cannot overwrite newer state.

A transaction can carry more than features: the scoring worker keeps per-customer data of its own in
the same state dict (pending predictions, last alert), small ``meta`` values (consumer offsets,
partition watermarks), named ``blobs`` (the online model's checkpoint), ``appends`` to blobs (its log
since) and a ``due`` index — all
committed in the same atomic write, so a crash can never leave them disagreeing.

Memory stays bounded: old events are folded into totals (see :mod:`churnstream.features.state`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from churnstream.errors import ChurnstreamError, ProcessingError, StoreError
from churnstream.events import Event, LabelEvent
from churnstream.features.definitions import features_as_of
from churnstream.features.state import DUPLICATE, LONGEST_WINDOW_MS, apply_event, new_state

Features = dict[str, float | int | None]


@dataclass(slots=True)
class UpdateResult:
    """What one event did: ``status`` is ``applied``, ``duplicate`` or ``rejected`` (see ``error``)."""

    event: Event
    status: str
    features: Features | None
    error: ProcessingError | None = None
    as_of: int | None = None  # the time ``features`` are valid at: the event's own time when exact


@dataclass(slots=True)
class Due:
    """What :meth:`FeatureStore.due_before` found: ``{customer: shard}`` due now, and when the next one is
    due (None: nobody; ``t`` itself when more were due than listed)."""

    customers: dict[str, str]
    next_due: int | None


@dataclass(slots=True)
class Transaction:
    """The reads and pending writes of one micro-batch; commit it with :meth:`FeatureStore.commit`."""

    lateness_ms: int
    versions: dict[str, int]
    states: dict[str, dict[str, Any]]
    changed: set[str] = field(default_factory=set)
    shards: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    appends: dict[str, bytes] = field(default_factory=dict)  # appended to blobs (after ``blobs`` are set)
    due: dict[str, int | None] = field(default_factory=dict)
    watermark: int | None = None
    # meta fields that must still hold exactly these values (None: absent) for the write to happen: the
    # writer's claim on its partitions and the fences it wrote last, so a writer that lost a partition,
    # or a Redis that lost recent writes, refuses the batch instead of building on what is not there
    expect: dict[str, str | None] = field(default_factory=dict)

    def apply(self, event: Event, *, shard: str = "0") -> UpdateResult:
        """Apply one event to its customer's state (loaded by ``begin``)."""
        self.shards.setdefault(event.customer_id, shard)
        if isinstance(event, LabelEvent):
            return UpdateResult(event, "applied", None)
        state = self.states[event.customer_id]
        try:
            status = apply_event(state, event, lateness_ms=self.lateness_ms)
        except ProcessingError as exc:
            return UpdateResult(event, "rejected", None, exc)
        if status != DUPLICATE:
            self.changed.add(event.customer_id)
            if self.watermark is None or event.timestamp > self.watermark:
                self.watermark = event.timestamp
        # A very late event is applied, but features as of its own time can no longer be rebuilt
        # exactly: it is then scored as of the customer's latest event instead.
        t = event.timestamp if is_servable(state, event.timestamp) else state["max"]
        return UpdateResult(event, status, features_as_of(state, t), as_of=t)

    def state(self, customer_id: str) -> dict[str, Any]:
        return self.states[customer_id]

    def touch(self, customer_id: str) -> None:
        """Mark a customer's state as changed by the caller (e.g. pending predictions added)."""
        self.changed.add(customer_id)

    def known(self, customer_id: str) -> bool:
        """Whether the customer existed before this transaction or has had an event applied in it."""
        return self.versions.get(customer_id, 0) > 0 or self.states[customer_id]["max"] is not None


class FeatureStore(ABC):
    """Per-customer feature state; subclasses load and atomically save versioned states."""

    def __init__(self, *, lateness_ms: int) -> None:
        self.lateness_ms = lateness_ms

    # -- writing ---------------------------------------------------------------------------------
    def begin(self, customer_ids: Iterable[str]) -> Transaction:
        """Load the given customers (unknown ones start empty) into a new transaction."""
        loaded = self._load(set(customer_ids))
        return Transaction(
            lateness_ms=self.lateness_ms,
            versions={cid: v for cid, (v, _) in loaded.items()},
            states={cid: s for cid, (_, s) in loaded.items()},
        )

    def commit(self, tx: Transaction, *, after: Callable[[], None] | None = None) -> None:
        """Write the transaction, all or nothing. It may still be in flight: :meth:`flush` waits.

        ``after`` runs first and the write happens only if it returns: the scorer passes "every output
        of this batch is acknowledged by Kafka", which an asynchronous store waits for off the caller's
        thread. An exception from it is raised again by :meth:`flush`, and nothing is written.
        """
        if tx.changed or tx.meta or tx.blobs or tx.appends or tx.due or tx.expect:
            self._save(tx, after)
        elif after is not None:
            after()

    def update(self, events: Sequence[Event], *, shard: str = "0") -> list[UpdateResult]:
        """Apply a micro-batch in one transaction; per event, its features as of its own time."""
        tx = self.begin(e.customer_id for e in events if not isinstance(e, LabelEvent))
        try:
            results = [tx.apply(e, shard=shard) for e in events]
        except BaseException:
            self.reset()  # cached states may be half-updated in place
            raise
        self.commit(tx)
        return results

    def flush(self) -> None:
        """Block until every commit so far is durable; :class:`StoreError` if any write was refused."""
        return None  # synchronous stores are durable on return

    def reset(self) -> None:
        """Forget anything cached in this process (after a rebalance or a failed write)."""
        return None  # nothing cached by default

    # -- reading ---------------------------------------------------------------------------------
    def features(self, customer_id: str, as_of: int | None = None) -> Features | None:
        """Features of one customer as of ``as_of`` (default: the latest event time seen); None if unknown."""
        version, state = self._load({customer_id})[customer_id]
        if version == 0:
            return None
        t = self.watermark() if as_of is None else as_of
        if t is None:
            return None
        check_servable(state, t)
        return features_as_of(state, t)

    def features_many(self, customer_ids: Iterable[str], as_of: int) -> dict[str, Features]:
        """Features of several known customers as of one time (for comparisons)."""
        loaded = self._load(set(customer_ids))
        return {cid: features_as_of(state, as_of) for cid, (v, state) in loaded.items() if v > 0}

    def states(self, customer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Raw states of known customers (read-only use)."""
        return {cid: state for cid, (v, state) in self._load(set(customer_ids)).items() if v > 0}

    @abstractmethod
    def watermark(self) -> int | None:
        """The latest event time this store has applied."""

    @abstractmethod
    def meta(self, name: str) -> str | None:
        """A small value written through :attr:`Transaction.meta`."""

    @abstractmethod
    def blob(self, name: str) -> bytes | None:
        """A value written through :attr:`Transaction.blobs`."""

    @abstractmethod
    def write_meta(self, values: Mapping[str, str]) -> None:
        """Write small values at once, outside any transaction (a worker's claim on its partitions)."""

    @abstractmethod
    def active_before(
        self, before: int, *, shards: Sequence[str], since: int | None = None
    ) -> dict[str, str]:
        """``{customer: shard}`` of ``shards`` whose latest event time is in [``since``, ``before``).

        Oldest first. Sees every commit so far (it waits for writes in flight).
        """

    @abstractmethod
    def due_before(self, t: int, *, shards: Sequence[str], limit: int) -> Due:
        """Customers of ``shards`` whose ``due`` time is <= ``t`` (at most ``limit`` per shard), and the
        earliest due time after ``t``.

        May miss a commit still in flight (it does not wait): callers ask again with the next batch.
        """

    @abstractmethod
    def customers(self) -> list[str]:
        """Every known customer (for comparisons and rebuild checks; not for hot paths)."""

    @abstractmethod
    def clear(self) -> None:
        """Forget everything (for rebuilds)."""

    # -- what subclasses provide -----------------------------------------------------------------
    @abstractmethod
    def _load(self, customer_ids: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """``{customer_id: (version, state)}``, version 0 and a new state for unknown customers."""

    @abstractmethod
    def _save(self, tx: Transaction, after: Callable[[], None] | None = None) -> None:
        """Run ``after``, then write the transaction if every changed customer's stored version is
        still as loaded."""


def is_servable(state: dict[str, Any], t: int) -> bool:
    """Whether features as of ``t`` can still be computed exactly (nothing folded lies in a window)."""
    return state["fu"] is None or t >= state["fu"] + LONGEST_WINDOW_MS


def check_servable(state: dict[str, Any], t: int) -> None:
    """Raise :class:`ProcessingError` when features as of ``t`` can no longer be computed exactly."""
    if not is_servable(state, t):
        raise ProcessingError(
            f"as-of time {t} ms is before the retained history of this customer "
            f"(exact from {state['fu'] + LONGEST_WINDOW_MS} ms on)"
        )


_CONFLICT = (
    "Redis no longer holds what this worker expects: another writer changed its customers or claimed its "
    "partitions (a rebalance), or Redis lost writes it had acknowledged (a restart, a failover, a flush); "
    "the batch was not written"
)


class MemoryFeatureStore(FeatureStore):
    """In-process store with the same semantics as :class:`RedisFeatureStore` (tests, offline use)."""

    def __init__(self, *, lateness_ms: int) -> None:
        super().__init__(lateness_ms=lateness_ms)
        self._data: dict[str, tuple[int, bytes]] = {}
        self._meta: dict[str, str] = {}
        self._blobs: dict[str, bytes] = {}
        self._active: dict[str, tuple[str, int]] = {}
        self._due: dict[tuple[str, str], int] = {}

    def _load(self, customer_ids: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        out = {}
        for cid in customer_ids:
            version, blob = self._data.get(cid, (0, b""))
            out[cid] = (version, orjson.loads(blob) if blob else new_state())
        return out

    def _save(self, tx: Transaction, after: Callable[[], None] | None = None) -> None:
        if after is not None:
            after()
        if any(self._data.get(cid, (0, b""))[0] != tx.versions.get(cid, 0) for cid in tx.changed):
            raise StoreError(_CONFLICT)
        if any(self._meta.get(name) != value for name, value in tx.expect.items()):
            raise StoreError(_CONFLICT)
        for cid in tx.changed:
            state = tx.states[cid]
            self._data[cid] = (tx.versions.get(cid, 0) + 1, orjson.dumps(state))
            tx.versions[cid] = tx.versions.get(cid, 0) + 1
            if state["max"] is not None:
                self._active[cid] = (tx.shards.get(cid, self._active.get(cid, ("0", 0))[0]), state["max"])
        self._meta.update(tx.meta)
        self._blobs.update(tx.blobs)
        for name, value in tx.appends.items():
            self._blobs[name] = self._blobs.get(name, b"") + value
        for cid, due in tx.due.items():
            key = (tx.shards.get(cid, "0"), cid)
            if due is None:
                self._due.pop(key, None)
            else:
                self._due[key] = due
        if tx.watermark is not None and int(self._meta.get("watermark", tx.watermark)) <= tx.watermark:
            self._meta["watermark"] = str(tx.watermark)

    def watermark(self) -> int | None:
        value = self._meta.get("watermark")
        return None if value is None else int(value)

    def meta(self, name: str) -> str | None:
        return self._meta.get(name)

    def blob(self, name: str) -> bytes | None:
        return self._blobs.get(name)

    def write_meta(self, values: Mapping[str, str]) -> None:
        self._meta.update(values)

    def active_before(
        self, before: int, *, shards: Sequence[str], since: int | None = None
    ) -> dict[str, str]:
        lo = -(2**62) if since is None else since
        wanted = set(shards)
        rows = sorted(
            (ts, cid, s) for cid, (s, ts) in self._active.items() if s in wanted and lo <= ts < before
        )
        return {cid: s for _, cid, s in rows}

    def due_before(self, t: int, *, shards: Sequence[str], limit: int) -> Due:
        customers: dict[str, str] = {}
        later: list[int] = []
        for shard in shards:
            rows = sorted((d, c) for (s, c), d in self._due.items() if s == shard)
            now = [cid for d, cid in rows if d <= t]
            customers.update((cid, shard) for cid in now[:limit])
            if len(now) >= limit:
                later.append(t)  # as Redis answers: it cannot tell "exactly limit" from "more"
            later += [d for d, _ in rows if d > t][:1]
        return Due(customers, min(later) if later else None)

    def customers(self) -> list[str]:
        return sorted(self._data)

    def clear(self) -> None:
        self.__init__(lateness_ms=self.lateness_ms)  # type: ignore[misc]


# KEYS: meta hash, then one state key per changed customer ("<version>|<state JSON>").
# ARGV[1]: JSON header; ARGV[2]: the states' JSON and the blobs, concatenated (Redis pays per argument,
# so a batch travels as two arguments, not four per customer). All numbers in the header are strings.
_SAVE_LUA = """
local head = cjson.decode(ARGV[1])
local body = ARGV[2]
for _, e in ipairs(head['e']) do
  local cur = redis.call('HGET', KEYS[1], e[1])
  if e[2] == cjson.null then
    if cur then return 0 end
  elseif cur ~= e[2] then return 0 end
end
local customers = head['c']
for i, h in ipairs(customers) do
  local cur = redis.call('GET', KEYS[i + 1])
  local v = '0'
  if cur then v = string.sub(cur, 1, string.find(cur, '|', 1, true) - 1) end
  if v ~= h[1] then return 0 end
end
local pos = 1
for i, h in ipairs(customers) do
  local len = tonumber(h[2])
  redis.call('SET', KEYS[i + 1], (tonumber(h[1]) + 1) .. '|' .. string.sub(body, pos, pos + len - 1))
  pos = pos + len
  if h[3] ~= '' then redis.call('ZADD', head['ns'] .. ':active:' .. h[5], h[3], h[4]) end
end
for _, b in ipairs(head['b']) do
  local len = tonumber(b[2])
  redis.call(b[3], head['ns'] .. ':blob:' .. b[1], string.sub(body, pos, pos + len - 1))
  pos = pos + len
end
for name, value in pairs(head['m']) do redis.call('HSET', KEYS[1], name, value) end
for _, d in ipairs(head['d']) do
  local due = head['ns'] .. ':due:' .. d[3]
  if d[2] == '' then redis.call('ZREM', due, d[1]) else redis.call('ZADD', due, d[2], d[1]) end
end
if head['w'] ~= '' then
  local w = redis.call('HGET', KEYS[1], 'watermark')
  if (not w) or tonumber(head['w']) > tonumber(w) then redis.call('HSET', KEYS[1], 'watermark', head['w']) end
end
return 1
"""


class RedisFeatureStore(FeatureStore):
    """Feature state in Redis: one string per customer, ``<version>|<state JSON>``.

    Keys live under ``churn:{namespace}:`` so deployments with different topic prefixes can share a
    server (a single Redis node or a primary with replicas: the batch script touches many keys).
    Commits are sent from a background thread, one in flight, so Redis writes batch N while this
    process computes batch N+1. Customers this process wrote are cached (write-through, as the JSON
    written), so a worker reads from Redis only customers it has not seen; :meth:`reset` drops the cache
    (on rebalance).
    """

    def __init__(
        self, *, client: Any, namespace: str = "", lateness_ms: int, cache_size: int = 200_000
    ) -> None:
        super().__init__(lateness_ms=lateness_ms)
        self._redis = client
        self._ns = f"churn:{namespace}"
        self._meta_key = f"{self._ns}:meta"
        self._script = client.register_script(_SAVE_LUA)
        # customer -> (version, state JSON) as last written. Bytes, not dicts: a cache of a few hundred
        # thousand states as dicts is millions of objects, and each full garbage collection then stalls
        # the worker for seconds (1.8 s at 200k customers); a state decodes again in ~7 µs.
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._cache_size = cache_size
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-store-writer")
        self._pending: list[Future[Any]] = []

    def _key(self, customer_id: str) -> str:
        return f"{self._ns}:c:{customer_id}"

    def _load(self, customer_ids: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        out = {}
        missing = []
        cache = self._cache
        for cid in customer_ids:
            hit = cache.get(cid)
            if hit is None:
                missing.append(cid)
            else:
                out[cid] = (hit[0], orjson.loads(hit[1]))
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

    def _save(self, tx: Transaction, after: Callable[[], None] | None = None) -> None:
        keys = [self._meta_key]
        customers = []
        parts = []
        for cid in tx.changed:
            state = tx.states[cid]
            body = orjson.dumps(state)
            version = tx.versions.get(cid, 0)
            latest = "" if state["max"] is None else str(state["max"])
            keys.append(self._key(cid))
            customers.append((str(version), str(len(body)), latest, cid, tx.shards.get(cid, "0")))
            parts.append(body)
            self._cache[cid] = (version + 1, body)
            tx.versions[cid] = version + 1
        blobs = []  # SET before APPEND, as Transaction.appends promises
        for command, values in (("SET", tx.blobs), ("APPEND", tx.appends)):
            for name, value in values.items():
                blobs.append((name, str(len(value)), command))
                parts.append(value)
        head = {
            "ns": self._ns,
            "c": customers,
            "b": blobs,
            "m": tx.meta or {},
            "d": [
                (cid, "" if due is None else str(due), tx.shards.get(cid, "0")) for cid, due in tx.due.items()
            ],
            "w": "" if tx.watermark is None else str(tx.watermark),
            "e": [[name, value] for name, value in tx.expect.items()],
        }
        if not head["m"]:
            head["m"] = {"_": "1"}  # cjson turns an empty object into an array
        args = [orjson.dumps(head), b"".join(parts)]
        if self._pending:  # one write in flight at a time: Redis overlaps our next batch, no more
            self.flush()
        self._pending.append(self._writer.submit(self._write, keys, args, after))

    def _write(self, keys: list[str], args: list[bytes], after: Callable[[], None] | None) -> Any:
        if after is not None:
            after()
        return self._script(keys=keys, args=args)

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
            if isinstance(error, ChurnstreamError):  # from `after`: nothing was written
                raise error
            if error is not None:
                raise StoreError(f"writing feature state to Redis failed: {error}") from error
            raise StoreError(_CONFLICT)
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
        value = self.meta("watermark")
        return None if value is None else int(value)

    def _read(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a read command; any Redis failure (down, auth refused, ...) becomes a :class:`StoreError`."""
        try:
            return command(*args, **kwargs)
        except Exception as exc:  # redis-py raises many types; all mean the same here
            raise StoreError(f"reading from Redis failed: {exc}") from exc

    def meta(self, name: str) -> str | None:
        self.flush()
        value = self._read(self._redis.hget, self._meta_key, name)
        return None if value is None else value.decode()

    def blob(self, name: str) -> bytes | None:
        self.flush()
        value: bytes | None = self._read(self._redis.get, f"{self._ns}:blob:{name}")
        return value

    def write_meta(self, values: Mapping[str, str]) -> None:
        self.flush()
        if values:
            self._read(self._redis.hset, self._meta_key, mapping=dict(values))

    def active_before(
        self, before: int, *, shards: Sequence[str], since: int | None = None
    ) -> dict[str, str]:
        self.flush()
        lo = "-inf" if since is None else since
        pipe = self._redis.pipeline(transaction=False)
        for shard in shards:
            pipe.zrangebyscore(f"{self._ns}:active:{shard}", lo, f"({before}", withscores=True)
        found = self._read(pipe.execute)
        rows = [(ts, cid.decode(), s) for s, got in zip(shards, found, strict=True) for cid, ts in got]
        return {cid: s for _, cid, s in sorted(rows)}

    def due_before(self, t: int, *, shards: Sequence[str], limit: int) -> Due:
        # No flush: waiting for the write in flight here would serialise Redis and the next batch. A due
        # entry that write adds is found with the next batch; one it removes is loaded and found not due.
        pipe = self._redis.pipeline(transaction=False)
        for shard in shards:
            key = f"{self._ns}:due:{shard}"
            pipe.zrangebyscore(key, "-inf", t, start=0, num=limit)
            pipe.zrangebyscore(key, f"({t}", "+inf", start=0, num=1, withscores=True)
        found = self._read(pipe.execute)
        customers: dict[str, str] = {}
        later: list[int] = []
        for i, shard in enumerate(shards):
            now, after = found[2 * i], found[2 * i + 1]
            customers.update((cid.decode(), shard) for cid in now)
            if len(now) >= limit:
                later.append(t)  # more are due than were listed: ask again next time
            later += [int(score) for _, score in after]
        return Due(customers, min(later) if later else None)

    def customers(self) -> list[str]:
        self.flush()
        prefix = f"{self._ns}:c:"
        keys = self._read(lambda: list(self._redis.scan_iter(match=f"{prefix}*", count=1000)))
        return sorted(k.decode()[len(prefix) :] for k in keys)

    def clear(self) -> None:
        self.reset()
        cursor = 0
        while True:
            cursor, keys = self._redis.scan(cursor, match=f"{self._ns}:*", count=1000)
            if keys:
                self._redis.unlink(*keys)
            if cursor == 0:
                break

"""The feature store in Redis, a single node or a Redis Cluster (keys laid out by :mod:`.layout`).

Each partition a transaction touches is written by one Lua script over that partition's keys, which
share a hash tag, so the script touches one slot: the same code runs on a single node and on a
cluster. A batch's scripts travel in one pipeline (on a cluster, redis-py groups it by node).
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
from redis.exceptions import AskError, NoScriptError

from churnstream.errors import ChurnstreamError, StoreError
from churnstream.features import layout
from churnstream.features.layout import KeyLayout
from churnstream.features.state import CustomerState, dump_state_parts, new_state
from churnstream.features.store import CONFLICT, Due, FeatureStore, LearnerRecord, PartitionWrite, Transaction

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
ERASURES_EVERY = 0.25  # seconds after which a partition's count of forgotten customers is read before use


def redis_failed(redacted_url: str, exc: Exception) -> ChurnstreamError:
    """The error of a command that could not use Redis, with what to check.

    >>> print(redis_failed("redis://127.0.0.1:1/0", ConnectionError("Error 111")))  # doctest: +ELLIPSIS
    Redis at redis://127.0.0.1:1/0: Error 111; check that Redis runs there and that CHURN_REDIS_URL ...
    """
    return ChurnstreamError(
        f"Redis at {redacted_url}: {exc}; check that Redis runs there and that CHURN_REDIS_URL names it"
    )


def redis_client(url: str, **options: Any) -> Any:
    """A client for ``url``: ``redis+cluster://`` / ``rediss+cluster://`` (any node of the cluster) make
    a :class:`redis.cluster.RedisCluster`, other URLs a :class:`redis.Redis`."""
    import redis

    if url.startswith(CLUSTER_SCHEMES):
        return redis.RedisCluster.from_url(url.replace("+cluster", "", 1), **options)
    return redis.Redis.from_url(url, **options)


# KEYS: the partition's meta hash, activity index, due index, then one state key per changed customer
# ("<version>|<state JSON>"), then one key per blob. ARGV[1]: JSON header; ARGV[2]: the states' JSON and
# the blobs, concatenated (Redis pays per argument, so a batch travels as two arguments, not four per
# customer). All numbers in the header are strings. Last, when the header has "h", the learner history.
_SAVE_LUA = (
    """
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
  local cur = redis.call('GET', KEYS[i + 3])
  local v = '0'
  if cur then v = string.sub(cur, 1, string.find(cur, '|', 1, true) - 1) end
  if v ~= h[1] then return 0 end
end
local pos = 1
for i, h in ipairs(customers) do
  local len = tonumber(h[2])
  redis.call('SET', KEYS[i + 3], (tonumber(h[1]) + 1) .. '|' .. string.sub(body, pos, pos + len - 1))
  pos = pos + len
  if h[3] ~= '' then redis.call('ZADD', KEYS[2], h[3], h[4]) end
end
for i, b in ipairs(head['b']) do
  local len = tonumber(b[1])
  redis.call(b[2], KEYS[3 + #customers + i], string.sub(body, pos, pos + len - 1))
  pos = pos + len
end
local h = head['h']
if h then
  local key = KEYS[4 + #customers + #head['b']]
  for _, r in ipairs(h) do
    local len = tonumber(r[2])
    local empty = redis.call('EXISTS', key) == 0
    redis.call('ZREMRANGEBYSCORE', key, r[1], r[1])
    redis.call('ZADD', key, r[1], r[1] .. '|' .. string.sub(body, pos, pos + len - 1))
    pos = pos + len
    if empty and r[4] == '0' then redis.call('HSET', KEYS[1], '"""
    + layout.LEARNER_HISTORY_FROM
    + """', r[1]) end
    local over = redis.call('ZCARD', key) - tonumber(r[3])
    if over > 0 then
      redis.call('ZREMRANGEBYRANK', key, 0, over - 1)
      redis.call('HSET', KEYS[1], '"""
    + layout.LEARNER_HISTORY_FROM
    + """', redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2])
    end
  end
end
for name, value in pairs(head['m']) do redis.call('HSET', KEYS[1], name, value) end
for _, d in ipairs(head['d']) do
  if d[2] == '' then redis.call('ZREM', KEYS[3], d[1]) else redis.call('ZADD', KEYS[3], d[2], d[1]) end
end
if head['w'] ~= '' then
  local w = redis.call('HGET', KEYS[1], 'latest')
  if (not w) or tonumber(head['w']) > tonumber(w) then redis.call('HSET', KEYS[1], 'latest', head['w']) end
end
return {1, redis.call('HGET', KEYS[1], '"""
    + layout.ERASED
    + """') or '0'}
"""
)
_SAVE_SHA = hashlib.sha1(_SAVE_LUA.encode()).hexdigest()

# KEYS: the customer's state key, its partition's activity and due indexes, meta hash and list of forgotten
# customers (one hash tag, one slot). ARGV[1]: the customer id. Returns how many of the three held the
# customer; counts the forgetting in the meta hash and keeps the id (see RedisFeatureStore._noticed).
_FORGET_LUA = f"""
local n = redis.call('DEL', KEYS[1])
n = n + redis.call('ZREM', KEYS[2], ARGV[1]) + redis.call('ZREM', KEYS[3], ARGV[1])
if n > 0 then
  redis.call('HINCRBY', KEYS[4], '{layout.ERASED}', 1)
  redis.call('RPUSH', KEYS[5], ARGV[1])
  redis.call('LTRIM', KEYS[5], -{layout.ERASED_KEPT}, -1)
end
return n
"""


class RedisFeatureStore(FeatureStore):
    """Feature state in Redis: one string per customer, ``<version>|<state JSON>``.

    Keys live under ``churn:{namespace}:`` so deployments with different topic prefixes can share a
    server, and carry their partition's hash tag (see :mod:`.layout`). Commits are sent from a
    background thread, one in flight, so Redis writes batch N while this process computes batch N+1.
    Customers this process wrote are cached (write-through, as the JSON written), so a worker reads
    from Redis only customers it has not seen; :meth:`reset` drops the cache (on rebalance).

    The ``decoded_size`` most recently written of them are also kept as the objects written, so the
    next batch does not decode them again: a replay otherwise decodes every state it touches (the
    bench: 93k decodes per 52k events, up to a fifth of the in-process worker's time with the
    garbage they make). A decoded state is
    handed to one reader and leaves the tier (a transaction changes it in place; if it is not written
    back, the next reader decodes the JSON written, exactly as without the tier); a write puts it
    back. It costs ~9 KB a customer against ~1.3 KB as JSON, hence its own, smaller cap.
    """

    keeps_feature_parts = True  # serialized as events change them (see Transaction.feature_parts)

    def __init__(
        self,
        *,
        client: Any,
        namespace: str = "",
        lateness_ms: int,
        partitions: int | None = None,
        cache_size: int = 200_000,
        decoded_size: int = 20_000,
        erasures_every: float = ERASURES_EVERY,
    ) -> None:
        super().__init__(lateness_ms=lateness_ms, partitions=partitions)
        self._redis = client
        self._keys = KeyLayout(namespace)
        self._cluster = hasattr(client, "mget_nonatomic")
        self._layout_known = False  # checked (and recorded if new) before the first write
        self._count_read = False
        # customer -> (partition, version, state JSON, length of its feature part: see dump_state_parts) as
        # last written. Bytes, not dicts: a cache of a few hundred thousand states as dicts is millions of
        # objects, and each full garbage collection then stalls the worker for seconds (1.8 s at 200k
        # customers); a state decodes again in ~7 µs.
        self._cache: dict[str, tuple[int, int, bytes, int]] = {}
        self._cache_size = cache_size
        # customer -> (version, state) as last written, least recently written first; at most decoded_size
        self._decoded: dict[str, tuple[int, CustomerState]] = {}
        self._decoded_size = min(decoded_size, cache_size)
        # partition -> its count of forgotten customers as last read, and when (see _noticed)
        self._erased: dict[int, int] = {}
        self._erased_at: dict[int, float] = {}
        self.erasures_every = erasures_every
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-store-writer")
        self._pending: list[Future[Any]] = []
        # partition -> customer -> latest event time (None: no event), as the write in flight leaves the
        # activity index: what active_in(wait=False) lays over what Redis answers before that write
        self._in_flight_active_index: dict[int, dict[str, int | None]] = {}

    def partition_of(self, customer_id: str) -> int:
        if self.partitions is None and not self._count_read:
            found = self._layout()
            self._count_read = True
            self.partitions = None if found is None else found.get("partitions")
        return super().partition_of(customer_id)

    def _erasures(self, customers: Mapping[str, int]) -> None:
        """Before cached customers are used: look at the count of forgotten customers of each partition
        whose count this process has not seen for ``erasures_every`` seconds (see :meth:`_noticed`). A busy
        partition's count comes back with each of its writes, so this read is for the first unit after a
        pause."""
        now, every, seen = time.monotonic(), self.erasures_every, self._erased_at
        order = sorted(p for p in set(customers.values()) if now - seen.get(p, -1e9) >= every)
        if not order:  # the common case: every partition's count came back with a write just now
            return
        pipe = self._redis.pipeline(transaction=False)
        for p in order:
            pipe.hget(self._keys.meta(p), layout.ERASED)
        for p, count in zip(order, self._read(pipe.execute), strict=True):
            self._noticed(p, int(count or 0), now)

    def _noticed(self, p: int, count: int, at: float) -> None:
        """Partition ``p``'s count of forgotten customers is ``count`` (as of monotonic time ``at``): drop
        the customers forgotten since the last count from the cache, so they are read from Redis again, a
        forgotten customer's next event starts from nothing, and no output is made from the state forgotten
        (cached, the state was scored and its outputs produced before the write was refused). More than
        the ids kept (``ERASED_KEPT``): the partition's whole cache.

        The count is read atomically with each write (the save script returns it), so the cache's
        content and the count agree; a forgetting after it and before a unit's write has that write
        refused, and the unit answered again."""
        before = self._erased.get(p)
        self._erased[p], self._erased_at[p] = count, at
        if before is None or count == before:
            return
        gone: set[str] | None = None
        if 0 < count - before <= layout.ERASED_KEPT:
            ids = self._read(self._redis.lrange, self._keys.erased(p), before - count, -1)
            gone = {i.decode() if isinstance(i, bytes) else str(i) for i in ids}
        for cid in [c for c, hit in self._cache.items() if hit[0] == p and (gone is None or c in gone)]:
            del self._cache[cid]
            self._decoded.pop(cid, None)

    def erased_count(self, partition: int) -> int | None:
        return self._erased.get(partition)

    def _load(self, customers: Mapping[str, int]) -> dict[str, tuple[int, CustomerState]]:
        out = {}
        missing = []
        cache = self._cache
        if cache:
            self._erasures(customers)
        decoded = self._decoded
        for cid, p in customers.items():
            hit = cache.pop(cid, None)  # and put back last: the cache evicts the least recently used
            if hit is None or hit[0] != p:
                missing.append(cid)
            else:
                cache[cid] = hit
                kept = decoded.pop(cid, None)  # handed out: the reader may change it in place
                state = kept[1] if kept is not None and kept[0] == hit[1] else orjson.loads(hit[2])
                out[cid] = (hit[1], state)
        if not missing:
            return out
        keys = [self._keys.customer(customers[cid], cid) for cid in missing]
        try:
            blobs = self._redis.mget_nonatomic(keys) if self._cluster else self._redis.mget(keys)
        except Exception as exc:  # redis-py raises many types; all mean the same here
            raise StoreError(f"reading feature state from Redis failed: {exc}") from exc
        for cid, blob in zip(missing, blobs, strict=True):
            if blob is None:
                out[cid] = (0, new_state())
            else:
                version, _, body = blob.partition(b"|")
                out[cid] = (int(version), orjson.loads(body))
        return out

    def _save(
        self, tx: Transaction, writes: dict[int, PartitionWrite], after: Callable[[], None] | None
    ) -> None:
        calls = []
        if self._pending:  # one write in flight at a time: Redis overlaps our next batch, no more
            self.flush()
        for p, w in writes.items():
            active = self._in_flight_active_index.setdefault(p, {})
            keys = [self._keys.meta(p), self._keys.active(p), self._keys.due(p)]
            customers = []
            parts = []
            for cid in w.customers:
                state = tx.states[cid]
                version = tx.versions.get(cid, 0)
                hit = self._cache.get(cid)
                if cid in w.scoring_only and hit is not None and hit[0] == p and hit[1] == version:
                    # the state was loaded from this JSON and only its scoring part changed since
                    body, feature_part = dump_state_parts(state, memoryview(hit[2])[: hit[3]])
                else:  # the feature part as ``apply`` serialized it, if it did
                    body, feature_part = dump_state_parts(state, w.feature_parts.get(cid))
                latest = "" if state["max"] is None else str(state["max"])
                keys.append(self._keys.customer(p, cid))
                customers.append((str(version), str(len(body)), latest, cid))
                parts.append(body)
                self._cache.pop(cid, None)
                self._cache[cid] = (p, version + 1, body, feature_part)
                self._decoded.pop(cid, None)
                self._decoded[cid] = (version + 1, state)
                tx.versions[cid] = version + 1
                active[cid] = state["max"]
            blobs = []
            for name, value, append in w.blobs:
                keys.append(self._keys.blob(p, name))
                blobs.append((str(len(value)), "APPEND" if append else "SET"))
                parts.append(value)
            if w.history:
                keys.append(self._keys.blob(p, layout.LEARNER_HISTORY))
                parts += [r.payload() for r in w.history]
            head = {
                "c": customers,
                "b": blobs,
                "m": w.meta or {"_": "1"},  # cjson turns an empty object into an array
                "d": [(cid, "" if due is None else str(due)) for cid, due in w.due.items()],
                "w": "" if w.latest is None else str(w.latest),
                "e": [[name, value] for name, value in w.expect.items()],
            }
            if w.history:  # the learner's history: (time, length, records kept, complete)
                head["h"] = [
                    (str(r.at), str(len(part)), str(r.keep), "1" if r.complete else "0")
                    for r, part in zip(w.history, parts[-len(w.history) :], strict=True)
                ]
            calls.append((keys, [orjson.dumps(head), b"".join(parts)]))
        self._pending.append(self._writer.submit(self._write, calls, list(writes), after))

    def _write(
        self,
        calls: list[tuple[list[str], list[bytes]]],
        partitions: list[int],
        after: Callable[[], None] | None,
    ) -> tuple[bool, dict[int, int], float]:
        """Run ``after``, then every partition's script in one pipeline: whether all were applied, each
        applied partition's count of forgotten customers, and when it was read."""
        if after is not None:
            after()
        results = self._run(calls, cached=True)
        retry = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if retry:  # a node that has not seen the script (or lost it): send it in full, which caches it
            for i, r in zip(retry, self._run([calls[i] for i in retry], cached=False), strict=True):
                results[i] = r
        for r in results:
            if isinstance(r, Exception):
                raise r
        applied = [isinstance(r, list) and r[0] == 1 for r in results]
        counts = {p: int(r[1]) for p, r, ok in zip(partitions, results, applied, strict=True) if ok}
        return all(applied), counts, time.monotonic()

    def _run(self, calls: list[tuple[list[str], list[bytes]]], *, cached: bool) -> list[Any]:
        """Results of the calls: one pipeline per node (redis-py's cluster pipeline refuses scripts)."""
        if not self._cluster:
            return self._pipeline(self._redis, calls, cached=cached)
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, (keys, _) in enumerate(calls):
            node = self._redis.get_node_from_key(keys[0])
            by_node.setdefault(node.name, (node, []))[1].append(i)
        results: list[Any] = [None] * len(calls)
        for node, idx in by_node.values():
            found = self._pipeline(node.redis_connection, [calls[i] for i in idx], cached=cached)
            for i, r in zip(idx, found, strict=True):
                # a slot that moved (resharding, failover) ran nothing there: the cluster client follows it
                results[i] = (
                    self._redis.eval(_SAVE_LUA, len(calls[i][0]), *calls[i][0], *calls[i][1])
                    if isinstance(r, AskError)
                    else r
                )
        return results

    @staticmethod
    def _pipeline(client: Any, calls: list[tuple[list[str], list[bytes]]], *, cached: bool) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            if cached:
                pipe.evalsha(_SAVE_SHA, len(keys), *keys, *args)
            else:
                pipe.eval(_SAVE_LUA, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        self._in_flight_active_index = {}  # written now, or failed (then the worker rewinds and asks again)
        refused = 0
        error: BaseException | None = None
        for future in pending:
            try:
                applied, counts, at = future.result()
                refused += not applied
                for p, count in counts.items():
                    self._noticed(p, count, at)
            except Exception as exc:
                error = exc
        if error is not None or refused:
            self._cache.clear()
            self._decoded.clear()
            if isinstance(error, ChurnstreamError):  # from `after`: nothing was written
                raise error
            if error is not None:
                raise StoreError(f"writing feature state to Redis failed: {error}") from error
            raise StoreError(CONFLICT)
        excess = len(self._cache) - self._cache_size
        if excess > 0:  # whole customers, least recently used first (read again from Redis when needed)
            for cid in list(itertools.islice(self._cache, excess)):
                del self._cache[cid]
                self._decoded.pop(cid, None)
        excess = len(self._decoded) - self._decoded_size
        if excess > 0:
            for cid in list(itertools.islice(self._decoded, excess)):
                del self._decoded[cid]

    def reset(self) -> None:
        try:
            self.flush()
        finally:
            self._cache.clear()
            self._decoded.clear()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        try:
            self.flush()
        finally:
            self._writer.shutdown(wait=True)

    def _read(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a read command; any Redis failure (down, auth refused, ...) becomes a :class:`StoreError`."""
        try:
            return command(*args, **kwargs)
        except Exception as exc:  # redis-py raises many types; all mean the same here
            raise StoreError(f"reading from Redis failed: {exc}") from exc

    def watermark(self) -> int | None:
        self.flush()
        count = self._partition_count()
        pipe = self._redis.pipeline(transaction=False)
        for p in range(count):
            pipe.hget(self._keys.meta(p), layout.LATEST)
        times = [int(v) for v in self._read(pipe.execute) if v is not None]
        return max(times) if times else None

    def _partition_count(self) -> int:
        self.partition_of("")  # reads the recorded count once
        return self.partitions or 1

    def _field(self, partition: int, name: str) -> str | None:
        self.flush()
        value = self._read(self._redis.hget, self._keys.meta(partition), name)
        return None if value is None else value.decode()

    def _write_fields(self, values: Mapping[int, Mapping[str, str]]) -> None:
        self.flush()
        if values:
            pipe = self._redis.pipeline(transaction=False)
            for p, fields in values.items():
                pipe.hset(self._keys.meta(p), mapping=dict(fields))
            self._read(pipe.execute)

    def probe_write(self, partitions: Iterable[int]) -> None:
        """One short-lived key in each partition's hash slot (on a cluster: on its master)."""
        self.flush()
        pipe = self._redis.pipeline(transaction=False)
        for p in partitions:
            pipe.set(self._keys.blob(p, "probe"), b"1", px=60_000)
        try:
            pipe.execute()
        except Exception as exc:  # redis-py raises many types; all mean the same here
            raise StoreError(f"Redis refuses writes: {exc}") from exc

    def _blobs(self, partition: int, names: Sequence[str]) -> list[bytes | None]:
        self.flush()
        keys = [self._keys.blob(partition, name) for name in names]
        return list(self._read(self._redis.mget, keys))  # one partition: one slot

    def _learner_history(
        self, pairs: Sequence[tuple[int, int]]
    ) -> list[tuple[list[LearnerRecord] | None, int | None]]:
        self.flush()
        pipe = self._redis.pipeline(transaction=False)  # every pair in one round trip
        for p, before in pairs:
            key = self._keys.blob(p, layout.LEARNER_HISTORY)
            pipe.zrevrangebyscore(key, f"({before}", "-inf", start=0, num=2)
            pipe.exists(key)
            pipe.hget(self._keys.meta(p), layout.LEARNER_HISTORY_FROM)
        found = iter(self._read(pipe.execute))
        out: list[tuple[list[LearnerRecord] | None, int | None]] = []
        for _ in pairs:
            members, exists, known_from = next(found), next(found), next(found)
            records = []
            for member in members:  # "<time>|<payload>"
                at, _, payload = member.partition(b"|")
                records.append(LearnerRecord.of_payload(int(at), payload))
            out.append((records if exists else None, None if known_from is None else int(known_from)))
        return out

    def _layout(self) -> dict[str, Any] | None:
        raw = self._read(self._redis.get, self._keys.layout)
        return None if raw is None else dict(orjson.loads(raw))

    def _write_layout(self, record: dict[str, Any]) -> None:
        self._read(self._redis.set, self._keys.layout, orjson.dumps(record))
        self._layout_known = True

    def check_layout(self, *, partitions: int | None = None) -> None:
        super().check_layout(partitions=partitions)
        self._layout_known = True

    def _before_write(self) -> None:
        if not self._layout_known:
            self.check_layout(partitions=self.partitions)
        super()._before_write()

    def _legacy(self) -> bool:
        return bool(self._read(self._redis.exists, self._keys.legacy_meta))

    def where(self) -> str:
        """Where this store keeps its state, for messages."""
        return f"Redis (namespace {self._keys.root!r})"

    def _active_rows(
        self, windows: Sequence[tuple[int | None, int]], partitions: Sequence[int], *, wait: bool
    ) -> list[list[tuple[int, str, int]]]:
        if wait:
            self.flush()
        pipe = self._redis.pipeline(transaction=False)  # every window in one round trip
        for since, before in windows:
            for p in partitions:
                lo = "-inf" if since is None else since
                pipe.zrangebyscore(self._keys.active(p), lo, f"({before}", withscores=True)
        found = iter(self._read(pipe.execute))
        return [[(int(ts), cid.decode(), p) for p in partitions for cid, ts in next(found)] for _ in windows]

    def _in_flight_active(self) -> dict[int, dict[str, int | None]]:
        return self._in_flight_active_index

    def due_before(self, until: Mapping[int, int], *, limit: int) -> dict[int, Due]:
        # No flush: waiting for the write in flight here would serialise Redis and the next batch. A due
        # entry that write adds is found with the next batch; one it removes is loaded and found not due.
        if not until:
            return {}
        pipe = self._redis.pipeline(transaction=False)  # every partition in one round trip
        for p, t in until.items():
            key = self._keys.due(p)
            pipe.zrangebyscore(key, "-inf", t, start=0, num=limit)
            pipe.zrangebyscore(key, f"({t}", "+inf", start=0, num=1, withscores=True)
        found = iter(self._read(pipe.execute))
        due: dict[int, Due] = {}
        for p, t in until.items():
            now, after = next(found), next(found)
            # more due than listed: ask again at t
            later = t if len(now) >= limit else (int(after[0][1]) if after else None)
            due[p] = Due([cid.decode() for cid in now], later)
        return due

    def customers(self) -> list[str]:
        self.flush()
        pattern = self._keys.customers_pattern
        keys = self._read(lambda: list(self._redis.scan_iter(match=pattern, count=1000)))
        return sorted({self._keys.customer_id(k.decode()) for k in keys})

    def forget(self, customer_id: str) -> bool:
        self.flush()
        self._cache.pop(customer_id, None)
        self._decoded.pop(customer_id, None)
        at = self._keys
        forgotten = False
        for p in self._partitions_of(customer_id):
            keys = [at.customer(p, customer_id), at.active(p), at.due(p), at.meta(p), at.erased(p)]
            try:
                removed = self._redis.eval(_FORGET_LUA, len(keys), *keys, customer_id)
            except Exception as exc:  # redis-py raises many types; all mean the same here
                raise StoreError(f"forgetting customer {customer_id!r} in Redis failed: {exc}") from exc
            forgotten = forgotten or int(removed) > 0
        return forgotten

    def _holders(self, places: set[tuple[str, int]]) -> set[tuple[str, int]]:
        self.flush()
        asked = sorted(places)
        pipe = self._redis.pipeline(transaction=False)
        for cid, p in asked:
            pipe.exists(self._keys.customer(p, cid))
        return {place for place, n in zip(asked, self._read(pipe.execute), strict=True) if n}

    def clear(self) -> None:
        self.reset()
        keys = self._read(lambda: list(self._redis.scan_iter(match=f"{self._keys.root}:*", count=1000)))
        for i in range(0, len(keys), 1000):
            self._redis.unlink(*keys[i : i + 1000])
        self._layout_known = False

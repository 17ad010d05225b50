"""Where the feature store keeps things: key names, partition hash tags, the layout version.

Every key of input partition ``p`` carries the Redis Cluster hash tag ``{p<p>}``: a customer's state,
the partition's due and activity indexes, its meta hash (applied-offset fences, event time, sweep tick,
claim) and its learner checkpoint all live in one slot, so each write script touches one slot and runs
on Redis Cluster as on a single node. Which partition a customer is in is what producers decide:
:func:`partition_of`, the murmur2 partitioner of the Java client and librdkafka's ``murmur2_random``.

>>> keys = KeyLayout("demo.")
>>> keys.customer(3, "C42"), keys.meta(3)
('churn:demo.:{p3}:c:C42', 'churn:demo.:{p3}:meta')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from churnstream.errors import LayoutError

LAYOUT_VERSION = 3
"""1: one meta hash and customer keys without partition (before Redis Cluster); 2: partition hash tags;
3: a customer's scoring state under its own key (``"scoring"``), apart from its feature state."""

# Fields of a partition's meta hash.
CLAIM = "claim"  # the worker holding the partition, and its assignment
TIME = "time"  # the scorer's latest event time of the partition
TIME_BY = "time_by"  # the fingerprint of the event that brought the partition to its time ("": not known)
SWEEP = "sweep"  # the last sweep tick recorded for the partition
LATEST = "latest"  # the latest event time the store applied in the partition (see watermark())
LEARNER_ONLINE, LEARNER_BLENDER, LEARNER_LOG = "learner:online", "learner:blender", "learner:log"
ALERT_BUDGET = "alerts"  # the alert policy's per-partition counts (churnstream.models.alert_policy.Budget)
ERASED = "erased"  # how many customers `churnstream forget` removed: a scorer caching them reads them again
ERASED_KEPT = 1000  # the latest forgotten customers' ids kept in a partition's list (KeyLayout.erased)
LEARNER_ERASED = "learner:erased"  # the ERASED count the partition's learner checkpoint was last written at
LEARNER_HISTORY = (
    "learner:history"  # sorted set: the learner's serving state by the event time it took effect
)
# the meta field holding the time the learner history is known from (absent: from the partition's start)
LEARNER_HISTORY_FROM = "learner:history_from"


def fence_field(topic: str) -> str:
    """The meta field holding the applied-offset fence of ``topic`` (in its partition's hash)."""
    return f"fence:{topic}"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (seed 0x9747b28c), as a signed 32-bit integer like Java's.

    >>> murmur2(b"21"), murmur2(b"foobar"), murmur2(b"a-little-bit-long-string")
    (-973932308, -790332482, -985981536)
    """
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(key: str, partitions: int) -> int:
    """The partition producers send ``key`` to among ``partitions``: Java's default partitioner and
    librdkafka's ``murmur2_random`` (what churnstream's producers use), the positive murmur2 modulo the count.

    >>> partition_of("C000017", 6), partition_of("C000017", 1)
    (3, 0)
    """
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class KeyLayout:
    """The Redis key names of one namespace (one deployment's topic prefix)."""

    def __init__(self, namespace: str) -> None:
        self.root = f"churn:{namespace}"
        self.layout = f"{self.root}:layout"
        self.legacy_meta = f"{self.root}:meta"  # layout 1's single meta hash: its presence means layout 1
        self.customers_pattern = f"{self.root}:{{p*}}:c:*"

    def partition(self, p: int) -> str:
        return f"{self.root}:{{p{p}}}"

    def customer(self, p: int, customer_id: str) -> str:
        return f"{self.root}:{{p{p}}}:c:{customer_id}"

    def meta(self, p: int) -> str:
        return f"{self.root}:{{p{p}}}:meta"

    def active(self, p: int) -> str:
        return f"{self.root}:{{p{p}}}:active"

    def due(self, p: int) -> str:
        return f"{self.root}:{{p{p}}}:due"

    def blob(self, p: int, name: str) -> str:
        return f"{self.root}:{{p{p}}}:{name}"

    def erased(self, p: int) -> str:
        """The list of the latest customers ``churnstream forget`` removed from partition ``p``."""
        return f"{self.root}:{{p{p}}}:erased"

    def customer_id(self, key: str) -> str:
        """The customer of a key from :meth:`customer` (partition tags hold digits only, so the first
        ``}:c:`` ends the tag)."""
        return key[key.index("}:c:", len(self.root)) + 4 :]


_REBUILD = (
    "stop every `churnstream score`, then run `churnstream rebuild` (it deletes this namespace's keys "
    "and restores the state from the input topics)"
)


def check_layout(
    found: Mapping[str, Any] | None, *, legacy: bool, partitions: int | None, where: str
) -> None:
    """Raise :class:`LayoutError` unless the stored layout ``found`` is this version's and was written for
    ``partitions`` input partitions (None: any). ``legacy``: layout 1's keys exist (it had no layout key).

    >>> check_layout({"version": 3, "partitions": 6}, legacy=False, partitions=6, where="Redis")
    >>> check_layout({"version": 2, "partitions": 6}, legacy=False, partitions=6, where="Redis")
    Traceback (most recent call last):
    ...
    churnstream.errors.LayoutError: Redis holds feature state in layout 2, this churnstream reads ... 3: ...
    >>> check_layout(None, legacy=True, partitions=6, where="Redis")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    churnstream.errors.LayoutError: Redis holds feature state in layout 1, this churnstream reads ...
    """
    version = LAYOUT_VERSION if found is None and not legacy else 1 if found is None else found.get("version")
    if version != LAYOUT_VERSION:
        newer = isinstance(version, int) and version > LAYOUT_VERSION
        raise LayoutError(
            f"{where} holds feature state in layout {version}, this churnstream reads layout "
            f"{LAYOUT_VERSION}: " + ("upgrade churnstream, or " if newer else "") + _REBUILD
        )
    stored = None if found is None else found.get("partitions")
    if partitions is not None and stored is not None and stored != partitions:
        raise LayoutError(
            f"{where} holds feature state for {stored} input partitions, but the input topics have "
            f"{partitions}: customers moved to other partitions; " + _REBUILD
        )

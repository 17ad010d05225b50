"""``churnstream features CUSTOMER_ID [--as-of T]``: a customer's online features as JSON.

:func:`find` is the one read of a customer's features as of a time from the feature store, shared by
this command and the HTTP API (:mod:`churnstream.streams.api`): exact or refused, never approximate, by
the same rules (:class:`UnknownCustomer`, :class:`NotServable`). Both default to the same time,
:func:`reached`: the event time the customer's partition has reached.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from churnstream.errors import ChurnstreamError, ConfigError, EventError, StoreError
from churnstream.event_fields import CUSTOMER_ID
from churnstream.events import format_time, parse_time
from churnstream.features.definitions import features_as_of
from churnstream.features.state import CustomerState
from churnstream.features.store import Features, FeatureStore, check_servable
from churnstream.settings import Settings


@dataclass(frozen=True, slots=True)
class Lookup:
    """A known customer's features as of ``as_of``, the partition it lives in and its raw state."""

    customer_id: str
    partition: int
    as_of: int
    features: Features
    state: CustomerState


_YEAR_10000 = 253_402_300_800_000  # epoch ms of 10000-01-01: times from here on cannot be written


class UnknownCustomer(ChurnstreamError):
    """The store knows no such customer (or no events at all yet)."""


class NotServable(ChurnstreamError):
    """Features as of the time asked for cannot be given exactly."""


def find(store: FeatureStore, customer_id: str, as_of: int | None = None) -> Lookup:
    """The customer's features as of ``as_of`` (default: the event time its partition has reached).

    :class:`UnknownCustomer` for a customer the store does not know; :class:`NotServable` for an
    ``as_of`` it cannot answer exactly: before the history it still holds for the customer, before the
    customer's first event, or after the event time its partition has reached (events up to then may
    not have arrived yet).

    >>> from churnstream.events import OrderEvent
    >>> from churnstream.features.store import MemoryFeatureStore
    >>> store = MemoryFeatureStore(lateness_ms=0)
    >>> _ = store.update([OrderEvent("e1", "c1", 86_400_000, "o1", 20.0)])
    >>> find(store, "c1").features["orders_total"]
    1
    >>> try:
    ...     find(store, "c1", 2 * 86_400_000)
    ... except NotServable as exc:
    ...     print(str(exc)[:65])
    as_of 1970-01-03T00:00:00Z is after the event time the customer's
    """
    if CUSTOMER_ID.max_len is not None and len(customer_id) > CUSTOMER_ID.max_len:  # never echoed whole
        raise UnknownCustomer(
            f"unknown customer {customer_id[:24]!r}... ({len(customer_id):,} characters): customer ids have "
            f"at most {CUSTOMER_ID.max_len}"
        )
    if as_of is not None and not 0 <= as_of < _YEAR_10000:  # epoch microseconds by mistake, say
        raise NotServable(
            f"as_of {as_of} is not a time between 1970-01-01 and 9999-12-31 (RFC 3339, or epoch milliseconds)"
        )
    if store.partitions is None:
        store.check_layout()  # learns the partition count once the scorer recorded it
    partition = store.locate([customer_id])[customer_id]  # once: each look is a Redis round trip
    latest = reached(store, customer_id, partition)
    if latest is None:
        if store.layout_version() is None:  # not one write here: a wrong prefix or Redis, most often
            raise UnknownCustomer(
                f"unknown customer {customer_id!r}: {store.where()} holds nothing yet; no scorer has "
                "written there. Check that CHURN_TOPIC_PREFIX and CHURN_REDIS_URL are the scorer's"
            )
        raise UnknownCustomer(f"unknown customer {customer_id!r}: the service has seen no events yet")
    t = latest if as_of is None else as_of
    if t > latest:
        raise NotServable(
            f"as_of {format_time(t)} is after the event time the customer's partition has reached "
            f"({format_time(latest)}): events up to as_of may not have arrived yet; omit as_of for the latest"
        )
    try:
        found = lookup(store, customer_id, t, partition)
    except EventError as exc:
        raise NotServable(f"as_of {exc}") from None
    if found is None:
        raise UnknownCustomer(f"unknown customer {customer_id!r}")
    first = found.state["first"]
    if first is not None and t < first:
        raise NotServable(
            f"as_of {format_time(t)} is before the customer's first event ({format_time(first)})"
        )
    return found


def lookup(store: FeatureStore, customer_id: str, as_of: int, partition: int | None = None) -> Lookup | None:
    """``customer_id``'s features as of ``as_of`` (one read); None for a customer the store does not know.
    ``partition``: where the customer's state is, when located already (:meth:`FeatureStore.locate`).

    :class:`~churnstream.errors.ProcessingError` when they can no longer be computed exactly (``as_of``
    lies before the history the store still holds for the customer).

    >>> from churnstream.events import OrderEvent
    >>> from churnstream.features.store import MemoryFeatureStore
    >>> store = MemoryFeatureStore(lateness_ms=0)
    >>> _ = store.update([OrderEvent("e1", "c1", 86_400_000, "o1", 20.0)])
    >>> found = lookup(store, "c1", 2 * 86_400_000)
    >>> found.features["orders_total"], found.features["recency_days"], lookup(store, "c2", 0)
    (1, 1.0, None)
    """
    if partition is None:
        partition = store.locate([customer_id])[customer_id]
    state = store.states([customer_id], at={customer_id: partition}).get(customer_id)
    if state is None:
        return None
    check_servable(state, as_of)
    return Lookup(
        customer_id=customer_id,
        partition=partition,
        as_of=as_of,
        features=features_as_of(state, as_of),
        state=state,
    )


def reached(store: FeatureStore, customer_id: str, partition: int | None = None) -> int | None:
    """The event time ``customer_id``'s partition (``partition``, when located already) has reached: the
    default ``as_of`` of a read.

    The scorer records it per partition; before it has, the latest event time the store applied. None
    before any event. A later time, such as the latest over all partitions, could count on events of the
    customer that are still on their way.

    >>> from churnstream.events import OrderEvent
    >>> from churnstream.features.store import MemoryFeatureStore
    >>> store = MemoryFeatureStore(lateness_ms=0, partitions=2)
    >>> reached(store, "c1") is None
    True
    >>> _ = store.update([OrderEvent("e1", "c1", 86_400_000, "o1", 20.0)])
    >>> reached(store, "c1")
    86400000
    >>> tx = store.begin([])
    >>> tx.set_partition_time(store.partition_of("c1"), 5_000)
    >>> store.commit(tx)
    >>> reached(store, "c1")
    5000
    """
    t = store.partition_time(store.locate([customer_id])[customer_id] if partition is None else partition)
    return store.watermark() if t is None else t


def cli(args: Any, settings: Settings) -> int:
    import redis

    from churnstream.features.redis_store import RedisFeatureStore, redis_client, redis_failed

    as_of = None
    if args.as_of is not None:  # a usage error (exit 2), before Redis is asked anything
        raw = args.as_of
        try:
            as_of = parse_time(int(raw) if raw.lstrip("-").isdigit() else raw, "--as-of")
        except EventError as exc:
            raise ConfigError(str(exc)) from None
    client = redis_client(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        store.check_layout()  # knows how many partitions the state was written for
        try:
            found = find(store, args.customer_id, as_of)
        except UnknownCustomer as exc:
            print(f"churnstream features: error: {exc}", file=sys.stderr)
            return 1
        out = {"customer_id": args.customer_id, "as_of": format_time(found.as_of), "features": found.features}
        print(json.dumps(out, indent=2))
        return 0
    except (redis.RedisError, StoreError) as exc:
        raise redis_failed(settings.redacted_redis_url, exc) from exc
    finally:
        store.close()
        client.close()

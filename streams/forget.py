"""``churnstream forget CUSTOMER_ID``: remove what the service keeps about a customer.

The service's own memory of a customer is its state in Redis (features, remembered event ids, pending
predictions, risk, alert cooldown) and its place in its partition's activity and due indexes:
:meth:`~churnstream.features.store.FeatureStore.forget` removes them atomically, and a later event of the
customer starts from nothing. What the service cannot remove is said, not hidden: the customer's messages
stay in the Kafka topics until their retention expires (and a ``churnstream rebuild`` replays the input
topics, so it would restore the customer while their events are still there), the online learners'
parameters are aggregates of every customer's labels, and drift reports on disk hold samples of windows.
The raw rows a partition's learner log holds (features and label of each labelled prediction, kept to
restore the learner exactly) are the partition's scorer's to rewrite: it writes its learner again, log
empty, at its next batch there (:meth:`~churnstream.streams.scoring.BatchScoring.erase_rows`).

A scorer holding the customer in memory reads them afresh before it scores them again; a forgetting while
a unit is computed has that unit's write refused, and the unit answered again (see
:meth:`~churnstream.features.store.FeatureStore.forget`).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from churnstream.errors import StoreError
from churnstream.features.store import FeatureStore
from churnstream.settings import Settings


def forget(store: FeatureStore, settings: Settings, customer_id: str) -> dict[str, Any]:
    """Remove ``customer_id`` from ``store``; what was removed and what remains elsewhere, as a record.

    >>> from churnstream.events import OrderEvent
    >>> from churnstream.features.store import MemoryFeatureStore
    >>> store = MemoryFeatureStore(lateness_ms=0)
    >>> _ = store.update([OrderEvent("e1", "c1", 86_400_000, "o1", 20.0)])
    >>> done = forget(store, Settings(), "c1")
    >>> done["removed"], store.customers(), forget(store, Settings(), "c1")["removed"]
    (True, [], False)
    """
    removed = store.forget(customer_id)
    topics = settings.topics
    return {
        "customer_id": customer_id,
        "removed": removed,
        "removed_from_redis": ["features and event ids", "pending predictions", "risk and alert cooldown"]
        if removed
        else [],
        "remains_in_kafka_until_retention": [
            *topics.inputs,
            *topics.outputs,
            topics.monitoring_batches,
        ],
        "notes": [
            "`churnstream rebuild` replays the input topics and would restore this customer while their "
            "events are still in them; delete or compact them there first if they must not come back",
            "the online learners' parameters are aggregates over every customer's labels; the rows the "
            "learner log in Redis holds of this customer (features and label, by prediction id) are gone "
            "once the partition's scorer next writes there, which it does at its next batch of the "
            "partition (none while no scorer runs)",
            f"drift reports under {settings.report_dir} hold samples of the windows they judged",
        ],
    }


def cli(args: Any, settings: Settings) -> int:
    import redis

    from churnstream.features.redis_store import RedisFeatureStore, redis_client, redis_failed

    client = redis_client(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        store.check_layout()  # knows how many partitions the state was written for
        done = forget(store, settings, args.customer_id)
    except (redis.RedisError, StoreError) as exc:
        raise redis_failed(settings.redacted_redis_url, exc) from exc
    finally:
        store.close()
        client.close()
    if args.json:
        print(json.dumps(done, indent=2))
    elif done["removed"]:
        print(f"forgot customer {args.customer_id!r}: " + ", ".join(done["removed_from_redis"]) + " removed")
        print(
            "still in Kafka until the topics' retention expires: "
            + ", ".join(done["remains_in_kafka_until_retention"])
        )
        for note in done["notes"]:
            print(f"note: {note}")
    else:
        print(f"churnstream forget: nothing is kept about customer {args.customer_id!r}", file=sys.stderr)
    return 0 if done["removed"] else 1


__all__ = ["cli", "forget"]

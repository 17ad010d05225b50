"""Replaying the input topics from the beginning into the feature store (no outputs).

Used to (re)build feature state and to check that what the online path computes equals the offline
builder. Reads every input partition from offset 0 to the end offsets as of the start, in micro-batches,
with the same validation edge and the same store transactions as the scoring worker.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from churnstream.events import Event
from churnstream.features.store import FeatureStore
from churnstream.settings import Settings
from churnstream.streams.kafka import end_offsets
from churnstream.streams.merge import EventTimeReader

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayResult:
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    invalid: int = 0


def replay_features(settings: Settings, store: FeatureStore) -> ReplayResult:
    """Apply every valid input event currently on the input topics to ``store``, in event-time order."""
    from churnstream.streams.topics import input_partitions

    store.check_layout(partitions=input_partitions(settings))
    reader = EventTimeReader(settings=settings, group=f"churnstream-replay-{uuid.uuid4().hex[:8]}")
    result = ReplayResult()
    try:
        targets: dict[tuple[str, int], int] = {}
        for topic in settings.topics.inputs:
            for partition, (_low, high) in end_offsets(reader.consumer, topic).items():
                if high > 0:
                    targets[(topic, partition)] = high
        position: dict[tuple[str, int], int] = {}
        while any(position.get(k, 0) < hi for k, hi in targets.items()):
            batch = reader.poll_batch(timeout=0.2)
            position.update(batch.offsets)
            result.messages += batch.size
            result.invalid += len(batch.dead_letters)
            by_partition: dict[int, list[Event]] = {}
            for event, where in batch.events:
                by_partition.setdefault(where.partition, []).append(event)
            for partition, events in by_partition.items():
                for r in store.update(events, partition=partition):
                    if r.status == "applied":
                        result.applied += 1
                    elif r.status == "duplicate":
                        result.duplicates += 1
                    else:
                        result.rejected += 1
        store.flush()
    finally:
        reader.close()
    return result

"""``churnstream rebuild``: restore all Redis state by replaying the input topics from the beginning.

For when Redis is lost (or its data cannot be trusted). The replay runs the scoring worker's own code
in a private consumer group with every output switched off, so features, pending predictions, alert
state, the online model and the applied-offset fence come back as the live worker built them; nothing
is re-emitted. When it is done, the live workers (``churnstream score``) carry on from their committed
offsets: everything before the fence is known to be applied and is skipped.

Stop the scoring workers while it runs; it refuses to start while their group has active members.
The input topics must still hold every event (the local broker keeps them forever; set
``retention.ms=-1`` on your own cluster's input topics, or keep a compacted archive).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from churnstream.errors import ChurnstreamError, LayoutError
from churnstream.settings import Settings

if TYPE_CHECKING:
    from churnstream.streams.ingest import Batch
    from churnstream.streams.scorer import ChurnScorer

log = logging.getLogger(__name__)


def end_offsets_of_inputs(settings: Settings) -> dict[tuple[str, int], int]:
    from churnstream.streams.kafka import end_offsets, make_consumer

    consumer = make_consumer(settings, f"churnstream-rebuild-probe-{uuid.uuid4().hex[:6]}")
    try:
        return {
            (topic, p): high
            for topic in settings.topics.inputs
            for p, (_low, high) in end_offsets(consumer, topic).items()
            if high > 0
        }
    finally:
        consumer.close()


def _group_is_active(settings: Settings) -> bool:
    from confluent_kafka import KafkaError, KafkaException

    from churnstream.errors import InfraError
    from churnstream.streams.topics import make_admin

    admin = make_admin(settings)
    futures = admin.describe_consumer_groups([settings.consumer_group], request_timeout=10)
    try:
        description = futures[settings.consumer_group].result()
    except KafkaException as exc:
        if exc.args and getattr(exc.args[0], "code", lambda: None)() == KafkaError.GROUP_ID_NOT_FOUND:
            return False
        raise InfraError(f"cannot tell whether the scorers are stopped: {exc}") from exc
    return bool(description.members)


class _Replay:
    """``churnstream rebuild``'s handler: the scorer's own, run silently, stopping the worker once every
    input partition is read to the end it had when the rebuild started."""

    def __init__(self, scorer: ChurnScorer, *, targets: dict[tuple[str, int], int], bar: Any) -> None:
        self.scorer = scorer
        self.targets = targets
        self.position: dict[tuple[str, int], int] = {}
        self.bar = bar

    def done(self) -> bool:
        return not any(self.position.get(k, 0) < hi for k, hi in self.targets.items())

    def process(self, batch: Batch) -> object:
        report = self.scorer.process(batch)
        before = sum(self.position.values())
        for key, offset in batch.offsets.items():
            self.position[key] = max(offset, self.position.get(key, 0))
        if self.bar is not None:
            self.bar.update(sum(self.position.values()) - before)
        if self.done():
            self.scorer.worker.stop()  # a tick is swept whole (after_batch) before the worker stops
        return report

    def on_assign(self, partitions: list[int]) -> None:
        self.scorer.on_assign(partitions)

    def on_revoke(self, partitions: list[int]) -> None:
        self.scorer.on_revoke(partitions)

    def on_rewind(self) -> None:
        self.scorer.on_rewind()

    def after_rewind(self) -> None:
        self.scorer.after_rewind()

    def before_batch(self) -> None:
        """The model stays the one current when the rebuild started."""

    def after_batch(self) -> None:
        self.scorer.after_batch()

    def describe(self) -> dict[str, Any]:
        return self.scorer.describe()


def preflight(settings: Settings) -> None:
    """What must hold before anything is deleted: Kafka answers us, and no scorer runs in the group."""
    from churnstream.streams.topics import existing_topics

    existing_topics(settings)  # InfraError within seconds when Kafka is down or refuses our login
    if _group_is_active(settings):
        raise ChurnstreamError(
            f"consumer group {settings.consumer_group!r} has active members: stop `churnstream score` first"
        )


def rebuild(settings: Settings, *, progress: bool = True) -> dict[str, Any]:
    """Clear this deployment's Redis state and rebuild it from the input topics; returns totals.

    Everything that could fail before the replay (Kafka unreachable or refusing us, scorers still
    running) is checked before anything in Redis is deleted.
    """
    from churnstream.features.layout import LAYOUT_VERSION
    from churnstream.features.redis_store import RedisFeatureStore, redis_client
    from churnstream.models.serving import load_models
    from churnstream.streams.scorer import ChurnScorer, open_store
    from churnstream.streams.worker import Worker

    preflight(settings)
    targets = end_offsets_of_inputs(settings)
    store = RedisFeatureStore(
        client=redis_client(settings.redis_url),
        namespace=settings.topic_prefix,
        lateness_ms=settings.lateness_ms,
    )
    version = store.layout_version()  # an older layout is what rebuild replaces; a newer one is not ours
    if version is not None and version > LAYOUT_VERSION:
        raise LayoutError(
            f"Redis at {settings.redacted_redis_url} holds feature state in layout {version}, written by a "
            f"newer churnstream (this one writes layout {LAYOUT_VERSION}): rebuild with that version"
        )
    store.clear()
    store.close()
    total = sum(targets.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="msg", file=sys.stderr, desc="rebuild")
    store = open_store(settings)
    models = load_models(settings, store)
    worker = Worker(
        settings=settings,
        store=store,
        group=f"churnstream-rebuild-{uuid.uuid4().hex[:8]}",
        quiet=True,
        poll_timeout=0.2,
        handler=lambda w: _Replay(
            ChurnScorer(worker=w, settings=settings, store=store, models=models), targets=targets, bar=bar
        ),
    )
    started = time.monotonic()
    try:
        if worker.handler.done():
            worker.stop()
        worker.run()
    finally:
        if bar is not None:
            bar.close()
    totals = worker.handler.scorer.totals
    return {
        "messages": total,
        "events": totals.events,
        "predictions": totals.predictions,
        "sweeps": totals.sweeps,
        "outcomes": totals.outcomes,
        "seconds": round(time.monotonic() - started, 1),
    }


def cli(args: Any, settings: Settings) -> int:
    if not args.yes:
        preflight(settings)  # refused before the question, not after the yes (rebuild checks again)
        answer = input(
            f"This deletes every churnstream key under namespace {settings.topic_prefix!r} in "
            f"{settings.redacted_redis_url} and rebuilds it from the input topics. Continue? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return 1
    result = rebuild(settings)
    print(
        f"rebuilt from {result['messages']:,} messages: {result['events']:,} events, "
        f"{result['predictions']:,} event predictions and {result['sweeps']:,} sweeps re-derived "
        f"(not re-emitted), {result['outcomes']:,} labels learned, in {result['seconds']} s"
    )
    return 0

"""A worker's outputs: queued while a batch is computed, produced once the previous batch's state write
is durable, acknowledged before the batch's own state write.

:class:`Outbox` owns the Kafka producer. librdkafka may declare it broken for good (an idempotent
producer fenced or out of sequence, e.g. after the broker behind the address was replaced): the worker
then rewinds to its last commit and :meth:`Outbox.replace_producer` starts a fresh one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from churnstream.errors import InfraError
from churnstream.settings import Settings
from churnstream.streams.kafka import DeliveryTracker, make_producer, refusal

log = logging.getLogger(__name__)


class Outbox:
    """The outputs of the batch being finished, and the producer that delivers them.

    ``quiet``: outputs are dropped (``churnstream rebuild`` re-derives state without re-emitting).
    """

    def __init__(self, *, settings: Settings, quiet: bool = False) -> None:
        self.settings = settings
        self.quiet = quiet
        self.producer_failed: str | None = None  # why librdkafka declared the producer broken for good
        self._replaced_producers: list[float] = []
        self.producer = self._new_producer()
        self.tracker = DeliveryTracker()
        self._queued: list[tuple[str, str | bytes | None, bytes]] = []

    def emit(self, topic: str, key: str | bytes | None, value: dict[str, Any] | bytes) -> None:
        """Queue one output of the batch being finished; :meth:`produce` hands them to the producer."""
        if self.quiet:
            return
        self._queued.append((topic, key, value if isinstance(value, bytes) else orjson.dumps(value)))

    def produce(self) -> None:
        """Produce the queued outputs of this batch.

        Called only once the previous batch's write has finished, so the writer's flush, which waits
        for every message in the producer's queue, waits for one batch's outputs and never for the next
        batch's as well (it did: at 2,000 events/s most of a batch's time went to that wait).
        """
        queued, self._queued = self._queued, []
        produce = self.producer.produce
        on_delivery = self.tracker.on_delivery
        for topic, key, payload in queued:
            while True:
                try:
                    produce(topic, value=payload, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)

    def acknowledged(self) -> Callable[[], None]:
        """What a state write waits for: every output produced so far acknowledged by the broker
        (:class:`PublishError` if not). Bound to the current producer and tracker, so a rewind that
        starts new ones does not change what an earlier write waits for."""
        return functools.partial(self.tracker.flush_or_raise, self.producer)

    def abandon(self) -> None:
        """Drop the queued outputs; failures reported for them are not the next batch's (a rewind)."""
        self._queued = []
        self.tracker = DeliveryTracker()

    def _new_producer(self) -> Producer:
        # only failures are reported: a Python callback per acknowledged message cost ~6% of the worker
        return make_producer(
            self.settings, delivery_report_only_error=True, config={"error_cb": self.on_producer_error}
        )

    def on_producer_error(self, error: KafkaError) -> None:
        """librdkafka's error callback: a refused login stops the worker; a fatal error (an idempotent
        producer fenced or out of sequence, e.g. after the broker behind the address was replaced) is
        noted, and the next retry gets a fresh producer (retrying with this one would fail for ever)."""
        refused = refusal(self.settings, error)
        if refused is not None:
            raise refused
        if error.fatal():
            self.producer_failed = self.settings.redact(error.str())

    def replace_producer(self) -> None:
        """A fresh producer after a fatal error, from the last commit (the rewind has just gone back to it);
        the third within a minute stops the worker for its supervisor, as something is wrong beyond one
        client."""
        now = time.monotonic()
        self._replaced_producers = [t for t in self._replaced_producers if now - t < 60.0] + [now]
        reason, self.producer_failed = self.producer_failed, None
        if len(self._replaced_producers) >= 3:
            raise InfraError(
                f"the Kafka producer failed for good 3 times within a minute (last: {reason}); exiting so "
                "that the worker is restarted (check the brokers behind CHURN_KAFKA_BOOTSTRAP)"
            )
        log.error(
            "the Kafka producer failed for good (%s): starting a fresh one from the last commit", reason
        )
        with contextlib.suppress(Exception):
            self.producer.purge()  # what it still holds belongs to batches the rewind gave up
        self.producer = self._new_producer()


__all__ = ["Outbox"]

"""Poison messages: a batch that fails for a reason that is not Kafka or Redis is searched one message at a
time, and the one message that fails alone becomes a dead letter (stage ``process``).

:class:`Isolation` is the worker's memory of that search: which partitions are read one message at a
time, up to where the failed batch ended.

>>> from churnstream.streams.ingest import Batch
>>> isolation = Isolation(batch_size=500)
>>> isolation.failed(Batch(offsets={("orders", 0): 12}), ValueError("boom")) is None, isolation.active
(True, True)
>>> isolation.passed({("orders", 0): 12}); isolation.active
False
"""

from __future__ import annotations

import logging

from churnstream.dead_letter import DeadLetter, dead_letter_for_event
from churnstream.errors import ProcessingError
from churnstream.streams.ingest import Batch

log = logging.getLogger(__name__)
_NEVER = 2**62


class Isolation:
    """(topic, partition) -> end offset of a batch that failed: read one message at a time up to there."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._until: dict[tuple[str, int], int] = {}

    @property
    def active(self) -> bool:
        return bool(self._until)

    def failed(self, batch: Batch, exc: Exception) -> list[DeadLetter] | None:
        """A batch failed with ``exc`` (the worker has rewound): the dead letters of the one message that
        failed alone, or None when the batch is to be searched one message at a time first."""
        if not self._until or batch.size != 1:
            log.warning(
                "a batch failed (%s: %s); looking for the message that causes it", type(exc).__name__, exc
            )
            for key, offset in batch.offsets.items():
                self._until[key] = max(offset, self._until.get(key, 0))
            return None
        if batch.events:
            event, where = batch.events[0]
            error = ProcessingError(f"could not be processed: {type(exc).__name__}: {exc}"[:1000])
            letters = [dead_letter_for_event(event, where, error)]
        else:
            letters = batch.dead_letters
        log.error(
            "dead-lettering the message that fails alone (%s: %s)", type(exc).__name__, exc, exc_info=exc
        )
        return letters

    def passed(self, offsets: dict[tuple[str, int], int]) -> None:
        """Note progress through the messages of a failed batch; back to whole batches past its end."""
        if not self._until:
            return
        for key, offset in offsets.items():
            if offset >= self._until.get(key, _NEVER):
                del self._until[key]
        if not self._until:
            log.info("past the failed batch: back to batches of up to %d messages", self.batch_size)


__all__ = ["Isolation"]

"""What a :class:`~churnstream.streams.worker.Worker` runs: a handler is told about partitions and rewinds,
and processes batches, writing each unit of work through :meth:`Worker.write
<churnstream.streams.worker.Worker.write>` (which keeps the exactly-once protocol).

The scorer (:class:`churnstream.streams.scorer.ChurnScorer`) is one; ``churnstream rebuild`` runs it
silently under a handler of its own that stops once the input topics are read to their end.
"""

from __future__ import annotations

from typing import Any, Protocol

from churnstream.streams.ingest import Batch


class Handler(Protocol):
    """What a worker runs: it is told about partitions and rewinds, and processes batches (writing its
    units of work through :meth:`Worker.write`)."""

    def on_assign(self, partitions: list[int]) -> None:
        """Take over partitions: the worker has claimed them and knows their fences."""

    def on_revoke(self, partitions: list[int]) -> None:
        """Partitions went to another worker: forget what is cached for them."""

    def on_rewind(self) -> None:
        """Forget what the abandoned batches built (it may not have been written)."""

    def after_rewind(self) -> None:
        """Reload from the store what it holds for the assigned partitions (an exception: retried)."""

    def before_batch(self) -> None:
        """Between polls, before a batch is processed (e.g. pick up a promoted model)."""

    def process(self, batch: Batch) -> object:
        """Process one batch, writing it with :meth:`Worker.write`."""

    def after_batch(self) -> None:
        """After each poll, once the batch is written (e.g. sweep the event-time ticks it reached)."""

    def describe(self) -> dict[str, Any]:
        """What ``/health`` adds about the handler."""


__all__ = ["Handler"]

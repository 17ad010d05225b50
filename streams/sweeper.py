"""The scorer's sweeps of silent customers, tick by tick of event time.

The rule (which customers, at which tick) is :mod:`churnstream.features.sweep`, shared with the offline
path.

A tick's customers are listed once (every milestone crossed since the partition's last tick) and
rescored in chunks of at most ``CHURN_BATCH_SIZE``, one transaction each (the scorer puts the first into
the transaction of the events that reached the tick, :meth:`Sweeper.ready`), all before the next event
batch: so what the online model has learned when an event is scored does not depend on timing, and an
answer re-emitted after a crash is the same answer. A partition's tick is recorded in Redis with its
last chunk; after a crash the tick is swept again, with the same prediction ids.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from churnstream.features.definitions import features_as_of
from churnstream.features.store import FeatureStore, Transaction
from churnstream.features.sweep import crossed_milestone, plan_sweep, silence_windows, sweep_tick
from churnstream.settings import Settings
from churnstream.streams.scoring import ScoringRows


class Sweeper:
    """Which customers of the worker's ``assigned`` partitions are still to be swept, and at which tick.

    ``times``: each partition's event time (its latest event). A partition is swept at the ticks its own
    event time reaches, whichever partitions share its worker: so the same log gives the same sweeps with
    one worker or several, and a quiet partition holds back no other.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: FeatureStore,
        assigned: Collection[int],
        times: Callable[[], Mapping[int, int]],
    ) -> None:
        self.store = store
        self.assigned = assigned
        self.times = times
        self.chunk_size = settings.batch_size
        self.lateness = settings.lateness_ms
        self.interval = settings.sweep_interval_ms
        self.milestones = settings.sweep_milestones_ms
        self.last_sweep: dict[int, int] = {}
        # (customer, partition, tick, the tick's silence windows of the customer's partition group)
        self._queue: list[tuple[str, int, int, list[tuple[int, int]]]] = []
        self._done: dict[int, int] = {}  # partition -> tick to record with its last chunk
        self._reload = True
        # the partitions whose tick the last chunk recorded: every silent customer of theirs is scored, and
        # their learners learn in that chunk's write (so every sweep row of a tick is scored before)
        self.finished: list[int] = []

    def tick(self, watermark: int) -> int:
        """The latest sweep tick that a watermark lets go (the allowed lateness after it has passed)."""
        return sweep_tick(watermark, lateness_ms=self.lateness, interval_ms=self.interval)

    @property
    def pending(self) -> bool:
        """Whether a chunk is waiting (planning first when nothing is queued)."""
        return self.ready()

    def ready(self, open_tx: Transaction | None = None) -> bool:
        """:attr:`pending`, planning as if ``open_tx`` (the events that reached the tick, not written
        yet) were written."""
        if not self._queue:
            self._plan(open_tx)
        return bool(self._queue or self._done)

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions taken over: their last tick as Redis holds it."""
        for p in partitions:
            tick = self.store.sweep_tick(p)
            if tick is not None:
                self.last_sweep[p] = tick

    def revoke(self) -> None:
        """Forget partitions no longer assigned (reloaded from Redis if assigned again)."""
        self._queue = [entry for entry in self._queue if entry[1] in self.assigned]
        for p in set(self.last_sweep) - set(self.assigned):
            self.last_sweep.pop(p, None)
            self._done.pop(p, None)

    def rewind(self) -> None:
        """A sweep chunk may have been lost with the failed write: sweep from the recorded ticks again."""
        self._queue.clear()
        self._done.clear()
        self._reload = True

    def chunk(self, begin: Callable[[dict[str, int]], Transaction]) -> tuple[Transaction, ScoringRows]:
        """The next chunk's transaction (recording the ticks of partitions it finishes: :attr:`finished`)
        and rows to score."""
        part = self._queue[: self.chunk_size]
        del self._queue[: len(part)]
        tx = begin({cid: p for cid, p, _, _ in part})
        scoring = ScoringRows()
        for cid, p, tick, windows in part:
            latest = tx.state(cid)["max"]
            if latest is None or not crossed_milestone(latest, windows):
                continue  # forgotten, or active again since it was listed
            scoring.customer_ids.append(cid)
            scoring.as_of.append(tick)
            scoring.triggers.append("sweep")
            scoring.event_ids.append(None)
            scoring.rows.append(features_as_of(tx.state(cid), tick))
            scoring.partitions.append(p)
        pending = {p for _, p, _, _ in self._queue}
        self.finished = sorted(p for p in self._done if p not in pending)
        for p in self.finished:
            tx.set_sweep_tick(p, self._done.pop(p))
        return tx, scoring

    def _plan(self, open_tx: Transaction | None = None) -> None:
        """List the customers whose silence reached a milestone between each partition's last tick and now."""
        if self._reload:
            for p in self.assigned:  # what Redis holds, for each assigned partition (dropped if none)
                stored = self.store.sweep_tick(p)
                if stored is None:
                    self.last_sweep.pop(p, None)
                else:
                    self.last_sweep[p] = stored
            self._reload = False
        times = self.times()
        by_tick: dict[int, list[int]] = {}
        for p in self.assigned:
            if p in times:
                by_tick.setdefault(self.tick(times[p]), []).append(p)
        for tick, assigned in sorted(by_tick.items()):
            plan = plan_sweep(assigned, self.last_sweep, tick)
            for p in plan.starting:  # first time: start sweeping from the next tick on, and say so in Redis
                self.last_sweep[p] = tick
                self._done[p] = tick
            for last, partitions in plan.groups:
                windows = silence_windows(last, tick, self.milestones)
                # Not waiting for the write in flight, which would serialise Redis and this worker: the
                # store lays what that write changes over what Redis answers.
                listed = self.store.active_in(windows, partitions=partitions, wait=False, pending=open_tx)
                self._queue += [(cid, p, tick, windows) for cid, p in listed.items()]
            for p in plan.due:
                self.last_sweep[p] = tick
                self._done[p] = tick


__all__ = ["Sweeper"]

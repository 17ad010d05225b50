"""The scorer's sweeps over the in-memory store: chunks of at most a batch, a partition's tick recorded
with its last chunk, and nothing swept twice once recorded."""

from __future__ import annotations

from churnstream.events import OrderEvent
from churnstream.features.store import MemoryFeatureStore
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.sweeper import Sweeper

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS


def _drain(sweeper: Sweeper, store: MemoryFeatureStore) -> list[list[tuple[str, int]]]:
    chunks = []
    while sweeper.pending:
        tx, rows = sweeper.chunk(store.begin)
        chunks.append(list(zip(rows.customer_ids, rows.partitions, strict=True)))
        store.commit(tx)
    return chunks


def test_a_tick_is_swept_in_chunks_and_recorded_with_the_last_one() -> None:
    settings = Settings(batch_size=4, allowed_lateness_days=0, sweep_milestones_days="7,30")
    store = MemoryFeatureStore(lateness_ms=0)
    for p in (0, 1):
        store.update(
            [OrderEvent(f"o{p}{n}", f"C{p}{n}", T0 + n, f"o{p}{n}", 5.0) for n in range(5)], partition=p
        )
    watermark = T0 + DAY_MS
    sweeper = Sweeper(
        settings=settings, store=store, assigned={0, 1}, times=lambda: dict.fromkeys((0, 1), watermark)
    )

    assert _drain(sweeper, store) == [[]]  # the first tick only starts sweeping, and is recorded
    assert store.sweep_tick(0) == store.sweep_tick(1) == T0 + DAY_MS

    watermark = T0 + 10 * DAY_MS  # every customer's silence crossed 7 days since the last tick
    chunks = _drain(sweeper, store)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert sorted(cid for c in chunks for cid, _ in c) == sorted(f"C{p}{n}" for p in (0, 1) for n in range(5))
    assert all(cid[1] == str(p) for c in chunks for cid, p in c)  # each scored as its own partition's
    assert store.sweep_tick(0) == store.sweep_tick(1) == T0 + 10 * DAY_MS

    assert _drain(sweeper, store) == []  # the tick is done: nobody again until the next milestone
    sweeper.rewind()  # after a failed write: from the ticks Redis recorded, so again nobody
    assert _drain(sweeper, store) == []


def test_a_revoked_partition_is_not_swept_by_this_worker() -> None:
    settings = Settings(batch_size=100, allowed_lateness_days=0, sweep_milestones_days="7")
    store = MemoryFeatureStore(lateness_ms=0)
    for p in (0, 1):
        store.update([OrderEvent(f"o{p}", f"C{p}", T0, f"o{p}", 5.0)], partition=p)
    assigned = {0, 1}
    watermark = T0 + DAY_MS
    sweeper = Sweeper(
        settings=settings, store=store, assigned=assigned, times=lambda: dict.fromkeys((0, 1), watermark)
    )
    _drain(sweeper, store)
    watermark = T0 + 9 * DAY_MS
    assigned.discard(1)
    sweeper.revoke()
    assert _drain(sweeper, store) == [[("C0", 0)]]
    assert store.sweep_tick(1) == T0 + DAY_MS  # left for the partition's new owner

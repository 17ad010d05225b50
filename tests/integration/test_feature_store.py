"""The feature store's contract, run against the in-memory store and real Redis alike."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from churnstream.errors import LayoutError, ProcessingError, StoreError
from churnstream.events import LabelEvent, OrderEvent, ProfileEvent, TicketEvent
from churnstream.features.definitions import FEATURE_NAMES, features_as_of
from churnstream.features.layout import LAYOUT_VERSION, KeyLayout, partition_of
from churnstream.features.memory_store import MemoryFeatureStore
from churnstream.features.offline import replay, snapshot
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.features.state import new_state, scoring_state
from churnstream.features.store import Due, FeatureStore, LearnerRecord
from churnstream.features.transaction import Transaction
from churnstream.settings import DAY_MS, Settings, Topics

LATENESS = 7 * DAY_MS
T0 = 1_700_000_000_000
PARTITIONS = 4  # customers spread over partitions, located as producers place them


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[FeatureStore]:
    if request.param == "memory":
        yield MemoryFeatureStore(lateness_ms=LATENESS, partitions=PARTITIONS)
        return
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {settings.redacted_redis_url} is not reachable ({exc}); run ./run infra up")
    s = RedisFeatureStore(
        client=client, namespace=f"test-{uuid.uuid4().hex[:8]}", lateness_ms=LATENESS, partitions=PARTITIONS
    )
    yield s
    s.clear()
    s.close()
    client.close()


def order(n: int, cid: str, day: float, amount: float = 10.0, status: str = "completed") -> OrderEvent:
    return OrderEvent(
        event_id=f"o{n}-{cid}",
        customer_id=cid,
        timestamp=T0 + int(day * DAY_MS),
        order_id=f"ord{n}",
        amount=amount,
        status=status,
    )


def ticket(
    n: int, cid: str, day: float, *, res: float | None = 5.0, sat: int | None = 4, tid: str | None = None
) -> TicketEvent:
    return TicketEvent(
        event_id=f"t{n}-{cid}",
        customer_id=cid,
        timestamp=T0 + int(day * DAY_MS),
        ticket_id=tid or f"tk{n}",
        resolution_time_hours=res,
        satisfaction_score=sat,
    )


def history(cid: str = "c1") -> list:
    return [
        ProfileEvent(event_id=f"p1-{cid}", customer_id=cid, timestamp=T0 - DAY_MS, fields={"age": 41}),
        order(1, cid, 0, 20.0),
        order(2, cid, 40, 30.0),
        order(3, cid, 70, 15.5, status="returned"),
        order(4, cid, 100, 50.0),
        ticket(1, cid, 95, res=10.0, sat=1),
        ticket(2, cid, 99, res=None, sat=None),
        order(5, cid, 120, 25.0),
    ]


def test_required_features_have_the_contract_meanings(store: FeatureStore) -> None:
    results = store.update(history())
    assert [r.status for r in results] == ["applied"] * 8
    f = store.features("c1", as_of=T0 + 125 * DAY_MS)
    assert f is not None
    assert f["orders_total"] == 4  # the returned one is not a completed order
    assert f["spent_total"] == pytest.approx(125.0)
    assert f["avg_order_value"] == pytest.approx(31.25)
    assert f["recency_days"] == pytest.approx(5.0)
    assert f["tenure_days"] == pytest.approx(126.0)  # first event is the profile, one day before T0
    assert f["orders_30d"] == 2  # (95, 125]: days 100 and 120
    assert f["orders_90d"] == 3  # (35, 125]: days 40, 100, 120
    assert f["spent_90d"] == pytest.approx(105.0)
    assert f["mean_days_between_orders"] == pytest.approx(40.0)  # (120 - 0) / 3
    assert f["returns_total"] == 1
    assert f["tickets_total"] == 2
    assert f["tickets_90d"] == 2
    assert f["negative_tickets_total"] == 1
    assert f["avg_resolution_hours"] == pytest.approx(10.0)  # the open ticket has none
    assert f["open_tickets"] == 1
    assert f["age"] == 41
    assert set(f) == set(FEATURE_NAMES)


def test_features_as_of_use_only_events_up_to_t(store: FeatureStore) -> None:
    store.update(history()[:-1])  # up to day 100
    f = store.features("c1", as_of=T0 + 96 * DAY_MS)
    assert f is not None
    assert f["orders_total"] == 2  # days 0 and 40; day 100 is after t
    assert f["returns_total"] == 1
    assert f["tickets_total"] == 1
    assert f["avg_resolution_hours"] == pytest.approx(10.0)
    assert f["recency_days"] == pytest.approx(56.0)
    with pytest.raises(ProcessingError, match="retained history"):
        store.features("c1", as_of=T0 + 50 * DAY_MS)  # day 0 is folded: its window can't be rebuilt
    # and each event's own result is as of its own time
    results = store.update([order(6, "c2", 10), order(7, "c2", 5)])
    assert results[0].features["orders_total"] == 1  # type: ignore[index]
    assert results[1].features["orders_total"] == 1  # as of day 5, the day-10 order is in the future
    assert results[1].features["recency_days"] == 0.0  # type: ignore[index]


def test_redelivered_events_change_nothing(store: FeatureStore) -> None:
    events = history()
    first = store.update(events)
    before = store.features("c1", as_of=T0 + 130 * DAY_MS)
    again = store.update(events[4:7] + events)
    assert store.features("c1", as_of=T0 + 130 * DAY_MS) == before
    assert "applied" not in {r.status for r in again}
    # a redelivered event reports its features as of its own time, as the store now knows them
    for r in again:
        if r.event.timestamp >= T0 + 113 * DAY_MS:  # servable: within the lateness of the latest event
            assert r.status == "duplicate"
            assert r.features == store.features("c1", as_of=r.event.timestamp)
    assert [r.features for r in again[-1:]] == [first[-1].features]


def test_shuffled_within_lateness_gives_identical_features(store: FeatureStore) -> None:
    rng = random.Random(3)
    events = []
    for cid in ("a", "b", "c"):
        for n in range(60):
            day = n * 3 + rng.random()
            if n % 4 == 0:
                events.append(
                    ticket(n, cid, day, res=rng.choice([None, 2.0, 30.0]), sat=rng.choice([None, 1, 5]))
                )
            else:
                events.append(order(n, cid, day, amount=round(rng.uniform(1, 99), 2)))
    events.sort(key=lambda e: e.timestamp)
    # shuffle inside blocks spanning less than the allowed lateness
    shuffled = []
    block = 2 * DAY_MS
    for start in range(0, len(events), 4):
        chunk = events[start : start + 4]
        assert chunk[-1].timestamp - chunk[0].timestamp < LATENESS
        rng.shuffle(chunk)
        shuffled.extend(chunk)
    for i in range(0, len(shuffled), 7):
        store.update(shuffled[i : i + 7])
    reference = MemoryFeatureStore(lateness_ms=LATENESS)
    reference.update(events)
    end = events[-1].timestamp
    for cid in ("a", "b", "c"):
        assert store.features(cid, as_of=end) == reference.features(cid, as_of=end)
    assert block < LATENESS


def test_folding_keeps_features_exact_and_state_bounded(store: FeatureStore) -> None:
    rng = random.Random(5)
    events = []
    for n in range(400):  # two years of a weekly buyer with tickets
        day = n * 1.8
        events.append(
            order(
                n,
                "c",
                day,
                amount=round(rng.uniform(5, 50), 2),
                status=rng.choice(["completed"] * 9 + ["returned"]),
            )
        )
        if n % 10 == 0:
            events.append(
                ticket(n, "c", day + 0.5, res=rng.choice([None, 3.5]), sat=rng.choice([1, 3, 5, None]))
            )
    for i in range(0, len(events), 50):
        store.update(events[i : i + 50])
    end = events[-1].timestamp
    unfolded = new_state()
    for e in events:  # a reference that never folds: lateness longer than the whole history
        from churnstream.features.state import apply_event

        apply_event(unfolded, e, lateness_ms=10_000 * DAY_MS)
    assert unfolded["fu"] is None or unfolded["fu"] < T0
    for t in (end, end - 3 * DAY_MS):
        assert store.features("c", as_of=t) == features_as_of(unfolded, t)
        assert features_as_of(unfolded, t)["order_gap_cv"] is not None  # the folded gaps are compared too
    state = store.states(["c"])["c"]
    assert len(state["o"]) < 80  # only the last ~97 days of ~1.8-day gaps stay in the log
    assert len(state["seen"]) < 20


def test_event_older_than_retained_history_is_rejected(store: FeatureStore) -> None:
    store.update([order(1, "c", 100), order(2, "c", 200)])  # folds day 100 (older than 200 - 90 - 7)
    late = store.update([order(3, "c", 50), order(1, "c", 100), order(4, "c", 194), order(5, "c", 150)])
    assert late[0].status == "rejected"  # before the folded-until time: cannot be placed any more
    assert "retained history" in str(late[0].error)
    assert late[1].status == "duplicate"  # its id is still remembered after folding
    assert late[2].status == "applied" and late[2].as_of == T0 + 194 * DAY_MS  # within the lateness: exact
    # 50 days late: applied (totals stay exact), but scored as of the customer's latest event
    assert late[3].status == "applied" and late[3].as_of == T0 + 200 * DAY_MS
    f = store.features("c", as_of=T0 + 200 * DAY_MS)
    assert f is not None and f["orders_total"] == 4
    assert late[3].features == f


def test_ticket_updates_count_one_ticket_with_the_latest_values(store: FeatureStore) -> None:
    store.update(
        [
            ticket(1, "c", 1, res=None, sat=None, tid="T-1"),
            ticket(2, "c", 3, res=48.0, sat=2, tid="T-1"),
            ticket(3, "c", 4, res=1.0, sat=5, tid="T-2"),
        ]
    )
    f = store.features("c", as_of=T0 + 5 * DAY_MS)
    assert f is not None
    assert (f["tickets_total"], f["negative_tickets_total"], f["open_tickets"]) == (2, 1, 0)
    assert f["avg_resolution_hours"] == pytest.approx(24.5)
    g = store.features("c", as_of=T0 + 2 * DAY_MS)  # before the update: open, no score yet
    assert g is not None
    assert (g["tickets_total"], g["negative_tickets_total"], g["open_tickets"]) == (1, 0, 1)


def test_labels_do_not_touch_features_and_unknown_customers_are_none(store: FeatureStore) -> None:
    r = store.update([LabelEvent(event_id="l1", customer_id="x", timestamp=T0, churned=True)])
    assert r[0].status == "applied" and r[0].features is None
    assert store.features("x", as_of=T0) is None


def test_offline_builder_matches_the_store(store: FeatureStore) -> None:
    events = history("a") + history("b")[:5]
    for i in range(0, len(events), 3):
        store.update(events[i : i + 3])
    t = T0 + 130 * DAY_MS
    offline = snapshot(sorted(events, key=lambda e: e.timestamp), t, lateness_ms=LATENESS)
    assert offline == store.features_many(["a", "b"], t)
    assert set(replay(events, lateness_ms=LATENESS)) == {"a", "b"}


def test_the_state_cache_keeps_the_most_recent_customers_and_never_serves_a_stale_one() -> None:
    """A worker keeps at most CHURN_STATE_CACHE_CUSTOMERS states in memory, dropping the least recently
    used whole; one dropped is read again from Redis, so every answer stays exact."""
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    store = RedisFeatureStore(
        client=client, namespace=f"test-{uuid.uuid4().hex[:8]}", lateness_ms=LATENESS, cache_size=2
    )
    try:
        for day, cid in enumerate(["a", "b", "c", "a", "d"]):
            store.update([order(day + 1, cid, day)])
            store.flush()
        assert list(store._cache) == ["a", "d"]  # b and c least recently used; a was used again
        store.update([order(10, "b", 6)])  # b read from Redis, its first order kept
        store.flush()
        f = store.features("b", as_of=T0 + 6 * DAY_MS)
        assert f is not None and f["orders_total"] == 2
        assert list(store._cache) == ["d", "b"]
    finally:
        store.clear()
        store.close()
        client.close()


def test_decoded_states_are_handed_out_once_and_a_change_not_written_is_never_served() -> None:
    """The most recently written states are kept decoded (CHURN_STATE_CACHE_DECODED_CUSTOMERS): the next
    transaction gets the very object written, without parsing it again. A reader may change it in
    place, so it leaves the tier; a change that is not committed is then never seen by anyone."""
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(client=client, namespace=namespace, lateness_ms=LATENESS, decoded_size=1)
    try:
        store.update([order(1, "a", 0)])
        store.update([order(2, "b", 1)])
        store.flush()
        assert list(store._decoded) == ["b"]  # the cap: a, written first, is JSON only
        written = store._decoded["b"][1]
        tx = store.begin({"b": store.partition_of("b")})
        assert tx.state("b") is written  # not parsed again
        assert "b" not in store._decoded  # handed out
        tx.apply(order(3, "b", 2))  # changed in place, then abandoned: never committed
        f = store.features("b", as_of=T0 + 2 * DAY_MS)
        assert f is not None and f["orders_total"] == 1  # what was written, not the abandoned change
        store.update([order(4, "b", 3)])
        store.flush()
        f = store.features("b", as_of=T0 + 3 * DAY_MS)
        assert f is not None and f["orders_total"] == 2
        reread = RedisFeatureStore(client=client, namespace=namespace, lateness_ms=LATENESS)
        assert reread.features("b", as_of=T0 + 3 * DAY_MS) == f  # Redis holds the same
    finally:
        store.clear()
        store.close()
        client.close()


@dataclasses.dataclass
class OneCustomer:
    """A fresh Redis store, and customer ``a``'s partition in it."""

    store: RedisFeatureStore
    client: redis.Redis
    namespace: str
    partition: int

    def stored(self) -> dict:
        """Customer ``a``'s state as Redis holds it, once the write in flight is done."""
        self.store.flush()
        body = self.client.get(KeyLayout(self.namespace).customer(self.partition, "a"))
        return json.loads(body.partition(b"|")[2])


@pytest.fixture
def redis_a() -> Iterator[OneCustomer]:
    client = redis.Redis.from_url(Settings.from_env().redis_url)
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(client=client, namespace=namespace, lateness_ms=LATENESS, partitions=PARTITIONS)
    try:
        yield OneCustomer(store, client, namespace, store.partition_of("a"))
    finally:
        store.clear()
        store.close()
        client.close()


def test_a_state_whose_scoring_part_alone_changed_is_written_without_serializing_its_features_again(
    redis_a: OneCustomer,
) -> None:
    """Most of a worker's writes change only a customer's scoring part (a sweep's pending prediction, a
    label). The Redis store then writes the feature part as it wrote it last, and serializes only the
    scoring part; Redis holds the whole state either way, read back alike by a new worker."""
    store, p, stored = redis_a.store, redis_a.partition, redis_a.stored

    def commit(change: Callable[[Transaction], None]) -> dict:
        tx = store.begin({"a": p})
        change(tx)
        expected = json.loads(json.dumps(tx.state("a")))
        store.commit(tx)
        return expected

    store.update([order(1, "a", 0), ticket(2, "a", 1)])

    def risk(level: str) -> Callable[[Transaction], None]:
        def change(tx: Transaction) -> None:
            scoring_state(tx.state("a"))["risk"] = level
            tx.touch("a")

        return change

    assert commit(risk("HIGH")) == stored()  # the scoring part alone: spliced after the kept feature part
    assert commit(lambda tx: tx.apply(order(3, "a", 2))) == stored()  # an event: the feature part anew
    assert commit(risk("LOW")) == stored()
    reread = RedisFeatureStore(client=redis_a.client, namespace=redis_a.namespace, lateness_ms=LATENESS)
    assert reread.features("a", as_of=T0 + 2 * DAY_MS) == store.features("a", as_of=T0 + 2 * DAY_MS)
    reread.close()

    def behind_apply(tx: Transaction) -> None:  # not how features change: only apply changes them
        tx.state("a")["o"].clear()
        risk("MEDIUM")(tx)

    commit(behind_apply)
    # the feature part written is the one written before, not serialized again from the state
    assert len(stored()["o"]) == 2 and stored()["scoring"] == {"risk": "MEDIUM"}


def test_an_applied_event_s_feature_part_is_written_as_apply_serialized_it(redis_a: OneCustomer) -> None:
    """The Redis store's transactions serialize a customer's feature part as each event changes it (while
    the state is in the CPU's caches), and the write uses that JSON: after several events, a duplicate and
    a rejected conflict in one unit, Redis holds the state as it is."""
    store, p, stored = redis_a.store, redis_a.partition, redis_a.stored
    store.update([order(1, "a", 0)])
    tx = store.begin({"a": p})
    results = [
        tx.apply(e)
        for e in (
            order(2, "a", 1),
            ticket(3, "a", 2),
            order(2, "a", 1),  # a duplicate
            dataclasses.replace(order(2, "a", 1), amount=99.0),  # a conflict: rejected
            order(4, "a", 3, status="returned"),
        )
    ]
    assert [r.status for r in results] == ["applied", "applied", "duplicate", "rejected", "applied"]
    assert tx.feature_parts is not None and set(tx.feature_parts) == {"a"}
    scoring_state(tx.state("a"))["risk"] = "HIGH"
    tx.touch("a")
    expected = json.loads(json.dumps(tx.state("a")))
    assert len(expected["o"]) == 3 and len(expected["t"]) == 1
    store.commit(tx)
    assert stored() == expected

    tx = store.begin({"a": p})
    tx.apply(order(5, "a", 4))
    tx.state("a")["o"].clear()  # not how features change (only apply changes them), to see the JSON used
    store.commit(tx)
    assert len(stored()["o"]) == 4  # the feature part apply serialized, not the state at the write
    assert MemoryFeatureStore(lateness_ms=LATENESS).begin({"a": 0}).feature_parts is None  # no JSON kept


def test_a_second_writer_is_detected_instead_of_overwritten() -> None:
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    ns = f"test-{uuid.uuid4().hex[:8]}"
    mine = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS)
    zombie = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS)
    try:
        mine.update([order(1, "c", 0)])
        mine.flush()
        zombie.update([order(2, "c", 1)])  # a worker whose partition moved on, with an old view
        zombie.flush()
        mine.update([order(3, "c", 2)])  # cached version 1 is now stale in Redis (version 2)
        with pytest.raises(StoreError, match="another writer"):
            mine.flush()
        mine.update([order(3, "c", 2)])  # after the failure the cache is gone: reload and apply
        mine.flush()
        f = mine.features("c", as_of=T0 + 2 * DAY_MS)
        assert f is not None and f["orders_total"] == 3
    finally:
        mine.clear()
        mine.close()
        zombie.close()


def test_silent_customers_are_listed_oldest_first(store: FeatureStore) -> None:
    store.update([order(1, "old", 0), order(2, "mid", 10), order(3, "new", 20)])
    every = range(PARTITIONS)
    assert list(store.active_before(T0 + 15 * DAY_MS, partitions=every)) == ["old", "mid"]
    assert list(store.active_before(T0 + 15 * DAY_MS, partitions=every, since=T0 + DAY_MS)) == ["mid"]
    assert store.watermark() == T0 + 20 * DAY_MS


def test_silent_customers_listed_without_waiting_include_the_write_in_flight(store: FeatureStore) -> None:
    """The sweeper asks without waiting for the write in flight (wait=False): that write's changes to
    customers' latest event times are laid over what Redis still answers, so the list is the same."""
    store.update([order(1, "old", 0), order(2, "mid", 10), order(3, "back", 5)])
    store.flush()
    every = range(PARTITIONS)
    release = threading.Event()
    tx = store.begin(["late", "back"])
    tx.apply(order(4, "late", 2))  # a customer whose first event is old: now in the window
    tx.apply(order(5, "back", 30))  # was in the window, active again: no longer
    # in flight until released (the memory store writes at once: its `after` would only wait out the 30 s)
    in_flight = not isinstance(store, MemoryFeatureStore)
    store.commit(tx, after=(lambda: release.wait(30) or None) if in_flight else None)
    try:
        listed = store.active_before(T0 + 15 * DAY_MS, partitions=every, wait=False)
        assert list(listed) == ["old", "late", "mid"]
        windows = [(T0 + 9 * DAY_MS, T0 + 40 * DAY_MS), (None, T0 + 3 * DAY_MS)]  # asked at once
        assert list(store.active_in(windows, partitions=every, wait=False)) == ["mid", "back", "old", "late"]
    finally:
        release.set()
        store.flush()
    assert list(store.active_before(T0 + 15 * DAY_MS, partitions=every)) == ["old", "late", "mid"]
    # an open transaction's changes, laid over as if written (the scorer sweeps inside the unit of work)
    open_tx = store.begin(["first", "mid"])
    open_tx.apply(order(6, "first", 1))
    open_tx.apply(order(7, "mid", 25))
    window = [(None, T0 + 15 * DAY_MS)]
    assert list(store.active_in(window, partitions=every, wait=False, pending=open_tx)) == [
        "old",
        "first",
        "late",
    ]
    assert list(store.active_in(window, partitions=every)) == ["old", "late", "mid"]  # nothing written


def test_a_transaction_commits_state_partition_records_and_due_together(store: FeatureStore) -> None:
    a, b = store.partition_of("a"), store.partition_of("f")
    assert a != b  # two partitions: one write each
    tx = store.begin(["a", "f"])
    tx.apply(order(1, "a", 0))
    scoring_state(tx.state("f"))["risk"] = "HIGH"  # the scorer's part rides along
    tx.touch("f")
    tx.set_fence("orders", a, 42)
    tx.set_partition_time(a, T0)
    tx.set_sweep_tick(b, T0 - DAY_MS)
    tx.save_learner(a, b"\x00\xffonline", b"blender")
    tx.log_learned(a, b"one|")
    tx.due["a"] = T0 + 30 * DAY_MS
    tx.due["f"] = T0 + 10 * DAY_MS
    store.commit(tx)
    store.flush()
    assert (store.fence("orders", a), store.fence("orders", b), store.fence("tickets", a)) == (42, None, None)
    assert (store.partition_time(a), store.sweep_tick(b), store.sweep_tick(a)) == (T0, T0 - DAY_MS, None)
    assert store.partition_reached_by(a) is None  # which event brought it there: not said
    tx = store.begin({})
    tx.set_partition_time(a, T0 + 1, "1b5d5e51f54f0f04")
    store.commit(tx)
    assert (store.partition_time(a), store.partition_reached_by(a)) == (T0 + 1, "1b5d5e51f54f0f04")
    tx = store.begin({})
    tx.set_partition_time(a, T0)
    store.commit(tx)
    assert (store.partition_time(a), store.partition_reached_by(a)) == (T0, None)
    tx = store.begin({})
    tx.log_learned(a, b"two|")
    store.commit(tx)
    checkpoint = store.learner_checkpoint(a)
    assert (checkpoint.online, checkpoint.blender, checkpoint.learned) == (
        b"\x00\xffonline",
        b"blender",
        b"one|two|",
    )
    assert store.learner_checkpoint(b).online is None
    day = {a: T0 + 20 * DAY_MS, b: T0 + 20 * DAY_MS}
    assert store.due_before(day, limit=10) == {a: Due([], T0 + 30 * DAY_MS), b: Due(["f"], None)}
    # each partition up to its own time
    apart = {a: T0 + 40 * DAY_MS, b: T0}
    assert store.due_before(apart, limit=10) == {a: Due(["a"], None), b: Due([], T0 + 10 * DAY_MS)}
    assert store.due_before({a: T0 + 40 * DAY_MS}, limit=1) == {a: Due(["a"], T0 + 40 * DAY_MS)}
    assert store.active_before(T0 + DAY_MS, partitions=[a]) == {"a": a}
    assert store.active_before(T0 + DAY_MS, partitions=[b]) == {}
    assert store.states(["f"])["f"]["scoring"] == {"risk": "HIGH"}
    assert store.customers() == ["a", "f"]
    assert store.watermark() == T0
    tx = store.begin(["f"])
    tx.due["f"] = None
    store.commit(tx)
    store.flush()  # due_before does not wait for writes in flight
    assert store.due_before({b: T0 + 20 * DAY_MS}, limit=10) == {b: Due([], None)}


def test_a_learner_history_answers_each_time_with_the_records_before_it(store: FeatureStore) -> None:
    a, b, c = 0, 1, 2

    def record(p: int, day: int, state: bytes, *, event: str | None = "e", complete: bool = True) -> None:
        tx = store.begin({})
        tx.record_learner(p, LearnerRecord(T0 + day * DAY_MS, event, state, keep=3, complete=complete))
        store.commit(tx)

    def served(p: int, day: int, *, before_latest: bool = False) -> tuple[bool, bytes | None] | None:
        history = store.learner_history([(p, T0 + day * DAY_MS)])[(p, T0 + day * DAY_MS)]
        return None if history is None else history.served(before_latest=before_latest)

    assert served(a, 1) is None  # no history: the current learner serves
    record(a, 1, b"one|x")  # a '|' in a state is kept whole
    record(a, 2, b"two", event='an "id"|\nwith | and a newline')
    record(a, 2, b"two again", event='an "id"|\nwith | and a newline')  # the same time: replaced
    record(a, 4, b"two again", event=None)  # the same state at another time: a record of its own
    record(a, 5, b"five")
    # three kept, the oldest (day 1) dropped: the history is known from day 2 on (exclusive)
    assert [served(a, d) for d in (2, 3, 5, 6)] == [
        (False, None),
        (True, b"two again"),
        (True, b"two again"),  # records before day 5: day 4's
        (True, b"five"),
    ]
    assert served(a, 5, before_latest=True) == (True, b"two again")  # day 2's
    assert served(a, 3, before_latest=True) == (False, None)
    got = store.learner_history([(a, T0 + 3 * DAY_MS)])[(a, T0 + 3 * DAY_MS)]
    assert got is not None and got.records == [
        LearnerRecord(T0 + 2 * DAY_MS, 'an "id"|\nwith | and a newline', b"two again")
    ]
    assert got.known_from == T0 + 2 * DAY_MS
    # a history that starts untaught: before its first record, the learner that knew nothing
    record(b, 3, b"first")
    assert served(b, 1) == (True, None) and served(b, 4, before_latest=True) == (True, None)
    # one that starts with a learner taught before (a store of an earlier release): known from its first
    record(c, 3, b"taught", complete=False)
    assert (served(c, 3), served(c, 4)) == ((False, None), (True, b"taught"))


def test_a_forgotten_customer_is_gone_everywhere_and_a_later_event_starts_from_nothing(
    store: FeatureStore,
) -> None:
    store.update([order(1, "gone", 0, amount=50.0), order(2, "gone", 3), order(3, "kept", 1)])
    p = store.partition_of("gone")
    tx = store.begin(["gone"])
    scoring_state(tx.state("gone"))["alerted"] = T0  # an alert cooldown
    tx.due["gone"] = T0 + 30 * DAY_MS
    store.commit(tx)
    store.flush()
    assert store.forget("gone") is True
    assert store.customers() == ["kept"]
    assert store.features("gone") is None
    assert "gone" not in store.active_before(T0 + 100 * DAY_MS, partitions=range(PARTITIONS))
    assert store.due_before({p: T0 + 100 * DAY_MS}, limit=10)[p].customers == []
    assert store.forget("gone") is False
    store.update([order(2, "gone", 5, amount=7.0)])  # the same event id again: new, not a duplicate
    f = store.features("gone", as_of=T0 + 5 * DAY_MS)
    assert f is not None and (f["orders_total"], f["spent_total"]) == (1, 7.0)
    assert scoring_state(store.states(["gone"])["gone"]) == {}
    assert store.features("kept", as_of=T0 + 5 * DAY_MS)["orders_total"] == 1


def test_a_scorer_caching_a_forgotten_customer_reads_it_afresh_before_using_it() -> None:
    """Before, the scorer computed the next unit from its cached state, so its outputs (predictions, an
    alert) came from the forgotten history before the write was refused and the rewind answered again."""
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    ns = f"test-{uuid.uuid4().hex[:8]}"
    # after a pause (erasures_every 0: always): the count of forgotten customers is read before use
    scorer = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS, erasures_every=0)
    operator = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS)
    busy = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS, erasures_every=3600)
    try:
        scorer.update([order(1, "c", 0), order(2, "c", 1), order(1, "d", 0)])
        scorer.flush()  # the scorer now caches c and d
        assert operator.forget("c")
        tx = scorer.begin(["c", "d"])  # the next unit of work
        assert tx.state("c")["o"] == [] and len(tx.state("d")["o"]) == 1  # c from nothing, d as before
        assert "d" in scorer._cache  # only the forgotten customer is read again
        tx.apply(order(3, "c", 2))
        scorer.commit(tx)
        scorer.flush()  # not refused: written over nothing
        f = operator.features("c", as_of=T0 + 2 * DAY_MS)
        assert f is not None and f["orders_total"] == 1
        # busy (never a read of its own): the count comes back with the partition's next write
        busy.update([order(4, "e", 0), order(5, "f", 0)], partition=0)
        busy.flush()
        assert operator.forget("e")
        busy.update([order(6, "f", 1)], partition=0)  # f's write brings the new count: e is dropped
        busy.flush()
        tx = busy.begin({"e": 0})
        assert tx.state("e")["o"] == []
        # forgotten between a unit's read and its write: the write is refused, not written back
        tx = scorer.begin(["c"])
        tx.apply(order(4, "c", 3))
        assert operator.forget("c")
        scorer.commit(tx)
        with pytest.raises(StoreError, match="another writer"):
            scorer.flush()
        assert operator.features("c", as_of=T0 + 3 * DAY_MS) is None
    finally:
        scorer.clear()
        scorer.close()
        operator.close()
        busy.close()


def test_a_customer_written_on_another_partition_is_found_there(store: FeatureStore) -> None:
    """State lives with the partition its events were read from; readers find it on whichever partition
    holds it (a producer whose partitioner is not murmur2 keeps each customer on another one), on its
    murmur2 one first."""
    home = store.partition_of("c")
    assert home == partition_of("c", PARTITIONS)
    away = (home + 1) % PARTITIONS
    store.update([order(1, "c", 0), order(2, "c", 0, amount=5.0)], partition=away)
    assert store.locate(["c", "nobody"]) == {"c": away, "nobody": partition_of("nobody", PARTITIONS)}
    found = store.features("c", as_of=T0)
    assert found is not None and found["orders_total"] == 2
    store.update([order(3, "c", 0)], partition=home)  # a second producer, murmur2: a second state
    assert store.locate(["c"]) == {"c": home}
    assert store.features("c", as_of=T0)["orders_total"] == 1  # type: ignore[index]


def test_a_reused_event_id_with_other_content_changes_nothing_and_is_rejected(store: FeatureStore) -> None:
    first = order(1, "c", 10, amount=20.0)
    store.update([first, ticket(2, "c", 11)])
    before = store.features("c", as_of=T0 + 12 * DAY_MS)

    results = store.update(
        [
            first,  # a redelivery: the same event
            dataclasses.replace(first, timestamp=T0 + 12 * DAY_MS),  # another time
            dataclasses.replace(first, amount=99.0),  # another amount at the same time
            TicketEvent(event_id=first.event_id, customer_id="c", timestamp=T0 + 12 * DAY_MS, ticket_id="x"),
            dataclasses.replace(order(9, "c", 12), event_id="t2-c"),  # a ticket's id on an order
        ]
    )

    assert [r.status for r in results] == ["duplicate", "rejected", "rejected", "rejected", "rejected"]
    for r in results[1:]:
        assert "event_id 'o1-c' was already used" in str(r.error) or "event_id 't2-c'" in str(r.error)
        assert "only for the same event" in str(r.error)
    assert store.features("c", as_of=T0 + 12 * DAY_MS) == before


def test_a_reused_event_id_is_recognised_after_its_event_was_folded(store: FeatureStore) -> None:
    store.update([order(1, "c", 1), order(2, "c", 100)])  # day 1 is folded into totals by day 100
    again = store.update(
        [order(1, "c", 1), dataclasses.replace(order(1, "c", 1), timestamp=T0 + 95 * DAY_MS)]
    )
    assert [r.status for r in again] == ["duplicate", "rejected"]
    f = store.features("c", as_of=T0 + 100 * DAY_MS)
    assert f is not None and f["orders_total"] == 2


def test_a_write_happens_only_while_the_expected_claim_and_fences_hold(store: FeatureStore) -> None:
    p = store.partition_of("c")
    assert store.partition_of("e") == p
    store.write_claims({p: "worker-a"})
    assert store.claim(p) == "worker-a"
    tx = store.begin(["c"])
    tx.apply(order(1, "c", 1))
    tx.set_fence("orders", p, 5)
    tx.expect_claim(p, "worker-a")
    tx.expect_fence("orders", p, None)
    store.commit(tx)
    store.flush()
    assert store.fence("orders", p) == 5

    store.write_claims({p: "worker-b"})  # another worker claimed the partition
    stale = store.begin(["c"])
    stale.apply(order(2, "c", 2))
    stale.set_fence("orders", p, 6)
    stale.expect_claim(p, "worker-a")
    stale.expect_fence("orders", p, 5)
    with pytest.raises(StoreError, match="claimed its partitions"):
        store.commit(stale)
        store.flush()
    assert store.fence("orders", p) == 5
    f = store.features("c", as_of=T0 + 3 * DAY_MS)
    assert f is not None and f["orders_total"] == 1

    behind = store.begin(["e"])  # a fence that is not what this writer wrote last: Redis lost writes
    behind.apply(order(3, "e", 1))
    behind.expect_claim(p, "worker-b")
    behind.expect_fence("orders", p, 9)
    with pytest.raises(StoreError, match="lost writes"):
        store.commit(behind)
        store.flush()
    assert store.features("e", as_of=T0 + 3 * DAY_MS) is None


def test_each_partition_is_written_whole_or_not_at_all(store: FeatureStore) -> None:
    """A batch over two partitions, one of them claimed by another worker: the other one is written with
    its fence (it resumes after the batch), the lost one not at all (its next owner reads it again)."""
    a, b = store.partition_of("a"), store.partition_of("f")
    store.write_claims({a: "me", b: "someone else"})
    tx = store.begin(["a", "f"])
    tx.apply(order(1, "a", 1))
    tx.apply(order(2, "f", 1))
    for p in (a, b):
        tx.set_fence("orders", p, 10)
        tx.expect_claim(p, "me")
    with pytest.raises(StoreError, match="claimed its partitions"):
        store.commit(tx)
        store.flush()
    assert (store.fence("orders", a), store.fence("orders", b)) == (10, None)
    assert store.features("a", as_of=T0 + DAY_MS) is not None
    assert store.features("f", as_of=T0 + DAY_MS) is None


def test_state_of_another_layout_is_refused_with_the_command_that_rebuilds_it() -> None:
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    ns = f"test-{uuid.uuid4().hex[:8]}"
    keys = KeyLayout(ns)
    try:
        client.hset(keys.legacy_meta, "off:orders:0", "5")  # what layout 1 left behind
        old = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS)
        assert old.layout_version() == 1
        with pytest.raises(
            LayoutError, match=rf"layout 1, this churnstream reads layout {LAYOUT_VERSION}.*rebuild"
        ):
            old.check_layout(partitions=PARTITIONS)
        with pytest.raises(LayoutError, match="churnstream rebuild"):
            old.update([order(1, "c", 0)])
        old.clear()
        assert old.layout_version() is None
        fresh = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS)
        fresh.check_layout(partitions=PARTITIONS)
        assert fresh.layout_version() is None  # recorded with the first write, never by a check
        fresh.update([order(1, "c", 0)])
        assert fresh.layout_version() == LAYOUT_VERSION
        with pytest.raises(LayoutError, match="for 4 input partitions, but the input topics have 6"):
            RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS).check_layout(partitions=6)
        newer = LAYOUT_VERSION + 1
        client.set(keys.layout, json.dumps({"version": newer, "partitions": 4}).encode())
        with pytest.raises(LayoutError, match=f"layout {newer}.*upgrade churnstream"):
            RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS).check_layout()
    finally:
        RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS).clear()
        client.close()


def test_every_key_of_a_partition_shares_its_hash_tag() -> None:
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    ns = f"test-{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(client=client, namespace=ns, lateness_ms=LATENESS, partitions=PARTITIONS)
    try:
        p = store.partition_of("c")
        tx = store.begin(["c"])
        tx.apply(order(1, "c", 0))
        tx.due["c"] = T0
        tx.set_fence("orders", p, 1)
        tx.save_learner(p, b"o", b"b")
        store.commit(tx)
        store.flush()
        found = sorted(k.decode() for k in client.scan_iter(match=f"churn:{ns}:*"))
        tagged = [k for k in found if k != f"churn:{ns}:layout"]
        assert len(tagged) == 7  # customer, meta, due, active, three learner blobs
        assert all(k.startswith(f"churn:{ns}:{{p{p}}}:") for k in tagged), found
    finally:
        store.clear()
        store.close()
        client.close()


def test_a_worker_refuses_state_of_the_old_layout_before_writing_anything(
    settings: Settings, topics: Topics, redis_client: redis.Redis
) -> None:
    from churnstream.streams.scorer import build_scorer

    keys = KeyLayout(settings.topic_prefix)
    redis_client.hset(keys.legacy_meta, mapping={"off:orders:0": "5", "own:0": "old-worker"})
    with pytest.raises(LayoutError, match="churnstream rebuild"):
        build_scorer(settings)
    assert sorted(redis_client.scan_iter(match=f"{keys.root}:*")) == [keys.legacy_meta.encode()]


def test_forget_command_removes_the_customer_and_says_what_remains_in_kafka(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from churnstream.cli import main

    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    prefix = f"test-{uuid.uuid4().hex[:8]}."
    store = RedisFeatureStore(client=client, namespace=prefix, lateness_ms=LATENESS, partitions=PARTITIONS)
    monkeypatch.setenv("CHURN_TOPIC_PREFIX", prefix)
    try:
        store.update([order(1, "C1", 0), order(2, "C2", 1)])
        store.flush()
        assert main(["forget", "C1"]) == 0
        out = capsys.readouterr().out
        assert "forgot customer 'C1'" in out and f"{prefix}orders" in out and "rebuild" in out
        fresh = RedisFeatureStore(client=client, namespace=prefix, lateness_ms=LATENESS)  # no cache
        assert fresh.states(["C1", "C2"]).keys() == {"C2"}
        assert main(["forget", "C1", "--json"]) == 1  # nothing left to forget
        assert json.loads(capsys.readouterr().out)["removed"] is False
    finally:
        store.clear()
        store.close()
        client.close()

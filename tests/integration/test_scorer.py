"""The scoring worker end to end on real Kafka and Redis: predictions, dead letters, sweeps, outcomes."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from churnstream.cli import main as churnstream
from churnstream.events import parse_time
from churnstream.settings import DAY_MS, Settings, Topics
from features.offline import read_events, snapshot
from features.store import RedisFeatureStore
from streams.publish import publish_file
from streams.scorer import ChurnScorer, build_scorer
from tests.integration.conftest import consume_all, produce_raw

CUSTOMERS, DAYS, TRAIN_DAYS = 400, 300, 200


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated business and a batch model trained on its first 200 days."""
    root = tmp_path_factory.mktemp("world")
    events = root / "events"
    assert (
        churnstream(
            [
                "simulate",
                "--customers",
                str(CUSTOMERS),
                "--days",
                str(DAYS),
                "--seed",
                "21",
                "--out",
                str(events),
            ]
        )
        == 0
    )
    from models.train import train

    settings = Settings.from_env()
    start = read_events(events).start
    train(events, root / "models", settings=settings, until=start + TRAIN_DAYS * DAY_MS, progress=False)
    return root


def publish_world(settings: Settings, events_dir: Path) -> None:
    for name in ("customer_profiles", "orders", "support_tickets"):
        assert publish_file(events_dir / f"{name}.jsonl", settings).ok


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def committed_positions(settings: Settings, group: str) -> list[tuple[int, int]]:
    """(committed offset, end offset) of every input partition for ``group``."""
    from confluent_kafka import TopicPartition

    from streams.kafka import end_offsets, make_consumer

    consumer = make_consumer(settings, group)
    try:
        out = []
        for topic in settings.topics.inputs:
            marks = end_offsets(consumer, topic)
            parts = [TopicPartition(topic, p) for p in marks]
            out += [
                (max(tp.offset, 0), marks[tp.partition][1]) for tp in consumer.committed(parts, timeout=10)
            ]
        return out
    finally:
        consumer.close()


def committed_everything(settings: Settings, group: str) -> bool:
    return all(done >= end for done, end in committed_positions(settings, group))


def committed_total(settings: Settings, group: str) -> int:
    return sum(done for done, _ in committed_positions(settings, group))


@pytest.fixture
def scorer_settings(settings: Settings, world: Path) -> Settings:
    return dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)


def run_scorer(settings: Settings) -> Iterator[ChurnScorer]:
    scorer = build_scorer(settings)
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        yield scorer
    finally:
        scorer.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the scorer did not stop"


def test_every_event_is_scored_once_and_outcomes_follow_the_label_rule(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    settings = scorer_settings
    events_dir = world / "events"
    publish_world(settings, events_dir)
    invalid = [
        (b"c000001", b"{not json"),
        (
            b"c000001",
            json.dumps(
                {
                    "event_id": "x1",
                    "customer_id": "c000001",
                    "order_id": "o",
                    "timestamp": "2024-03-01T00:00:00Z",
                    "amount": -5,
                }
            ).encode(),
        ),
        (
            b"someone-else",
            json.dumps(
                {
                    "event_id": "x2",
                    "customer_id": "c000001",
                    "order_id": "o",
                    "timestamp": "2024-03-01T00:00:00Z",
                    "amount": 5,
                }
            ).encode(),
        ),
        (b"c000002", b"\xff\xfe not utf-8"),
    ]
    produce_raw(settings, settings.topics.orders, invalid)
    log = read_events(events_dir)
    valid = {e.event_id for e in log.events}

    gen = run_scorer(settings)
    scorer = next(gen)
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group),
            240,
            "the scorer to commit every input",
        )
    finally:
        gen.close()

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    by_event = Counter(p["event_id"] for p in predictions if p["trigger"] == "event")
    assert set(by_event) == valid
    assert max(by_event.values()) == 1, "an event was scored more than once"
    assert all(p["model_version"] for p in predictions)
    assert all(0.0 <= p["churn_probability"] <= 1.0 for p in predictions)

    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    assert len(letters) == len(invalid)
    assert Counter(d["stage"] for d in letters) == Counter({"decode": 2, "validate": 2})
    assert any(d.get("value_encoding") == "base64" for d in letters)

    # silent customers get sweep predictions, and some dropped-out customers get alerts from sweeps
    sweeps = [p for p in predictions if p["trigger"] == "sweep"]
    assert sweeps, "no sweep predictions"
    alerts = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_alerts)]
    assert alerts
    assert all(len(a["top_reasons"]) >= 3 and a["recommended_actions"] for a in alerts)
    sweep_ids = {p["prediction_id"] for p in sweeps}
    truth = {
        json.loads(line)["customer_id"]: json.loads(line)
        for line in (events_dir / "truth.jsonl").read_text().splitlines()
    }
    dropped = {cid for cid, t in truth.items() if t["dropout"] is not None}
    swept_alerts = [a for a in alerts if a["prediction_id"] in sweep_ids]
    assert swept_alerts, "no alert came from a sweep"
    if dropped:
        assert any(a["customer_id"] in dropped for a in swept_alerts)

    # outcomes: labels by the contract's rule, checked against the event log
    outcomes = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_outcomes)]
    assert outcomes
    completed: dict[str, list[int]] = {}
    for e in log.events:
        if getattr(e, "status", None) == "completed":
            completed.setdefault(e.customer_id, []).append(e.timestamp)
    horizon = settings.horizon_ms
    for o in outcomes:
        t = parse_time(o["as_of"])
        times = completed.get(o["customer_id"], [])
        i = bisect_right(times, t)
        ordered_within = i < len(times) and times[i] <= t + horizon
        assert o["label"] == (0 if ordered_within else 1), o
        assert o["source"] == ("order" if ordered_within else "inactivity")
    assert len({o["prediction_id"] for o in outcomes}) == len(outcomes)

    # features in Redis equal the offline builder's at the watermark
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        t = store.watermark()
        assert t == log.end
        offline = snapshot(log.events, t, lateness_ms=settings.lateness_ms)
        assert store.features_many(offline, t) == offline
    finally:
        store.close()
    assert scorer.totals.events == len(valid)


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    settings = scorer_settings
    events_dir = world / "events"
    publish_world(settings, events_dir)
    log = read_events(events_dir)
    total = len(log.events)
    env = dict(os.environ)
    env.update(
        CHURN_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        CHURN_REDIS_URL=settings.redis_url,
        CHURN_TOPIC_PREFIX=settings.topic_prefix,
        CHURN_MODEL_DIR=str(settings.model_dir),
        CHURN_METRICS_PORT="-1",
        CHURN_SWEEP_INTERVAL_DAYS=str(settings.sweep_interval_days),
        CHURN_BATCH_SIZE="100",  # many small batches: more places for a kill to land
    )
    command = [sys.executable, "-m", "churnstream.cli", "score"]
    worker_log = world / f"worker-{settings.topic_prefix}log"
    kills = 0
    for fraction in (0.2, 0.45, 0.7):
        worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=worker_log.open("ab"))
        try:
            wait_until(
                lambda f=fraction, w=worker: (
                    committed_total(settings, settings.consumer_group) >= f * total or w.poll() is not None
                ),
                180,
                f"the worker to pass {fraction:.0%} of the stream",
            )
            assert worker.poll() is None, worker_log.read_text()[-2000:]
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
        kills += 1
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=worker_log.open("ab"))
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group) or worker.poll() is not None,
            240,
            "the last worker to finish",
        )
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, "SIGTERM should finish the batch and exit 0"
    assert kills == 3

    # no event lost: every valid event has its prediction (re-emissions carry the same id and numbers)
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    event_preds = [p for p in predictions if p["trigger"] == "event"]
    assert {p["event_id"] for p in event_preds} == {e.event_id for e in log.events}
    seen: dict[str, dict] = {}
    for p in event_preds:
        body = {k: v for k, v in p.items() if k != "scored_at"}
        assert seen.setdefault(p["prediction_id"], body) == body, "a re-emitted prediction changed"

    # nothing counted twice: features equal the offline (uninterrupted) result, and the online model
    # learned from each resolved prediction exactly once
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        t = store.watermark()
        offline = snapshot(log.events, t, lateness_ms=settings.lateness_ms)
        assert store.features_many(offline, t) == offline
        outcomes = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_outcomes)]
        labels: dict[str, int] = {}
        for o in outcomes:
            assert labels.setdefault(o["prediction_id"], o["label"]) == o["label"]
        from models.online import OnlineModel

        blob = store.blob("online")
        assert blob is not None
        assert OnlineModel.from_bytes(blob).n_learned == len(labels)
    finally:
        store.close()


def test_a_promoted_model_is_picked_up_without_restart_and_health_and_metrics_answer(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path, tmp_path: Path
) -> None:
    import shutil
    import urllib.request

    from models.registry import ModelRegistry
    from streams.scorer import serve_http

    models_dir = tmp_path / "models"
    shutil.copytree(world / "models", models_dir)
    settings = dataclasses.replace(scorer_settings, model_dir=models_dir, model_poll_seconds=0.2)
    registry = ModelRegistry(models_dir)
    first = registry.current_version()
    loaded = registry.load()
    second = registry.register(
        loaded.model, dict(loaded.metadata, note="same model, new version"), promote=False
    )
    assert second != first

    events_dir = world / "events"
    gen = run_scorer(settings)
    scorer = next(gen)
    server = serve_http("127.0.0.1", 0, scorer)
    try:
        assert publish_file(events_dir / "customer_profiles.jsonl", settings).ok
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 120, "profiles to be scored"
        )
        registry.promote(second)
        wait_until(lambda: scorer.models.version == second, 30, "the scorer to pick up the promoted model")
        assert publish_file(events_dir / "orders.jsonl", settings).ok
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 180, "orders to be scored"
        )

        port = server.server_address[1]
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read())
        assert health["status"] == "ok" and health["model_version"] == second
        assert health["totals"]["events"] == scorer.totals.events > 0
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'churn_predictions_total{trigger="event"}' in metrics
        assert "churn_batch_seconds_bucket" in metrics
    finally:
        server.shutdown()
        gen.close()

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    versions = {}
    for p in predictions:
        if p["trigger"] == "event":
            kind = "profile" if p["event_id"].startswith("sim-21-p-") else "order"
            versions.setdefault(kind, set()).add(p["model_version"])
    assert versions == {"profile": {first}, "order": {second}}


def test_a_second_worker_joining_mid_stream_shares_the_work_without_loss_or_double_counting(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    settings = scorer_settings
    events_dir = world / "events"
    log = read_events(events_dir)
    from streams.kafka import make_producer

    first = run_scorer(settings)
    a = next(first)
    second = None
    # A live stream: every topic's events produced in event-time order, in two halves.
    records = []
    for name in ("customer_profiles", "orders", "support_tickets"):
        for line in (events_dir / f"{name}.jsonl").read_bytes().splitlines():
            obj = json.loads(line)
            records.append(
                (parse_time(obj["timestamp"]), getattr(settings.topics, name), obj["customer_id"], line)
            )
    records.sort()
    half = len(records) // 2

    def produce(part: list) -> None:
        producer = make_producer(settings)
        for _, topic, key, value in part:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
        assert producer.flush(30) == 0

    try:
        produce(records[:half])
        wait_until(lambda: a.totals.events > 0, 120, "the first worker to start scoring")
        second = run_scorer(settings)
        b = next(second)
        wait_until(lambda: bool(b.assigned) and len(a.assigned) < 6, 120, "the partitions to be shared")
        assert a.assigned.isdisjoint(b.assigned)
        produce(records[half:])
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 240, "both workers to finish"
        )
        assert a.totals.predictions > 0 and b.totals.predictions > 0
    finally:
        if second is not None:
            second.close()
        first.close()

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    event_preds = [p for p in predictions if p["trigger"] == "event"]
    letters = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.dead_letter)]
    assert letters == []
    assert {p["event_id"] for p in event_preds} == {e.event_id for e in log.events}
    store = RedisFeatureStore(
        client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        t = store.watermark()
        offline = snapshot(log.events, t, lateness_ms=settings.lateness_ms)
        assert store.features_many(offline, t) == offline
    finally:
        store.close()
    outcomes = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_outcomes)]
    labels: dict[str, int] = {}
    for o in outcomes:
        assert labels.setdefault(o["prediction_id"], o["label"]) == o["label"]


def test_rebuild_after_redis_loss_restores_state_without_re_emitting(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    from models.online import OnlineModel
    from streams.rebuild import rebuild

    settings = scorer_settings
    events_dir = world / "events"
    publish_world(settings, events_dir)
    gen = run_scorer(settings)
    next(gen)
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 240, "the scorer to finish"
        )
    finally:
        gen.close()
    emitted = len(consume_all(settings, settings.topics.churn_predictions))

    def snapshot_state() -> tuple[dict, dict, OnlineModel]:
        store = RedisFeatureStore(
            client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
        )
        try:
            ids = store.customers()
            t = store.watermark()
            assert t is not None
            features = store.features_many(ids, t)
            pending = {cid: sorted(p[0] for p in s.get("pend", [])) for cid, s in store.states(ids).items()}
            blob = store.blob("online")
            assert blob is not None
            return features, pending, OnlineModel.from_bytes(blob)
        finally:
            store.close()

    features, pending, online = snapshot_state()
    lost = list(redis_client.scan_iter(match=f"churn:{settings.topic_prefix}*", count=1000))
    assert lost
    redis_client.delete(*lost)  # Redis lost entirely

    result = rebuild(settings, progress=False)
    assert result["events"] == len(read_events(events_dir).events)
    features2, pending2, online2 = snapshot_state()
    assert features2 == features
    assert pending2 == pending
    assert online2.n_learned == online.n_learned
    rows = [features[c] for c in sorted(features)[:200]]
    before, after = online.predict_many(rows), online2.predict_many(rows)
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) < 0.05  # type: ignore[operator]

    # nothing was re-emitted, and a live worker restarted on the rebuilt state finds nothing left to do
    assert len(consume_all(settings, settings.topics.churn_predictions)) == emitted
    gen = run_scorer(settings)
    scorer = next(gen)
    try:
        wait_until(lambda: bool(scorer.assigned), 60, "the worker to rejoin")
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 60, "the worker to settle"
        )
    finally:
        gen.close()
    assert scorer.totals.predictions == 0
    assert len(consume_all(settings, settings.topics.churn_predictions)) == emitted

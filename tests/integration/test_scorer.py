"""The scoring worker end to end on real Kafka and Redis: predictions, dead letters, sweeps, outcomes."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import redis

from churnstream.errors import ModelIntegrityError
from churnstream.events import parse_time
from churnstream.features.offline import read_events, snapshot
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.models.alert_policy import step_high_risk
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.publish import publish_file
from churnstream.streams.scorer import ScoringWorker, build_scorer, restore_learner
from churnstream.streams.topics import create_topics
from tests.integration.conftest import (
    check_every_event_accounted_for,
    check_state_equals_offline,
    committed_everything,
    committed_total,
    consume_all,
    event_time_records,
    produce_raw,
    produce_records,
    publish_world,
    simulate_world,
    start_worker,
    stop_worker,
    wait_until,
)

CUSTOMERS, DAYS, TRAIN_DAYS = 400, 300, 200


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated business and a batch model trained on its first 200 days."""
    root = tmp_path_factory.mktemp("world")
    return simulate_world(root, customers=CUSTOMERS, days=DAYS, train_days=TRAIN_DAYS, seed=21)


@pytest.fixture
def scorer_settings(settings: Settings, world: Path) -> Settings:
    return dataclasses.replace(settings, model_dir=world / "models", metrics_port=-1)


def score_everything(settings: Settings, what: str = "the scorer to commit every input") -> ScoringWorker:
    """Run a scorer until it has committed every input of ``settings``'s topics, then stop it."""
    gen = run_scorer(settings)
    scorer = next(gen)
    try:
        wait_until(lambda: committed_everything(settings, settings.consumer_group), 240, what)
    finally:
        gen.close()
    return scorer


def run_scorer(settings: Settings) -> Iterator[ScoringWorker]:
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
    # the original alert rule (turns HIGH at 0.7), whose alerts from sweeps this test checks; the default
    # policy's are in test_alert_budget.py
    settings = dataclasses.replace(
        scorer_settings, alert_policy="high_risk", high_threshold=0.7, medium_threshold=0.4
    )
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

    scorer = score_everything(settings)

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    by_event = Counter(p["event_id"] for p in predictions if p["trigger"] == "event")
    assert set(by_event) == valid
    assert max(by_event.values()) == 1, "an event was scored more than once"
    assert all(p["model_version"] for p in predictions)
    assert all(0.0 <= p["churn_probability"] <= 1.0 for p in predictions)
    # the categories the settings set (0.7 / 0.4), whatever the model's own
    for p in predictions:
        c = p["churn_probability"]
        assert p["risk_category"] == ("HIGH" if c >= 0.7 else "MEDIUM" if c >= 0.4 else "LOW"), p
    assert {p["risk_category"] for p in predictions} == {"HIGH", "MEDIUM", "LOW"}

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
    # contributions and their base to 6 decimals, as the HTTP API gives them, not 17 digits of noise
    shown = [r["contribution"] for a in alerts for r in a["top_reasons"]]
    shown += [a["explanation"]["base"] for a in alerts]
    assert all(round(x, 6) == x for x in shown) and len(set(shown)) > len(alerts)
    # and they add up: base + the listed reasons + the rest (explanation.other) is the alert's score
    for a in alerts:
        log_odds = a["explanation"]["base"] + a["explanation"]["other"]
        log_odds += sum(r["contribution"] for r in a["top_reasons"])
        assert 1 / (1 + math.exp(-log_odds)) == pytest.approx(a["churn_probability"], abs=1e-5), a
    # the high_risk rule, replayed over each customer's predictions in time order, picks exactly these
    held: dict[str, dict] = {}
    expected = set()
    for p in sorted(predictions, key=lambda p: parse_time(p["as_of"])):
        t = parse_time(p["as_of"])
        if step_high_risk(
            held.setdefault(p["customer_id"], {}),
            p["risk_category"],
            as_of=t,
            cooldown_ms=settings.cooldown_ms,
        ):
            held[p["customer_id"]]["alerted"] = t
            expected.add(p["prediction_id"])
    assert {a["prediction_id"] for a in alerts} == expected
    sweep_ids = {p["prediction_id"] for p in sweeps}
    truth = {
        json.loads(line)["customer_id"]: json.loads(line)
        for line in (events_dir / "truth.jsonl").read_text().splitlines()
    }
    dropped = {cid for cid, t in truth.items() if t["dropout"] is not None}
    swept_alerts = [a for a in alerts if a["prediction_id"] in sweep_ids]
    assert swept_alerts, "no alert came from a sweep"
    assert dropped, "the simulated world has no customer who drops out"
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
    # each outcome names the model that made its prediction
    model_of = {p["prediction_id"]: p["model_version"] for p in predictions}
    assert all(o["model_version"] == model_of[o["prediction_id"]] for o in outcomes)

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
    assert scorer.handler.totals.events == len(valid)


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    settings = scorer_settings
    events_dir = world / "events"
    publish_world(settings, events_dir)
    log = read_events(events_dir)
    total = len(log.events)
    batch = {"CHURN_BATCH_SIZE": "100"}  # many small batches: more places for a kill to land
    worker_log = world / f"worker-{settings.topic_prefix}log"
    kills = 0
    for fraction in (0.2, 0.45, 0.7):
        worker = start_worker(settings, worker_log, **batch)
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
            worker.kill()
            worker.wait(30)
        kills += 1
    worker = start_worker(settings, worker_log, **batch)
    try:
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group) or worker.poll() is not None,
            240,
            "the last worker to finish",
        )
        assert worker.poll() is None, worker_log.read_text()[-2000:]
    finally:
        stop_worker(worker, worker_log)
    assert kills == 3

    # no event lost: every valid event has its prediction (re-emissions carry the same id and numbers)
    accounting = check_every_event_accounted_for(settings, log.events)
    assert accounting.scored == total

    # nothing counted twice: features equal the offline (uninterrupted) result, and the online model
    # learned from each resolved prediction exactly once
    check_state_equals_offline(settings, log.events)


def test_a_promoted_model_is_picked_up_without_restart_and_health_and_metrics_answer(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path, tmp_path: Path
) -> None:
    import shutil
    import urllib.request

    from churnstream.models.registry import ModelRegistry
    from churnstream.streams.scorer import serve

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
    server = serve(scorer, "127.0.0.1", 0)
    try:
        assert publish_file(events_dir / "customer_profiles.jsonl", settings).ok
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 120, "profiles to be scored"
        )
        registry.promote(second)
        wait_until(
            lambda: scorer.handler.models.version == second, 30, "the scorer to pick up the promoted model"
        )
        assert publish_file(events_dir / "orders.jsonl", settings).ok
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 180, "orders to be scored"
        )

        port = server.server_address[1]
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read())
        assert health["status"] == "ok" and health["model_version"] == second
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10).read())
        assert ready["status"] == "ready" and ready["reasons"] == [] and isinstance(ready["lag"], int)
        assert health["totals"]["events"] == scorer.handler.totals.events > 0
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
    # the daily figures the dashboard plots (#22) add up to what was published
    from collections import Counter

    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    risks = Counter(p["risk_category"] for p in predictions)
    assert {k[1][0][1]: v for k, v in samples.items() if k[0] == "churn_predictions_by_risk_total"} == risks
    assert samples[("churn_predicted_probability_total", ())] == pytest.approx(
        sum(p["churn_probability"] for p in predictions), rel=1e-4
    )
    alerts = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_alerts)]
    assert samples[("churn_alerts_total", ())] == len(alerts)
    assert samples[("churn_alert_value_at_risk_total", ())] == pytest.approx(
        sum(a["value_at_risk"] or 0.0 for a in alerts), rel=1e-4
    )


def test_a_gradient_boosting_model_scores_every_event_as_scikit_learn_does(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path, tmp_path: Path
) -> None:
    """The worlds here are small enough that logistic regression wins training; a model of 200 small
    trees (as the served model on bigger data) is promoted by hand. The worker scores it through grafted
    product trees (models.batch._merged_trees): each prediction's batch probability is scikit-learn's own
    for the features it carries."""
    import shutil

    import numpy as np

    from churnstream.models.batch import BatchModel, _merged_trees
    from churnstream.models.candidates import _hgb
    from churnstream.models.registry import ModelRegistry

    models_dir = tmp_path / "models"
    shutil.copytree(world / "models", models_dir)
    registry = ModelRegistry(models_dir)
    loaded = registry.load()
    names = loaded.model.feature_names
    log = read_events(world / "events")
    rows = snapshot(log.events, log.start + TRAIN_DAYS * DAY_MS, lateness_ms=scorer_settings.lateness_ms)
    X = np.array([[row[n] for n in names] for row in rows.values()], dtype=np.float64)
    recency = np.nan_to_num(X[:, names.index("recency_days")], nan=120.0)
    y = (recency / 60 + np.random.default_rng(0).normal(0, 1, len(X)) > 1).astype(int)  # noisy: spread out
    estimator = _hgb(200, 0, learning_rate=0.05, max_leaf_nodes=7, min_samples_leaf=5).fit(X, y)
    trees = [p.nodes for (p,) in estimator.steps[-1][1]._predictors]
    assert len(trees) == 200 and len(_merged_trees(trees)) < 100, "the trees should graft"
    model = BatchModel(estimator=estimator, feature_names=names, medians=loaded.model.medians, name="hgb")
    registry.register(model, dict(loaded.metadata), reference=loaded.reference, promote=True)
    settings = dataclasses.replace(scorer_settings, model_dir=models_dir)

    publish_world(settings, world / "events")
    gen = run_scorer(settings)
    scorer = next(gen)
    try:
        wait_until(lambda: committed_everything(settings, settings.consumer_group), 240, "every input scored")
        served_model = scorer.handler.models.loaded.model
        assert served_model.name == "hgb" and served_model._fast, "the grafted trees should have served"
    finally:
        gen.close()

    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    assert len(predictions) >= len(log.events) // 2
    features = np.array([[p["features"][n] for n in names] for p in predictions], dtype=np.float64)
    expected = model.calibration.apply(estimator.predict_proba(features)[:, 1])
    served = np.array([p["batch_probability"] for p in predictions])
    assert len(set(served.round(3).tolist())) > 20, "the model should tell customers apart"
    np.testing.assert_allclose(served, expected, rtol=0, atol=5.1e-7)  # served rounded to 6 decimals


def test_a_promoted_model_this_release_cannot_load_dead_letters_nothing_and_the_served_one_goes_on(
    scorer_settings: Settings,
    topics: Topics,
    redis_client: redis.Redis,
    world: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, the unpickling error escaped the scorer's model check into the worker's search for a
    poison message: every poll it rewound, and valid events were dead-lettered in the model's place."""
    import shutil

    from churnstream.models.registry import ModelRegistry
    from tests.unit.test_models_reload import register_unloadable

    models_dir = tmp_path / "models"
    shutil.copytree(world / "models", models_dir)
    settings = dataclasses.replace(scorer_settings, model_dir=models_dir, model_poll_seconds=0.2)
    registry = ModelRegistry(models_dir)
    served = registry.current_version()
    broken = register_unloadable(registry)
    events_dir = world / "events"
    gen = run_scorer(settings)
    scorer = next(gen)
    try:
        assert publish_file(events_dir / "customer_profiles.jsonl", settings).ok
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 120, "profiles to be scored"
        )
        not_served = functools.partial(scorer.metrics.registry.get_sample_value, "churn_model_not_served")
        assert not_served() == 0.0
        with caplog.at_level("ERROR", logger="churnstream.streams.scorer"):
            with pytest.raises(ModelIntegrityError, match="cannot be loaded by this release"):
                registry.promote(broken)  # refused, since workers could not serve it ...
            with registry._lock():  # ... so made current by hand, as a copied registry would
                registry._set_current(broken, action="promote")
            assert publish_file(events_dir / "orders.jsonl", settings).ok
            wait_until(
                lambda: committed_everything(settings, settings.consumer_group), 180, "orders to be scored"
            )
        assert scorer.handler.models.version == served
        assert not_served() == 1.0  # a page on /metrics, not only a line inside /health
    finally:
        gen.close()
    assert consume_all(settings, settings.topics.dead_letter) == []
    predictions = [orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)]
    assert {p["model_version"] for p in predictions} == {served}
    orders = sum(1 for line in (events_dir / "orders.jsonl").read_text().splitlines() if line.strip())
    assert (
        sum(p["trigger"] == "event" and not p["event_id"].startswith("sim-21-p-") for p in predictions)
        == orders
    )
    refused = [r.getMessage() for r in caplog.records if "cannot be loaded" in r.getMessage()]
    assert len(refused) == 1 and f"keeping model {served}" in refused[0], refused


def test_a_second_worker_joining_mid_stream_shares_the_work_without_loss_or_double_counting(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    settings = scorer_settings
    events_dir = world / "events"
    log = read_events(events_dir)
    first = run_scorer(settings)
    a = next(first)
    second = None
    # A live stream: every topic's events produced in event-time order, in two halves.
    records = event_time_records(settings, events_dir)
    half = len(records) // 2
    try:
        produce_records(settings, records[:half], as_they_happen=True)  # read while produced (see there)
        wait_until(lambda: a.handler.totals.events > 0, 120, "the first worker to start scoring")
        second = run_scorer(settings)
        b = next(second)
        wait_until(lambda: bool(b.assigned) and len(a.assigned) < 6, 120, "the partitions to be shared")
        assert a.assigned.isdisjoint(b.assigned)
        produce_records(settings, records[half:], as_they_happen=True)
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 240, "both workers to finish"
        )
        assert a.handler.totals.predictions > 0 and b.handler.totals.predictions > 0
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

    # The same log through one worker alone: the same answers, every one (each partition sweeps, labels
    # and learns by its own event time; before, the online model's part and the alerts depended on which
    # partitions shared a worker)
    alone = dataclasses.replace(
        settings, topic_prefix=f"{settings.topic_prefix}one.", scorer_group=f"{settings.consumer_group}-one"
    )
    create_topics(alone)
    produce_records(alone, event_time_records(alone, events_dir))
    score_everything(alone, "the worker alone to finish")

    def answers(where: Settings, topic: str, key: str) -> dict[str, dict[str, object]]:
        found: dict[str, dict[str, object]] = {}
        for m in consume_all(where, topic):
            answer = orjson.loads(m.value())
            answer.pop("scored_at", None)
            found.setdefault(answer[key], answer)
        return found

    for topic, key in (("churn_predictions", "prediction_id"), ("churn_alerts", "alert_id")):
        shared = answers(settings, getattr(settings.topics, topic), key)
        assert shared == answers(alone, getattr(alone.topics, topic), key), topic
        assert shared, topic


def test_rebuild_after_redis_loss_restores_state_without_re_emitting(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    from churnstream.models.online import OnlineModel
    from churnstream.streams.rebuild import rebuild

    settings = scorer_settings
    events_dir = world / "events"
    publish_world(settings, events_dir)
    score_everything(settings, "the scorer to finish")
    emitted = len(consume_all(settings, settings.topics.churn_predictions))

    def snapshot_state() -> tuple[dict, dict, dict[int, OnlineModel]]:
        store = RedisFeatureStore(
            client=redis_client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
        )
        try:
            ids = store.customers()
            t = store.watermark()
            assert t is not None
            features = store.features_many(ids, t)
            pending = {
                cid: sorted(p[0] for p in s.get("scoring", {}).get("pend", []))
                for cid, s in store.states(ids).items()
            }
            models = {p: restore_learner(store, p).online for p in range(settings.topic_partitions)}
            assert any(m.n_learned for m in models.values()), "no partition's online model was checkpointed"
            return features, pending, models
        finally:
            store.close()

    features, pending, online = snapshot_state()
    assert any(pending.values()), "no pending predictions to compare after the rebuild"
    lost = list(redis_client.scan_iter(match=f"churn:{settings.topic_prefix}*", count=1000))
    assert lost
    redis_client.delete(*lost)  # Redis lost entirely

    result = rebuild(settings, progress=False)
    assert result["events"] == len(read_events(events_dir).events)
    features2, pending2, online2 = snapshot_state()
    assert features2 == features
    assert pending2 == pending
    assert {p: m.n_learned for p, m in online2.items()} == {p: m.n_learned for p, m in online.items()}
    rows = [features[c] for c in sorted(features)[:200]]
    for p, model in online.items():  # the same chunks learned, in nearly the same order
        before, after = model.predict_many(rows), online2[p].predict_many(rows)
        if None in before or None in after:
            assert before == after
            continue
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
    assert scorer.handler.totals.predictions == 0
    assert len(consume_all(settings, settings.topics.churn_predictions)) == emitted


def test_sweeps_and_labels_do_not_depend_on_where_batches_end(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path
) -> None:
    """The same log through workers with batches of 500 and of 7 events: the same customers are swept
    at the same ticks, and the same predictions get the same labels (a replay after a crash cuts
    batches elsewhere than the first pass did)."""
    from confluent_kafka.admin import AdminClient

    from churnstream.streams.topics import create_topics, topic_specs

    small = dataclasses.replace(
        scorer_settings, topic_prefix=scorer_settings.topic_prefix + "b7.", batch_size=7
    )
    create_topics(small)
    answers = []
    try:
        for settings in (scorer_settings, small):
            publish_world(settings, world / "events")
            score_everything(settings, "the scorer to finish")
            predictions = [
                orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)
            ]
            outcomes = [
                orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_outcomes)
            ]
            answers.append(
                (
                    sorted((p["customer_id"], p["as_of"]) for p in predictions if p["trigger"] == "sweep"),
                    sorted((o["prediction_id"], o["label"], o["labeled_at"]) for o in outcomes),
                )
            )
    finally:
        admin = AdminClient(small.kafka_config())
        admin.delete_topics([spec.name for spec in topic_specs(small)], operation_timeout=10)
        keys = list(redis_client.scan_iter(match=f"churn:{small.topic_prefix}*", count=1000))
        if keys:
            redis_client.delete(*keys)
    (sweeps_500, outcomes_500), (sweeps_7, outcomes_7) = answers
    assert len(sweeps_500) > 100 and len(outcomes_500) > 1000
    assert sweeps_7 == sweeps_500
    assert outcomes_7 == outcomes_500


def test_a_customer_forgotten_while_the_scorer_runs_is_scored_from_nothing_and_answered_once(
    scorer_settings: Settings, topics: Topics, redis_client: redis.Redis, world: Path, tmp_path: Path
) -> None:
    """Before, the scorer scored the customer's next event on the state it still cached, produced that
    prediction (and, once, an alert) from the forgotten history, and only then had its write refused: the
    rewind answered the same prediction id again, differently."""
    from churnstream.streams.forget import forget

    events_dir = world / "events"
    orders = [json.loads(line) for line in (events_dir / "orders.jsonl").read_text().splitlines() if line]
    gen = run_scorer(scorer_settings)
    scorer = next(gen)
    # as `churnstream forget` does, in a store of its own: the scorer's cache is not its to clear
    prefix, lateness = scorer_settings.topic_prefix, scorer_settings.lateness_ms
    operator = RedisFeatureStore(client=redis_client, namespace=prefix, lateness_ms=lateness)

    def rows_in_learner_log(partition: int, ids: set[str]) -> int:  # raw rows (features, label) of ids
        lines = (operator.learner_checkpoint(partition).learned or b"").splitlines()
        entries = [orjson.loads(line) for line in lines]
        return sum(row[0][1] in ids for e in entries if e[0] == "wait" for row in e[2])

    try:
        assert publish_file(events_dir / "orders.jsonl", scorer_settings).ok
        group = scorer_settings.consumer_group
        wait_until(lambda: committed_everything(scorer_settings, group), 180, "orders to be scored")
        cid = Counter(o["customer_id"] for o in orders).most_common(1)[0][0]  # cached by the scorer
        operator.check_layout()
        p = operator.partition_of(cid)
        theirs = {
            a["prediction_id"]
            for m in consume_all(scorer_settings, scorer_settings.topics.churn_predictions)
            if (a := orjson.loads(m.value()))["customer_id"] == cid
        }
        before = rows_in_learner_log(p, theirs)
        assert forget(operator, scorer_settings, cid)["removed"]
        later = max(parse_time(o["timestamp"]) for o in orders) + DAY_MS
        new = {"event_id": "after-forget", "customer_id": cid, "order_id": "O-after", "amount": 40.0}
        path = tmp_path / "new.jsonl"
        path.write_text(json.dumps({**new, "timestamp": later}) + "\n")
        assert publish_file(path, scorer_settings).ok
        wait_until(lambda: committed_everything(scorer_settings, group), 60, "the new order to be scored")
        # the partition's owner wrote its learner again with its next write there: no raw row of theirs
        # is left in Redis, and a restore gives the learner the scorer has
        after = rows_in_learner_log(p, theirs)
        live = scorer.handler.models.learners[p]
        restored = restore_learner(operator, p)
        pairs = zip(live.online.parameters(), restored.online.parameters(), strict=True)
        same = [np.array_equal(a, b) for a, b in pairs]
    finally:
        gen.close()
        operator.close()
    assert before > 0 and after == 0, (before, after)
    assert all(same) and live.waiting == restored.waiting and live.logged == restored.logged
    answers = [
        p
        for m in consume_all(scorer_settings, scorer_settings.topics.churn_predictions)
        if (p := orjson.loads(m.value()))["event_id"] == "after-forget"
    ]
    assert answers and all({**a, "scored_at": 0} == {**answers[0], "scored_at": 0} for a in answers), answers
    features = answers[0]["features"]
    assert (features["orders_total"], features["spent_total"]) == (1, 40.0), features

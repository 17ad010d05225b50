"""Closing the loop (#24) through real Kafka and Redis: retrain from the topics into shadow, score the shadow
beside the champion, gather evidence from the outcomes, promote on it.

A simulated shop whose world shifts on day ``DRIFT_DAY`` (``--drift-kind both``: amounts, ticket rates and
who leaves) and the same shop without the shift. The champion learns the days before ``TRAIN_DAYS`` (a copy,
v0001, serves those days first, so the monitor's realized reference for the champion comes from its own first
days of service, not from a stream where every customer is new). The scorer runs (in this process) up to
``RETRAIN_DAY`` while the real ``churnstream monitor`` watches with ``CHURN_RETRAIN_ON_ADVICE=1``: it advises
``retrain`` and starts ``churnstream retrain`` itself, which trains a candidate from the input topics and
puts it in shadow. The rest of the stream is scored with the shadow beside the champion;
``churnstream models promote`` reads the evidence from ``churn_outcomes``, shows it and, the candidate being
better, promotes it. On the stationary shop the champion learned all but the last horizon of what a
candidate retrained on demand learns; the candidate is no better by the auto-promotion margin, and the policy
leaves it in shadow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from churnstream.cli import main
from churnstream.features.offline import read_events
from churnstream.models.registry import ModelRegistry
from churnstream.models.train import train
from churnstream.settings import DAY_MS, Settings, Topics
from churnstream.streams.retrain import LoopWatch
from churnstream.streams.scorer import ScoringWorker, build_scorer
from churnstream.timefmt import parse_time
from tests.integration.conftest import (
    committed_everything,
    consume_all,
    event_time_records,
    produce_raw,
    produce_records,
    wait_until,
)
from tests.integration.test_monitor import run_monitor

CUSTOMERS, DAYS, TRAIN_DAYS, DRIFT_DAY, RETRAIN_DAY, WINDOW_ROWS = 2000, 330, 110, 130, 230, 500
DRIFT_KIND = "both"


def _shop(root: Path, *, drift: bool, train_days: int = TRAIN_DAYS) -> tuple[Path, int]:
    events = root / "events"
    argv = [
        "simulate",
        "--customers",
        str(CUSTOMERS),
        "--days",
        str(DAYS),
        "--seed",
        "7",
        "--out",
        str(events),
    ]
    if drift:
        argv += ["--drift-at", str(DRIFT_DAY), "--drift-kind", DRIFT_KIND]
    assert main(argv) == 0
    start = read_events(events).start
    train(
        events,
        root / "models",
        settings=Settings.from_env(),
        until=start + train_days * DAY_MS,
        progress=False,
    )
    # v0002, the champion, is the same model: v0001 serves the warm-up, the days it learned (all customers
    # new at first), so the monitor's realized reference for v0002 comes from its first days of service
    registry = ModelRegistry(root / "models")
    first = registry.load("v0001")
    registry.register(first.model, dict(first.metadata), reference=first.reference)
    return events, start


@pytest.fixture(scope="module")
def shifted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    return _shop(tmp_path_factory.mktemp("shifted"), drift=True)


@pytest.fixture(scope="module")
def stationary(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    # a champion that learned all but the last horizon of what the candidate will: about as good
    return _shop(tmp_path_factory.mktemp("stationary"), drift=False, train_days=RETRAIN_DAY - 30)


def _running(settings: Settings) -> Iterator[ScoringWorker]:
    scorer = build_scorer(settings)
    thread = threading.Thread(target=scorer.run, name="scorer", daemon=True)
    thread.start()
    try:
        yield scorer
    finally:
        scorer.stop()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the scorer did not stop"


def _score(settings: Settings, records: list[Any]) -> None:
    produce_records(settings, records)
    wait_until(lambda: committed_everything(settings, settings.consumer_group), 240, "the scorer to commit")


def _split(settings: Settings, events: Path, start: int) -> tuple[list[Any], list[Any]]:
    records = event_time_records(settings, events)
    cut = start + RETRAIN_DAY * DAY_MS
    return [r for r in records if r[0] < cut], [r for r in records if r[0] >= cut]


def _own_registry(shop: Path, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(shop / "models", models)  # the champion, in a registry of this test's own
    return models


def _wait_shadow_served(worker: ScoringWorker, version: str) -> None:
    wait_until(
        lambda: getattr(worker.handler.models.shadow, "version", None) == version,
        60,
        f"the scorer to load {version} in shadow",
    )


def test_a_shift_is_retrained_into_shadow_and_the_better_candidate_promoted(
    settings: Settings,
    topics: Topics,
    shifted: tuple[Path, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, start = shifted
    models = _own_registry(events.parent, tmp_path)
    own = dataclasses.replace(settings, model_dir=models, metrics_port=-1, model_poll_seconds=0.5)
    registry = ModelRegistry(models)
    champion = "v0002"
    records = event_time_records(own, events)
    trained, retrain_at = start + TRAIN_DAYS * DAY_MS, start + RETRAIN_DAY * DAY_MS
    warm_up = [r for r in records if r[0] < trained]
    before = [r for r in records if trained <= r[0] < retrain_at]
    after = [r for r in records if r[0] >= retrain_at]
    watching = dataclasses.replace(own, drift_window_days=60.0, retrain_on_advice=1)
    gen = _running(own)
    worker = next(gen)
    try:
        with run_monitor(watching, tmp_path, window_rows=WINDOW_ROWS):
            _score(own, warm_up)
            registry.promote(champion)
            wait_until(lambda: worker.handler.models.version == champion, 60, "the scorer to serve v0002")
            _score(own, before)
            wait_until(
                lambda: registry.shadow_version() is not None,
                240,
                "the monitor's retrain to shadow a candidate",
            )
            actions = [
                json.loads(m.value()).get("action") for m in consume_all(own, own.topics.drift_reports)
            ]
            assert "retrain" in actions, actions
            candidate = registry.shadow_version()
            assert candidate is not None and candidate != champion
            assert [e.get("reason") for e in registry.log() if e["action"] == "shadow"] == ["retrain"]
            _wait_shadow_served(worker, candidate)
            _score(own, after)
    finally:
        gen.close()
    predictions = [orjson.loads(m.value()) for m in consume_all(own, own.topics.churn_predictions)]
    shadowed = [p for p in predictions if p.get("shadow_model_version") == candidate]
    assert shadowed and all(p["model_version"] == champion for p in shadowed)
    shadow_model = registry.load(candidate).model
    expected = shadow_model.predict_proba(shadow_model.vectorize([p["features"] for p in shadowed]))
    assert max(abs(p["shadow_probability"] - e) for p, e in zip(shadowed, expected, strict=True)) < 1e-6
    outcomes = [orjson.loads(m.value()) for m in consume_all(own, own.topics.churn_outcomes)]
    # the blend after the promotion of v0002 (rule 3 of models/blend.py): v0001's online model had earned
    # weight, and v0002 serves alone until labels of its own predictions are known
    warmed = [p for p in predictions if p["model_version"] == "v0001" and p["online_probability"] is not None]
    assert sum(p["churn_probability"] != p["batch_probability"] for p in warmed) > 100, "no online weight"
    first_label = min(parse_time(o["labeled_at"]) for o in outcomes if o.get("model_version") == champion)
    alone = [
        p for p in predictions if p["model_version"] == champion and parse_time(p["as_of"]) < first_label
    ]
    assert len(alone) > 100
    assert all(p["churn_probability"] == p["batch_probability"] for p in alone)
    carried = [o for o in outcomes if o.get("shadow_model_version") == candidate]
    assert len(carried) > 500
    by_id = {p["prediction_id"]: p for p in shadowed}
    assert all(o["shadow_probability"] == by_id[o["prediction_id"]]["shadow_probability"] for o in carried)

    monkeypatch.setenv("CHURN_TOPIC_PREFIX", own.topic_prefix)
    capsys.readouterr()
    assert main(["models", "--model-dir", str(models), "promote", candidate]) == 0
    shown = capsys.readouterr().out
    with capsys.disabled():
        print(f"\n{shown}")
    assert f"evidence: shadow {candidate} vs champion {champion}" in shown and "verdict better" in shown
    assert registry.current_version() == candidate


def test_on_a_stationary_shop_a_candidate_no_better_is_not_promoted(
    settings: Settings,
    topics: Topics,
    stationary: tuple[Path, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, start = stationary
    models = _own_registry(events.parent, tmp_path)
    own = dataclasses.replace(settings, model_dir=models, metrics_port=-1, model_poll_seconds=0.5)
    registry = ModelRegistry(models)
    champion = registry.current_version()
    before, after = _split(own, events, start)
    gen = _running(own)
    worker = next(gen)
    try:
        _score(own, before)
        monkeypatch.setenv("CHURN_TOPIC_PREFIX", own.topic_prefix)
        assert main(["retrain", "--model-dir", str(models)]) == 0
        candidate = registry.shadow_version()
        assert candidate is not None and candidate != champion
        _wait_shadow_served(worker, candidate)
        _score(own, after)
    finally:
        gen.close()
    policy = dataclasses.replace(own, auto_promote_margin=0.01, auto_promote_min_labels=500)
    watch = LoopWatch(policy)
    try:
        evidence = watch.on_report("none")
    finally:
        watch.close()
    assert evidence is not None
    cumulative = evidence["cumulative"]
    with capsys.disabled():
        print(f"\nstationary: {json.dumps({k: cumulative[k] for k in ('labels', 'roc_auc', 'verdict')})}")
    assert cumulative["labels"] > 500 and cumulative["verdict"] != "better"
    assert registry.current_version() == champion and registry.shadow_version() == candidate


def test_promote_shows_the_evidence_and_refuses_a_worse_shadow_unless_forced(
    settings: Settings,
    topics: Topics,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_models_shadow import _model
    from tests.unit.test_monitoring_evidence import _outcomes, outcome_messages

    registry = ModelRegistry(tmp_path / "models")
    registry.register(_model(1), {}, promote=True)
    registry.register(_model(2), {})
    registry.register(_model(3), {})
    registry.shadow("v0002")
    rows = _outcomes(1200, shadow_better=False) + _outcomes(200, shadow_better=True, version="v0009")
    messages = outcome_messages(rows)
    produce_raw(
        settings, topics.churn_outcomes, [(m["customer_id"].encode(), orjson.dumps(m)) for m in messages]
    )
    monkeypatch.setenv("CHURN_TOPIC_PREFIX", settings.topic_prefix)
    base = ["models", "--model-dir", str(tmp_path / "models")]
    capsys.readouterr()
    assert main([*base, "promote", "v0002"]) == 1
    shown = capsys.readouterr()
    assert "on 1200 labels" in shown.out and "verdict worse" in shown.out
    assert "refusing to promote v0002" in shown.err
    assert registry.current_version() == "v0001"
    assert main([*base, "list"]) == 0
    assert "verdict worse" in capsys.readouterr().out  # the evidence is kept for the listing
    assert main([*base, "promote", "v0003"]) == 0  # never in shadow: nothing to weigh
    assert "never in shadow" in capsys.readouterr().out
    assert main([*base, "promote", "v0002", "--force"]) == 0
    assert registry.current_version() == "v0002"

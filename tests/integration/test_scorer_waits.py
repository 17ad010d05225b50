"""``churnstream score`` started before any model exists waits for one instead of exiting (and restarting
in a loop under Docker), then scores with the first model promoted. While it waits, ``/health`` says it is
alive (a compose healthcheck passes) and ``/ready`` says why it is not ready; a SIGTERM while it starts
stops it."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

from churnstream.cli import main
from churnstream.models.train import train
from churnstream.settings import Settings, Topics
from churnstream.streams.processes import start_worker
from churnstream.streams.publish import publish_file
from tests.integration.conftest import (
    CHURNSTREAM,
    committed_everything,
    consume_all,
    free_port,
    http_json,
    wait_until,
)


def _scorer(settings: Settings, log: Path, env: dict[str, str]) -> Any:
    """``churnstream score`` in a process of its own, with ``env`` over ``settings``."""
    return start_worker(
        "score",
        settings,
        log=log,
        worker_id=f"test-{uuid.uuid4().hex[:8]}",
        env=env,
        program=[CHURNSTREAM],
        stdout="discard",
    )


def test_a_scorer_started_before_any_model_waits_for_one_then_scores(
    settings: Settings, topics: Topics, tmp_path: Path
) -> None:
    events = tmp_path / "events"
    assert main(["simulate", "--customers", "60", "--days", "120", "--seed", "3", "--out", str(events)]) == 0
    models = tmp_path / "models"
    log = tmp_path / "scorer.log"
    port = free_port()
    worker = _scorer(
        settings,
        log,
        {
            "CHURN_MODEL_DIR": str(models),
            "CHURN_MODEL_POLL_SECONDS": "0.2",
            "CHURN_METRICS_PORT": str(port),
        },
    )
    try:
        wait_until(lambda: "waiting for one" in log.read_text(), 60, "the scorer to say it waits for a model")
        assert worker.poll() is None  # still running, not exited
        # alive (a healthcheck on /health passes: the docker-compose file's does), not ready, and why
        status, health = http_json(port, "/health")
        assert status == 200 and health["status"] == "starting", health
        assert "CHURN_MODEL_DIR" in health["waiting"]
        status, ready = http_json(port, "/ready")
        assert status == 503 and str(models) in ready["reasons"][0], ready
        train(events, models, settings=Settings.from_env(), progress=False)
        wait_until(lambda: "scoring with model v0001" in log.read_text(), 60, "the scorer to start scoring")
        wait_until(lambda: http_json(port, "/ready")[0] == 200, 60, "the scorer to be ready once it scores")
        assert http_json(port, "/health")[1]["status"] == "ok"
        assert publish_file(events / "orders.jsonl", settings).ok
        wait_until(
            lambda: committed_everything(settings, settings.consumer_group), 120, "orders to be scored"
        )
    finally:
        code = worker.stop(60)
    assert code == 0 and not worker.killed, log.read_text()[-2000:]
    # ... and it scored: one prediction per order, by the model promoted while it waited
    orders = {json.loads(line)["event_id"] for line in (events / "orders.jsonl").read_text().splitlines()}
    predictions = [
        json.loads(m.value() or b"") for m in consume_all(settings, settings.topics.churn_predictions)
    ]
    on_events = [p for p in predictions if p["trigger"] == "event"]
    assert orders and sorted(p["event_id"] for p in on_events) == sorted(orders)
    assert {p["model_version"] for p in predictions} == {"v0001"}


def test_a_scorer_waiting_for_a_model_stops_cleanly_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "scorer.log"
    worker = _scorer(settings, log, {"CHURN_MODEL_DIR": str(tmp_path / "none"), "CHURN_METRICS_PORT": "-1"})
    wait_until(lambda: "waiting for one" in log.read_text(), 60, "the scorer to say it waits for a model")
    assert worker.stop(30) == 0 and not worker.killed


def test_a_sigterm_while_the_scorer_starts_stops_it(settings: Settings, tmp_path: Path) -> None:
    """The signal landed while the worker was being built (topics, Redis, models: seconds under load) and
    was forgotten: the worker joined its group and ran on until a second signal (a review: still running
    54 s later, holding partitions)."""
    events = tmp_path / "events"
    assert main(["simulate", "--customers", "40", "--days", "90", "--seed", "5", "--out", str(events)]) == 0
    models = tmp_path / "models"
    log = tmp_path / "scorer.log"
    worker = _scorer(
        settings,
        log,
        {"CHURN_MODEL_DIR": str(models), "CHURN_MODEL_POLL_SECONDS": "0.05", "CHURN_METRICS_PORT": "-1"},
    )
    try:
        wait_until(lambda: "waiting for one" in log.read_text(), 60, "the scorer to say it waits for a model")
        train(events, models, settings=Settings.from_env(), progress=False)
        # the model is found, and the worker is being built: one SIGTERM now
        wait_until(lambda: "is current: starting" in log.read_text(), 60, "the scorer to find the model")
        worker.send_signal(signal.SIGTERM)
        code = worker.wait_or_kill(60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0 and not worker.killed, log.read_text()[-2000:]
    assert "stopped while starting" in log.read_text()
    assert "scoring with model" not in log.read_text()

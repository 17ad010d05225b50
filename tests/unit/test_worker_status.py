"""What a starting worker says on ``/health``: alive while it waits for a model however long, stuck once
building it (opening Redis and the topics, loading the models) hangs, so a supervisor restarts it."""

from __future__ import annotations

from churnstream.settings import Settings
from churnstream.streams.worker_status import BUILDING, Starting


def test_a_worker_waiting_for_a_model_stays_alive() -> None:
    starting = Starting(Settings())
    starting.waiting = "no current model in var/models (CHURN_MODEL_DIR) yet: train and promote one"
    starting._since -= 3600  # an hour without a model: the documented first run (up, then train)
    alive, body = starting.health()
    assert alive and body["status"] == "starting" and body["seconds"] >= 3600


def test_a_build_that_hangs_is_stuck() -> None:
    starting = Starting(Settings())
    starting.waiting = BUILDING
    alive, body = starting.health()
    assert alive and body["status"] == "starting"
    starting._since -= starting.stuck_after - 1
    assert starting.health()[0]
    starting._since -= 2  # past the limit a running worker's loop has too
    alive, body = starting.health()
    assert not alive and body["status"] == "stuck" and body["waiting"] == BUILDING, body

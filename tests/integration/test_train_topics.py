"""``churnstream train --from-topics``: the same model as from the files the topics were filled from."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from churnstream.cli import main
from churnstream.features.offline import read_events
from churnstream.models.registry import ModelRegistry
from churnstream.settings import Settings, Topics
from churnstream.streams.train_topics import export_topics
from tests.integration.conftest import produce_raw, publish_world


@pytest.fixture
def world(tmp_path: Path) -> Path:
    events = tmp_path / "events"
    argv = ["simulate", "--customers", "300", "--days", "200", "--seed", "5", "--out", str(events)]
    assert main(argv) == 0
    return events


def _metrics(root: Path) -> dict:
    registry = ModelRegistry(root)
    meta = registry.metadata(registry.versions()[-1])
    return {"metrics": _untimed(meta["metrics"]), "chosen": meta.get("chosen")}


def _untimed(value: object) -> object:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if k != "fit_seconds"}
    return value


def test_a_model_trained_from_the_topics_equals_one_trained_from_their_files(
    world: Path,
    tmp_path: Path,
    settings: Settings,
    topics: Topics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publish_world(settings, world)
    produce_raw(settings, topics.orders, [(b"c-x", b"{not json")])  # counted, not trained on
    monkeypatch.setenv("CHURN_TOPIC_PREFIX", settings.topic_prefix)
    with caplog.at_level(logging.INFO, logger="churnstream"):
        assert main(["train", "--from-topics", "--out", str(tmp_path / "from_topics")]) == 0
    assert "1 not JSON objects" in caplog.text
    assert main(["train", "--events", str(world), "--out", str(tmp_path / "from_files")]) == 0
    assert _metrics(tmp_path / "from_topics") == _metrics(tmp_path / "from_files")
    # its metadata says where its events came from, not the temporary directory they were copied to
    registry = ModelRegistry(tmp_path / "from_topics")
    events = registry.metadata(registry.versions()[-1])["events"]
    assert "dir" not in events and events["source"]["from"] == "topics"
    assert events["source"]["topics"] == list(topics.inputs) and events["source"]["read"]["orders"] > 0


def test_since_and_until_keep_events_by_event_time_and_lost_history_is_reported(
    world: Path, tmp_path: Path, settings: Settings, topics: Topics
) -> None:
    publish_world(settings, world)
    events = read_events(world).events
    since, until = events[len(events) // 4].timestamp, events[3 * len(events) // 4].timestamp
    expected = sum(1 for e in events if since <= e.timestamp < until)

    (tmp_path / "a").mkdir()
    export = export_topics(settings, tmp_path / "a", since=since, until=until, progress=False)
    assert sum(export.written.values()) == expected
    assert export.outside == len(events) - expected and export.lost == []
    kept = read_events(tmp_path / "a").events
    assert len(kept) == expected and min(e.timestamp for e in kept) >= since

    admin = AdminClient(settings.kafka_config())  # retention takes the first 10 orders of partition 0
    for future in admin.delete_records([TopicPartition(topics.orders, 0, 10)]).values():
        future.result(timeout=30)
    (tmp_path / "b").mkdir()
    export = export_topics(settings, tmp_path / "b", progress=False)
    assert len(export.lost) == 1 and export.lost[0].startswith(f"{topics.orders}[0]: offsets 0..9 are gone")
    assert "retention.ms=" in export.lost[0]
    assert sum(export.written.values()) == len(events) - 10
    assert json.loads((tmp_path / "b" / "orders.jsonl").read_bytes().splitlines()[0])["event_id"]

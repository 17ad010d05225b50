"""The demo's clean start deletes only what is its own: a prefix of its own, and its own work directory."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from churnstream.errors import ConfigError
from churnstream.settings import Settings
from churnstream.streams.demo import DemoConfig
from churnstream.streams.demo.cleanup import clear_previous, is_demo_dir, mark_demo_dir
from churnstream.streams.demo.runner import Demo

# nothing answers here: a refusal must come before the demo contacts Kafka or Redis
NOWHERE = Settings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")


def test_a_prefix_that_is_not_a_namespace_of_its_own_is_refused(tmp_path: Path) -> None:
    for prefix in ("", "prod", "demo"):
        with pytest.raises(ConfigError, match="must end in '.'"):
            clear_previous(dataclasses.replace(NOWHERE, topic_prefix=prefix), [], tmp_path / "new")


def test_a_work_directory_that_is_not_a_demos_is_not_deleted(tmp_path: Path) -> None:
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not a demo's work directory"):
        clear_previous(dataclasses.replace(NOWHERE, topic_prefix="demo."), [], mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not is_demo_dir(mine) and not is_demo_dir(tmp_path / "new")
    mark_demo_dir(tmp_path / "demo")
    assert is_demo_dir(tmp_path / "demo")


def test_the_demo_uses_a_consumer_group_under_its_prefix_whatever_the_environment_says(
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(NOWHERE, scorer_group="production-scorers")
    demo = Demo(
        config=DemoConfig(prefix="demo.", work_dir=tmp_path / "demo"), settings=settings, out=io.StringIO()
    )
    assert demo.settings.consumer_group == "demo.churnstream-scorer"

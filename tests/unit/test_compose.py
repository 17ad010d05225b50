"""``docker-compose.yml`` and ``Dockerfile`` read against the code: no Docker engine runs here, so a renamed
command, setting or port would otherwise go unnoticed until a user's ``docker compose up``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from churnstream.cli import build_parser
from churnstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == "churnstream:latest"}


def _resolved(environment: dict[str, Any]) -> dict[str, str]:
    """The environment as compose gives it when the shell sets nothing (``${VAR:-default}`` -> default)."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in environment.items()}


def test_every_service_runs_a_command_the_cli_has(compose: dict[str, Any]) -> None:
    services = _ours(compose)
    assert {"topics", "scorer", "monitor"} <= set(services)
    parser = build_parser()
    for name, service in services.items():
        if service.get("entrypoint"):  # e.g. the Evidently UI: another program in the same image
            continue
        args = parser.parse_args([str(a) for a in service["command"]])  # exits on an unknown command
        assert args.command in ("topics", "score", "monitor"), name


def test_every_variable_is_a_setting_and_the_defaults_are_valid(compose: dict[str, Any]) -> None:
    for service in _ours(compose).values():
        env = _resolved(service["environment"])
        assert Settings.unknown_variables(env) == []
        settings = Settings.from_env(env)  # raises ConfigError on a malformed value
        assert settings.model_dir == Path("/data/models") and settings.report_dir == Path("/data/reports")


def test_ports_and_paths_match_the_settings(compose: dict[str, Any]) -> None:
    services = _ours(compose)
    defaults = Settings()
    scorer_check = " ".join(services["scorer"]["healthcheck"]["test"])
    assert f"127.0.0.1:{defaults.metrics_port}/health" in scorer_check
    assert f"{defaults.web_port}:{defaults.web_port}" in services["monitor"]["ports"]
    ui = services["evidently-ui"]["entrypoint"]
    settings = Settings.from_env(_resolved(services["monitor"]["environment"]))
    assert ui[ui.index("--workspace") + 1] == str(settings.report_dir / "workspace")
    host_port = services["monitor"]["ports"][0].split(":")[0]
    assert settings.pages_url == f"http://localhost:{host_port}"  # links in messages open the pages
    assert services["evidently-ui"]["environment"]["DO_NOT_TRACK"] == "1"
    mounted = {v.split(":")[1] for v in services["scorer"]["volumes"]}
    assert str(settings.model_dir) in mounted and str(settings.report_dir) in mounted


def test_the_image_holds_the_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("churnstream", "streams", "features", "models", "monitoring"):
        assert re.search(rf"^COPY {folder} \./{folder}$", dockerfile, re.M), folder
    assert 'ENTRYPOINT ["churnstream"]' in dockerfile

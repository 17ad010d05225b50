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


# The containers' paths and ports: all ``environment:`` may pin, since compose lets it win over every
# env_file, churnstream.env too (Kafka and Redis are defaults a user may replace: deploy/compose.env).
PINNED = {
    "CHURN_METRICS_PORT",
    "CHURN_WEB_PORT",
    "CHURN_MODEL_DIR",
    "CHURN_REPORT_DIR",
    "CHURN_VAR_DIR",
    "CHURN_WEB_HOST",
    "CHURN_API_HOST",
    "CHURN_API_PORT",
    "DO_NOT_TRACK",
}


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    return {k: v for k, v in pairs}


def _resolved(service: dict[str, Any], user: dict[str, str] | None = None) -> dict[str, str]:
    """A container's environment as compose gives it: the env files in order (``user``: what
    churnstream.env holds), then ``environment:`` over them."""
    env: dict[str, str] = {}
    for entry in service.get("env_file") or []:
        path = entry["path"] if isinstance(entry, dict) else entry
        if path == "churnstream.env":
            env.update(user or {})
        else:
            env.update(_env_file(ROOT / path))
    return {**env, **{k: str(v) for k, v in (service.get("environment") or {}).items()}}


def test_every_service_runs_a_command_the_cli_has(compose: dict[str, Any]) -> None:
    services = _ours(compose)
    assert {"topics", "scorer", "monitor", "api"} <= set(services)
    parser = build_parser()
    for name, service in services.items():
        if service.get("entrypoint"):  # e.g. the Evidently UI: another program in the same image
            continue
        args = parser.parse_args([str(a) for a in service["command"]])  # exits on an unknown command
        assert args.command in ("topics", "score", "monitor", "serve"), name


def test_what_churnstream_env_sets_reaches_every_container(compose: dict[str, Any]) -> None:
    """Before, `environment:` listed the token and the tunable settings as `${VAR:-default}`; compose lets
    `environment:` win over env files, so a CHURN_API_TOKEN put in churnstream.env (where the file said
    settings go) was replaced by an empty one, and the API, run with --allow-unauthenticated, served every
    customer without a token."""
    user = {
        "CHURN_API_TOKEN": "s3cret",
        "CHURN_HORIZON_DAYS": "60",
        "CHURN_PUBLIC_URL": "https://x/churn",
        "CHURN_REDIS_URL": "rediss://churn:pw@cache.example:6380/0",  # a managed Redis (a review could not)
    }
    for name, service in _ours(compose).items():
        pinned = set(service.get("environment") or {})
        assert pinned <= PINNED, (name, pinned - PINNED)
        assert not any("${" in str(v) for v in (service.get("environment") or {}).values()), name
        files = [e["path"] if isinstance(e, dict) else e for e in service["env_file"]]
        assert files[-1] == "churnstream.env", name  # the user's file comes last: it wins over the defaults
        settings = Settings.from_env(_resolved(service, user))
        assert (settings.api_token, settings.horizon_days) == ("s3cret", 60.0), name
        assert settings.pages_url == "https://x/churn", name
        assert settings.redis_url == user["CHURN_REDIS_URL"], name
        assert Settings.from_env(_resolved(service)).redis_url == "redis://redis:6379/0", name


def test_every_variable_is_a_setting_and_the_defaults_are_valid(compose: dict[str, Any]) -> None:
    for service in _ours(compose).values():
        env = _resolved(service)
        assert Settings.unknown_variables(env) == []
        settings = Settings.from_env(env)  # raises ConfigError on a malformed value
        assert settings.model_dir == Path("/data/models") and settings.report_dir == Path("/data/reports")
        # risk thresholds are not pinned: the model's own apply unless the user sets them
        assert (settings.high_threshold, settings.medium_threshold) == (None, None)
        assert Settings.from_env({**env, "CHURN_HIGH_THRESHOLD": "0.8"}).high_threshold == 0.8
        assert (settings.alert_policy, settings.alert_budget_share) == ("value_at_risk", 0.1)


def test_ports_and_paths_match_the_settings(compose: dict[str, Any]) -> None:
    services = _ours(compose)
    defaults = Settings()
    scorer_check = " ".join(services["scorer"]["healthcheck"]["test"])
    scorer = Settings.from_env(_resolved(services["scorer"], {"CHURN_METRICS_PORT": "9999"}))
    assert f"127.0.0.1:{scorer.metrics_port}/health" in scorer_check  # a user's port cannot move it
    assert scorer.metrics_port == defaults.metrics_port
    assert f"{defaults.web_port}:{defaults.web_port}" in services["monitor"]["ports"]
    ui = services["evidently-ui"]["entrypoint"]
    settings = Settings.from_env(_resolved(services["monitor"]))
    assert ui[ui.index("--workspace") + 1] == str(settings.report_dir / "workspace")
    host_port = services["monitor"]["ports"][0].split(":")[0]
    assert settings.pages_url == f"http://localhost:{host_port}"  # links in messages open the pages
    assert services["evidently-ui"]["environment"]["DO_NOT_TRACK"] == "1"
    mounted = {v.split(":")[1] for v in services["scorer"]["volumes"]}
    assert str(settings.model_dir) in mounted and str(settings.report_dir) in mounted


def test_what_the_monitor_keeps_on_disk_is_on_a_volume(compose: dict[str, Any]) -> None:
    from churnstream.streams.monitor import references_dir

    services = _ours(compose)
    settings = Settings.from_env(_resolved(services["monitor"]))
    volumes = dict(v.split(":")[:2] for v in services["monitor"]["volumes"])
    named = set(compose.get("volumes") or {})
    on_volumes = {Path(path) for name, path in volumes.items() if name in named}
    # reports and workspace, the references it takes from the stream, the registry's references
    for needed in (settings.report_dir, references_dir(settings), settings.model_dir):
        assert any(needed == root or root in needed.parents for root in on_volumes), needed


def test_the_image_holds_the_package_and_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for folder in ("churnstream", "streams", "features", "models", "monitoring"):
        assert re.search(rf"^COPY {folder} \./{folder}$", dockerfile, re.M), folder
    assert 'ENTRYPOINT ["churnstream"]' in dockerfile


def test_the_api_service_serves_on_its_settings_port_with_a_token_variable(
    compose: dict[str, Any],
) -> None:
    from churnstream.streams.api import check_exposure

    api = _ours(compose)["api"]
    args = build_parser().parse_args([str(a) for a in api["command"]])
    assert args.command == "serve"
    settings = Settings.from_env(_resolved(api))
    assert settings.api_host == "0.0.0.0"  # reachable through the published port
    check_exposure(settings, allow_unauthenticated=args.allow_unauthenticated)  # it starts without a token
    published = api["ports"][0].rsplit(":", 2)
    assert published[0] == "127.0.0.1", "without a token the API is published on the host's loopback only"
    assert int(published[-1]) == settings.api_port
    check = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{settings.api_port}/health" in check
    assert set(api["depends_on"]) >= {"redis"}
    mounted = {v.split(":")[1] for v in api["volumes"]}
    assert str(settings.model_dir) in mounted  # the models it scores with


def test_prometheus_scrapes_every_service_on_its_settings_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["observability"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in services["prometheus"]["volumes"]}
    config = yaml.safe_load(
        (ROOT / mounted["./deploy/prometheus.yml"].replace("/etc/prometheus", "deploy")).read_text()
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = Settings()
    scorer = jobs["churnstream-scorer"]["dns_sd_configs"][0]
    assert scorer["names"] == ["scorer"] and scorer["port"] == defaults.metrics_port
    api_env = _resolved(services["api"])
    assert jobs["churnstream-monitor"]["static_configs"][0]["targets"] == [f"monitor:{defaults.web_port}"]
    assert jobs["churnstream-api"]["static_configs"][0]["targets"] == [f"api:{api_env['CHURN_API_PORT']}"]
    for job in jobs.values():
        target = job.get("dns_sd_configs", job.get("static_configs"))[0]
        name = target["names"][0] if "names" in target else target["targets"][0].split(":")[0]
        assert name in services, job["job_name"]


def test_the_grafana_dashboard_plots_only_metrics_the_services_export() -> None:
    import json

    from churnstream.streams import monitor_health
    from churnstream.streams.api import ApiMetrics
    from churnstream.streams.scorer_metrics import ScorerMetrics

    exported = set()
    monitor = monitor_health.MonitorMetrics(
        health=lambda: monitor_health._SAMPLE_HEALTH, reports=lambda: monitor_health._SAMPLE_REPORTS
    )
    for registry in (ScorerMetrics().registry, ApiMetrics().registry, monitor.registry):
        for family in registry.collect():  # labelled families have no samples yet: names by type
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/churnstream.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = {n for e in exprs for n in re.findall(r"\b(churn_[a-z_]+)", e)}
    assert len(names) >= 15
    for name in sorted(names):
        assert name in exported, name
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert {d["uid"] for d in provisioned["datasources"]} >= {
        p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p
    }


def test_the_dashboard_has_a_daily_row_with_the_daily_reports_figures() -> None:
    import json

    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/churnstream.json").read_text())
    panels = dashboard["panels"]
    start = next(i for i, p in enumerate(panels) if p["type"] == "row" and p["title"].startswith("Daily"))
    daily = [p for p in panels[start + 1 :] if p["type"] != "row"]
    exprs = [t["expr"] for p in daily for t in p["targets"]]
    # counters and histograms per day; gauges (the monitor's ROC-AUC) as their value at the day's end
    assert all("[1d]" in e for e in exprs)
    for figure in (
        "by (trigger) (increase(churn_predictions_total",
        "by (risk) (increase(churn_predictions_by_risk_total",
        "increase(churn_predicted_probability_total",
        "increase(churn_alerts_total",
        "increase(churn_alert_value_at_risk_total",
        "by (source) (increase(churn_outcomes_total",
        "churn_monitor_realized_auc",
        "by (stage) (increase(churn_dead_letters_total",
        "histogram_quantile(0.99, sum by (le) (increase(churn_batch_seconds_bucket",
    ):
        assert any(figure in e for e in exprs), figure
    assert {p["interval"] for p in daily} == {"1d"}
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))

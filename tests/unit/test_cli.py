"""The command line as a user meets it: help, version, settings, exit codes, errors without noise."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from churnstream import __version__
from churnstream.cli import build_parser, main

CHURNSTREAM = str(Path(sys.executable).with_name("churnstream"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once the socket is closed


def _subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return dict(action.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_subcommand_says_what_it_does(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    description = out.split("\n\n", 2)[1]
    assert len(description.split()) >= 8, f"`churnstream {name} --help` says too little:\n{out}"
    if name in ("score", "monitor", "publish", "alerts", "topics", "rebuild", "features"):
        assert "settings and ports:" in out and "CHURN_" in out


def test_simulate_s_help_names_the_day_zero_the_simulator_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from churnstream.sources.simulate import DEFAULT_START

    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert f"(default {DEFAULT_START})" in " ".join(capsys.readouterr().out.split())


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"churnstream {__version__}"


def test_verbose_is_accepted_after_the_subcommand_too() -> None:
    parser = build_parser()
    assert parser.parse_args(["-v", "config"]).verbose is True
    assert parser.parse_args(["config", "-v"]).verbose is True
    assert parser.parse_args(["config"]).verbose is False


def test_one_name_for_the_model_directory() -> None:
    parser = build_parser()
    train = parser.parse_args(["train", "--events", "e", "--model-dir", "m"])
    contract = parser.parse_args(["train", "--events", "e", "--out", "m"])
    listing = parser.parse_args(["models", "list", "--model-dir", "m"])
    assert train.model_dir == contract.model_dir == listing.model_dir == "m"


def test_config_prints_effective_settings_with_secrets_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURN_HORIZON_DAYS", "90")
    monkeypatch.setenv("CHURN_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("CHURN_REDIS_URL", "redis://app:s3cret@db:6379/0")
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["CHURN_HORIZON_DAYS"] == "90.0"
    assert shown["CHURN_KAFKA_SASL_PASSWORD"] == "***"
    assert shown["CHURN_REDIS_URL"] == "redis://app:***@db:6379/0"
    assert main(["config"]) == 0
    text = capsys.readouterr().out
    assert "hunter2" not in text and "s3cret" not in text
    assert "CHURN_ALERT_COOLDOWN_DAYS" in text and "(default)" in text


def test_a_misspelt_setting_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHURN_HORIZON_DAY", "90")
    assert main(["config"]) == 0
    assert "CHURN_HORIZON_DAY is not a churnstream setting" in caplog.text
    assert "did you mean CHURN_HORIZON_DAYS?" in caplog.text


def test_usage_and_configuration_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("CHURN_HORIZON_DAYS", "ninety")
    assert main(["config"]) == 2
    assert "CHURN_HORIZON_DAYS='ninety' is not a valid float" in capsys.readouterr().err
    monkeypatch.delenv("CHURN_HORIZON_DAYS")
    for var, raw, said in [
        ("CHURN_HORIZON_DAYS", "nan", "CHURN_HORIZON_DAYS='nan' is not a finite number"),
        ("CHURN_ALERT_BUDGET_SHARE", "inf", "CHURN_ALERT_BUDGET_SHARE='inf' is not a finite number"),
        ("CHURN_METRICS_PORT", "70000", "CHURN_METRICS_PORT must be a TCP port (0..65535) or -1 (off)"),
        ("CHURN_WEB_PORT", "-1", "CHURN_WEB_PORT must be a TCP port (0..65535), got -1"),
    ]:
        monkeypatch.setenv(var, raw)
        assert main(["config"]) == 2, var
        assert said in capsys.readouterr().err
        monkeypatch.delenv(var)
    # a librdkafka property it does not know: a message naming the variable, not a traceback
    monkeypatch.setenv("CHURN_KAFKA_BOOTSTRAP_SERVER", "127.0.0.1:9092")
    assert main(["topics", "list"]) == 2
    said = capsys.readouterr().err
    assert 'No such configuration property: "bootstrap.server" (set by CHURN_KAFKA_BOOTSTRAP_SERVER;' in said
    monkeypatch.delenv("CHURN_KAFKA_BOOTSTRAP_SERVER")
    monkeypatch.setenv("CHURN_METRICS_PORT", "-1")  # off: allowed
    assert main(["config"]) == 0
    # a malformed --as-of is a usage error, said before Redis is asked (none answers here)
    monkeypatch.setenv("CHURN_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["features", "c1", "--as-of", "yesterday"]) == 2
    assert (
        "churnstream features: error: --as-of: 'yesterday' is not an RFC 3339 time" in capsys.readouterr().err
    )
    # arguments a command cannot take, said as argparse says a bad flag (a newcomer's review: exit 1)
    monkeypatch.setenv("CHURN_MODEL_DIR", str(tmp_path))
    for argv, said in [
        (["models", "promote"], "models promote needs a VERSION"),
        (["models", "shadow"], "models shadow needs a VERSION"),
        (["train", "--events", str(tmp_path), "--since", "2024-06-01T00:00:00Z"], "--since applies to"),
    ]:
        assert main(argv) == 2, argv
        assert said in capsys.readouterr().err
    monkeypatch.delenv("CHURN_METRICS_PORT")
    with pytest.raises(SystemExit) as done:
        main(["score", "--no-such-flag"])
    assert done.value.code == 2


def test_publish_checks_its_file_before_contacting_kafka(tmp_path: Path) -> None:
    with socket.socket() as broker:  # a "broker" that only listens: any connection attempt waits in its queue
        broker.bind(("127.0.0.1", 0))
        broker.listen(8)
        broker.setblocking(False)
        env = {"CHURN_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker.getsockname()[1]}", "PATH": "/usr/bin:/bin"}
        proc = subprocess.run(
            [CHURNSTREAM, "publish", str(tmp_path / "missing.jsonl")], env=env, capture_output=True, text=True
        )
        with pytest.raises(BlockingIOError):  # nobody connected: the file was checked first
            broker.accept()
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"churnstream publish: error: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory"
    )


def test_publish_with_kafka_unreachable_prints_one_clear_error_and_exits_1() -> None:
    bootstrap = f"127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [CHURNSTREAM, "publish", str(EXAMPLES / "events.jsonl")],
        env={"CHURN_KAFKA_BOOTSTRAP": bootstrap, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1
    assert len(lines) <= 3, lines
    assert lines[-1].startswith(f"churnstream publish: error: Kafka at {bootstrap} does not answer")
    assert "CHURN_KAFKA_BOOTSTRAP" in lines[-1] and "./run" not in lines[-1]
    assert not any("|FAIL|" in line for line in lines)


@pytest.mark.parametrize("command", [["features", "c1"], ["forget", "c1"]])
def test_with_redis_unreachable_features_and_forget_say_which_setting_to_check(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    monkeypatch.setenv("CHURN_REDIS_URL", url)
    assert main(command) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"churnstream {command[0]}: error: Redis at {url}:")
    assert err.endswith("check that Redis runs there and that CHURN_REDIS_URL names it")


def test_the_worker_and_monitor_never_import_the_development_tooling() -> None:
    code = (
        "import sys, churnstream.cli, churnstream.streams.scorer, churnstream.streams.monitor; "
        "print(sorted(m for m in sys.modules if m.startswith('churnstream.local_infra')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """`churnstream alerts | head`: once head has its lines, the next write finds the pipe closed."""

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["schema", "orders"]) == 0


def test_config_shows_the_consumer_group_the_scorers_join(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It showed an empty value while the scorers joined '<prefix>churnstream-scorer'."""
    monkeypatch.setenv("CHURN_TOPIC_PREFIX", "shop1.")
    assert main(["config", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["CHURN_CONSUMER_GROUP"] == "shop1.churnstream-scorer"


@pytest.mark.parametrize("limit", ["0", "-1", "x"])
def test_a_limit_of_no_alerts_is_refused_not_read_as_no_alerts(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["alerts", "--limit", limit])
    assert exited.value.code == 2
    assert f"not a whole number of at least 1: {limit!r}" in capsys.readouterr().err


def test_a_report_of_an_empty_day_says_so_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, it also printed 'no predictions, alerts, outcomes or dead letters yet', as if the topics
    were empty."""
    from churnstream.streams import report

    monkeypatch.setattr(report, "daily_report", lambda settings, day: [])
    assert main(["report", "--day", "2023-01-01"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "churnstream report: nothing happened on 2023-01-01"


def test_a_redis_failure_names_the_redis_and_its_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`churnstream score` with Redis away said only "Error 111 connecting to 127.0.0.1:16391" (a review),
    where a Kafka failure names CHURN_KAFKA_BOOTSTRAP."""
    from churnstream import cli
    from churnstream.errors import StoreError

    def fails(args: object, settings: object) -> int:
        raise StoreError(
            "reading from Redis failed: Error 111 connecting to 127.0.0.1:16391. Connection refused."
        )

    monkeypatch.setattr(cli, "_HANDLERS", {**cli._HANDLERS, "score": "tests.unit.test_cli:_fails"})
    monkeypatch.setattr(sys.modules[__name__], "_fails", fails, raising=False)
    monkeypatch.setenv("CHURN_REDIS_URL", "redis://:pw@127.0.0.1:16391/0")
    assert cli.main(["score"]) == 1
    said = capsys.readouterr().err
    assert "(Redis at redis://:***@127.0.0.1:16391/0, set by CHURN_REDIS_URL)" in said and "pw" not in said

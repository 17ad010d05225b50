"""The package as a user installs it: a wheel in a fresh virtual environment, run from an application
directory that has its own ``models`` and ``features`` packages.

The wheel must hold nothing but ``churnstream/`` (its four subpackages live at the top of the repository
and install only under it), so the application's ``import models`` still gets the application's package
and ``churnstream`` never imports the application's code. Dependencies come from the development
environment (a ``.pth`` line), so the test needs no network; churnstream itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from churnstream.settings import Settings, child_env
from churnstream.streams.processes import start_worker
from tests.integration.conftest import consume_all, produce_raw

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _run(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout installed; returns the venv's bin directory."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    dist = root / "dist"
    build = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            ".",
        ],
        cwd=source,
        env=dict(os.environ),
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("churnstream-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # The development environment's packages as plain path entries: its own .pth files (the editable
    # churnstream among them) are not processed this way, so only the wheel provides churnstream.
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        cwd=root,
        env=dict(os.environ),
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return venv / "bin"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """An application directory with packages named like ours, as plenty of applications have."""
    app = tmp_path / "app"
    for name in ("models", "features", "streams", "monitoring"):
        (app / name).mkdir(parents=True)
        (app / name / "__init__.py").write_text(f"WHOSE = 'the application {name}'\n")
    return app


def _env(settings: Settings, app: Path) -> dict[str, str]:
    env = child_env(settings)
    env["PYTHONPATH"] = str(app)  # an application puts its own packages on the path
    env.pop("PYTHONHOME", None)
    return env


def test_the_wheel_installs_only_churnstream(installed: Path) -> None:
    show = _run(
        [sys.executable, "-m", "pip", "--python", str(installed / "python"), "show", "-f", "churnstream"],
        cwd=installed,
        env=dict(os.environ),
    )
    assert show.returncode == 0, show.stderr
    files = [line.strip() for line in show.stdout.split("Files:", 1)[1].splitlines() if line.strip()]
    outside = [
        f
        for f in files
        if not f.startswith(("churnstream/", "churnstream-")) and not f.endswith("bin/churnstream")
    ]
    assert outside == [], f"installed outside churnstream/: {outside}"
    for sub in (
        "streams/scorer.py",
        "features/store.py",
        "models/train.py",
        "monitoring/monitor.py",
        "py.typed",
        "jsonschema/orders.json",
    ):
        assert f"churnstream/{sub}" in files


def test_commands_run_beside_an_application_with_its_own_models_package(
    installed: Path, app_dir: Path, settings: Settings, topics: object, redis_client: object, tmp_path: Path
) -> None:
    churnstream = str(installed / "churnstream")
    python = str(installed / "python")
    env = _env(settings, app_dir)
    env["CHURN_MODEL_DIR"] = str(app_dir / "registry")

    theirs = _run(
        [python, "-c", "import models, features; print(models.WHOSE, '|', features.WHOSE)"],
        cwd=app_dir,
        env=env,
    )
    assert theirs.stdout.strip() == "the application models | the application features", theirs.stderr
    ours = _run(
        [python, "-c", "import churnstream.models.train as t; print(t.__file__)"], cwd=app_dir, env=env
    )
    assert "/site-packages/churnstream/models/train.py" in ours.stdout, ours.stdout + ours.stderr

    helped = _run([churnstream, "--help"], cwd=app_dir, env=env)
    assert helped.returncode == 0 and "score" in helped.stdout, helped.stderr
    version = _run([churnstream, "--version"], cwd=app_dir, env=env)
    assert version.returncode == 0 and version.stdout.startswith("churnstream "), version.stderr
    config = _run([churnstream, "config", "--json"], cwd=app_dir, env=env)
    assert config.returncode == 0, config.stderr
    assert json.loads(config.stdout)["CHURN_TOPIC_PREFIX"] == settings.topic_prefix

    events = tmp_path / "events"
    simulated = _run(
        [churnstream, "simulate", "--customers", "150", "--days", "240", "--seed", "3", "--out", str(events)],
        cwd=app_dir,
        env=env,
    )
    assert simulated.returncode == 0, simulated.stderr
    trained = _run(
        [churnstream, "train", "--events", str(events), "--out", str(app_dir / "registry")],
        cwd=app_dir,
        env=env,
    )
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert (app_dir / "registry" / "current").exists()

    worker = start_worker(
        "score",
        settings,
        log=tmp_path / "score.log",
        env={var: env.get(var) for var in ("PYTHONPATH", "PYTHONHOME", "CHURN_MODEL_DIR")},
        program=[churnstream],
        cwd=app_dir,
        stdout="discard",
    )
    try:
        event = {
            "event_id": "pkg-1",
            "customer_id": "C-pkg",
            "order_id": "O-pkg",
            "timestamp": "2024-03-01T10:00:00Z",
            "amount": 42.0,
        }
        produce_raw(settings, settings.topics.orders, [(b"C-pkg", json.dumps(event).encode())])
        deadline = time.monotonic() + 90
        predictions: list[dict[str, object]] = []
        while not predictions and time.monotonic() < deadline and worker.poll() is None:
            got = consume_all(settings, settings.topics.churn_predictions, timeout=2)
            predictions = [json.loads(m.value() or b"") for m in got]
        assert worker.poll() is None, (tmp_path / "score.log").read_text()[-3000:]
        assert [p["event_id"] for p in predictions] == ["pkg-1"], (tmp_path / "score.log").read_text()[-3000:]
    finally:
        code = worker.stop(60)
    assert code == 0, (tmp_path / "score.log").read_text()[-3000:]

"""Apache Kafka's runtime jars, fetched once with Maven into ``~/.cache/churnstream/kafka-<version>/libs``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from churnstream.errors import InfraError
from churnstream.local_infra._processes import _require

KAFKA_VERSION = "4.1.1"
_KAFKA_ARTIFACTS = (
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
)


def kafka_cache_dir() -> Path:
    return Path.home() / ".cache" / "churnstream" / f"kafka-{KAFKA_VERSION}"


def kafka_libs(cache_dir: Path | None = None) -> Path:
    """The directory of Kafka's runtime jars, fetched with Maven on first use."""
    cache = cache_dir or kafka_cache_dir()
    libs = cache / "libs"
    if (cache / "libs.complete").exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = _require("mvn")
    cache.mkdir(parents=True, exist_ok=True)
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in _KAFKA_ARTIFACTS
    )
    (cache / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>churnstream</groupId><artifactId>kafka-runtime</artifactId><version>1</version>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )
    staging = cache / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    print(f"fetching Apache Kafka {KAFKA_VERSION} jars with Maven into {libs} (once, ~45 MB)", flush=True)
    proc = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        cwd=cache,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        raise InfraError(
            f"Maven could not fetch the Kafka jars (exit {proc.returncode}); is Maven Central reachable?\n"
            + (proc.stdout + proc.stderr)[-2000:]
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    (cache / "libs.complete").write_text(f"{KAFKA_VERSION}\n")
    return libs

"""The tools around the workers on a real three-node Redis Cluster (``CHURN_REDIS_URL=redis+cluster://``):
the demo's clean start clears its keys on every node, and the infrastructure check reaches the cluster.

The cluster is this module's own (three ``redis-server`` processes in cluster mode on free ports, no
persistence), so it never touches the Redis other tests share.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from churnstream.features.redis_store import redis_client
from churnstream.local_infra import redis_problem
from churnstream.settings import Settings
from churnstream.streams.demo import clear_previous
from churnstream.streams.demo.cleanup import mark_demo_dir
from tests.integration.conftest import redis_cluster


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """``n`` ports free together with their cluster bus ports (port + 10000)."""
    found: list[int] = []
    for port in range(23100, 25000):
        if _free(port) and _free(port + 10_000):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError("no free ports for a Redis Cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[int]]]:
    ports = _ports(3)
    with redis_cluster(tmp_path_factory.mktemp("cluster-tools"), ports) as url:
        yield url, ports


def test_the_demo_clean_start_clears_its_keys_on_every_node(
    settings: Settings, cluster: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, ports = cluster
    settings = dataclasses.replace(settings, redis_url=url)
    prefix = settings.topic_prefix
    client = redis_client(url)
    mine = [f"churn:{prefix}{{p{i}}}:c{i}" for i in range(60)]  # hash tags spread them over the slots
    others = [f"churn:x{prefix}{{p{i}}}:c{i}" for i in range(60)]  # another demo's: they stay
    for key in mine + others:
        client.set(key, b"1")
    per_node = [redis.Redis(port=p).dbsize() for p in ports]
    assert all(n > 0 for n in per_node) and sum(per_node) == 120, per_node
    work = tmp_path / "demo"
    mark_demo_dir(work)  # a previous demo's
    (work / "logs").mkdir()

    done = clear_previous(settings, [f"{prefix}nobody"], work)

    assert f"60 Redis keys churn:{prefix}*" in done and str(work) in done
    assert sum(client.exists(key) for key in mine) == 0
    assert sum(client.exists(key) for key in others) == 60
    assert not work.exists()
    client.close()


def test_the_infrastructure_check_reaches_a_cluster_and_says_why_not(cluster: tuple[str, list[int]]) -> None:
    url, _ = cluster
    assert redis_problem(url) is None
    dead = [p for p in range(25100, 26000) if _free(p)][0]
    problem = redis_problem(f"redis+cluster://127.0.0.1:{dead}/0", timeout=1.0)
    assert problem is not None and "cannot be connected" in problem and str(dead) in problem

"""``churnstream serve`` against real Kafka and Redis: the API answers with the stream's own numbers.

One module-wide run: a simulated business is produced in event-time order, a real scorer scores all of it
through Kafka into Redis, and the API (in process through FastAPI's TestClient, and as a real
``churnstream serve`` process over HTTP) is asked about the same customers and times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient

from churnstream.events import format_time, parse_time
from churnstream.features.offline import read_events, snapshot
from churnstream.features.redis_store import RedisFeatureStore
from churnstream.models.registry import ModelRegistry
from churnstream.settings import Settings, child_env
from churnstream.streams.api import create_app
from churnstream.streams.api_service import CustomerService
from churnstream.streams.processes import WorkerProcess
from churnstream.streams.processes import start_worker as launch
from churnstream.streams.scorer import build_scorer
from churnstream.streams.topics import create_topics, topic_specs
from tests.integration.conftest import (
    CHURNSTREAM,
    committed_everything,
    consume_all,
    event_time_records,
    free_port,
    produce_records,
    simulate_world,
    wait_until,
)

CUSTOMERS, DAYS, TRAIN_DAYS = 200, 260, 170
PRIVATE_REDIS_PORT = 6315  # a Redis of this test's own, which it stops (never the shared one)


@dataclasses.dataclass(frozen=True)
class Stream:
    """The scored run: its settings and the stream's predictions, the latest per customer."""

    settings: Settings
    root: Path
    predictions: list[dict[str, Any]]
    latest: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def stream(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    root = simulate_world(
        tmp_path_factory.mktemp("api"), customers=CUSTOMERS, days=DAYS, train_days=TRAIN_DAYS, seed=5
    )
    settings = dataclasses.replace(
        base_settings,
        topic_prefix=f"apitest{uuid.uuid4().hex[:8]}.",
        model_dir=root / "models",
        metrics_port=-1,
    )
    create_topics(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        produce_records(settings, event_time_records(settings, root / "events"))
        scorer = build_scorer(settings)
        thread = threading.Thread(target=scorer.run, name="api-test-scorer", daemon=True)
        thread.start()
        try:
            wait_until(
                lambda: committed_everything(settings, settings.consumer_group),
                300,
                "the scorer to commit every input",
            )
        finally:
            scorer.stop()
            thread.join(timeout=60)
        assert not thread.is_alive(), "the scorer did not stop"
        predictions = [
            orjson.loads(m.value()) for m in consume_all(settings, settings.topics.churn_predictions)
        ]
        latest: dict[str, dict[str, Any]] = {}
        for p in predictions:
            held = latest.get(p["customer_id"])
            if held is None or parse_time(p["as_of"]) > parse_time(held["as_of"]):
                latest[p["customer_id"]] = p
        yield Stream(settings=settings, root=root, predictions=predictions, latest=latest)
    finally:
        admin = AdminClient(settings.kafka_config())
        for future in admin.delete_topics(
            [s.name for s in topic_specs(settings)], operation_timeout=10
        ).values():
            with contextlib.suppress(KafkaException):
                future.result()
        keys = list(client.scan_iter(match=f"churn:{settings.topic_prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _service(settings: Settings) -> tuple[CustomerService, RedisFeatureStore]:
    from churnstream.streams.api import build_service

    service = build_service(settings)
    assert isinstance(service.store, RedisFeatureStore)
    return service, service.store


@contextlib.contextmanager
def _client(settings: Settings) -> Iterator[TestClient]:
    service, store = _service(settings)
    app = create_app(service, settings=settings, refresh_in_background=False)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        store.close()
        store._redis.close()


def _sample(stream: Stream, n: int = 40) -> list[dict[str, Any]]:
    return [stream.latest[cid] for cid in sorted(stream.latest)[:n]]


def test_a_score_as_of_a_predictions_time_has_the_streams_features_and_batch_probability(
    stream: Stream,
) -> None:
    sample = _sample(stream)
    assert len(sample) >= 30
    own = ModelRegistry(stream.settings.model_dir).metadata("v0001").get("risk_thresholds")
    with _client(stream.settings) as client:
        for p in sample:
            got = client.post(f"/customers/{p['customer_id']}/score", json={"as_of": p["as_of"]})
            assert got.status_code == 200, got.text
            answer = got.json()
            assert answer["as_of"] == p["as_of"] and answer["trigger"] == "request"
            assert answer["features"] == p["features"], p["customer_id"]
            # the online learner as it served then, from the partition's learner history
            for name in ("batch_probability", "online_probability", "churn_probability", "value_at_risk"):
                assert answer[name] == p[name], (p["customer_id"], name)
            assert answer["risk_category"] == p["risk_category"]
            assert answer["risk_category"] == stream.settings.risk_category(answer["churn_probability"], own)
            assert answer["model_version"] == p["model_version"]
            assert answer["event_id"] is None and len(answer["top_reasons"]) >= 3
            shown = [r["contribution"] for r in answer["top_reasons"]] + [answer["explanation"]["base"]]
            assert all(round(x, 6) == x for x in shown), shown  # as alerts give them
            # as_of as epoch milliseconds is the same time
            again = client.post(
                f"/customers/{p['customer_id']}/score", json={"as_of": parse_time(p["as_of"])}
            ).json()
            assert again["features"] == p["features"] and again["prediction_id"] != answer["prediction_id"]

        # POST /score: the same answers for a list, in request order, an unknown customer in its place
        ids = [p["customer_id"] for p in sample[:5]]
        many = client.post("/score", json={"customer_ids": [*ids, "nobody"]})
        assert many.status_code == 200, many.text
        items = many.json()
        assert [i["customer_id"] for i in items] == [*ids, "nobody"]
        assert items[-1]["error"] == "unknown_customer"
        for cid, item in zip(ids, items, strict=False):
            one = client.post(f"/customers/{cid}/score").json()
            assert "error" not in item, item
            assert item["as_of"] == one["as_of"] and item["features"] == one["features"]
            assert item["batch_probability"] == one["batch_probability"]


def test_a_score_as_of_any_prediction_s_time_gives_the_stream_s_probabilities(stream: Stream) -> None:
    """Predictions of every kind and time, the online model's included: the API scores a past time with
    the learner the stream served then (its partition's history), not today's."""
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for p in stream.predictions:
        by_customer.setdefault(p["customer_id"], []).append(p)
    # each customer's latest predictions (not yet folded out of its history); the world is produced in
    # event-time order, so no event is late (a late one is scored by the learner of the time it arrived)
    sample = [p for cid in sorted(by_customer)[:60] for p in by_customer[cid][-8:]]
    online = [p for p in sample if p["online_probability"] is not None]
    assert len(online) >= 100, "the online model should serve most of these predictions"
    compared = differ = 0
    with _client(stream.settings) as client:
        for p in sample:
            got = client.post(
                f"/customers/{p['customer_id']}/score?reasons=false", json={"as_of": p["as_of"]}
            )
            if got.status_code == 422:  # folded out of the customer's retained history
                continue
            assert got.status_code == 200, got.text
            answer = got.json()
            assert answer["features"] == p["features"], p
            compared += 1
            names = ("batch_probability", "online_probability", "churn_probability")
            differ += any(answer[n] != p[n] for n in names)
    assert compared >= 300
    assert differ == 0, f"{differ} of {compared} re-scored predictions differ from the stream's"


def test_get_customer_gives_features_at_the_partitions_event_time_and_a_prediction_of_the_stream(
    stream: Stream,
) -> None:
    settings = stream.settings
    log = read_events(stream.root / "events")
    by_id = {p["prediction_id"]: p for p in stream.predictions}
    service, store = _service(settings)
    try:
        with TestClient(create_app(service, settings=settings, refresh_in_background=False)) as client:
            statuses: list[str] = []
            for cid in sorted(stream.latest)[:40]:
                got = client.get(f"/customers/{cid}")
                assert got.status_code == 200, got.text
                body = got.json()
                assert set(body) == {"customer_id", "as_of", "features", "latest_prediction"}
                t = store.partition_time(store.partition_of(cid))
                assert t is not None and body["as_of"] == format_time(t)
                offline = snapshot([e for e in log.events if e.customer_id == cid], t, lateness_ms=0)
                assert body["features"] == offline[cid]
                # the customer's newest prediction, also once its label is known (before, only while
                # pending: null for most customers, the silent ones the sweeps are for among them)
                held = body["latest_prediction"]
                assert held is not None, cid
                emitted = by_id[held["prediction_id"]]
                assert held["as_of"] == emitted["as_of"] == stream.latest[cid]["as_of"]
                assert held["churn_probability"] == emitted["churn_probability"]
                assert held["risk_category"] == emitted["risk_category"]
                assert held["model_version"] == emitted["model_version"]
                statuses.append(held["status"])
            assert {"pending", "labelled"} <= set(statuses) <= {"pending", "labelled", "unfollowed"}, statuses
    finally:
        store.close()


def test_a_prefix_no_scorer_wrote_under_is_named_in_the_404(stream: Stream) -> None:
    wrong = dataclasses.replace(stream.settings, topic_prefix=f"{stream.settings.topic_prefix}wrong.")
    known = sorted(stream.latest)[0]
    with _client(wrong) as client:
        answer = client.get(f"/customers/{known}")
    assert answer.status_code == 404, answer.text
    detail = answer.json()["detail"]
    assert f"Redis (namespace 'churn:{wrong.topic_prefix}" in detail and "holds nothing yet" in detail
    assert "CHURN_TOPIC_PREFIX" in detail


def test_bad_requests_get_clear_json_errors(stream: Stream) -> None:
    settings = dataclasses.replace(stream.settings, api_max_batch=3)
    service, store = _service(settings)
    folded = None
    for cid, state in store.states(sorted(stream.latest)).items():
        if state["fu"] is not None:
            folded = (cid, state)
            break
    assert folded is not None, "no customer has folded history in this run"
    try:
        with TestClient(create_app(service, settings=settings, refresh_in_background=False)) as client:
            unknown = client.get("/customers/nobody")
            assert unknown.status_code == 404
            assert unknown.json() == {"error": "unknown_customer", "detail": "unknown customer 'nobody'"}

            cid, state = folded
            early = client.post(f"/customers/{cid}/score", json={"as_of": state["first"] + 1})
            assert early.status_code == 422
            assert early.json()["error"] == "invalid_as_of"
            assert "before the retained history" in early.json()["detail"]

            later = client.post(f"/customers/{cid}/score", json={"as_of": "2999-01-01T00:00:00Z"})
            assert later.status_code == 422 and "has reached" in later.json()["detail"]
            slash = client.get("/customers/a%2Fb")  # any id of 1..64 characters reaches the handler
            assert slash.json() == {"error": "unknown_customer", "detail": "unknown customer 'a/b'"}
            for bad in (
                {"as_of": "yesterday"},
                {"as_of": 1.5},
                {"as_of": True},
                {"as_of": 1_714_521_600_000_000},
            ):
                answer = client.post(f"/customers/{cid}/score", json=bad)
                assert answer.status_code == 422, bad
                assert set(answer.json()) == {"error", "detail"}
                assert "Traceback" not in answer.text

            ids = sorted(stream.latest)[:4]
            too_many = client.post("/score", json={"customer_ids": ids})
            assert too_many.status_code == 413
            assert too_many.json()["error"] == "too_many_customers"
            assert "at most 3" in too_many.json()["detail"]
            assert client.post("/score", json={"customer_ids": []}).status_code == 422
            assert client.post("/score", content=b"{not json").json()["error"] == "invalid_request"
    finally:
        store.close()

    secured = dataclasses.replace(stream.settings, api_token="s3cret-token")
    service, store = _service(secured)
    try:
        with TestClient(create_app(service, settings=secured, refresh_in_background=False)) as client:
            cid = sorted(stream.latest)[0]
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
                denied = client.get(f"/customers/{cid}", headers=headers)
                assert denied.status_code == 401
                assert denied.json()["error"] == "unauthorized" and "s3cret" not in denied.text
            ok = client.get(f"/customers/{cid}", headers={"Authorization": "Bearer s3cret-token"})
            assert ok.status_code == 200
            assert client.get("/health").status_code == 200  # probes need no token
            metrics = client.get("/metrics").text  # counts only, open like the workers' /metrics
            line = 'churn_api_requests_total{method="GET",route="/customers/{customer_id}",status="200"} 1.0'
            assert line in metrics
    finally:
        store.close()


def _serve(settings: Settings, log: Path, **env: str) -> tuple[WorkerProcess, str]:
    port = free_port()
    proc = launch(
        "serve",
        settings,
        log=log,
        env={"CHURN_API_PORT": str(port), **env},
        program=[CHURNSTREAM],
        stdout="discard",
    )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"churnstream serve exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, 60, "churnstream serve to answer /health")
    return proc, base


def test_a_real_server_process_answers_over_http_and_stops_on_sigterm(stream: Stream, tmp_path: Path) -> None:
    settings = dataclasses.replace(stream.settings, api_token="tok-123")
    log = tmp_path / "serve.log"
    proc, base = _serve(settings, log)
    try:
        auth = {"Authorization": "Bearer tok-123"}
        with httpx.Client(base_url=base, headers=auth, timeout=10) as http:
            for p in _sample(stream, 10):
                answer = http.post(f"/customers/{p['customer_id']}/score", json={"as_of": p["as_of"]})
                assert answer.status_code == 200, answer.text
                assert answer.json()["features"] == p["features"]
                assert answer.json()["batch_probability"] == p["batch_probability"]
            assert http.get("/customers/nobody").json()["error"] == "unknown_customer"
            ready = http.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["model_version"] == _sample(stream, 1)[0]["model_version"]
            assert http.get("/openapi.json").json()["paths"].keys() >= {
                "/customers/{customer_id}",
                "/customers/{customer_id}/score",
                "/score",
            }
        assert httpx.get(f"{base}/customers/x", timeout=5).status_code == 401
    finally:
        code = proc.stop(30)
    assert code == 0 and not proc.killed, log.read_text()[-2000:]
    assert "tok-123" not in log.read_text()


def test_serve_refuses_a_public_host_without_a_token(stream: Stream, tmp_path: Path) -> None:
    log = tmp_path / "refused.log"
    proc = launch(
        "serve",
        stream.settings,
        log=log,
        env={"CHURN_API_HOST": "0.0.0.0", "CHURN_API_PORT": str(free_port())},
        program=[CHURNSTREAM],
        stdout="discard",
    )
    assert proc.wait(60) == 2
    assert "CHURN_API_TOKEN" in log.read_text() and "--allow-unauthenticated" in log.read_text()


def test_ready_turns_not_ready_when_redis_goes_down(stream: Stream, tmp_path: Path) -> None:
    server = shutil.which("redis-server")
    assert server is not None, "redis-server is not installed"
    port = PRIVATE_REDIS_PORT
    started = subprocess.run(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--daemonize", "yes", "--dir", str(tmp_path)],
        check=False,
        capture_output=True,
    )
    assert started.returncode == 0, started.stderr
    private = redis.Redis(port=port)
    wait_until(lambda: _pings(private), 30, f"the private redis-server on {port}")
    settings = dataclasses.replace(stream.settings, redis_url=f"redis://127.0.0.1:{port}/0")
    log = tmp_path / "serve.log"
    proc, base = _serve(settings, log)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            ready = http.get("/ready")
            assert ready.status_code == 200 and ready.json()["reasons"] == [], ready.text
            assert http.get("/customers/nobody").status_code == 404
            private.shutdown(nosave=True)

            def not_ready() -> bool:
                return http.get("/ready").status_code == 503

            wait_until(not_ready, 30, "/ready to answer 503 once Redis is down")
            body = http.get("/ready").json()
            assert body["status"] == "not ready"
            assert any(f"127.0.0.1:{port}" in why for why in body["reasons"]), body
            down = http.get("/customers/nobody")
            assert down.status_code == 503 and down.json()["error"] == "store_unavailable"
            assert http.get("/health").status_code == 200  # alive: a restart would not bring Redis back
    finally:
        with contextlib.suppress(redis.RedisError):
            private.shutdown(nosave=True)
        code = proc.stop(30)
    assert code == 0, log.read_text()[-2000:]


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_the_features_command_defaults_to_the_time_the_api_answers_for(stream: Stream) -> None:
    settings = stream.settings
    service, store = _service(settings)
    try:
        latest = store.watermark()
        behind = [c for c in sorted(stream.latest) if store.partition_time(store.partition_of(c)) != latest]
        assert behind, "every partition reached the latest event time: the two defaults cannot differ here"
        with TestClient(create_app(service, settings=settings, refresh_in_background=False)) as client:
            for cid in [*behind[:2], sorted(stream.latest)[0]]:
                api = client.get(f"/customers/{cid}").json()
                done = subprocess.run(
                    [CHURNSTREAM, "features", cid],
                    env={**os.environ, **child_env(settings)},
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, done.stderr
                shown = orjson.loads(done.stdout)
                assert shown == {"customer_id": cid, "as_of": api["as_of"], "features": api["features"]}
                assert api["as_of"] == format_time(store.partition_time(store.partition_of(cid)))
    finally:
        store.close()


def _in_progress(base: str) -> float:
    """The server's ``churn_api_requests_in_progress``."""
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith("churn_api_requests_in_progress "):
            return float(line.split()[1])
    raise AssertionError("churn_api_requests_in_progress is not among the metrics")


def test_past_the_cap_a_real_server_answers_json_503_and_idle_connections_do_not_count(
    stream: Stream, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    proc, base = _serve(stream.settings, log, CHURN_API_MAX_CONNECTIONS="3")
    port = int(base.rsplit(":", 1)[1])
    cid = sorted(stream.latest)[0]
    body = orjson.dumps({"customer_ids": [cid]})
    held: list[http.client.HTTPConnection] = []
    idle: list[http.client.HTTPConnection] = []
    try:
        for _ in range(3):  # three requests whose bodies have not all arrived: in progress until they do
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.putrequest("POST", "/score?reasons=false")
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body[:5])
            held.append(conn)
        wait_until(lambda: _in_progress(base) == 3, 60, "three requests in progress")

        refused = httpx.get(f"{base}/customers/{cid}", timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/json"
        assert set(refused.json()) == {"error", "detail"} and refused.json()["error"] == "overloaded"
        assert "CHURN_API_MAX_CONNECTIONS" in refused.json()["detail"]
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200  # probes are never refused

        for conn in held:
            conn.send(body[5:])
            answer = conn.getresponse()
            assert answer.status == 200
            assert [item["customer_id"] for item in orjson.loads(answer.read())] == [cid]
        wait_until(lambda: _in_progress(base) == 0, 60, "the held requests to finish")

        # more open keep-alive connections than the cap, idle: they cost no thread and are not refused
        for _ in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/health")
            assert conn.getresponse().read()
            idle.append(conn)
        answer = httpx.get(f"{base}/customers/{cid}", timeout=10)
        assert answer.status_code == 200, answer.text
    finally:
        for conn in held + idle:
            conn.close()
        code = proc.stop(30)
    assert code == 0, log.read_text()[-2000:]


def test_the_docs_pages_render_offline_in_chromium(stream: Stream, tmp_path: Path) -> None:
    """/docs and /redoc draw the API's operations from files the server itself serves: the browser runs
    with every other host unreachable."""
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(browser).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium) and cannot be installed here")
    log = tmp_path / "serve.log"
    proc, base = _serve(stream.settings, log)
    try:
        for page, drawn in (
            ("/docs", 'data-path="/customers/{customer_id}/score"'),
            ("/redoc", "Score a customer now"),
        ):
            with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
                done = subprocess.run(
                    [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
                    + ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
                    + ["--virtual-time-budget=15000", "--dump-dom", f"{base}{page}"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            assert done.returncode == 0, done.stderr[-2000:]
            assert drawn in done.stdout, f"{page} did not render: {done.stdout[-1500:]}"
    finally:
        code = proc.stop(30)
    assert code == 0, log.read_text()[-2000:]

"""The HTTP API's request handling, in process over a feature store in memory (the same answers through
real Kafka, Redis and a server process are tests/integration/test_api.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from churnstream.cli import build_parser
from churnstream.errors import ConfigError
from churnstream.events import OrderEvent, TicketEvent, format_time
from churnstream.features.definitions import FEATURE_NAMES, features_as_of
from churnstream.features.labels import add_pending, note_latest
from churnstream.features.store import MemoryFeatureStore
from churnstream.models.batch import BatchModel
from churnstream.models.registry import ModelRegistry
from churnstream.models.serving import ModelSet, restore_learner
from churnstream.settings import DAY_MS, Settings
from churnstream.streams.api import DOCS_STATIC, check_exposure, create_app
from churnstream.streams.api_service import CustomerService

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

REACHED = 200 * DAY_MS  # the event time the partitions have reached


def _registry(root: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.exponential(5.0, (300, len(FEATURE_NAMES)))
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=500)).fit(
        X, (X[:, 3] > 5).astype(int)
    )
    model = BatchModel(
        estimator=estimator, feature_names=list(FEATURE_NAMES), medians=dict.fromkeys(FEATURE_NAMES, 1.0)
    )
    ModelRegistry(root).register(model, {}, promote=True)
    return root


def _store(settings: Settings) -> MemoryFeatureStore:
    """c1 orders every 10 days from day 100; c2 orders once on day 10, so day 10 is folded by day 200."""
    store = MemoryFeatureStore(lateness_ms=settings.lateness_ms, partitions=6)
    events: list[Any] = [OrderEvent(f"a{i}", "c1", (100 + 10 * i) * DAY_MS, f"o{i}", 25.0) for i in range(9)]
    events += [TicketEvent("t1", "c1", 150 * DAY_MS, "k1", 2.0, 1)]
    events += [
        OrderEvent("b0", "c2", 10 * DAY_MS, "p0", 40.0),
        OrderEvent("b1", "c2", 199 * DAY_MS, "p1", 5.0),
    ]
    tx = store.begin(["c1", "c2"])
    for e in events:
        tx.apply(e)
    state = tx.state("c1")
    add_pending(state, "pred-old", 150 * DAY_MS, 0.2, None, 0.2, [], horizon_ms=settings.horizon_ms,
                lateness_ms=0, recency_days=None)  # fmt: skip
    add_pending(state, "pred-new", 180 * DAY_MS, 0.8, 0.6, 0.75, [], horizon_ms=settings.horizon_ms,
                lateness_ms=0, recency_days=None)  # fmt: skip
    tx.touch("c1")
    for p in range(6):
        tx.set_partition_time(p, REACHED)
    store.commit(tx)
    return store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(model_dir=_registry(tmp_path / "models"), api_max_batch=3, api_token="")


def _client(settings: Settings, store: MemoryFeatureStore, **kwargs: Any) -> TestClient:
    models = ModelSet(
        registry=ModelRegistry(settings.model_dir), load_learner=functools.partial(restore_learner, store)
    )
    service = CustomerService(settings=settings, store=store, models=models)
    ready = kwargs.pop("ready", lambda: (True, {"status": "ready", "reasons": []}))
    return TestClient(create_app(service, settings=settings, ready=ready, refresh_in_background=False))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with _client(settings, _store(settings)) as c:
        yield c


def test_get_customer_answers_features_at_the_partitions_time_and_the_newest_held_prediction(
    client: TestClient, settings: Settings
) -> None:
    body = client.get("/customers/c1").json()
    state = _store(settings).states(["c1"])["c1"]
    assert body["as_of"] == format_time(REACHED)
    assert body["features"] == features_as_of(state, REACHED)
    assert body["features"]["orders_total"] == 9 and body["features"]["negative_tickets_total"] == 1
    assert body["latest_prediction"] == {
        "prediction_id": "pred-new",
        "as_of": format_time(180 * DAY_MS),
        "model_version": None,  # kept before predictions kept their model
        "batch_probability": 0.8,
        "online_probability": 0.6,
        "churn_probability": 0.75,
        "risk_category": "HIGH",
        "status": "pending",
    }
    assert client.get("/customers/c2").json()["latest_prediction"] is None


def test_the_latest_prediction_stays_after_its_label_with_the_category_the_stream_gave(
    settings: Settings,
) -> None:
    """Before, a prediction left the answer with its label: most customers, the silent ones among them,
    read null. The category is the one kept with it (LOW here, though 0.75 is HIGH by 0.7 / 0.4)."""
    store = _store(settings)
    tx = store.begin(["c2"])
    note_latest(tx.state("c2"), "pred-swept", 200 * DAY_MS, 0.8, None, 0.75, "v0007", "LOW", followed=True)
    tx.touch("c2")
    store.commit(tx)
    with _client(settings, store) as client:
        held = client.get("/customers/c2").json()["latest_prediction"]
        older = client.get("/customers/c1").json()["latest_prediction"]
    tx = store.begin(["c2"])  # a later one of a burst, which the scorer does not follow to an outcome
    note_latest(tx.state("c2"), "pred-burst", 201 * DAY_MS, 0.8, None, 0.75, "v0007", "LOW", followed=False)
    tx.touch("c2")
    store.commit(tx)
    with _client(settings, store) as client:
        burst = client.get("/customers/c2").json()["latest_prediction"]
    assert (burst["prediction_id"], burst["status"]) == ("pred-burst", "unfollowed")
    assert held == {
        "prediction_id": "pred-swept",
        "as_of": format_time(200 * DAY_MS),
        "model_version": "v0007",
        "batch_probability": 0.8,
        "online_probability": None,
        "churn_probability": 0.75,
        "risk_category": "LOW",
        "status": "labelled",
    }
    assert older["prediction_id"] == "pred-new" and older["status"] == "pending"  # a state from before


def test_the_held_prediction_keeps_the_risk_category_its_own_model_gave_it(settings: Settings) -> None:
    """After a promotion the newest held prediction is still the old model's: its category is the one the
    stream emitted, by that model's thresholds, not the new model's."""
    registry = ModelRegistry(settings.model_dir)
    made_by = registry.current_version()
    model = registry.load(made_by).model
    assert "risk_thresholds" not in registry.metadata(made_by)  # the contract's 0.7 / 0.4: 0.75 is HIGH
    registry.register(model, {"risk_thresholds": {"high": 0.9, "medium": 0.5}}, promote=True)
    store = _store(settings)
    tx = store.begin(["c1"])
    add_pending(tx.state("c1"), "pred-newest", 190 * DAY_MS, 0.8, 0.6, 0.75, [],
                horizon_ms=settings.horizon_ms, lateness_ms=0, recency_days=None,
                model_version=made_by)  # fmt: skip
    tx.touch("c1")
    store.commit(tx)
    with _client(settings, store) as client:
        held = client.get("/customers/c1").json()["latest_prediction"]
        assert client.post("/customers/c1/score").json()["model_version"] != made_by  # the new one serves
    assert (held["prediction_id"], held["model_version"]) == ("pred-newest", made_by)
    assert held["risk_category"] == "HIGH"  # by v0001's thresholds; v0002's make 0.75 MEDIUM


def test_a_score_is_a_prediction_of_the_contract_with_the_models_probability(
    client: TestClient, settings: Settings
) -> None:
    answer = client.post("/customers/c1/score", json={"as_of": "1970-06-20T00:00:00Z"}).json()
    t = 170 * DAY_MS
    assert answer["as_of"] == format_time(t) and answer["trigger"] == "request" and answer["event_id"] is None
    features = features_as_of(_store(settings).states(["c1"])["c1"], t)
    assert answer["features"] == features
    model = ModelRegistry(settings.model_dir).load().model
    expected = round(float(model.predict_proba(model.vectorize([features]))[0]), 6)
    assert answer["batch_probability"] == expected
    assert answer["online_probability"] is None and answer["churn_probability"] == expected  # nothing learned
    assert answer["model_version"] == "v0001" and answer["value_at_risk"] is not None
    assert len(answer["top_reasons"]) >= 3 and {"feature", "value", "contribution"} <= set(
        answer["top_reasons"][0]
    )
    assert client.post("/customers/c1/score").json()["as_of"] == format_time(REACHED)  # the default
    assert client.post("/customers/c1/score", json={"as_of": t}).json()["features"] == features  # epoch ms


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("get", "/customers/nobody", None, 404, "unknown_customer"),
        ("post", "/customers/nobody/score", None, 404, "unknown_customer"),
        ("post", "/customers/c1/score", {"as_of": "next tuesday"}, 422, "invalid_as_of"),
        ("post", "/customers/c1/score", {"as_of": 1.5}, 422, "invalid_request"),
        ("post", "/customers/c1/score", {"as_of": format_time(REACHED + 1)}, 422, "invalid_as_of"),
        ("post", "/customers/c1/score", {"as_of": format_time(50 * DAY_MS)}, 422, "invalid_as_of"),
        ("post", "/customers/c2/score", {"as_of": format_time(20 * DAY_MS)}, 422, "invalid_as_of"),
        ("post", "/customers/c1/score", {"as_of": 1_714_521_600_000_000}, 422, "invalid_as_of"),  # in us
        ("post", "/customers/c1/score", {"as_of": "0001-01-01T00:00:00+14:00"}, 422, "invalid_as_of"),
        ("get", "/customers/a%2Fb", None, 404, "unknown_customer"),  # an id with a slash reaches its handler
        ("post", "/customers/a%2Fb/score", None, 404, "unknown_customer"),
        ("post", "/score", {"customer_ids": ["c1", "c2", "c1", "c2"]}, 413, "too_many_customers"),
        ("post", "/score", {"customer_ids": []}, 422, "invalid_request"),
        ("post", "/score", {"customer_ids": "c1"}, 422, "invalid_request"),
        ("post", "/score", {}, 422, "invalid_request"),
        ("get", "/nowhere", None, 404, "not_found"),
        ("get", "/customers/c1/score", None, 405, "method_not_allowed"),  # it read "unknown customer"
        ("get", "/customers/c1/score/", None, 405, "method_not_allowed"),
        ("get", "/customers/c1%2Fscore", None, 404, "unknown_customer"),  # the id "c1/score"
        ("get", "/customers/score", None, 404, "unknown_customer"),  # the id "score"
        ("get", "/customers", None, 404, "not_found"),  # was a 307 with an empty body
        ("get", "/customers/", None, 404, "not_found"),  # was "unknown customer ''"
        ("delete", "/customers/c1", None, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_a_json_error_and_a_4xx_status(
    client: TestClient, method: str, path: str, body: Any, status: int, error: str
) -> None:
    answer = client.request(method.upper(), path, json=body)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "detail"} and answer.json()["error"] == error
    assert answer.json()["detail"] and "Traceback" not in answer.text


def test_a_malformed_body_is_refused_with_what_to_send(client: TestClient) -> None:
    """A misspelt field was ignored (scored at the default time, 200); a body without its content type or
    not JSON got pydantic's words ("Input should be a valid dictionary...", "0: JSON decode error")."""
    misspelt = client.post("/customers/c1/score", json={"asOf": format_time(REACHED)})
    assert misspelt.status_code == 422 and "unknown field 'asOf'" in misspelt.json()["detail"]
    many = client.post("/score", json={"customer_ids": ["c1"], "asof": 1})
    assert many.status_code == 422 and "unknown field 'asof'" in many.json()["detail"]
    untyped = client.post(
        "/customers/c1/score", content=b'{"as_of": 1}', headers={"content-type": "text/plain"}
    )
    assert untyped.status_code == 422
    assert "Content-Type: application/json" in untyped.json()["detail"]
    broken = client.post(
        "/score", content=b'{"customer_ids": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and "body: not valid JSON" in broken.json()["detail"]
    surrogate = client.post(  # was a 500 (UnicodeEncodeError finding its partition), for every id listed
        "/score", content=b'{"customer_ids": ["c1", "\\udfff"]}', headers={"content-type": "application/json"}
    )
    assert surrogate.status_code == 422, surrogate.text
    assert "customer_ids[1] is not valid Unicode" in surrogate.json()["detail"]


def test_a_wrong_method_says_which_are_allowed_and_health_answers_head(client: TestClient) -> None:
    wrong = client.delete("/customers/c1")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    slash = client.post("/customers/c1/score/")  # was a 405: the customer route took it
    assert slash.status_code == 200 and slash.json()["customer_id"] == "c1"
    assert client.head("/health").status_code == 200


def test_the_422s_say_why(client: TestClient) -> None:
    later = client.post("/customers/c1/score", json={"as_of": format_time(REACHED + 1)}).json()["detail"]
    assert "after the event time the customer's partition has reached" in later
    first = client.post("/customers/c1/score", json={"as_of": format_time(50 * DAY_MS)}).json()["detail"]
    assert "before the customer's first event" in first
    folded = client.post("/customers/c2/score", json={"as_of": format_time(20 * DAY_MS)}).json()["detail"]
    assert "before the retained history" in folded


def test_an_id_longer_than_any_customer_can_have_is_not_echoed_whole(client: TestClient) -> None:
    answer = client.get("/customers/" + "x" * 20_000)
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_customer"
    assert len(answer.text) < 300 and "at most 64" in answer.json()["detail"], answer.text[:300]


def test_score_many_answers_in_request_order_with_errors_in_place(client: TestClient) -> None:
    answer = client.post("/score", json={"customer_ids": ["c2", "nobody", "c1"]})
    assert answer.status_code == 200
    items = answer.json()
    assert [i["customer_id"] for i in items] == ["c2", "nobody", "c1"]
    assert items[1] == {
        "customer_id": "nobody",
        "error": "unknown_customer",
        "detail": "unknown customer 'nobody'",
    }
    one = client.post("/customers/c1/score").json()
    assert (
        items[2]["features"] == one["features"] and items[2]["batch_probability"] == one["batch_probability"]
    )


def test_a_body_over_the_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    answer = client.post("/score", content=b"[" + b" " * 1_000_000 + b"]")
    assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"


def test_the_token_guards_everything_but_the_probes_metrics_and_docs(settings: Settings) -> None:
    secured = Settings(model_dir=settings.model_dir, api_token="t0ken")
    with _client(secured, _store(secured)) as client:
        for path in ("/customers/c1", "/customers/c1?x=1"):
            refused = client.get(path, headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert client.post("/score", json={"customer_ids": ["c1"]}).status_code == 401
        for given in ("Bearer t0ken", "bearer t0ken", "BEARER  t0ken"):  # the scheme in any case
            assert client.get("/customers/c1", headers={"Authorization": given}).status_code == 200, given
        for given in ("t0ken", "Basic t0ken", "Bearer t0ke", "Bearer t0ken2", "Bearer"):
            assert client.get("/customers/c1", headers={"Authorization": given}).status_code == 401, given
        for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_ready_is_503_with_the_reasons_when_a_dependency_is_down(settings: Settings) -> None:
    down = (False, {"status": "not ready", "reasons": ["Redis at redis://x does not answer"]})
    with _client(settings, _store(settings), ready=lambda: down) as client:
        answer = client.get("/ready")
    assert answer.status_code == 503 and answer.json()["reasons"] == down[1]["reasons"]


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    client.get("/customers/c1")
    client.get("/customers/nobody")
    client.post("/customers/c1/score")
    text = client.get("/metrics").text
    assert 'churn_api_requests_total{method="GET",route="/customers/{customer_id}",status="200"} 1.0' in text
    assert 'churn_api_requests_total{method="GET",route="/customers/{customer_id}",status="404"} 1.0' in text
    assert "churn_api_predictions_total 1.0" in text
    assert 'churn_api_request_seconds_count{route="/customers/{customer_id}/score"} 1.0' in text


def test_without_a_model_features_still_answer_and_scores_say_why(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "empty")
    store = _store(settings)
    service = CustomerService(settings=settings, store=store, models=None)
    app = create_app(service, settings=settings, ready=lambda: (True, {}), refresh_in_background=False)
    with TestClient(app) as client:
        assert client.get("/customers/c1").status_code == 200
        answer = client.post("/customers/c1/score")
        assert answer.status_code == 503 and answer.json()["error"] == "no_model"
        _registry(tmp_path / "empty")
        assert client.post("/customers/c1/score").status_code == 200  # picked up once promoted


def test_a_public_host_needs_a_token_or_an_explicit_flag() -> None:
    with pytest.raises(ConfigError, match="CHURN_API_TOKEN"):
        check_exposure(Settings(api_host="0.0.0.0"), allow_unauthenticated=False)
    check_exposure(Settings(api_host="0.0.0.0"), allow_unauthenticated=True)
    check_exposure(Settings(api_host="0.0.0.0", api_token="t"), allow_unauthenticated=False)
    check_exposure(Settings(api_host="127.0.0.1"), allow_unauthenticated=False)
    args = build_parser().parse_args(["serve", "--allow-unauthenticated"])
    assert args.command == "serve" and args.allow_unauthenticated


def test_the_token_is_a_secret_of_the_settings() -> None:
    s = Settings.from_env({"CHURN_API_TOKEN": "hunter2", "CHURN_API_PORT": "9000"})
    assert s.api_token == "hunter2" and s.api_port == 9000
    assert "hunter2" not in repr(s) and s.redact("token hunter2") == "token ***"
    assert dict((var, value) for var, value, _ in s.effective())["CHURN_API_TOKEN"] == "***"
    with pytest.raises(ConfigError, match="CHURN_API_PORT"):
        Settings.from_env({"CHURN_API_PORT": "70000"})
    with pytest.raises(ConfigError, match="CHURN_API_MAX_BATCH"):
        Settings.from_env({"CHURN_API_MAX_BATCH": "0"})


def test_concurrent_scores_are_combined_and_each_gets_its_own_answer(settings: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = _store(settings)
    models = ModelSet(
        registry=ModelRegistry(settings.model_dir), load_learner=functools.partial(restore_learner, store)
    )
    service = CustomerService(settings=settings, store=store, models=models)
    asks = [("c1", 170 * DAY_MS), ("c2", REACHED), ("c1", REACHED), ("c2", 199 * DAY_MS)] * 10
    alone = {ask: service.score(*ask, reasons=False).to_json() for ask in set(asks)}
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda ask: (ask, service.score(*ask, reasons=ask[0] == "c1")), asks))
    assert (
        len({alone[ask]["batch_probability"] for ask in alone}) > 1
    )  # the answers differ, so a mix-up shows
    for ask, scored in together:
        answer = scored.to_json()
        assert (answer["customer_id"], answer["as_of"]) == (ask[0], format_time(ask[1]))
        assert answer["features"] == alone[ask]["features"]
        assert answer["batch_probability"] == alone[ask]["batch_probability"]
        assert (answer["top_reasons"] is not None) == (ask[0] == "c1")


def test_a_promoted_model_is_served_after_a_refresh(settings: Settings) -> None:
    store = _store(settings)
    service = CustomerService(settings=settings, store=store, models=None)
    assert service.score("c1", reasons=False).prediction.model_version == "v0001"
    assert service.refresh() is False  # nothing new
    _registry(settings.model_dir)  # registers and promotes v0002
    assert service.refresh() is True
    assert service.score("c1", reasons=False).prediction.model_version == "v0002"


def test_docs_work_offline_on_files_the_api_serves_itself(settings: Settings) -> None:
    secured = Settings(model_dir=settings.model_dir, api_token="t0ken")  # the docs need no token
    with _client(secured, _store(secured)) as client:
        for page, script in (("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")):
            html = client.get(page)
            assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
            assert not re.search(r"https?:|//[a-z]", html.text), f"{page} names another host"
            named = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(
                r"url: '([^']+)'", html.text
            )
            scripts = [url for url in named if url.endswith(".js")]
            assert scripts and all(url.startswith(f"{DOCS_STATIC}/") for url in scripts), named
            for url in named:
                assert url.startswith("/") and not url.startswith("//"), url
                asset = client.get(url)
                assert asset.status_code == 200 and asset.content, url
            assert script in client.get(scripts[0]).text
        assert client.get(f"{DOCS_STATIC}/nothing.js").json()["error"] == "not_found"


def test_openapi_describes_the_errors_and_the_token_as_the_api_behaves(settings: Settings) -> None:
    """/openapi.json had FastAPI's validation list as the 422 body (the API sends {error, detail}), no
    401/404/413/503, and no security scheme: with a token, /docs offered no Authorize button and every
    "Try it out" got a 401. Each documented error is checked against a real answer."""
    secured = Settings(model_dir=settings.model_dir, api_token="t0ken", api_max_batch=3)
    with _client(secured, _store(secured)) as client:
        doc = client.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        assert "HTTPValidationError" not in doc["components"]["schemas"]
        customer = doc["paths"]["/customers/{customer_id}"]["get"]
        assert customer["security"] == [{"bearer": []}]
        assert "security" not in doc["paths"]["/health"]["get"]
        many = doc["paths"]["/score"]["post"]
        assert {"401", "413", "422", "503"} <= set(many["responses"]) and "404" in customer["responses"]
        error = customer["responses"]["404"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}
        required = set(doc["components"]["schemas"]["Error"]["required"])
        auth = {"Authorization": "Bearer t0ken"}
        for answer in (
            client.get("/customers/c1"),  # 401
            client.get("/customers/nobody", headers=auth),  # 404
            client.post("/score", json={"customer_ids": ["a", "b", "c", "d"]}, headers=auth),  # 413
            client.post("/score", json={}, headers=auth),  # 422
        ):
            assert str(answer.status_code) in many["responses"] or answer.status_code == 404
            assert set(answer.json()) == required, answer.text
    with _client(settings, _store(settings)) as client:  # no token: no scheme, no 401
        doc = client.get("/openapi.json").json()
        assert "securitySchemes" not in doc["components"]
        assert "401" not in doc["paths"]["/score"]["post"]["responses"]


def test_past_the_cap_requests_get_a_json_503_at_once_and_probes_still_answer(settings: Settings) -> None:
    capped = dataclasses.replace(settings, api_max_connections=2)
    store = _store(capped)
    service = CustomerService(settings=capped, store=store, models=None)
    app = create_app(service, settings=capped, ready=lambda: (True, {}), refresh_in_background=False)

    async def exercise() -> dict[str, Any]:
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b'{"customer_ids": '
            await release.wait()
            yield b'["c1"]}'

        seen: dict[str, Any] = {}
        transport = httpx.ASGITransport(app=app)
        json_type = {"content-type": "application/json"}
        async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=json_type) as http:
            held = [
                asyncio.create_task(http.post("/score?reasons=false", content=slow_body())) for _ in range(2)
            ]
            for _ in range(10_000):  # until both are in progress, reading their bodies
                if "churn_api_requests_in_progress 2.0" in (await http.get("/metrics")).text:
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError("the two slow requests never were in progress together")
            seen["refused"] = await http.get("/customers/c1")
            seen["health"] = await http.get("/health")
            release.set()
            seen["held"] = await asyncio.gather(*held)
            seen["after"] = await http.get("/customers/c1")
            seen["metrics"] = (await http.get("/metrics")).text
        return seen

    seen = asyncio.run(exercise())
    refused = seen["refused"]
    assert refused.status_code == 503 and refused.headers["content-type"] == "application/json"
    assert set(refused.json()) == {"error", "detail"} and refused.json()["error"] == "overloaded"
    assert "CHURN_API_MAX_CONNECTIONS" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert seen["health"].status_code == 200  # the probes are never refused
    assert [r.status_code for r in seen["held"]] == [200, 200], seen["held"][0].text
    assert all(r.json()[0]["customer_id"] == "c1" for r in seen["held"])
    assert seen["after"].status_code == 200  # the cap frees as requests finish
    assert "churn_api_requests_in_progress 0.0" in seen["metrics"]
    assert 'churn_api_requests_total{method="GET",route="unmatched",status="503"} 1.0' in seen["metrics"]


def test_serve_on_a_taken_port_says_which_setting_to_change(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It logged "HTTP API on ...", then uvicorn's errno, and exited 3 (an exit status nobody documents)."""
    import socket

    from churnstream.cli import main

    held = socket.create_server(("127.0.0.1", 0))
    try:
        monkeypatch.setenv("CHURN_API_PORT", str(held.getsockname()[1]))
        monkeypatch.setenv("CHURN_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the port comes first
        assert main(["serve"]) == 1
    finally:
        held.close()
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1:" in err and "set CHURN_API_PORT to a free port" in err
    assert "HTTP API on" not in err


def test_an_empty_namespace_says_to_check_the_prefix(settings: Settings) -> None:
    """A wrong CHURN_TOPIC_PREFIX reads a namespace no scorer ever wrote: it said "the service has seen no
    events yet", which sends the user looking at their publishers."""
    with _client(settings, MemoryFeatureStore(lateness_ms=0)) as client:
        answer = client.get("/customers/356")
    assert answer.status_code == 404 and answer.json()["error"] == "unknown_customer"
    assert "the feature store holds nothing yet" in answer.json()["detail"]
    assert "Check that CHURN_TOPIC_PREFIX and CHURN_REDIS_URL are the scorer's" in answer.json()["detail"]


def test_after_a_promotion_the_api_blends_as_the_scorer_does(settings: Settings) -> None:
    """The API restores its learners again on refresh: they missed the serving model, and kept blending
    with the weight chosen on the old model's probabilities (the scorer served the new model alone)."""
    import orjson

    from churnstream.models.blend import Blender
    from churnstream.models.online import OnlineModel

    store = _store(settings)
    blender = Blender(min_pairs=2, refit_every=1)
    for t in (1, 2, 3):
        blender.observe(0.5, 0.9, 1, version="v0001", as_of=t)
    tx = store.begin([])
    tx.save_learner(0, OnlineModel().to_bytes(), orjson.dumps(blender.to_dict()))
    store.commit(tx)
    registry = ModelRegistry(settings.model_dir)
    models = ModelSet(registry=registry, load_learner=functools.partial(restore_learner, store))
    service = CustomerService(settings=settings, store=store, models=models)
    assert service.models.learner(0).blender.online_weight() == 1.0
    registry.register(registry.load("v0001").model, {}, promote=True)  # v0002
    assert service.refresh()
    assert service.models.learners[0].blender.online_weight() == 0.0  # v0002 alone, as the scorer serves


def test_serve_without_a_token_beyond_loopback_warns_in_its_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    from churnstream.cli import main

    held = socket.create_server(("0.0.0.0", 0))  # the port taken: serve stops right after the warning
    try:
        monkeypatch.setenv("CHURN_API_HOST", "0.0.0.0")
        monkeypatch.setenv("CHURN_API_PORT", str(held.getsockname()[1]))
        with caplog.at_level("WARNING", logger="churnstream.streams.api"):
            assert main(["serve", "--allow-unauthenticated"]) == 1
    finally:
        held.close()
    assert "serving on 0.0.0.0 without a token" in caplog.text and "set CHURN_API_TOKEN" in caplog.text


def test_a_current_model_the_api_cannot_load_is_on_ready_and_metrics_while_the_earlier_one_answers(
    settings: Settings,
) -> None:
    """A review made a version current that no release can load: the API served the earlier one, /ready
    said ready with nothing about it, and no metric said so (one WARNING line)."""
    from churnstream.streams.api import readiness
    from tests.unit.test_models_reload import register_unloadable

    store = _store(settings)
    models = ModelSet(
        registry=ModelRegistry(settings.model_dir), load_learner=functools.partial(restore_learner, store)
    )
    service = CustomerService(settings=settings, store=store, models=models)
    served = models.version
    with TestClient(create_app(service, settings=settings, refresh_in_background=False)) as client:
        assert "churn_api_model_not_served 0.0" in client.get("/metrics").text
        assert readiness(service, {})[1]["model_not_served"] is None
        broken = register_unloadable(ModelRegistry(settings.model_dir), promote=True)
        with pytest.raises(Exception, match="cannot be loaded"):
            service.refresh()
        ok, answer = readiness(service, {})
        assert ok and answer["model_version"] == served  # requests are still answered
        assert f"serving {served}: model version {broken}" in answer["model_not_served"]
        assert "churn_api_model_not_served 1.0" in client.get("/metrics").text
        assert client.post("/customers/c1/score").json()["model_version"] == served


def test_a_time_is_answered_with_the_learner_the_stream_scored_it_with() -> None:
    """Which records of the learner history served the stream's prediction of a customer at a time."""
    from churnstream.features.state import new_state
    from churnstream.ids import event_fingerprint
    from churnstream.streams.api_service import where_scored
    from churnstream.streams.feature_lookup import Lookup

    settings = Settings()  # a tick a day, 7 days of allowed lateness
    tick = 400 * DAY_MS
    state = new_state()
    state["o"] = [[tick, "o1", 10.0, 0], [tick + 5, "o2", 10.0, 0], [tick + 5, "o3", 10.0, 0]]

    def at(t: int) -> tuple[int, str | None]:
        return where_scored(Lookup("c", 0, t, {}, state), settings)

    assert at(tick) == (tick + 1, event_fingerprint("o1"))  # an event's: learned up to then, maybe after it
    assert at(tick + 5) == (tick + 6, None)  # two events in one millisecond: the later one's
    assert at(tick + DAY_MS) == (tick + 8 * DAY_MS, None)  # a sweep's, once the tick's lateness passed
    assert at(tick + 7) == (tick + 8, None)  # no prediction: the learner as of then


def test_a_score_is_refused_before_the_learner_history_kept(settings: Settings) -> None:
    """A time whose online learner the store no longer knows is a 422 that says from when it does; a
    later time is scored with the learner recorded then, not today's."""
    from churnstream.features.store import LearnerRecord
    from churnstream.models.learner import Learner

    store = _store(settings)
    taught = Learner.restore(None, None, None)
    taught.online.min_learned = 0  # ready: the record's online model answers
    tx = store.begin({})
    kept_from = 190 * DAY_MS
    early = 185 * DAY_MS + 3_600_000  # no event, not a sweep tick: the learner as of then
    record = LearnerRecord(kept_from, None, taught.serving_bytes(), keep=1, complete=False)
    tx.record_learner(store.partition_of("c1"), record)
    store.commit(tx)
    with _client(settings, store) as client:
        got = client.post("/customers/c1/score", json={"as_of": format_time(early)})
        assert got.status_code == 422, got.text
        assert "before the online model's history" in got.json()["detail"]
        assert format_time(kept_from) in got.json()["detail"]
        many = client.post("/score", json={"customer_ids": ["c1", "x"], "as_of": format_time(early)})
        assert many.status_code == 200  # each customer's error in its place
        assert [a.get("error") for a in many.json()] == ["invalid_as_of", "unknown_customer"]
        later = client.post("/customers/c1/score", json={"as_of": format_time(early + 10 * DAY_MS)}).json()
        assert later["online_probability"] == 0.5  # the recorded learner, untaught but ready
        assert client.post("/customers/c2/score").json()["online_probability"] is None  # today's

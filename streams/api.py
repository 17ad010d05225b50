"""``churnstream serve``: the HTTP API of docs/CONTRACT.md ("HTTP API") over the workers' Redis state and
model registry, with FastAPI on uvicorn.

===========================================  =====================================================
``GET /customers/{customer_id}``             features as of the event time the customer's partition
                                             has reached, and the newest prediction the state holds
``POST /customers/{customer_id}/score``      a fresh prediction (``trigger`` = ``request``), body
                                             ``{"as_of": time}`` optional
``POST /score``                              ``{"customer_ids": [...], "as_of": time}``: a list, in
                                             request order; an unknown customer or a time the store
                                             cannot answer is an ``{customer_id, error, detail}`` item
``GET /health``, ``GET /ready``              liveness; readiness (Redis, model, Kafka) with reasons
``GET /metrics``                             Prometheus (``churn_api_*``)
``GET /docs``, ``GET /redoc``                the OpenAPI description in Swagger UI and ReDoc, their
                                             files served from ``/docs/static`` (no internet needed)
===========================================  =====================================================

The answers are :class:`~churnstream.streams.api_service.CustomerService`'s; this module is HTTP only.
Errors are JSON ``{error, detail}``: 401 without the bearer token (when ``CHURN_API_TOKEN`` is set), 404
unknown customer or path, 413 too many customers or too large a body, 422 a bad body or time, 503 Redis
unreachable, no model yet or too many requests at once; never a stack trace. Every request is answered by
a bounded pool of ``CHURN_API_THREADS`` threads, and beyond ``CHURN_API_MAX_CONNECTIONS`` requests in
progress more are answered 503 at once (by this module, in JSON, not by uvicorn's own plain-text cap), so
a burst queues here and never reaches the workers, which are other processes.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import logging
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import anyio
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from churnstream import __version__
from churnstream.errors import ChurnstreamError, ConfigError, StoreError
from churnstream.settings import Settings
from churnstream.streams.api_service import (
    CustomerService,
    RequestError,
    TooManyCustomersError,
    parse_as_of,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

OPEN_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
)
"""Answered without the bearer token: probes, metrics (counts, like the workers' ``/metrics``) and the
API's own description (with the files under :data:`DOCS_STATIC`); no customer data."""

DOCS_STATIC = "/docs/static"
"""Where Swagger UI's and ReDoc's files are served from, by the API itself (``fastapi-offline`` ships
them): the docs pages need no CDN, so they work where the machine has no internet."""

UNCAPPED_PATHS = frozenset({"/health", "/metrics"})
"""Answered however many requests are in progress, and not counted among them: liveness and metrics cost
nothing, and an overloaded API should neither look dead to its supervisor nor go dark on its dashboard."""


class ApiMetrics:
    """The API's Prometheus metrics, in a registry of their own (``churn_api_*``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "churn_api_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "churn_api_request_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.scored = Counter(
            "churn_api_predictions_total", "Customers scored on request.", registry=self.registry
        )
        self.reloads = Counter(
            "churn_api_model_reloads_total", "Newly promoted models loaded.", registry=self.registry
        )
        self.in_progress = Gauge(
            "churn_api_requests_in_progress",
            "Requests being answered now (at most CHURN_API_MAX_CONNECTIONS; more are answered 503).",
            registry=self.registry,
        )
        self.model_not_served = Gauge(  # the app sets what it reads at scrape (ModelSet.not_served)
            "churn_api_model_not_served",
            "1 while the registry's current model cannot be loaded and an earlier one is served, else 0",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- request bodies (their schemas are what /docs shows) -----------------------------------------------


class ScoreOne(BaseModel):
    """Body of ``POST /customers/{customer_id}/score`` (optional)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt ``asOf`` is refused, not scored at the default

    as_of: StrictStr | StrictInt | None = Field(
        default=None,
        description="RFC 3339 time with an offset or integer epoch ms (default: the event time the "
        "customer's partition has reached)",
        examples=["2024-05-01T00:00:00Z"],
    )


class ScoreMany(BaseModel):
    """Body of ``POST /score``."""

    model_config = ConfigDict(extra="forbid")

    customer_ids: list[StrictStr] = Field(min_length=1, description="at most CHURN_API_MAX_BATCH ids")
    as_of: StrictStr | StrictInt | None = Field(
        default=None, description="as for one customer; one time for all of them"
    )

    @field_validator("customer_ids")
    @classmethod
    def _unicode(cls, ids: list[str]) -> list[str]:
        """JSON may escape a lone surrogate (``"\\udfff"``), which no UTF-8 key can hold: a 422 naming it,
        not a 500 for the whole list."""
        for i, cid in enumerate(ids):
            try:
                cid.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"customer_ids[{i}] is not valid Unicode (it holds a lone surrogate)"
                ) from None
        return ids


# the path of POST /customers/{id}/score (a customer id of its own: at least one character)
_SCORE_PATH = re.compile(rb"^/customers/[^/].*/score/?$")


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error in words a caller can act on.

    >>> _problem({"type": "extra_forbidden", "loc": ("body", "asOf"), "msg": "Extra inputs ..."})
    "body: unknown field 'asOf' (the fields are as_of and, for POST /score, customer_ids)"
    >>> _problem({"type": "model_attributes_type", "loc": ("body",), "msg": "Input should be ..."})
    'body: must be a JSON object, sent with Content-Type: application/json'
    """
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    kind = error.get("type")
    if kind == "extra_forbidden":
        return f"body: unknown field {where!r} (the fields are as_of and, for POST /score, customer_ids)"
    if kind == "json_invalid":
        return f"body: not valid JSON ({(error.get('ctx') or {}).get('error', 'cannot be decoded')})"
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return f"{where}: must be a JSON object, sent with Content-Type: application/json"
    return f"{where}: {error.get('msg')}"


def _error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


class _Gate:
    """Pure ASGI middleware around every request: the cap on requests in progress, the bearer token, the
    body size limit and the metrics (pure ASGI: Starlette's ``BaseHTTPMiddleware`` costs a task and a
    queue per request).

    The cap is here rather than uvicorn's ``limit_concurrency``, which answers its 503 in plain text and
    also counts idle keep-alive connections: requests in progress are what cost threads and memory."""

    def __init__(
        self, app: ASGIApp, *, token: str, max_body: int, max_in_progress: int, metrics: ApiMetrics
    ) -> None:
        self.app = app
        self.expected = token.encode() if token else None
        self.max_body = max_body
        self.max_in_progress = max_in_progress
        self.in_progress = 0  # one event loop runs every request: no lock needed
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        capped = scope["path"] not in UNCAPPED_PATHS
        overloaded = capped and self.in_progress >= self.max_in_progress
        counted = capped and not overloaded
        if counted:
            self.in_progress += 1
            self.metrics.in_progress.inc()
        try:
            refusal = self._overloaded() if overloaded else self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, sending)
                return
            await self.app(scope, self._limited(receive), sending)
        finally:
            if counted:
                self.in_progress -= 1
                self.metrics.in_progress.dec()
            route = scope.get("route")
            name = getattr(route, "path_format", None) or "unmatched"  # the template, without ":path"
            self.metrics.requests.labels(name, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)

    def _overloaded(self) -> JSONResponse:
        why = (
            f"more than {self.max_in_progress} requests in progress (CHURN_API_MAX_CONNECTIONS); "
            "retry shortly"
        )
        response = _error(503, "overloaded", why)
        response.headers["Retry-After"] = "1"
        response.headers["Connection"] = "close"  # as uvicorn's own cap: the client sheds a connection
        return response

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        headers = dict(scope["headers"])
        path = scope["path"]
        if self.expected is not None and path not in OPEN_PATHS and not path.startswith(DOCS_STATIC + "/"):
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            # the scheme is case-insensitive (RFC 9110 11.1); the token is compared in constant time
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(b" "), self.expected):
                why = "send the API token as 'Authorization: Bearer <token>'"
                response = _error(401, "unauthorized", why)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return _error(413, "body_too_large", f"request bodies are at most {self.max_body} bytes")
        return None

    def _limited(self, receive: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """``receive`` that refuses a body (chunked, without a length) growing past the limit."""
        seen = [0]

        async def limited() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise StarletteHTTPException(413, f"request bodies are at most {self.max_body} bytes")
            return message

        return limited


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def create_app(
    service: CustomerService,
    *,
    settings: Settings,
    metrics: ApiMetrics | None = None,
    ready: Callable[[], tuple[bool, dict[str, Any]]] | None = None,
    refresh_in_background: bool = True,
) -> FastAPI:
    """The API over ``service``. ``ready``: the readiness check (default: :func:`readiness` with a
    :class:`~churnstream.streams.health.DependencyProbe` of Kafka and Redis)."""
    metrics = metrics or ApiMetrics()

    def not_served() -> float:  # a model not loaded yet (or none at all) is /ready's to say
        models = service.loaded_models
        return 1.0 if models is not None and models.not_served() else 0.0

    metrics.model_not_served.set_function(not_served)
    limiter = anyio.CapacityLimiter(settings.api_threads)
    if ready is None:
        from churnstream.streams.health import DependencyProbe

        probe = DependencyProbe(settings, redis=True)
        ready = lambda: readiness(service, probe.problems())  # noqa: E731 - a one-line closure

    def refresh() -> None:
        try:
            if service.refresh():
                metrics.reloads.inc()
                log.info("now serving model version %s", service.model_version)
        except Exception as exc:  # the refresh thread must outlive any model it cannot load
            text = str(exc) if isinstance(exc, ChurnstreamError) else repr(exc)
            log.warning("keeping the models as they are: %s", settings.redact(text))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if refresh_in_background:

            def loop() -> None:
                while not stop.wait(settings.model_poll_seconds):
                    refresh()

            thread = threading.Thread(target=loop, name="api-model-refresh", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=10)

    app = FastAPIOffline(  # FastAPI with /docs and /redoc on files it serves itself (DOCS_STATIC)
        title="churnstream",
        version=__version__,
        description="A customer's features and churn risk, from the state the scoring workers keep.",
        lifespan=lifespan,
        static_url=DOCS_STATIC,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would ask validator.swagger.io
    )

    async def blocking(func: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(func, *args, limiter=limiter)

    def reply(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return _error(exc.status, exc.code, str(exc))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        return _error(503, "store_unavailable", settings.redact(str(exc)))

    @app.exception_handler(ChurnstreamError)
    async def unavailable(request: Request, exc: ChurnstreamError) -> Response:
        # e.g. Redis holding state in another layout (LayoutError): nothing the caller can fix
        return _error(503, "unavailable", settings.redact(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = [_problem(e) for e in exc.errors()]
        return _error(422, "invalid_request", "; ".join(problems) or "the request body is not valid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _CODES.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)  # a 405's Allow, say

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("answering %s %s failed", request.method, request.url.path)
        return _error(500, "internal_error", "the request failed on the server; its log says why")

    @app.get("/customers/{customer_id:path}", summary="A customer's features and latest prediction")
    async def get_customer(customer_id: str, request: Request) -> Response:
        if _SCORE_PATH.match(request.scope.get("raw_path") or b""):  # a literal /score, not an id's %2F
            return _error(405, "method_not_allowed", "a score is requested with POST", {"Allow": "POST"})
        if not customer_id:
            return await no_customer()
        return reply(await blocking(service.customer, customer_id))

    @app.post("/customers/{customer_id:path}/score", summary="Score a customer now")
    async def score_customer(
        customer_id: str, body: ScoreOne | None = None, reasons: bool = True
    ) -> Response:
        """``?reasons=false`` leaves out ``top_reasons`` and ``explanation`` (they cost one model pass per
        feature)."""
        as_of = parse_as_of(None if body is None else body.as_of)
        scored = await blocking(functools.partial(service.score, reasons=reasons), customer_id, as_of)
        metrics.scored.inc()
        return reply(scored.to_json())

    # with a trailing slash too (the customer route above would otherwise answer it 405)
    app.add_api_route(
        "/customers/{customer_id:path}/score/", score_customer, methods=["POST"], include_in_schema=False
    )

    @app.get("/customers", include_in_schema=False)  # not a 307 to /customers/ with an empty body
    async def no_customer() -> Response:
        return _error(404, "not_found", "a customer's answer is at GET /customers/{customer_id}")

    @app.post("/score", summary="Score several customers as of one time")
    async def score_many(body: ScoreMany, reasons: bool = True) -> Response:
        if len(body.customer_ids) > settings.api_max_batch:
            raise TooManyCustomersError(
                f"{len(body.customer_ids)} customers in one request; at most {settings.api_max_batch} "
                "(CHURN_API_MAX_BATCH)"
            )
        as_of = parse_as_of(body.as_of)
        answers = await blocking(_score_list, service, body.customer_ids, as_of, reasons)
        metrics.scored.inc(sum(1 for a in answers if "error" not in a))
        return reply(answers)

    @app.get("/health", summary="Liveness")
    async def health() -> Response:
        return reply({"status": "ok", "model_version": service.model_version})

    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)  # some uptime probes

    @app.get("/ready", summary="Readiness: Redis, the model and Kafka, with reasons")
    async def get_ready() -> Response:
        ok, body = await blocking(ready)
        return reply(body, 200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    max_body = max(64 * 1024, settings.api_max_batch * 256)
    app.add_middleware(
        _Gate,
        token=settings.api_token,
        max_body=max_body,
        max_in_progress=settings.api_max_connections,
        metrics=metrics,
    )
    app.state.metrics = metrics
    _document_errors_and_auth(app, token=bool(settings.api_token))
    return app


_ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. unknown_customer, invalid_as_of"},
        "detail": {"type": "string", "description": "what went wrong and what to do, in words"},
    },
}
_ERRORS = {
    "401": "no or a wrong bearer token (CHURN_API_TOKEN is set)",
    "404": "unknown customer",
    "413": "too many customers or too large a body",
    "422": "a malformed body or an as_of the store cannot answer for exactly",
    "503": "no model yet, Redis unavailable, or too many requests in progress (Retry-After)",
}


def _document_errors_and_auth(app: FastAPI, *, token: bool) -> None:
    """/openapi.json (and so /docs) as the API behaves: errors are ``{error, detail}`` (not FastAPI's
    validation list), and with a token every path but :data:`OPEN_PATHS` needs the bearer token, which
    /docs' Authorize button then asks for."""
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = doc.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas["Error"] = _ERROR_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        if token:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in doc.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                codes = ["401"] if token else []
                codes += (
                    ["404", "422", "413", "503"] if path.startswith("/customers/") else ["422", "413", "503"]
                )
                for code in codes:
                    responses[code] = {"description": _ERRORS[code], "content": error}
                if token:
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = schema  # type: ignore[method-assign]


def _score_list(
    service: CustomerService, customer_ids: list[str], as_of: int | None, reasons: bool
) -> list[dict[str, Any]]:
    """One answer per requested id, in order: a prediction, or ``{customer_id, error, detail}``."""
    found = {}
    failed: dict[str, dict[str, Any]] = {}
    for cid in dict.fromkeys(customer_ids):
        try:
            found[cid] = service.find(cid, as_of)
        except RequestError as exc:
            failed[cid] = {"customer_id": cid, "error": exc.code, "detail": str(exc)}
    learners = service.learners_at(list(found.values()))
    for cid, learner in zip(list(found), learners, strict=True):
        if isinstance(learner, RequestError):  # a time before the learner history kept
            failed[cid] = {"customer_id": cid, "error": learner.code, "detail": str(learner)}
            del found[cid]
    kept = [learner for learner in learners if not isinstance(learner, RequestError)]
    scored = dict(
        zip(found, service.score_many(list(found.values()), reasons=reasons, learners=kept), strict=True)
    )
    return [scored[cid].to_json() if cid in scored else failed[cid] for cid in customer_ids]


def readiness(service: CustomerService, problems: dict[str, str | None]) -> tuple[bool, dict[str, Any]]:
    """Ready when Redis and Kafka answer (``problems``, from a dependency probe) and a model is loaded."""
    reasons = [why for why in problems.values() if why]
    try:
        version: str | None = service.models.version
    except RequestError as exc:
        version = None
        reasons.append(str(exc))
    except ChurnstreamError as exc:
        version = None
        reasons.append(f"the current model cannot be loaded: {service.settings.redact(str(exc))}")
    answer: dict[str, Any] = {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
        "model_version": version,
    }
    if version is not None:  # still ready: requests are answered, by the model served before
        answer["model_not_served"] = service.models.not_served()
    return not reasons, answer


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, *, allow_unauthenticated: bool) -> None:
    """Refuse to serve customer data without a token on an address other machines reach, unless asked to.

    >>> check_exposure(Settings(api_host="0.0.0.0"), allow_unauthenticated=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    churnstream.errors.ConfigError: CHURN_API_HOST=0.0.0.0 is not a loopback address and CHURN_API_TOKEN ...
    >>> check_exposure(Settings(api_host="0.0.0.0", api_token="t"), allow_unauthenticated=False)
    """
    if settings.api_token or allow_unauthenticated or is_loopback(settings.api_host):
        return
    raise ConfigError(
        f"CHURN_API_HOST={settings.api_host} is not a loopback address and CHURN_API_TOKEN is not set: "
        "anyone who reaches this host could read every customer's features. Set CHURN_API_TOKEN, or pass "
        "--allow-unauthenticated when something in front of the API (a proxy, a private network) guards it"
    )


def build_service(settings: Settings) -> CustomerService:
    """A :class:`CustomerService` over the Redis feature store (layout checked when Redis answers) and the
    registry's current model (loaded when there is one)."""
    from churnstream.errors import ModelNotFoundError
    from churnstream.features.redis_store import RedisFeatureStore, redis_client
    from churnstream.models.serving import load_models

    client = redis_client(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=2.0)
    store = RedisFeatureStore(
        client=client, namespace=settings.topic_prefix, lateness_ms=settings.lateness_ms
    )
    try:
        store.check_layout()
    except StoreError as exc:
        why = settings.redact(str(exc))
        log.warning("Redis at %s does not answer yet: %s", settings.redacted_redis_url, why)
    try:
        models = load_models(settings, store)
    except ModelNotFoundError as exc:
        log.warning("serving features only until a model is promoted: %s", exc)
        models = None
    return CustomerService(settings=settings, store=store, models=models)


def cli(args: Any, settings: Settings) -> int:
    """Serve the API until SIGTERM/SIGINT (uvicorn finishes the requests in flight, then exits 0)."""
    import uvicorn

    from churnstream.streams.health import listening_socket

    check_exposure(settings, allow_unauthenticated=args.allow_unauthenticated)
    if not settings.api_token and not is_loopback(settings.api_host):  # --allow-unauthenticated
        log.warning(
            "serving on %s without a token (--allow-unauthenticated): anyone who reaches this port reads "
            "every customer; set CHURN_API_TOKEN unless a proxy or a private network guards it",
            settings.api_host,
        )
    sock = listening_socket(
        settings.api_host, settings.api_port, setting="CHURN_API_PORT", host_setting="CHURN_API_HOST"
    )
    service = build_service(settings)
    app = create_app(service, settings=settings)
    log.info(
        "HTTP API on http://%s:%d (docs on /docs), %s, model %s",
        settings.api_host,
        sock.getsockname()[1],  # the port bound: CHURN_API_PORT=0 picks a free one
        "bearer token required" if settings.api_token else "no authentication",
        service.model_version,
    )
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        limit_concurrency=None,  # _Gate caps requests in progress at CHURN_API_MAX_CONNECTIONS, in JSON
        access_log=False,
        log_config=None,  # churnstream's logging (stderr), not uvicorn's own
        server_header=False,
    )
    # uvicorn handles SIGTERM/SIGINT (finishing the requests in flight), then restores the handlers it
    # found and raises the signal again: these make that a clean exit 0, as for the other workers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _stopped(sig: int, frame: Any) -> None:
    """The signal uvicorn raises again once it has stopped: nothing left to do."""


__all__ = [
    "DOCS_STATIC",
    "OPEN_PATHS",
    "UNCAPPED_PATHS",
    "ApiMetrics",
    "ScoreMany",
    "ScoreOne",
    "build_service",
    "check_exposure",
    "cli",
    "create_app",
    "is_loopback",
    "readiness",
]

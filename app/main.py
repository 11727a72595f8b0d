"""The service's FastAPI app: ``uvicorn app.main:app`` or ``python -m app``."""

import asyncio
import gc
import importlib
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware import Middleware
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import admin, health, model_card, page, predict, prometheus, read, v2
from app.api.schemas import errors_as_text
from app.metrics import Metrics, configure_request_log, record_request
from app.numbers.check import CheckWeightsError, DigitCheck, load_check
from app.pipeline.errors import PipelineError
from app.settings import Settings, get_settings
from app.versions import ModelVersions

logger = logging.getLogger(__name__)

DESCRIPTION = """
Reads handwritten digits with the **S4 net**, a 19,570-parameter CNN trained on MNIST.

* `POST /predict` — one image or many (multipart `file` parts, or the raw image as the body).
* `POST /read` — whole numbers: each picture's digits, left to right, with their boxes.
* `POST /v2/models/s4net/infer` — the Open Inference Protocol (KServe v2, Triton's HTTP
  protocol), with its metadata and health routes under `/v2`; the same over gRPC on port 8001.
* `POST /feedback` — tell the service what a picture really shows; `GET /feedback/stats`.
* `GET /model` — the layer summary (the network's contract) and the served weights' card.
* `GET /health`, `GET /ready` — liveness and readiness.
* `GET /metrics` — Prometheus metrics.
* `POST /admin/reload`, `POST /admin/versions` — swap in new weights; load and unload weight
  versions and set the canary (only when `S4_ADMIN_TOKEN` is set).
"""


async def validation_error_as_text(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Every error answers ``{"detail": "<what to fix>"}``, so clients parse one shape."""
    return JSONResponse({"detail": errors_as_text(exc.errors())}, status_code=422)


class RequestMiddleware:
    """Every HTTP request timed, bounded and logged, in one pure-ASGI layer.

    Telemetry: the time from the request to the end of its answer and the answer's status go to
    the metrics and the request log (``app.metrics.record_request``); only the response start is
    watched, so bodies stream through untouched.

    Time limit: each request gets ``timeout_s`` seconds from its headers to its answer starting.
    The size limits stop a client from sending too much; this stops one from sending too slowly
    (a slowloris body trickling in byte by byte holds a request open for ever) and a request from
    waiting for the model for ever. Past the deadline the request is cancelled and answered with
    a JSON detail: 408 with ``Connection: close`` while its body is still arriving (uvicorn then
    drops the connection, and whatever else the client sends), 503 with Retry-After once the body
    was all in. An answer that has started is left to finish.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, timeout_s: float):
        self.app = app
        self.metrics = metrics
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before starting a response, the server answers 500
        body_received = False

        async def receive_watching_body() -> Message:
            nonlocal body_received
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_received = True
            return message

        async def send_watching_start(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await self.app(scope, receive_watching_body, send_watching_start)
        except TimeoutError:
            if not deadline.expired():
                raise  # someone else's timeout: a server error like any other
            response = self.timeout_answer(body_received)
            status = response.status_code
            await response(scope, receive, send)
        finally:
            record_request(self.metrics, scope, status, time.perf_counter() - started)

    def timeout_answer(self, body_received: bool) -> JSONResponse:
        limit = f"{self.timeout_s:g} s (S4_REQUEST_TIMEOUT_S)"
        if body_received:
            return JSONResponse(
                {"detail": f"no answer within {limit}: the service is busy; retry shortly"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            {"detail": f"the request body was still arriving after {limit}"},
            status_code=408,
            headers={"Connection": "close"},
        )


def load_digit_check(settings: Settings) -> DigitCheck | CheckWeightsError:
    """The digit check /read needs, or why it could not be loaded (then /read answers 503)."""
    try:
        return load_check(settings.digit_check)
    except CheckWeightsError as exc:
        logger.error("%s; /read will answer 503", exc)
        return exc


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own settings, production reads the environment."""
    settings = settings or get_settings()
    service_metrics = Metrics()
    # POST /feedback's SQLAlchemy and Alembic (+30 MB, 0.3 s of CPU per worker) load only if on.
    feedback = importlib.import_module("app.api.feedback") if settings.feedback else None
    configure_request_log()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load the weights (each served version) once per process, off the event loop, before
        # serving traffic.
        versions = ModelVersions(settings, service_metrics)
        await versions.start()
        if versions.primary.predictor.ready:
            service_metrics.model_load_seconds.set(versions.load_seconds)
        app.state.versions = versions
        # The primary version's: what answers requests that name no version (app/versions.py).
        app.state.predictor = versions.primary.predictor
        app.state.batcher = versions.primary.batcher
        app.state.digit_check = await run_in_threadpool(load_digit_check, settings)
        if settings.grpc:  # imported only when served: the module brings in grpcio
            from app.api import grpc_server

            grpc_service = await grpc_server.start(app.state)
        if feedback:
            await feedback.start(app, settings)  # the corrections' database, migrated
        # Everything allocated so far (torch, the model, the app) lives as long as the process.
        # Frozen, it is left out of the garbage collector's full passes, which otherwise stall
        # the event loop for over 100 ms every so often under load.
        gc.freeze()
        yield
        if settings.grpc:
            await grpc_server.stop(grpc_service, settings.graceful_shutdown_s)
        await versions.stop()
        if feedback:
            await feedback.stop(app)

    # Outermost first. CORS (off by default) answers preflights itself and adds its headers to
    # every other answer, the time limit's included; the one middleware of our own times, bounds
    # and logs each request (docs/decisions.md has what each layer costs).
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type"],  # image/png bodies need it; never Authorization
            )
        )
    middleware.append(
        Middleware(RequestMiddleware, metrics=service_metrics, timeout_s=settings.request_timeout_s)
    )
    # FastAPIOffline serves Swagger UI and ReDoc from the package instead of a CDN, so /docs works
    # on air-gapped hosts and clusters.
    app = FastAPIOffline(
        title="S4 Digits",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        middleware=middleware,
        telemetry={
            "tracing": settings.opentelemetry,
            "metrics": settings.opentelemetry,
            "logs": settings.opentelemetry,
        },
    )
    app.state.settings = settings
    app.state.metrics = service_metrics
    app.add_exception_handler(RequestValidationError, validation_error_as_text)
    app.add_exception_handler(PipelineError, predict.pipeline_error_answer)
    # The raw routes go in the app's own routes, first (include_router would wrap them again).
    app.router.routes[:0] = [predict.route, *v2.infer_routes]
    app.include_router(read.router)  # POST /read: whole numbers
    app.include_router(health.router)
    app.include_router(model_card.router)
    app.include_router(prometheus.router)
    app.include_router(page.router)  # GET / and /static/: the draw-a-digit page
    app.include_router(v2.router)  # /v2/...: Triton and KServe clients
    if feedback:
        app.include_router(feedback.router_for(settings))  # POST /feedback, /feedback/stats
        if settings.admin_token:
            app.include_router(feedback.admin_router)  # GET /admin/feedback/export
    if settings.admin_token:
        app.include_router(admin.router)
    return app


app = create_app()

"""The FastAPI application: ``uvicorn app.main:app`` or ``python -m app``."""

from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from app.batching import MicroBatcher
from app.inference import Predictor
from app.metrics import Metrics, RequestTelemetryMiddleware, configure_request_log
from app.routers import health, metrics, model, page, predict
from app.settings import Settings, get_settings

DESCRIPTION = """
Reads handwritten digits with the **S4 net**, a 19,570-parameter CNN trained on MNIST.

* `POST /predict` — one image or many (multipart `file` parts, or the raw image as the body).
* `GET /model` — the layer summary (the network's contract) and the served weights' card.
* `GET /health`, `GET /ready` — liveness and readiness.
* `GET /metrics` — Prometheus metrics.
"""


async def validation_error_as_text(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Every error answers ``{"detail": "<what to fix>"}``, so clients parse one shape."""
    problems = "; ".join(
        f"{' '.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return JSONResponse({"detail": problems}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own settings, production reads the environment."""
    settings = settings or get_settings()
    app_metrics = Metrics()
    configure_request_log()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load the model once per process, off the event loop, before serving traffic.
        predictor = Predictor(settings)
        await run_in_threadpool(predictor.load)
        if predictor.load_seconds is not None:
            app_metrics.model_load_seconds.set(predictor.load_seconds)
        batcher = MicroBatcher(
            predictor,
            app_metrics,
            prepare=partial(predict.prepare_images, max_pixels=settings.max_pixels),
            max_images=settings.batch_max_images,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            max_queued_images=settings.batch_queue_images,
        )
        batcher.start()
        app.state.predictor = predictor
        app.state.batcher = batcher
        yield
        await batcher.stop()

    # FastAPIOffline serves Swagger UI and ReDoc from the package instead of a CDN, so /docs works
    # on air-gapped hosts and clusters.
    app = FastAPIOffline(
        title="S4 Digits",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = app_metrics
    app.add_middleware(RequestTelemetryMiddleware, metrics=app_metrics)
    app.add_exception_handler(RequestValidationError, validation_error_as_text)
    app.include_router(health.router)
    app.include_router(model.router)
    app.include_router(predict.router)
    app.include_router(metrics.router)
    app.include_router(page.router)  # GET / and /static/: the draw-a-digit page
    return app


app = create_app()

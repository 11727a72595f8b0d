"""The FastAPI application: ``uvicorn app.main:app`` or ``python -m app``."""

from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app.inference import Predictor
from app.routers import health, model
from app.settings import Settings, get_settings

DESCRIPTION = """
Reads handwritten digits with the **S4 net**, a 19,570-parameter CNN trained on MNIST.

* `GET /model` — the layer summary (the network's contract) and the served weights' card.
* `GET /health`, `GET /ready` — liveness and readiness.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; tests pass their own settings, production reads the environment."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load the model once per process, off the event loop, before serving traffic.
        predictor = Predictor(settings)
        await run_in_threadpool(predictor.load)
        app.state.predictor = predictor
        yield

    app = FastAPI(
        title="S4 Digits",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(model.router)
    return app


app = create_app()

"""Shared state for route handlers, as FastAPI dependencies.

They are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in its
thread pool, and a thread hop per dependency costs more than the rest of the routing.
"""

from fastapi import Request

from app.inference import Predictor
from app.metrics import Metrics
from app.settings import Settings


async def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings

"""Shared state for route handlers, as FastAPI dependencies."""

from fastapi import Request

from app.batching import MicroBatcher
from app.inference import Predictor
from app.metrics import Metrics
from app.settings import Settings


def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings

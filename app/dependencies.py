"""Shared state for route handlers, as FastAPI dependencies."""

from fastapi import Request

from app.inference import Predictor


def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor

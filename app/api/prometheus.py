"""GET /metrics: the Prometheus exposition of this process's metrics."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.dependencies import get_metrics
from app.metrics import Metrics

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition."}},
)
def metrics(metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    """Requests and latency per route and status, images and digits predicted, batch sizes,
    forward-pass time and model load time."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

"""Liveness and readiness, for load balancers and orchestrators."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from app.api.dependencies import get_predictor
from app.api.schemas import Health, Readiness
from app.inference import Predictor

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Liveness: the process is up")
def health() -> Health:
    """Answers 200 whenever the process can serve requests, even without weights."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: weights loaded and warmed up",
    responses={503: {"model": Readiness, "description": "Not ready; `detail` says why."}},
)
def ready(predictor: Annotated[Predictor, Depends(get_predictor)]) -> JSONResponse:
    """200 once the model can answer /predict; 503 with the reason (e.g. bad weights) otherwise."""
    body = Readiness(
        ready=predictor.ready,
        device=str(predictor.device),
        runtime=predictor.runtime_name,
        detail=predictor.error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if predictor.ready else 503)

"""POST /admin/reload and /admin/versions: new weights without a restart, for the admin token.

The router is mounted only when S4_ADMIN_TOKEN is set; otherwise /admin/* does not exist (404).
A reload or a change of versions applies to the worker process that receives it: each uvicorn
worker (WEB_CONCURRENCY) has its own models, so with several, restart them instead (with
S4_SERVED_VERSIONS and S4_CANARY set); the Kubernetes manifests run one worker per pod. An
endpoint rather than SIGHUP: a signal cannot carry a path or report a refused file, and
uvicorn's supervisor already uses SIGHUP to restart its workers.
"""

import secrets
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, SecretStr
from starlette.concurrency import run_in_threadpool

from app.api.dependencies import get_app_settings, get_predictor
from app.api.schemas import error_responses
from app.inference import LOAD_ERRORS, Predictor
from app.settings import Settings
from app.versions import ModelVersions, VersionRefused, parse_canary

# auto_error=False: a missing or non-Bearer Authorization header gets this module's 401 with a
# JSON detail that says what to send, like every other error of the service.
bearer_token = HTTPBearer(auto_error=False, description="The value of S4_ADMIN_TOKEN.")


def check_bearer_token(
    credentials: HTTPAuthorizationCredentials | None, expected: SecretStr, name: str, variable: str
) -> None:
    """401 without a bearer token, 403 with a wrong one (``name``: "admin", "feedback")."""
    if credentials is None:
        raise HTTPException(
            401,
            f"send the {name} token as `Authorization: Bearer <{variable}>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # Constant time, so response timing does not reveal how much of a guess was right.
    if not secrets.compare_digest(
        credentials.credentials.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(403, f"the {name} token is wrong")


def require_admin_token(
    settings: Annotated[Settings, Depends(get_app_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_token)],
) -> None:
    check_bearer_token(credentials, settings.admin_token, "admin", "S4_ADMIN_TOKEN")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_token)])


class ReloadRequest(BaseModel):
    weights: Path | None = Field(
        None,
        description="Weights file to serve from now on (its card is the .json beside it); "
        "default: the file being served, re-read (e.g. after replacing it on disk).",
    )


class ReloadResponse(BaseModel):
    file: str = Field(description="The weights file now being served.")
    sha256: str = Field(description="Its SHA-256, as /predict and /model report it from now on.")
    load_ms: float = Field(description="Time to load, verify and warm up the new weights.")


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Swap in new weights while serving",
    responses=error_responses(
        s401="No bearer token.",
        s403="Wrong token.",
        s422="The new weights are unusable (the old ones are still served), or a bad body.",
    ),
)
async def reload_weights(
    predictor: Annotated[Predictor, Depends(get_predictor)],
    request: ReloadRequest | None = None,
) -> ReloadResponse:
    """Load, verify (SHA-256 against the card, tensor shapes) and warm up the weights off the
    event loop, then switch to them in one step: requests in flight finish on the old model, later
    ones use the new one. Unusable weights (422, the detail names the file and the problem)
    leave the old model serving.
    """
    started = time.perf_counter()
    try:
        weights = await run_in_threadpool(predictor.reload, request.weights if request else None)
    except LOAD_ERRORS as exc:
        serving = predictor.weights.sha256 if predictor.weights else "nothing (not ready)"
        raise HTTPException(422, f"{exc}; still serving {serving}") from None
    return ReloadResponse(
        file=str(weights.path),
        sha256=weights.sha256,
        load_ms=(time.perf_counter() - started) * 1000.0,
    )


class VersionsChange(BaseModel):
    load: list[str] = Field([], description="Versions to load and serve (each verified first).")
    unload: list[str] = Field([], description="Versions to stop serving (not the primary).")
    canary: str | None = Field(
        None,
        description="`<version>:<percent>` to send that share of the requests that name no "
        "version to a served version; empty to stop the canary; absent to leave it as it is.",
    )


class VersionsState(BaseModel):
    primary: str | None = Field(description="Answers requests that name no version.")
    versions: list[str] = Field(description="The versions served, the primary first.")
    canary: dict | None = Field(description="`version` and `percent`, or null for none.")
    refused: dict[str, str] = Field(description="Versions that could not be served, and why.")


def get_versions(request: Request) -> ModelVersions:
    return request.app.state.versions


@router.get("/versions", response_model=VersionsState, summary="The served weight versions")
async def list_versions(versions: Annotated[ModelVersions, Depends(get_versions)]) -> dict:
    """The versions served, the primary, the canary and the versions refused with the reason.
    Like /admin/reload, it is this worker's."""
    return versions.describe()


@router.post(
    "/versions",
    response_model=VersionsState,
    summary="Load and unload weight versions, set the canary",
    responses=error_responses(
        s401="No bearer token.",
        s403="Wrong token.",
        s422="A version is unusable (its SHA-256 check failed, ...) or cannot be unloaded, or the "
        "canary is not served; what came before it in the request is done, the rest is not.",
    ),
)
async def change_versions(
    change: VersionsChange, versions: Annotated[ModelVersions, Depends(get_versions)]
) -> dict:
    """Loads (verified and warmed up off the event loop), then sets the canary, then unloads,
    while serving: the versions not named keep serving throughout, and a refused one changes
    nothing for them."""
    try:
        for version in change.load:
            await versions.load(version)
        if change.canary is not None:
            versions.set_canary(parse_canary(change.canary))
        for version in change.unload:
            await versions.unload(version)
    except VersionRefused as exc:
        raise HTTPException(422, f"{exc}; serving {versions.versions()}") from None
    return versions.describe()

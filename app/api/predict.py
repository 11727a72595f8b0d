"""POST /predict: the HTTP face of app.pipeline, and the one map from its errors to statuses.

The route takes the raw ``Request`` (the pipeline streams the body itself, with its limits) and
returns a ready ``Response``, so FastAPI neither parses the body nor re-validates the answer; the
query is a pydantic model like any FastAPI parameter, and the OpenAPI document comes from the
route's own declaration.
"""

import time
from collections.abc import Awaitable, Callable

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import request_response

from app.api.schemas import PredictionResponse, error_responses
from app.pipeline.answer import encode
from app.pipeline.batcher import check_ready
from app.pipeline.errors import (
    ImageTooLarge,
    MalformedBody,
    ModelNotReady,
    Overloaded,
    PipelineError,
    UnsupportedImage,
    UnsupportedMediaType,
    UploadTooLarge,
)
from app.pipeline.prepare import PreparedImage, prepare_all
from app.pipeline.uploads import read_uploads
from app.protocols.open_inference import ProtocolError, model_version

# Every answer with digits names the weights version that read them (app/versions.py).
VERSION_HEADER = "X-Model-Version"

# Each pipeline error's status; a subclass not listed takes its nearest listed base's.
STATUS_CODES: dict[type[PipelineError], int] = {
    PipelineError: 422,
    MalformedBody: 400,
    UploadTooLarge: 413,
    ImageTooLarge: 413,
    UnsupportedMediaType: 415,
    UnsupportedImage: 415,
    ModelNotReady: 503,
    Overloaded: 503,
}


def status_code_of(exc: PipelineError) -> int:
    return next(STATUS_CODES[cls] for cls in type(exc).__mro__ if cls in STATUS_CODES)


async def pipeline_error_answer(request: Request, exc: Exception) -> JSONResponse:
    """The app's exception handler for PipelineError: ``{"detail": message}`` with its status."""
    assert isinstance(exc, PipelineError)
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else None
    return JSONResponse({"detail": str(exc)}, status_code=status_code_of(exc), headers=headers)


PREDICT_ERRORS = error_responses(
    s400="Malformed multipart body.",
    s404="No such weights version (`version`); the answer lists the served ones.",
    s413="Too many images, an upload over the byte limit, or too many pixels.",
    s415="Not an image, or an unsupported Content-Type.",
    s422="No image, an empty or blank image, or an invalid query parameter.",
    s503="Model not ready, or overloaded (with Retry-After).",
)

REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "minItems": 1,
                        "description": "One part per image; answered in this order.",
                    }
                },
                "required": ["file"],
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


class PredictQuery(BaseModel):
    model_config = ConfigDict(frozen=True)

    top_k: int | None = Field(None, ge=1, le=10, description="Also list the k most likely digits.")
    return_input: bool = Field(False, description="Also return the 28x28 image the model read.")
    version: str | None = Field(
        None,
        description="The weights version to read with (GET /v2/models/s4net lists them); "
        "default: the primary, or the canary for its share of requests.",
    )


DEFAULT_QUERY = PredictQuery()
# The query as OpenAPI parameters, from the model's own schema (the route parses it itself).
QUERY_PARAMETERS = [
    {"name": name, "in": "query", "required": False, "schema": schema}
    | ({"description": schema["description"]} if "description" in schema else {})
    for name, schema in PredictQuery.model_json_schema()["properties"].items()
]


def parse_query(request: Request) -> PredictQuery:
    if not request.scope["query_string"]:
        return DEFAULT_QUERY
    try:
        return PredictQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("query", *error["loc"])} for error in exc.errors()]
        ) from None


class RawRoute(APIRoute):
    """A route documented in OpenAPI from its declaration like any APIRoute, whose endpoint takes
    the raw ``Request`` and returns a ``Response``: Starlette calls it directly, without FastAPI's
    dependency solving and response validation. The app's middleware and exception handlers
    apply as to any route."""

    def __init__(self, path: str, endpoint: Callable[[Request], Awaitable[Response]], **kwargs):
        super().__init__(path, endpoint, **kwargs)
        self.app = request_response(endpoint)


async def predict(request: Request) -> Response:
    """One image per `file` part of a multipart/form-data body (several for a batch, answered in
    order), or the raw image bytes as the body with an `image/*` Content-Type.

    PNG, JPEG, BMP, GIF (first frame), WebP, TIFF, in any colour mode. A 28x28 image with white
    ink on black (MNIST's form) is read as it is; anything else is brought to that form: a light
    background is inverted, the ink is cropped, scaled to 20 px and centred by its mass.
    """
    started = time.perf_counter()
    query = parse_query(request)
    state = request.app.state
    settings = state.settings
    try:
        served = state.versions.route(query.version, request.headers.get("x-request-id"))
    except ProtocolError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)
    check_ready(served.predictor)
    uploads = await read_uploads(request, settings.max_images, settings.max_image_bytes)
    images: list[PreparedImage] = []

    def prepare() -> list[PreparedImage]:  # on the forward thread
        images.extend(prepare_all(uploads, settings.max_pixels))
        return images

    result = await served.batcher.prepare_and_predict(len(uploads), prepare)
    device = str(served.predictor.device)
    answer = encode(uploads, images, result, device, query.top_k, query.return_input)
    digits = [p["digit"] for p in answer["predictions"]]
    state.metrics.record_predictions(digits)
    version = model_version(result.weights_sha256)
    state.metrics.record_version(version, "http", time.perf_counter() - started, digits)
    return Response(
        orjson.dumps(answer), media_type="application/json", headers={VERSION_HEADER: version}
    )


# Added to the app's own routes, first (app.main): include_router would wrap it in FastAPI's
# request handler again, and the hot route is best matched first.
route = RawRoute(
    "/predict",
    predict,
    methods=["POST"],
    response_model=PredictionResponse,
    summary="Read handwritten digits from images",
    tags=["predict"],
    responses=PREDICT_ERRORS,
    openapi_extra={"parameters": QUERY_PARAMETERS, "requestBody": REQUEST_BODY},
)

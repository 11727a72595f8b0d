"""The Open Inference Protocol's REST routes (/v2/...), so Triton and KServe clients work unchanged.

The protocol itself (parsing, checks, encoding) is app.protocols.open_inference's; this module moves
bytes and shares the service's parts: infer requests go through the same micro-batcher as
/predict, with the same limits, and errors answer ``{"error": "<what to fix>"}``: 400 for a bad
request, 404 for an unknown model or version, 503 (with Retry-After) while the model is not
ready or too many images wait. Readiness answers 200, or 400 when not ready, as the spec says
(4xx for false).
"""

import time
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.api.predict import RawRoute
from app.api.schemas import ProtocolErrorBody, error_responses
from app.pipeline.batcher import BatchResult, MicroBatcher, check_ready
from app.pipeline.errors import ImageRejected, ModelNotReady, Overloaded, PipelineError
from app.pipeline.prepare import prepare_all
from app.pipeline.uploads import PART_OVERHEAD_BYTES, Upload, read_body
from app.protocols.open_inference import (
    DIGIT,
    IMAGE_BYTES,
    IMAGES,
    MODEL_NAME,
    PROBABILITIES,
    InferRequest,
    ProtocolError,
    as_prepared_images,
    check_model,
    digits,
    model_metadata,
    model_version,
    server_metadata,
)
from app.protocols.open_inference_rest import (
    HEADER_LENGTH,
    decode_content,
    encode_infer_response,
    parse_infer_request,
)

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
MODEL = "/models/{model_name}"
VERSIONED = "/models/{model_name}/versions/{version}"
# A JSON header of this size (ids, names, parameters) besides the images themselves.
HEADER_ALLOWANCE_BYTES = PART_OVERHEAD_BYTES
NOT_READY = {400: {"description": "Not ready, with the reason."}}
# Path parameters' OpenAPI schemas (the handlers read request.path_params). Only `s4net` is
# served; another name is still a 404 (the protocol's answer for an unknown model).
PATH_PARAMETERS = {
    "model_name": {"type": "string", "enum": [MODEL_NAME], "description": "The model."},
    "version": {
        "type": "string",
        "description": "The served weights' version: the first 12 hex digits of their SHA-256.",
    },
}


def error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def named_versions(request: Request, model_name: str, version: str | None = None) -> list[str]:
    """The served versions the path names (all of them without a version; none while not
    ready); ProtocolError 404 for another model, or a version not served."""
    return check_model(model_name, version, request.app.state.versions.versions())


def max_body_bytes(max_images: int, max_image_bytes: int) -> int:
    """Room for max_images files of max_image_bytes each, base64-encoded in JSON, plus headers."""
    return HEADER_ALLOWANCE_BYTES + max_images * (max_image_bytes * 4 // 3 + 8)


def body_too_large(limit: int) -> ProtocolError:
    return ProtocolError(
        f"the request body is larger than {limit:,} bytes (S4_MAX_IMAGES images of "
        "S4_MAX_IMAGE_BYTES); send fewer or smaller images"
    )


@router.get("", summary="Server metadata")
async def server() -> dict:
    """The server's name, version and protocol extensions (`binary_tensor_data`)."""
    return server_metadata()


@router.get("/health/live", summary="Server live: the process answers")
async def live() -> dict:
    """200 whenever the process can answer, even without weights."""
    return {"live": True}


@router.get(
    "/health/ready", summary="Server ready: the model can answer (400 if not)", responses=NOT_READY
)
async def ready(request: Request) -> JSONResponse:
    """200 once the model can answer; 400 with the reason (e.g. bad weights) otherwise."""
    predictor = request.app.state.predictor
    if predictor.ready:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "error": predictor.error}, status_code=400)


async def metadata(request: Request):
    """`s4net`'s inputs (`images` UINT8 [-1, 28, 28] or `image_bytes` BYTES [-1]), outputs
    (`probabilities` FP32 [-1, 10], `digit` INT64 [-1]) and served versions (each the first 12
    hex digits of its weights' SHA-256; the primary first)."""
    try:
        versions = named_versions(request, **request.path_params)
    except ProtocolError as exc:
        return error(exc.status_code, str(exc))
    platform = request.app.state.predictor.runtime_name or "none"
    return model_metadata(versions, platform)


async def model_ready(request: Request):
    """200 when the model (and version, if given) is served and ready, 400 when not ready."""
    try:
        ready = bool(named_versions(request, **request.path_params))
    except ProtocolError as exc:
        return error(exc.status_code, str(exc))
    return JSONResponse({"name": MODEL_NAME, "ready": ready}, status_code=200 if ready else 400)


# Each pipeline error's status here; the protocol calls every bad request a 400.
PIPELINE_STATUS_CODES: dict[type[PipelineError], int] = {
    ModelNotReady: 503,
    Overloaded: 503,
}


def pipeline_error(exc: PipelineError) -> JSONResponse:
    status_code = PIPELINE_STATUS_CODES.get(type(exc), 400)
    message = f"{IMAGE_BYTES}: {exc}" if isinstance(exc, ImageRejected) else str(exc)
    return error(status_code, message, {"Retry-After": "1"} if status_code == 503 else None)


async def read_digits(
    infer_request: InferRequest, batcher: MicroBatcher, max_pixels: int
) -> BatchResult:
    """The request's images through the micro-batcher that /predict uses (and the gRPC service):
    `images` as they are, `image_bytes` prepared on the forward thread as /predict's uploads."""
    if infer_request.images is not None:
        return await batcher.predict(as_prepared_images(infer_request.images))
    uploads = [Upload(index, None, data) for index, data in enumerate(infer_request.encoded)]
    return await batcher.prepare_and_predict(
        len(uploads), partial(prepare_all, uploads, max_pixels)
    )


async def infer(request: Request) -> Response:
    """Read the digits in `images` (MNIST form, read as they are) or `image_bytes` (image files,
    prepared as /predict prepares uploads): JSON `data` or binary tensors
    (Inference-Header-Content-Length). Errors: 400 bad request, 404 unknown model or version,
    503 not ready or overloaded (Retry-After)."""
    started = time.perf_counter()
    state = request.app.state
    settings = state.settings
    try:
        check_model(request.path_params["model_name"], None, [])
        # The version the path names, else the primary or (for its share) the canary.
        served = state.versions.route(
            request.path_params.get("version"), request.headers.get("x-request-id")
        )
        check_ready(served.predictor)
        limit = max_body_bytes(settings.max_images, settings.max_image_bytes)
        raw = await read_body(request, limit, partial(body_too_large, limit))
        body = decode_content(raw, request.headers.get("content-encoding"), limit)
        infer_request = parse_infer_request(
            body, request.headers.get(HEADER_LENGTH), settings.max_images, settings.max_image_bytes
        )
        result = await read_digits(infer_request, served.batcher, settings.max_pixels)
    except ProtocolError as exc:
        return error(exc.status_code, str(exc))
    except PipelineError as exc:
        return pipeline_error(exc)
    version = model_version(result.weights_sha256)
    answer = encode_infer_response(infer_request, result.probabilities, version)
    answered = digits(result.probabilities).tolist()
    state.metrics.record_predictions(answered)
    state.metrics.record_version(version, "http", time.perf_counter() - started, answered)
    return Response(answer.body, media_type=answer.media_type, headers=answer.headers)


UNKNOWN_MODEL = "Unknown model or version."
INFER_ERRORS = error_responses(
    ProtocolErrorBody,
    s400="Wrong input name, datatype, shape or size; a body over the limits; an unreadable image.",
    s404=UNKNOWN_MODEL,
    s503="Model not ready, or overloaded (with Retry-After).",
)
MODEL_ERRORS = error_responses(ProtocolErrorBody, s404=UNKNOWN_MODEL)


def path_parameters(path: str) -> list[dict]:
    """OpenAPI's declaration of ``path``'s parameters: the handlers take only the Request."""
    return [
        {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in PATH_PARAMETERS.items()
        if "{" + name + "}" in path
    ]


for path in (MODEL, VERSIONED):
    parameters = {"parameters": path_parameters(path)}
    router.add_api_route(
        path,
        metadata,
        methods=["GET"],
        summary="Model metadata",
        responses=MODEL_ERRORS,
        openapi_extra=parameters,
    )
    router.add_api_route(
        path + "/ready",
        model_ready,
        methods=["GET"],
        summary="Model ready (400 if not)",
        responses=MODEL_ERRORS | NOT_READY,
        openapi_extra=parameters,
    )

# Raw routes (app.api.predict.RawRoute), added to the app's own routes by app.main as
# /predict is: FastAPI's request handler would cost more CPU than the rest of a small request.
TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "enum": [IMAGES, IMAGE_BYTES]},
        "datatype": {"type": "string", "enum": ["UINT8", "BYTES"]},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
    "required": ["name", "datatype", "shape"],
}
INFER_BODY = {
    "required": True,
    "description": "JSON, or JSON then binary tensors (the header's size in "
    "Inference-Header-Content-Length).",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": TENSOR, "minItems": 1, "maxItems": 1},
                    "outputs": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string", "enum": [PROBABILITIES, DIGIT]},
                                "parameters": {"type": "object"},
                            },
                            "required": ["name"],
                        },
                    },
                },
                "required": ["inputs"],
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
infer_routes = [
    RawRoute(
        router.prefix + path + "/infer",
        infer,
        methods=["POST"],
        summary="Inference",
        tags=router.tags,
        responses=INFER_ERRORS,
        openapi_extra={"parameters": path_parameters(path), "requestBody": INFER_BODY},
    )
    for path in (MODEL, VERSIONED)
]

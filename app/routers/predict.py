"""POST /predict: images in, digits out.

decode -> preprocess (app.preprocess) -> batch -> predict (app.batching, both on the forward
thread) -> unbatch -> encode (here). The event loop only moves bytes.

This is the service's one hot route, so it is a plain ASGI app (``PredictEndpoint``) that
app.main.Service hands /predict to, inside the app's middleware but not FastAPI's. Per request,
FastAPI's routing, dependency solving and response validation cost about as much CPU as
decoding the image and the forward pass together; skipping them let one worker answer about 1.5
times the requests per second at 32 connections. The query is still validated by a pydantic
model, the answer has the shape of ``PredictionResponse`` (the tests hold it to that schema),
and ``DOCUMENTATION`` describes the route in the OpenAPI schema and /docs.
"""

from typing import TYPE_CHECKING, Annotated

import numpy as np
import orjson
from fastapi import HTTPException, Query, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from app.batching import BatchResult, Overloaded
from app.preprocess import ImageRejected, PreparedImage, prepare_image
from app.schemas import PredictionResponse, errors_as_text
from app.uploads import Upload, read_uploads

if TYPE_CHECKING:  # the predictor's module imports torch; these routes need only its type
    from app.inference import Predictor

ERROR_RESPONSES = {
    status: {"description": description, "content": {"application/json": {"example": example}}}
    for status, description, example in [
        (400, "Malformed multipart body.", {"detail": "malformed multipart/form-data body"}),
        (
            413,
            "Too many images, an upload over the byte limit, or too many pixels.",
            {"detail": "image 1 (big.png) is larger than the 1,000,000-byte limit ..."},
        ),
        (415, "Not an image.", {"detail": "image 0 (notes.txt) is not an image ..."}),
        (422, "No image, an empty or blank image.", {"detail": "image 0 (empty.png) is blank ..."}),
        (503, "Model not ready, or overloaded (with Retry-After).", {"detail": "..."}),
    ]
}

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
    model_config = ConfigDict(frozen=True)  # DEFAULT_QUERY is shared by every request

    top_k: int | None = Field(None, ge=1, le=10, description="Also list the k most likely digits.")
    return_input: bool = Field(False, description="Also return the 28x28 image the model read.")


def prepare_images(uploads: list[Upload], max_pixels: int) -> list[PreparedImage]:
    """Decode and preprocess every upload (CPU work: the batcher runs it on its thread).

    The first image that cannot be read fails the request, with a message that names it.
    """
    prepared = []
    for upload in uploads:
        try:
            prepared.append(prepare_image(upload.data, max_pixels))
        except ImageRejected as exc:
            raise rejected(upload, exc) from None
    return prepared


def rejected(upload: Upload, exc: ImageRejected) -> HTTPException:
    """The answer for an upload that cannot be read: its status, naming the image."""
    return HTTPException(exc.status_code, f"{upload.label} {exc}")


def ensure_ready(predictor: "Predictor") -> None:
    """Raise the 503 every model route answers until the weights are loaded."""
    if not predictor.ready:
        raise HTTPException(503, f"the model is not ready: {predictor.error}")


def overloaded(exc: Overloaded) -> HTTPException:
    return HTTPException(503, str(exc), headers={"Retry-After": "1"})


def encode_prediction(
    upload: Upload, image: PreparedImage, probabilities: np.ndarray, query: PredictQuery
) -> dict:
    """One image's answer, shaped as ``Prediction``."""
    digit = int(probabilities.argmax())
    ranked = None
    if query.top_k:
        ranked = [
            {"digit": int(d), "probability": float(probabilities[d])}
            for d in np.argsort(-probabilities, kind="stable")[: query.top_k]
        ]
    return {
        "index": upload.index,
        "filename": upload.filename,
        "digit": digit,
        "probability": float(probabilities[digit]),
        "probabilities": probabilities.tolist(),
        "top_k": ranked,
        "input_size": image.input_size,
        "model_input": image.pixels.tolist() if query.return_input else None,
    }


def encode_answer(
    uploads: list[Upload], result: BatchResult, query: PredictQuery, device: str
) -> dict:
    """The whole answer, shaped as ``PredictionResponse``."""
    return {
        "predictions": [
            encode_prediction(upload, image, probabilities, query)
            for upload, image, probabilities in zip(
                uploads, result.images, result.probabilities, strict=True
            )
        ],
        "weights_sha256": result.weights_sha256,
        "device": device,
        "inference_ms": result.inference_ms,
    }


DEFAULT_QUERY = PredictQuery()


def parse_query(request: Request) -> PredictQuery:
    if not request.scope["query_string"]:
        return DEFAULT_QUERY  # the common case, with nothing to parse or validate
    try:
        return PredictQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise HTTPException(422, errors_as_text(exc.errors(), ("query",))) from None


class PredictEndpoint:
    """The ASGI app for /predict. It takes the service's parts from the app's state (filled in by
    its lifespan) on every request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.answer(request)
        except HTTPException as exc:
            response = JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        if request.method != "POST":
            raise HTTPException(405, "Method Not Allowed", headers={"Allow": "POST"})
        query = parse_query(request)
        state = request.app.state
        predictor, settings = state.predictor, state.settings
        ensure_ready(predictor)
        uploads = await read_uploads(request, settings.max_images, settings.max_image_bytes)
        try:
            # Decoding and preprocessing happen on the batcher's thread (prepare_images).
            result = await state.batcher.predict(uploads)
        except Overloaded as exc:
            raise overloaded(exc) from None
        answer = encode_answer(uploads, result, query, str(predictor.device))
        state.metrics.record_predictions(
            [prediction["digit"] for prediction in answer["predictions"]]
        )
        return Response(orjson.dumps(answer), media_type="application/json")


def describe_predict(
    query: Annotated[PredictQuery, Query()],
) -> PredictionResponse:
    """One image per `file` part of a multipart/form-data body (several for a batch, answered in
    order), or the raw image bytes as the body with an `image/*` Content-Type.

    PNG, JPEG, BMP, GIF (first frame), WebP, TIFF, in any colour mode. A 28x28 image with white
    ink on black (MNIST's form) is read as it is; anything else is brought to that form: a light
    background is inverted, the ink is cropped, scaled to 20 px and centred by its mass.
    """
    raise NotImplementedError("documentation only: PredictEndpoint serves /predict")


# What /docs and /openapi.json show for /predict. Never reached: app.main.Service sends /predict
# to PredictEndpoint.
DOCUMENTATION = APIRoute(
    "/predict",
    describe_predict,
    methods=["POST"],
    response_model=PredictionResponse,
    summary="Read handwritten digits from images",
    tags=["predict"],
    responses=ERROR_RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
)

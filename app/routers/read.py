"""POST /read: pictures of whole numbers in, each number and its digits (with boxes) out.

Same inputs, limits and errors as /predict (app.uploads.read_uploads, and /predict's own error
mapping). Per request: decode and segment every picture off the event loop
(app.segmentation.segment), send every candidate digit of every picture to the shared batcher in
one call, then keep each picture's most confident cuts (app.segmentation.choose).
"""

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.batching import Overloaded
from app.preprocess import ImageRejected, decode_gray
from app.routers.predict import ERROR_RESPONSES, REQUEST_BODY, ensure_ready, overloaded, rejected
from app.schemas import ReadResponse
from app.segmentation import NumberReading, Segmentation, choose, segment
from app.uploads import Upload, read_uploads

router = APIRouter(tags=["read"])


def segment_uploads(uploads: list[Upload], max_pixels: int) -> list[Segmentation]:
    """Decode and segment every upload (CPU work, run in a worker thread). The first picture
    that cannot be read fails the request, with a message that names it, as on /predict."""
    segmentations = []
    for upload in uploads:
        try:
            segmentations.append(segment(decode_gray(upload.data, max_pixels)))
        except ImageRejected as exc:
            raise rejected(upload, exc) from None
    return segmentations


def encode_number(upload: Upload, reading: NumberReading, size: tuple[int, int]) -> dict:
    """One picture's answer, shaped as ``NumberReading`` (app.schemas)."""
    return {
        "index": upload.index,
        "filename": upload.filename,
        "text": reading.text,
        "probability": reading.probability,
        "digits": [
            {
                "digit": digit.digit,
                "probability": digit.probability,
                "box": digit.box,
                "probabilities": digit.probabilities.tolist(),
            }
            for digit in reading.digits
        ],
        "input_size": size,
    }


@router.post(
    "/read",
    response_model=ReadResponse,
    summary="Read whole numbers (several digits) from pictures",
    responses=ERROR_RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def read_numbers(request: Request) -> Response:
    """One picture per `file` part of a multipart/form-data body (several are answered in
    order), or the raw picture as the body with an `image/*` Content-Type; the same formats,
    limits and errors as `/predict`.

    Each picture's digits are found (separate, in pieces, or touching), read left to right, and
    answered with the number, its probability (the product of its digits') and each digit's
    box in the picture's pixels and ten probabilities. A picture with no ink is a 422.
    """
    state = request.app.state
    settings = state.settings
    ensure_ready(state.predictor)
    uploads = await read_uploads(request, settings.max_images, settings.max_image_bytes)
    segmentations = await run_in_threadpool(segment_uploads, uploads, settings.max_pixels)
    candidates = [image for found in segmentations for image in found.candidates]
    if len(candidates) > settings.batch_queue_images:
        raise HTTPException(
            413,
            f"these pictures hold {len(candidates):,} candidate digits, more than the service "
            f"reads in one request ({settings.batch_queue_images:,}, S4_BATCH_QUEUE_IMAGES); "
            "send fewer pictures per request",
        )
    try:
        result = await state.batcher.predict_prepared(candidates)
    except Overloaded as exc:
        raise overloaded(exc) from None
    ends = np.cumsum([len(found.candidates) for found in segmentations])
    numbers = [
        encode_number(upload, choose(found, rows), found.input_size)
        for upload, found, rows in zip(
            uploads, segmentations, np.split(result.probabilities, ends[:-1]), strict=True
        )
    ]
    state.metrics.record_numbers([len(number["text"]) for number in numbers])
    answer = {
        "numbers": numbers,
        "weights_sha256": result.weights_sha256,
        "device": str(state.predictor.device),
        "inference_ms": result.inference_ms,
    }
    return Response(orjson.dumps(answer), media_type="application/json")

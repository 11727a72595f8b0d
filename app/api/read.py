"""POST /read: pictures of whole numbers in, each number and its digits (with boxes) out.

Same inputs, limits and errors as /predict: the same pipeline steps (app.read_uploads,
decode), its domain errors answered by the app's one handler for them. Per request: decode and
segment every picture in a worker thread (app.numbers.segmentation.segment_upload), send every
candidate digit of every picture to the shared batcher in one call, then choose each picture's
best path of candidates (app.numbers.reading.choose).
"""

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.api.predict import REQUEST_BODY
from app.api.schemas import ReadResponse, error_responses
from app.numbers.check import DigitCheck
from app.numbers.reading import choose, encode_number
from app.numbers.segmentation import Segmentation, segment_upload
from app.pipeline.batcher import check_ready, unbatch
from app.pipeline.errors import ModelNotReady, UploadTooLarge
from app.pipeline.uploads import Upload, read_uploads

READ_ERRORS = error_responses(
    s400="Malformed multipart body.",
    s413="Too many images, an upload over the byte limit, too many pixels, or more candidate "
    "digits than one request may hold.",
    s415="Not an image, or an unsupported Content-Type.",
    s422="No image, an empty or blank image, or more separate marks than a number has digits.",
    s503="Model not ready, or overloaded (with Retry-After).",
)

router = APIRouter(tags=["read"])


def segment_uploads(
    uploads: list[Upload], max_pixels: int, check: DigitCheck
) -> list[Segmentation]:
    """``segment_upload`` each upload, in order (CPU work, run in a worker thread); the first
    picture that cannot be read fails the request, with a message that names it."""
    return [segment_upload(upload, max_pixels, check) for upload in uploads]


def loaded_check(state) -> DigitCheck:
    """The digit check the app loaded at start-up; ModelNotReady (503), saying why, if none."""
    if not isinstance(state.digit_check, DigitCheck):
        raise ModelNotReady(f"the digit check is not loaded: {state.digit_check}")
    return state.digit_check


def check_candidate_count(count: int, limit: int) -> None:
    """UploadTooLarge unless ``count`` candidate digits fit in one request."""
    if count > limit:
        raise UploadTooLarge(
            f"these pictures hold {count:,} candidate digits, more than the service "
            f"reads in one request ({limit:,}, S4_BATCH_QUEUE_IMAGES); "
            "send fewer pictures per request"
        )


@router.post(
    "/read",
    response_model=ReadResponse,
    summary="Read whole numbers (several digits) from pictures",
    responses=READ_ERRORS,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def read_numbers(request: Request) -> Response:
    """One picture per `file` part of a multipart/form-data body (several are answered in
    order), or the raw picture as the body with an `image/*` Content-Type; the same formats,
    limits and errors as `/predict`.

    Each picture's digits are found (separate, in pieces, or touching), read left to right, and
    answered with the number, its calibrated probability, whether a person should review it
    (`needs_review`), and each digit's box in the picture's pixels and ten probabilities. A
    picture with no ink is a 422.
    """
    state = request.app.state
    settings = state.settings
    check_ready(state.predictor)
    check = loaded_check(state)
    uploads = await read_uploads(request, settings.max_images, settings.max_image_bytes)
    # In a worker thread, not on the forward thread (batcher.prepare_and_predict): the batcher
    # counts a job's images against its limits before preparing them, and how many candidate
    # digits a picture holds is known only once it is segmented.
    segmentations = await run_in_threadpool(segment_uploads, uploads, settings.max_pixels, check)
    candidates = [image for found in segmentations for image in found.candidates]
    check_candidate_count(len(candidates), settings.batch_queue_images)
    result = await state.batcher.predict(candidates)
    rows = unbatch(result.probabilities, [len(found.candidates) for found in segmentations])
    numbers = [
        encode_number(upload, choose(found, probabilities), found.input_size)
        for upload, found, probabilities in zip(uploads, segmentations, rows, strict=True)
    ]
    state.metrics.record_numbers([len(number["text"]) for number in numbers])
    answer = {
        "numbers": numbers,
        "weights_sha256": result.weights_sha256,
        "device": str(state.predictor.device),
        "inference_ms": result.inference_ms,
    }
    return Response(orjson.dumps(answer), media_type="application/json")

"""POST /predict: images in, digits out.

decode -> preprocess (app.preprocess, on a worker thread) -> batch -> predict (app.batching,
on the forward thread) -> unbatch -> encode (here). The event loop only moves bytes.
"""

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from app.batching import MicroBatcher, Overloaded
from app.dependencies import get_app_settings, get_batcher, get_metrics, get_predictor
from app.inference import Predictor
from app.metrics import Metrics
from app.preprocess import ImageRejected, PreparedImage, prepare_image
from app.schemas import DigitProbability, Prediction, PredictionResponse
from app.settings import Settings
from app.uploads import Upload, read_uploads

router = APIRouter(tags=["predict"])

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


def prepare_images(uploads: list[Upload], max_pixels: int) -> list[PreparedImage]:
    """Decode and preprocess every upload (CPU work: the batcher runs it on its thread).

    The first image that cannot be read fails the request, with a message that names it.
    """
    prepared = []
    for upload in uploads:
        try:
            prepared.append(prepare_image(upload.data, max_pixels))
        except ImageRejected as exc:
            raise HTTPException(exc.status_code, f"{upload.label} {exc}") from None
    return prepared


def encode_prediction(
    upload: Upload,
    image: PreparedImage,
    probabilities: np.ndarray,
    top_k: int | None,
    return_input: bool,
) -> Prediction:
    digit = int(probabilities.argmax())
    ranked = [
        DigitProbability(digit=int(d), probability=float(probabilities[d]))
        for d in np.argsort(-probabilities, kind="stable")
    ]
    return Prediction(
        index=upload.index,
        filename=upload.filename,
        digit=digit,
        probability=float(probabilities[digit]),
        probabilities=probabilities.tolist(),
        top_k=ranked[:top_k] if top_k else None,
        input_size=image.input_size,
        model_input=image.pixels.tolist() if return_input else None,
    )


@router.post(
    "/predict",
    response_model=PredictionResponse,
    summary="Read handwritten digits from images",
    responses=ERROR_RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def predict(
    request: Request,
    predictor: Annotated[Predictor, Depends(get_predictor)],
    batcher: Annotated[MicroBatcher, Depends(get_batcher)],
    metrics: Annotated[Metrics, Depends(get_metrics)],
    settings: Annotated[Settings, Depends(get_app_settings)],
    top_k: Annotated[
        int | None, Query(ge=1, le=10, description="Also list the k most likely digits.")
    ] = None,
    return_input: Annotated[
        bool, Query(description="Also return the 28x28 image the model read.")
    ] = False,
) -> PredictionResponse:
    """One image per `file` part of a multipart/form-data body (several for a batch, answered in
    order), or the raw image bytes as the body with an `image/*` Content-Type.

    PNG, JPEG, BMP, GIF (first frame), WebP, TIFF, in any colour mode. A 28x28 image with white
    ink on black (MNIST's form) is read as it is; anything else is brought to that form: a light
    background is inverted, the ink is cropped, scaled to 20 px and centred by its mass.
    """
    if not predictor.ready:
        raise HTTPException(503, f"the model is not ready: {predictor.error}")
    uploads = await read_uploads(request, settings.max_images, settings.max_image_bytes)
    try:
        # Decoding and preprocessing happen on the batcher's thread (prepare_images).
        result = await batcher.predict(uploads)
    except Overloaded as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
    predictions = [
        encode_prediction(upload, image, probabilities, top_k, return_input)
        for upload, image, probabilities in zip(
            uploads, result.images, result.probabilities, strict=True
        )
    ]
    metrics.record_predictions([prediction.digit for prediction in predictions])
    return PredictionResponse(
        predictions=predictions,
        weights_sha256=result.weights_sha256,
        device=str(predictor.device),
        inference_ms=result.inference_ms,
    )

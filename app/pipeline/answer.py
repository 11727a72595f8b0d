"""Encode: an upload, its prepared image and its probabilities -> the answer's JSON."""

from collections.abc import Sequence

import numpy as np

from app.pipeline.batcher import BatchResult
from app.pipeline.prepare import PreparedImage
from app.pipeline.uploads import Upload


def encode_prediction(
    upload: Upload,
    image: PreparedImage,
    probabilities: np.ndarray,
    top_k: int | None = None,
    return_input: bool = False,
) -> dict:
    """One image's answer, shaped as ``app.api.schemas.Prediction``."""
    digit = int(probabilities.argmax())
    ranked = None
    if top_k:
        ranked = [
            {"digit": int(d), "probability": float(probabilities[d])}
            for d in np.argsort(-probabilities, kind="stable")[:top_k]
        ]
    return {
        "index": upload.index,
        "filename": upload.filename,
        "digit": digit,
        "probability": float(probabilities[digit]),
        "probabilities": probabilities.tolist(),
        "top_k": ranked,
        "input_size": image.input_size,
        "model_input": image.pixels.tolist() if return_input else None,
    }


def encode(
    uploads: Sequence[Upload],
    images: Sequence[PreparedImage],
    result: BatchResult,
    device: str,
    top_k: int | None = None,
    return_input: bool = False,
) -> dict:
    """The whole answer, shaped as ``app.api.schemas.PredictionResponse``."""
    return {
        "predictions": [
            encode_prediction(upload, image, probabilities, top_k, return_input)
            for upload, image, probabilities in zip(
                uploads, images, result.probabilities, strict=True
            )
        ],
        "weights_sha256": result.weights_sha256,
        "device": device,
        "inference_ms": result.inference_ms,
    }

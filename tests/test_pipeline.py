"""The pipeline's own steps (app/pipeline/) that the other test files reach only through HTTP."""

import numpy as np
import pytest

from app.api.predict import status_code_of
from app.pipeline.answer import encode
from app.pipeline.batcher import BatchResult
from app.pipeline.errors import (
    BlankImage,
    ImageRejected,
    ImageTooLarge,
    MalformedBody,
    ModelNotReady,
    Overloaded,
    UnsupportedImage,
    UnsupportedMediaType,
    UploadRejected,
    UploadTooLarge,
)
from app.pipeline.prepare import PreparedImage, prepare
from app.pipeline.uploads import Upload


def test_prepare_names_the_upload_in_its_refusal():
    with pytest.raises(ImageRejected, match=r"^image 2 \(x\.png\) is empty"):
        prepare(Upload(2, "x.png", b""), 1_000)


def test_encode_answers_each_image_in_order_with_top_k_and_its_input():
    uploads = [Upload(0, "a.png", b""), Upload(1, None, b"")]
    pixels = np.zeros((28, 28), np.uint8)
    images = [PreparedImage((28, 28), pixels), PreparedImage((40, 30), pixels)]
    probabilities = np.eye(10, dtype=np.float32)[[3, 8]]
    result = BatchResult(probabilities, "sha", 1.5)
    answer = encode(uploads, images, result, "cpu", top_k=2, return_input=True)
    first, second = answer["predictions"]
    assert (first["digit"], second["digit"]) == (3, 8)
    assert first["top_k"][0] == {"digit": 3, "probability": 1.0} and len(first["top_k"]) == 2
    assert second["input_size"] == (40, 30) and second["filename"] is None
    assert np.array_equal(first["model_input"], pixels)
    assert answer["weights_sha256"] == "sha" and answer["inference_ms"] == 1.5


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MalformedBody, 400),
        (UploadTooLarge, 413),
        (ImageTooLarge, 413),
        (UnsupportedMediaType, 415),
        (UnsupportedImage, 415),
        (UploadRejected, 422),
        (ImageRejected, 422),
        (BlankImage, 422),
        (ModelNotReady, 503),
        (Overloaded, 503),
    ],
)
def test_each_pipeline_error_has_its_status(error, status):
    assert status_code_of(error("why")) == status

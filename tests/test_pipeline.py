"""The pipeline's own steps (app.pipeline) that the other test files reach only through HTTP."""

import numpy as np
import pytest

from app import pipeline
from app.routers.predict import status_code_of


def test_prepare_names_the_upload_in_its_refusal():
    with pytest.raises(pipeline.ImageRejected, match=r"^image 2 \(x\.png\) is empty"):
        pipeline.prepare(pipeline.Upload(2, "x.png", b""), 1_000)


def test_encode_answers_each_image_in_order_with_top_k_and_its_input():
    uploads = [pipeline.Upload(0, "a.png", b""), pipeline.Upload(1, None, b"")]
    pixels = np.zeros((28, 28), np.uint8)
    images = [pipeline.PreparedImage((28, 28), pixels), pipeline.PreparedImage((40, 30), pixels)]
    probabilities = np.eye(10, dtype=np.float32)[[3, 8]]
    result = pipeline.BatchResult(probabilities, "sha", 1.5)
    answer = pipeline.encode(uploads, images, result, "cpu", top_k=2, return_input=True)
    first, second = answer["predictions"]
    assert (first["digit"], second["digit"]) == (3, 8)
    assert first["top_k"][0] == {"digit": 3, "probability": 1.0} and len(first["top_k"]) == 2
    assert second["input_size"] == (40, 30) and second["filename"] is None
    assert np.array_equal(first["model_input"], pixels)
    assert answer["weights_sha256"] == "sha" and answer["inference_ms"] == 1.5


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (pipeline.MalformedBody, 400),
        (pipeline.UploadTooLarge, 413),
        (pipeline.ImageTooLarge, 413),
        (pipeline.UnsupportedMediaType, 415),
        (pipeline.UnsupportedImage, 415),
        (pipeline.UploadRejected, 422),
        (pipeline.ImageRejected, 422),
        (pipeline.BlankImage, 422),
        (pipeline.ModelNotReady, 503),
        (pipeline.Overloaded, 503),
    ],
)
def test_each_pipeline_error_has_its_status(error, status):
    assert status_code_of(error("why")) == status

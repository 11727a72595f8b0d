"""POST /predict through the whole app (TestClient): answers, accuracy, and every error case."""

import json
from io import BytesIO

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.api.schemas import PredictionResponse
from app.inference import Predictor
from app.main import create_app
from app.settings import Settings

SAMPLE = 200  # MNIST test digits re-drawn per transformation in the rendering tests


@pytest.fixture(scope="module")
def reading_client(reading_weights):
    with TestClient(create_app(Settings(weights=reading_weights, cpu_threads=1))) as client:
        yield client


@pytest.fixture
def untrained_client(make_client, untrained_weights):
    with make_client(weights=untrained_weights, cpu_threads=1) as client:
        yield client


def multipart(*images: bytes, field: str = "file") -> list:
    return [(field, (f"digit{i}.png", data, "image/png")) for i, data in enumerate(images)]


def tensor_path(weights, images: np.ndarray) -> np.ndarray:
    """Probabilities straight from the Predictor for uint8 images [N, 28, 28]: no HTTP, no PNG."""
    predictor = Predictor(Settings(weights=weights, cpu_threads=1))
    predictor.load()
    return predictor.forward(images).probabilities


# Answers -------------------------------------------------------------------------------------


def test_one_png_gets_one_full_answer(
    reading_client, reading_weights, mnist_test_set, encode_image
):
    images, labels = mnist_test_set
    response = reading_client.post("/predict", files=multipart(encode_image(images[0])))
    assert response.status_code == 200
    body = response.json()
    card = json.loads(reading_weights.with_suffix(".json").read_text())
    assert body["weights_sha256"] == card["weights_sha256"]
    assert body["device"] == "cpu" and body["inference_ms"] > 0
    (prediction,) = body["predictions"]
    assert prediction["index"] == 0 and prediction["filename"] == "digit0.png"
    assert prediction["digit"] == labels[0]
    assert prediction["probability"] == max(prediction["probabilities"])
    assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert prediction["input_size"] == [28, 28]
    assert prediction["top_k"] is None and prediction["model_input"] is None


@pytest.mark.parametrize("field", ["file", "files"])
def test_a_batch_is_answered_in_order(reading_client, mnist_test_set, encode_image, field):
    images, labels = mnist_test_set
    uploads = multipart(*(encode_image(pixels) for pixels in images[:12]), field=field)
    predictions = reading_client.post("/predict", files=uploads).json()["predictions"]
    assert [p["index"] for p in predictions] == list(range(12))
    assert [p["filename"] for p in predictions] == [f"digit{i}.png" for i in range(12)]
    assert [p["digit"] for p in predictions] == labels[:12].tolist()


@pytest.mark.parametrize(
    "content_type", ["image/png", "application/octet-stream", "application/x-www-form-urlencoded"]
)
def test_raw_image_body(reading_client, mnist_test_set, encode_image, content_type):
    """`curl --data-binary @digit.png` sends form-urlencoded unless -H says otherwise."""
    images, labels = mnist_test_set
    response = reading_client.post(
        "/predict", content=encode_image(images[1]), headers={"content-type": content_type}
    )
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert prediction["digit"] == labels[1] and prediction["filename"] is None


def test_top_k_lists_the_most_likely_digits(reading_client, mnist_test_set, encode_image):
    response = reading_client.post(
        "/predict", params={"top_k": 3}, files=multipart(encode_image(mnist_test_set[0][2]))
    )
    (prediction,) = response.json()["predictions"]
    top = prediction["top_k"]
    assert len(top) == 3 and top[0]["digit"] == prediction["digit"]
    assert [entry["probability"] for entry in top] == sorted(
        prediction["probabilities"], reverse=True
    )[:3]


def test_return_input_shows_what_the_model_read(reading_client, mnist_test_set, encode_image):
    pixels = mnist_test_set[0][3]
    big_black_on_white = Image.fromarray(255 - pixels).resize((280, 280))
    response = reading_client.post(
        "/predict",
        params={"return_input": "true"},
        files=multipart(encode_image(pixels), encode_image(big_black_on_white)),
    )
    exact, rebuilt = (p["model_input"] for p in response.json()["predictions"])
    assert np.array_equal(np.array(exact), pixels)  # MNIST form goes in unchanged
    assert np.array(rebuilt).shape == (28, 28) and np.array(rebuilt).max() == 255


@pytest.mark.parametrize("params", [{}, {"top_k": 10, "return_input": "1"}])
def test_answers_have_the_documented_shape(reading_client, mnist_test_set, encode_image, params):
    """/predict encodes its answers itself (not through FastAPI): hold them to the schema /docs
    publishes, strictly, so a field can't go missing or change type unnoticed."""
    uploads = multipart(*(encode_image(pixels) for pixels in mnist_test_set[0][:3]))
    response = reading_client.post("/predict", params=params, files=uploads)
    assert response.headers["content-type"] == "application/json"
    answer = PredictionResponse.model_validate_json(response.content, strict=True)
    assert answer.model_dump(mode="json") == response.json()
    documented = reading_client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    assert {parameter["name"] for parameter in documented["parameters"]} == {
        "top_k",
        "return_input",
        "version",
    }
    assert set(documented["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
    ok = documented["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PredictionResponse")


@pytest.mark.slow
def test_mnist_test_set_as_png_agrees_with_tensor_path_and_scores(
    reading_client, reading_weights, mnist_test_set, encode_image
):
    """All 10,000 test images, uploaded as PNG in batches of 64: the same predictions as the
    tensor path, and at least 99.4% correct (the S4 bar) with the committed weights."""
    images, labels = mnist_test_set
    expected = tensor_path(reading_weights, images)
    received = []
    for start in range(0, len(images), 64):
        uploads = multipart(*(encode_image(pixels) for pixels in images[start : start + 64]))
        response = reading_client.post("/predict", files=uploads)
        assert response.status_code == 200, response.text
        received += [p["probabilities"] for p in response.json()["predictions"]]
    received = np.array(received)
    assert np.array_equal(received.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(received, expected, atol=1e-5)
    assert (received.argmax(axis=1) == labels).mean() >= 0.994


def redrawn(pixels: np.ndarray, how: str) -> tuple[bytes, str]:
    """An MNIST digit re-drawn as a different kind of picture: (file bytes, media type)."""
    ink = Image.fromarray(pixels).resize((280, 280), Image.Resampling.BILINEAR)  # 10x
    paper = Image.new("L", (400, 360), 255)
    paper.paste(Image.eval(ink, lambda value: 255 - value), (70, 20))  # black on white, off-centre
    buffer = BytesIO()
    if how == "black-on-white-png":
        paper.save(buffer, "PNG")
    elif how == "grey-paper-jpeg":
        Image.eval(paper, lambda value: 60 + value * 150 // 255).save(buffer, "JPEG", quality=80)
    elif how == "rgba-transparent-canvas":
        canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 0))  # a browser canvas
        canvas.putalpha(ink)  # black strokes where the digit is
        canvas.save(buffer, "PNG")
    elif how == "white-on-black-webp":
        ink.save(buffer, "WEBP", quality=90)
    return buffer.getvalue(), "image/" + how.rsplit("-", 1)[1]


@pytest.mark.parametrize(
    "how",
    ["black-on-white-png", "grey-paper-jpeg", "rgba-transparent-canvas", "white-on-black-webp"],
)
def test_redrawn_digits_are_read_correctly(reading_client, mnist_test_set, how):
    images, labels = mnist_test_set
    uploads = [redrawn(pixels, how) for pixels in images[:SAMPLE]]
    digits = []
    for start in range(0, SAMPLE, 50):
        files = [("file", (f"{i}", data, kind)) for i, (data, kind) in enumerate(uploads)]
        response = reading_client.post("/predict", files=files[start : start + 50])
        assert response.status_code == 200, response.text
        digits += [p["digit"] for p in response.json()["predictions"]]
    assert (np.array(digits) == labels[:SAMPLE]).mean() >= 0.97


# Errors: each names the image and what to fix, never 500 ------------------------------------


def detail(response) -> str:
    assert isinstance(response.json()["detail"], str)
    return response.json()["detail"]


def test_no_body_is_422(untrained_client):
    response = untrained_client.post("/predict")
    assert response.status_code == 422 and "no image" in detail(response)


def test_multipart_without_images_is_422(untrained_client):
    response = untrained_client.post(
        "/predict",
        content=b"--b\r\n--b--\r\n",
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code in (400, 422), response.text


def test_wrong_field_name_is_422(untrained_client, encode_image):
    response = untrained_client.post(
        "/predict", files=multipart(encode_image(np.zeros((28, 28), np.uint8)), field="image")
    )
    assert response.status_code == 422 and "`file`" in detail(response)


def test_empty_file_is_422_and_named(untrained_client):
    response = untrained_client.post("/predict", files=[("file", ("empty.png", b"", "image/png"))])
    assert response.status_code == 422
    assert detail(response).startswith("image 0 (empty.png) is empty")


def test_not_an_image_is_415(untrained_client):
    response = untrained_client.post(
        "/predict", files=[("file", ("notes.txt", b"shopping list", "text/plain"))]
    )
    assert response.status_code == 415 and "image 0 (notes.txt)" in detail(response)


def test_unsupported_content_type_is_415(untrained_client):
    response = untrained_client.post("/predict", json={"image": "base64..."})
    assert response.status_code == 415 and "multipart/form-data" in detail(response)


def test_one_bad_image_in_a_batch_is_named(untrained_client, mnist_test_set, encode_image):
    good = encode_image(mnist_test_set[0][0])
    files = [*multipart(good, good), ("file", ("broken.png", good[:-30], "image/png"))]
    response = untrained_client.post("/predict", files=files)
    assert response.status_code == 422
    assert detail(response).startswith("image 2 (broken.png) could not be decoded")


def test_blank_image_is_422(untrained_client, encode_image):
    response = untrained_client.post(
        "/predict", files=multipart(encode_image(np.full((100, 100), 255, np.uint8)))
    )
    assert response.status_code == 422 and "blank" in detail(response)


def test_too_many_images_is_413(make_client, untrained_weights, encode_image):
    with make_client(weights=untrained_weights, max_images=2) as client:
        image = encode_image(np.zeros((28, 28), np.uint8))
        response = client.post("/predict", files=multipart(image, image, image))
    assert response.status_code == 413 and "S4_MAX_IMAGES" in detail(response)


def test_oversized_image_is_413(make_client, untrained_weights):
    with make_client(weights=untrained_weights, max_image_bytes=1000) as client:
        files = [("file", ("ok.png", b"x" * 10, "image/png")), ("file", ("big.png", b"x" * 1001))]
        multipart_response = client.post("/predict", files=files)
        raw_response = client.post("/predict", content=b"x" * 1001)
    assert multipart_response.status_code == 413
    assert detail(multipart_response).startswith("image 1 (big.png) is larger than the 1,000-byte")
    assert raw_response.status_code == 413


def test_oversized_multipart_body_is_413_from_its_declared_length(make_client, untrained_weights):
    with make_client(weights=untrained_weights, max_images=1, max_image_bytes=1000) as client:
        response = client.post("/predict", files=multipart(b"x" * 50_000))
    assert response.status_code == 413 and "S4_MAX_IMAGES" in detail(response)


def test_too_many_pixels_is_413(make_client, untrained_weights, encode_image):
    with make_client(weights=untrained_weights, max_pixels=10_000) as client:
        response = client.post(
            "/predict", files=multipart(encode_image(Image.new("L", (101, 100))))
        )
    assert response.status_code == 413 and "S4_MAX_PIXELS" in detail(response)


def test_malformed_multipart_is_400(untrained_client):
    response = untrained_client.post(
        "/predict",
        content=b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nabc",  # no end
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 400 and "closing boundary" in detail(response)


def test_query_errors_are_a_readable_422(untrained_client):
    response = untrained_client.post("/predict", params={"top_k": 11}, content=b"x")
    assert response.status_code == 422
    assert detail(response) == "query top_k: Input should be less than or equal to 10"
    response = untrained_client.post("/predict", params={"return_input": "perhaps"}, content=b"x")
    assert response.status_code == 422 and "return_input" in detail(response)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_predict_takes_only_post(untrained_client, method):
    response = untrained_client.request(method, "/predict")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_not_ready_is_503(make_client, tmp_path):
    with make_client(weights=tmp_path / "missing.safetensors") as client:
        response = client.post("/predict", content=b"x")
    assert response.status_code == 503 and "does not exist" in detail(response)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=2000),
    content_type=st.sampled_from(
        ["image/png", "multipart/form-data; boundary=x", "multipart/form-data", "text/plain", ""]
    ),
)
def test_no_body_makes_a_server_error(untrained_client, body, content_type):
    response = untrained_client.post(
        "/predict", content=body, headers={"content-type": content_type}
    )
    assert 400 <= response.status_code < 500
    detail(response)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    mode=st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]),
    format=st.sampled_from(["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_image_makes_a_server_error(untrained_client, width, height, mode, format, seed):
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = BytesIO()
    try:
        Image.fromarray(noise).convert(mode).save(buffer, format)
    except (OSError, ValueError, KeyError):
        assume(False)  # Pillow cannot write this mode in this format
    response = untrained_client.post("/predict", files=multipart(buffer.getvalue()))
    assert response.status_code in (200, 422), response.text

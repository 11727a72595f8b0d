"""POST /read through the app (TestClient): numbers of MNIST test digits; errors as /predict.

The numbers are composed by bench/numbers.py from MNIST *test* digits; the service reads them with
the committed weights.
"""

import json
import logging
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.schemas import ReadResponse
from app.main import create_app
from app.numbers.reading import REVIEW_BELOW
from app.settings import Settings
from training.numbers import compose


@pytest.fixture(scope="module")
def client(reading_weights):
    with TestClient(create_app(Settings(weights=reading_weights, cpu_threads=1))) as client:
        yield client


@pytest.fixture(scope="module")
def numbers(mnist_test_set):
    """Five 4-digit numbers of MNIST test digits with comfortable gaps: (picture, text).

    A fixed draw the committed weights read right (seeds 3 and 4 each hold a misread digit:
    bench/numbers.py measures the rate); these tests check the route, not the accuracy."""
    images, labels = mnist_test_set
    rng = np.random.default_rng(5)
    samples = [compose(images, labels, 4, "wide", rng) for _ in range(5)]
    return [(sample.picture, sample.text) for sample in samples]


def files(*pictures: bytes, names=None) -> list:
    names = names or [f"number{i}.png" for i in range(len(pictures))]
    return [("file", (name, data, "image/png")) for name, data in zip(names, pictures, strict=True)]


def test_numbers_are_read_with_digits_boxes_and_probabilities(client, numbers, encode_image):
    response = client.post("/read", files=files(*(encode_image(p) for p, _ in numbers)))
    assert response.status_code == 200, response.text
    answer = ReadResponse.model_validate(response.json())  # the documented shape
    assert [number.text for number in answer.numbers] == [text for _, text in numbers]
    for index, (number, (picture, _)) in enumerate(zip(answer.numbers, numbers, strict=True)):
        assert (number.index, number.filename) == (index, f"number{index}.png")
        assert number.input_size == (picture.shape[1], picture.shape[0])
        assert 0.0 <= number.probability <= 1.0
        assert number.needs_review == (number.probability < REVIEW_BELOW)
        lefts = [digit.box[0] for digit in number.digits]
        assert lefts == sorted(lefts)
        for digit in number.digits:
            assert digit.probability == max(digit.probabilities)
            assert digit.probabilities.index(digit.probability) == digit.digit
            assert sum(digit.probabilities) == pytest.approx(1, abs=1e-4)


def test_boxes_are_in_the_uploaded_pictures_pixels(client, numbers, encode_image):
    picture, text = numbers[0]
    large = Image.fromarray(picture).resize((picture.shape[1] * 3, picture.shape[0] * 3))
    small_answer = client.post("/read", content=encode_image(picture)).json()["numbers"][0]
    large_answer = client.post(
        "/read", content=encode_image(large), headers={"content-type": "image/png"}
    ).json()["numbers"][0]
    assert small_answer["text"] == large_answer["text"] == text
    for small, large_digit in zip(small_answer["digits"], large_answer["digits"], strict=True):
        assert np.allclose(np.array(large_digit["box"]), 3 * np.array(small["box"]), atol=4)


def test_all_digits_of_a_request_share_one_forward_pass(client, numbers, encode_image):
    def forward_passes() -> float:
        metrics = client.get("/metrics").text
        return float(re.search(r"^s4_forward_batch_images_count (\S+)$", metrics, re.M)[1])

    before = forward_passes()
    response = client.post("/read", files=files(*(encode_image(p) for p, _ in numbers)))
    assert response.status_code == 200
    assert forward_passes() == before + 1
    metrics = client.get("/metrics").text
    assert re.search(
        r'^s4_http_requests_total\{method="POST",path="/read",status="200"\} ', metrics, re.M
    )
    assert re.search(r"^s4_numbers_read_total \d", metrics, re.M)


def test_a_number_on_paper_reads_as_on_black(client, numbers, encode_image):
    picture, text = numbers[1]
    for variant in (picture, 255 - picture):
        assert (
            client.post("/read", files=files(encode_image(variant))).json()["numbers"][0]["text"]
            == text
        )


# Errors: the same status and the same words as /predict ------------------------------------


def both(client: TestClient, **request) -> tuple:
    """/predict's and /read's answers to the same request."""
    return client.post("/predict", **request), client.post("/read", **request)


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {},  # no body
        {"files": [("file", ("empty.png", b"", "image/png"))]},
        {"files": [("file", ("notes.txt", b"shopping list", "text/plain"))]},
        {"json": {"image": "base64..."}},
        {"files": [("image", ("digit.png", b"x", "image/png"))]},
        {
            "content": b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nabc",
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
    ],
    ids=["no-body", "empty-file", "not-an-image", "json", "wrong-field", "malformed-multipart"],
)
def test_errors_are_predicts(client, request_kwargs):
    predict, read = both(client, **request_kwargs)
    assert 400 <= read.status_code < 500
    assert (read.status_code, read.json()) == (predict.status_code, predict.json())


def test_a_blank_picture_is_predicts_422(client, encode_image):
    blank = encode_image(np.full((100, 400), 255, np.uint8))
    predict, read = both(client, files=files(blank, names=["blank.png"]))
    assert read.status_code == 422 and "blank" in read.json()["detail"]
    assert read.json() == predict.json()


def test_limits_are_predicts(make_client, untrained_weights, encode_image):
    image = encode_image(np.zeros((28, 28), np.uint8))
    with make_client(weights=untrained_weights, max_images=2, max_pixels=500) as client:
        for request in (
            {"files": files(image, image, image)},
            {"files": files(encode_image(Image.new("L", (30, 30))))},
        ):
            predict, read = both(client, **request)
            assert read.status_code == 413
            assert read.json() == predict.json()


def test_not_ready_is_503(make_client, tmp_path):
    with make_client(weights=tmp_path / "missing.safetensors") as client:
        predict, read = both(client, content=b"x")
    assert read.status_code == 503 and read.json() == predict.json()


def test_a_picture_of_many_marks_is_refused_with_what_to_send(client, encode_image):
    noise = np.full((200, 400), 255, np.uint8)
    noise[10::12, 10::12] = 0  # a grid of 550 dots, all the same size
    response = client.post("/read", files=files(encode_image(noise), names=["dots.png"]))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("image 0 (dots.png) holds")


def test_read_is_documented(client):
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/read"]["post"]
    assert "multipart/form-data" in operation["requestBody"]["content"]
    assert {"400", "413", "415", "422", "503"} <= set(operation["responses"])
    assert "example" in schema["components"]["schemas"]["ReadResponse"]


def test_each_read_is_logged_as_one_json_line(client, numbers, encode_image, caplog):
    with caplog.at_level(logging.INFO, logger="s4.requests"):
        client.post("/read", files=files(encode_image(numbers[0][0])))
    lines = [json.loads(record.getMessage()) for record in caplog.records]
    assert [(line["path"], line["status"]) for line in lines] == [("/read", 200)]

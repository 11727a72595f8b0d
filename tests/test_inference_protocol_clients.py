"""Triton's own HTTP client (tritonclient[http]) against a real uvicorn on loopback.

Its digits must equal /predict's: all 10,000 MNIST test images through `images` (binary and
JSON tensors, every other request each), and a few hundred encoded files through `image_bytes`.
"""

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from bench.servers import running_server

BATCH = 64  # S4_MAX_IMAGES' default: the most images one request may carry


@pytest.fixture(scope="module")
def server(reading_weights):
    env = {"S4_WEIGHTS": str(reading_weights), "S4_CPU_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    with running_server(env) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def predict_digits(server, files: list[bytes]) -> list[int]:
    digits = []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for start in range(0, len(files), BATCH):
            batch = files[start : start + BATCH]
            parts = [("file", (f"{start + i}.png", f, "image/png")) for i, f in enumerate(batch)]
            response = http.post("/predict", files=parts)
            assert response.status_code == 200, response.text
            digits += [prediction["digit"] for prediction in response.json()["predictions"]]
    return digits


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("s4net")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("s4net")
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
        ("images", "UINT8", [-1, 28, 28]),
        ("image_bytes", "BYTES", [-1]),
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("probabilities", "FP32", [-1, 10]),
        ("digit", "INT64", [-1]),
    ]
    (version,) = metadata["versions"]
    assert client.is_model_ready("s4net", version)
    assert not client.is_model_ready("s4net", "0")
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("mnist")
    assert unknown.value.status() == "404"


def test_all_mnist_test_images_get_predicts_digits(client, server, mnist_test_set, encode_image):
    images, labels = mnist_test_set
    expected = predict_digits(server, [encode_image(image) for image in images])
    version = client.get_model_metadata("s4net")["versions"][0]
    digits, probabilities = [], []
    for number, start in enumerate(range(0, len(images), BATCH)):
        batch = images[start : start + BATCH]
        tensor = triton.InferInput("images", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch, binary_data=number % 2 == 0)
        result = client.infer("s4net", [tensor], model_version=version if number % 3 else "")
        digits += result.as_numpy("digit").tolist()
        probabilities.append(result.as_numpy("probabilities"))
    assert digits == expected
    probabilities = np.concatenate(probabilities)
    assert probabilities.dtype == np.float32 and probabilities.shape == (10_000, 10)
    assert (probabilities.argmax(axis=1) == np.array(digits)).all()
    assert (np.array(digits) == labels).mean() > 0.99


def redrawn_files(images: np.ndarray, encode_image) -> list[bytes]:
    """Each image as a user might send it: black on white, larger, in PNG, JPEG or WebP."""
    files = []
    for index, pixels in enumerate(images):
        page = Image.fromarray(255 - pixels).resize((84, 84), Image.Resampling.BILINEAR)
        file_format = ("PNG", "JPEG", "WEBP")[index % 3]
        files.append(encode_image(page.convert("RGB") if index % 2 else page, file_format))
    return files


def test_encoded_files_as_bytes_get_predicts_digits(client, server, mnist_test_set, encode_image):
    files = redrawn_files(mnist_test_set[0][:300], encode_image)
    expected = predict_digits(server, files)
    digits = []
    for start in range(0, len(files), 50):
        batch = np.array(files[start : start + 50], dtype=np.object_)
        tensor = triton.InferInput("image_bytes", [len(batch)], "BYTES")
        tensor.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput("digit", binary_data=start % 100 == 0)]
        result = client.infer(
            "s4net",
            [tensor],
            outputs=outputs,
            request_id=f"r{start}",
            request_compression_algorithm=(None, "gzip", "deflate")[start // 50 % 3],
        )
        assert result.as_numpy("probabilities") is None
        assert result.get_response()["id"] == f"r{start}"
        digits += result.as_numpy("digit").tolist()
    assert digits == expected


def test_bad_requests_are_400_with_the_reason(client, encode_image):
    wrong_shape = triton.InferInput("images", [1, 784], "UINT8")
    wrong_shape.set_data_from_numpy(np.zeros((1, 784), np.uint8))
    unreadable = triton.InferInput("image_bytes", [1], "BYTES")
    unreadable.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    wrong_type = triton.InferInput("images", [1, 28, 28], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
    for tensor, reason in [
        (wrong_shape, "must be [-1, 28, 28]"),
        (unreadable, "image_bytes: image 0 is not an image"),
        (wrong_type, "must be UINT8"),
    ]:
        with pytest.raises(InferenceServerException) as refused:
            client.infer("s4net", [tensor])
        assert refused.value.status() == "400" and reason in refused.value.message()

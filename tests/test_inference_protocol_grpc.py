"""Triton's own gRPC client (tritonclient[grpc]) against a real `python -m app` on loopback.

Its digits must equal /predict's: all 10,000 MNIST test images through `images` (raw contents,
as tritonclient sends them), and a few hundred encoded files through `image_bytes`. Errors come
back with the protocol's gRPC status codes and say what to fix.
"""

import sys

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from bench.servers import free_port, running_server
from tests.test_inference_protocol_clients import BATCH, predict_digits, redrawn_files

MAX_IMAGE_BYTES = 20_000  # small, so that a message over the gRPC size limit is cheap to send


@pytest.fixture(scope="module")
def server(reading_weights):
    env = {
        "S4_WEIGHTS": str(reading_weights),
        "S4_GRPC": "true",
        "S4_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "WEB_CONCURRENCY": "2",  # both workers on the one gRPC port (SO_REUSEPORT)
        "S4_CPU_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    with running_server(env, (sys.executable, "-m", "app")) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(server.grpc_address)
    yield client
    client.close()


def images_input(pixels: np.ndarray) -> triton.InferInput:
    tensor = triton.InferInput("images", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("s4net")
    assert "binary_tensor_data" in client.get_server_metadata(as_json=True)["extensions"]
    metadata = client.get_model_metadata("s4net", as_json=True)
    assert [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]] == [
        ("images", "UINT8", ["-1", "28", "28"]),
        ("image_bytes", "BYTES", ["-1"]),
    ]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("probabilities", "FP32", ["-1", "10"]),
        ("digit", "INT64", ["-1"]),
    ]
    (version,) = metadata["versions"]
    assert client.is_model_ready("s4net", version)
    assert not client.is_model_ready("s4net", "0")
    for call in (
        lambda: client.get_model_metadata("mnist"),
        lambda: client.get_model_metadata("s4net", "0"),
        lambda: client.is_model_ready("mnist"),
    ):
        with pytest.raises(InferenceServerException) as unknown:
            call()
        assert unknown.value.status() == "StatusCode.NOT_FOUND"


def test_all_mnist_test_images_get_predicts_digits(client, server, mnist_test_set, encode_image):
    images, labels = mnist_test_set
    expected = predict_digits(server, [encode_image(image) for image in images])
    version = client.get_model_metadata("s4net").versions[0]
    digits, probabilities = [], []
    for number, start in enumerate(range(0, len(images), BATCH)):
        result = client.infer(
            "s4net",
            [images_input(images[start : start + BATCH])],
            model_version=version if number % 3 else "",
            request_id=f"r{number}",
        )
        response = result.get_response()
        assert (response.id, response.model_version) == (f"r{number}", version)
        digits += result.as_numpy("digit").tolist()
        probabilities.append(result.as_numpy("probabilities"))
    assert digits == expected
    probabilities = np.concatenate(probabilities)
    assert probabilities.dtype == np.float32 and probabilities.shape == (10_000, 10)
    assert (probabilities.argmax(axis=1) == np.array(digits)).all()
    assert (np.array(digits) == labels).mean() > 0.99


def test_encoded_files_as_bytes_get_predicts_digits(client, server, mnist_test_set, encode_image):
    files = redrawn_files(mnist_test_set[0][:300], encode_image)
    expected = predict_digits(server, files)
    digits = []
    for start in range(0, len(files), 50):
        batch = np.array(files[start : start + 50], dtype=np.object_)
        tensor = triton.InferInput("image_bytes", [len(batch)], "BYTES")
        tensor.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput("digit")]
        result = client.infer("s4net", [tensor], outputs=outputs)
        assert result.as_numpy("probabilities") is None
        digits += result.as_numpy("digit").tolist()
    assert digits == expected


def test_bad_requests_are_invalid_argument_with_the_reason(client):
    wrong_shape = triton.InferInput("images", [1, 784], "UINT8")
    wrong_shape.set_data_from_numpy(np.zeros((1, 784), np.uint8))
    unreadable = triton.InferInput("image_bytes", [1], "BYTES")
    unreadable.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    wrong_type = triton.InferInput("images", [1, 28, 28], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 28, 28), np.float32))
    too_many = images_input(np.zeros((BATCH + 1, 28, 28), np.uint8))
    too_large = triton.InferInput("image_bytes", [1], "BYTES")
    too_large.set_data_from_numpy(np.array([b"x" * (MAX_IMAGE_BYTES + 1)], dtype=np.object_))
    for tensor, reason in [
        (wrong_shape, "must be [-1, 28, 28]"),
        (unreadable, "image_bytes: image 0 is not an image"),
        (wrong_type, "must be UINT8"),
        (too_many, "more than 64 (S4_MAX_IMAGES)"),
        (too_large, "S4_MAX_IMAGE_BYTES"),
    ]:
        with pytest.raises(InferenceServerException) as refused:
            client.infer("s4net", [tensor])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert reason in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("s4net", [images_input(np.zeros((1, 28, 28), np.uint8))], model_version="0")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"


def test_a_message_over_the_size_limit_is_resource_exhausted(client):
    # 64 images of S4_MAX_IMAGE_BYTES are the most a request may hold: one 2 MB file is past it.
    huge = triton.InferInput("image_bytes", [1], "BYTES")
    huge.set_data_from_numpy(np.array([b"x" * 2_000_000], dtype=np.object_))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("s4net", [huge])
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_a_model_that_is_not_ready_is_unavailable(make_client, tmp_path):
    """In process: the app's lifespan serves gRPC too, and says why the model cannot answer."""
    weights = tmp_path / "s4net.safetensors"
    weights.write_bytes(b"not weights")
    (tmp_path / "s4net.json").write_text('{"weights_sha256": "0"}')
    port = free_port()
    with make_client(weights=weights, grpc=True, grpc_port=port, host="127.0.0.1"):
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_live() and not client.is_server_ready()
        assert not client.is_model_ready("s4net")
        with pytest.raises(InferenceServerException) as refused:
            client.infer("s4net", [images_input(np.zeros((1, 28, 28), np.uint8))])
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert "the model is not ready" in refused.value.message()
        client.close()

"""The /v2 routes in process: versions, readiness, errors, limits, metrics; the same digits as
/predict. tests/test_inference_protocol_clients.py drives them with Triton's own client."""

import asyncio
import base64
import shutil

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.artifacts.weights import card_path_for
from app.main import create_app
from app.protocols.open_inference import model_version
from app.settings import Settings
from tests.test_reliability import AUTH, TOKEN

INFER = "/v2/models/s4net/infer"


def images_request(pixels: np.ndarray) -> dict:
    return {
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": list(pixels.shape),
             "data": pixels.tolist()}
        ]
    }  # fmt: skip


def digits_of(response) -> list[int]:
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    return outputs["digit"]["data"]


def predict_digits(client, files: list[bytes]) -> list[int]:
    response = client.post("/predict", files=[("file", (f"{i}", f)) for i, f in enumerate(files)])
    assert response.status_code == 200, response.text
    return [prediction["digit"] for prediction in response.json()["predictions"]]


@pytest.fixture
def served_copy(reading_weights, tmp_path):
    path = tmp_path / "served" / "s4net.safetensors"
    path.parent.mkdir()
    shutil.copy(reading_weights, path)
    shutil.copy(card_path_for(reading_weights), card_path_for(path))
    return path


def test_metadata_health_and_versions(make_client, served_copy, untrained_weights):
    with make_client(weights=served_copy, admin_token=TOKEN, cpu_threads=1) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200
        metadata = client.get("/v2/models/s4net").json()
        (version,) = metadata["versions"]
        assert version == client.get("/model").json()["weights"]["sha256"][:12]
        assert client.get(f"/v2/models/s4net/versions/{version}").json() == metadata
        assert client.get(f"/v2/models/s4net/versions/{version}/ready").json() == {
            "name": "s4net",
            "ready": True,
        }
        for path in ("/v2/models/mnist", "/v2/models/s4net/versions/1/ready"):
            response = client.get(path)
            assert response.status_code == 404 and "error" in response.json(), path

        reload = client.post(
            "/admin/reload", json={"weights": str(untrained_weights)}, headers=AUTH
        )
        assert reload.status_code == 200, reload.text
        new_version = model_version(reload.json()["sha256"])
        assert new_version != version
        assert client.get("/v2/models/s4net").json()["versions"] == [new_version]
        old = client.post(f"/v2/models/s4net/versions/{version}/infer", json={})
        assert old.status_code == 404 and version in old.json()["error"]
        pixels = np.zeros((1, 28, 28), np.uint8)
        answer = client.post(
            f"/v2/models/s4net/versions/{new_version}/infer", json=images_request(pixels)
        )
        assert answer.json()["model_version"] == new_version


def test_without_weights_ready_is_400_and_infer_503(make_client, tmp_path):
    with make_client(weights=tmp_path / "missing.safetensors") as client:
        assert client.get("/v2/health/live").status_code == 200
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 400 and "does not exist" in ready.json()["error"]
        assert client.get("/v2/models/s4net/ready").json() == {"name": "s4net", "ready": False}
        assert client.get("/v2/models/s4net").json()["versions"] == []
        infer = client.post(INFER, json=images_request(np.zeros((1, 28, 28), np.uint8)))
        assert infer.status_code == 503 and "not ready" in infer.json()["error"]


def test_more_images_than_may_wait_is_503_with_retry_after(make_client, reading_weights):
    """The batcher's Overloaded answers as v2 errors do, for both inputs."""
    with make_client(weights=reading_weights, cpu_threads=1, batch_queue_images=2) as client:
        for request in (
            images_request(np.zeros((3, 28, 28), np.uint8)),
            {
                "inputs": [
                    {"name": "image_bytes", "datatype": "BYTES", "shape": [3], "data": ["x"] * 3}
                ]
            },
        ):
            answer = client.post(INFER, json=request)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
            assert "already waiting for the model" in answer.json()["error"]


@pytest.fixture(scope="module")
def reading_client(reading_weights):
    app = create_app(Settings(weights=reading_weights, cpu_threads=1, max_images=8))
    with TestClient(app) as client:
        yield client


def test_json_images_and_base64_files_read_as_predict_reads_them(
    reading_client, mnist_test_set, encode_image
):
    images = mnist_test_set[0][:8]
    files = [encode_image(255 - np.kron(image, np.ones((3, 3), np.uint8))) for image in images]
    expected = predict_digits(reading_client, files)
    assert digits_of(reading_client.post(INFER, json=images_request(images))) == expected
    as_base64 = {
        "inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [8],
             "parameters": {"content_type": "base64"},
             "data": [base64.b64encode(f).decode() for f in files]}
        ]
    }  # fmt: skip
    assert digits_of(reading_client.post(INFER, json=as_base64)) == expected


def test_limits_are_predicts(reading_client, encode_image):
    nine = images_request(np.zeros((9, 28, 28), np.uint8))
    response = reading_client.post(INFER, json=nine)
    assert response.status_code == 400 and "S4_MAX_IMAGES" in response.json()["error"]
    huge = reading_client.post(INFER, content=b"{" + b" " * 20_000_000 + b"}")
    assert huge.status_code == 400 and "larger than" in huge.json()["error"]
    bomb = base64.b64encode(encode_image(np.zeros((5000, 5000), np.uint8))).decode()
    request = {
        "inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [1],
             "parameters": {"content_type": "base64"}, "data": [bomb]}
        ]
    }  # fmt: skip
    response = reading_client.post(INFER, json=request)
    assert response.status_code == 400 and "S4_MAX_PIXELS" in response.json()["error"]


def test_metrics_and_request_log_cover_the_v2_routes(reading_client, caplog):
    with caplog.at_level("INFO", logger="s4.requests"):
        reading_client.post(INFER, json=images_request(np.zeros((2, 28, 28), np.uint8)))
    assert any('"path":"/v2/models/s4net/infer"' in record.message for record in caplog.records)
    metrics = reading_client.get("/metrics").text
    assert (
        's4_http_requests_total{method="POST",path="/v2/models/{model_name}/infer",status="200"}'
        in metrics
    )


def test_infer_routes_are_documented_with_their_errors(reading_client):
    """The infer routes are raw routes (as /predict), still in the OpenAPI document."""
    paths = reading_client.get("/openapi.json").json()["paths"]
    for path in (INFER, "/v2/models/{model_name}/versions/{version}/infer"):
        path = path.replace("s4net", "{model_name}")
        responses = paths[path]["post"]["responses"]
        assert {"200", "400", "404", "503"} <= responses.keys()
        error = responses["400"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ProtocolErrorBody"}
    assert reading_client.get(INFER).status_code == 405


def test_v2_and_predict_requests_share_forward_passes(
    reading_weights, mnist_test_set, encode_image
):
    """With a forward pass waiting up to a second for more requests, a /predict request and a
    v2 infer request sent together are read in one pass."""
    service = create_app(Settings(weights=reading_weights, cpu_threads=1, batch_max_wait_ms=1000))
    images = mnist_test_set[0][:3]

    async def both() -> tuple[list[int], list[int]]:
        transport = httpx.ASGITransport(app=service)
        async with (
            service.router.lifespan_context(service),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            files = [("file", (f"{i}.png", encode_image(image))) for i, image in enumerate(images)]
            predicted, inferred = await asyncio.gather(
                client.post("/predict", files=files[:2]),
                client.post(INFER, json=images_request(images[2:])),
            )
        return [p["digit"] for p in predicted.json()["predictions"]], digits_of(inferred)

    predicted, inferred = asyncio.run(both())
    assert len(predicted) == 2 and len(inferred) == 1
    registry = service.state.metrics.registry
    assert registry.get_sample_value("s4_forward_batch_images_count") == 1
    assert registry.get_sample_value("s4_forward_batch_images_sum") == 3

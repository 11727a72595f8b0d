"""GET /model, /health, /ready and /docs through the real app and its lifespan."""

from pathlib import Path

import pytest
import torch

from tests.test_model import spec_table

PNG_SEVEN = (Path(__file__).resolve().parent.parent / "docs" / "seven.png").read_bytes()


def test_model_reports_the_34_layers_and_params(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        body = client.get("/model").json()
    assert body["name"] == "S4Net"
    assert body["input_shape"] == [-1, 1, 28, 28]
    assert (body["total_params"], body["trainable_params"], body["non_trainable_params"]) == (
        19_570,
        19_570,
        0,
    )
    assert len(body["layers"]) == 34
    assert body["layers"][0] == {
        "index": 1,
        "name": "Conv2d-1",
        "type": "Conv2d",
        "output_shape": [-1, 8, 28, 28],
        "params": 72,
    }
    assert body["layers"][-1]["name"] == "LogSoftmax-34"


def test_model_describes_the_loaded_weights(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        weights = client.get("/model").json()["weights"]
    card_sha = weights["card"]["weights_sha256"]
    assert weights["loaded"] is True
    assert weights["sha256"] == card_sha
    assert weights["card"]["note"] == "untrained, made by the test suite"


def test_model_shows_the_committed_weights_robustness_and_calibration(make_client, reading_weights):
    """The committed card carries the robustness table's figures and the fitted temperature."""
    with make_client(weights=reading_weights, cpu_threads=1) as client:
        card = client.get("/model").json()["weights"]["card"]
    assert card["temperature"] > 0
    robustness = card["robustness"]
    assert robustness["split"] == "test" and robustness["images"] == 10_000
    # MNIST's own images through the service read as the tensor path the card measured.
    assert robustness["rows"]["MNIST as is"]["accuracy"] == pytest.approx(
        card["test_accuracy"], abs=0.006
    )
    for figures in robustness["rows"].values():
        assert 0 <= figures["accuracy"] <= 100 and figures["ece"] >= 0
    assert set(robustness["calibration"]) >= {"mnist_ece_before", "mnist_ece_after"}


def test_model_as_text_is_the_spec_table(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        by_query = client.get("/model", params={"format": "text"})
        by_accept = client.get("/model", headers={"Accept": "text/plain"})
    for response in (by_query, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == spec_table()


def test_model_rejects_an_unknown_format(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        response = client.get("/model", params={"format": "xml"})
    assert response.status_code == 422
    assert "format" in str(response.json()["detail"])


def test_ready_and_health_with_weights(make_client, untrained_weights):
    with make_client(weights=untrained_weights, device="cpu") as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "device": "cpu",
        "runtime": "onnxruntime",
        "detail": None,
    }


def test_without_weights_the_service_starts_and_says_why(make_client, tmp_path):
    missing = tmp_path / "nowhere" / "s4net.safetensors"
    with make_client(weights=missing) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        model = client.get("/model").json()
    assert ready.status_code == 503
    assert str(missing) in ready.json()["detail"]
    assert "does not exist" in ready.json()["detail"]
    assert model["total_params"] == 19_570
    assert model["weights"]["loaded"] is False
    assert model["weights"]["sha256"] is None
    assert str(missing) in model["weights"]["error"]


def test_model_has_the_digit_checks_card(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        check = client.get("/model").json()["digit_check"]
    assert check["loaded"] is True and check["error"] is None
    assert check["sha256"] == check["card"]["weights_sha256"]
    assert check["parameters"] == check["card"]["parameters"] > 0
    assert check["card"]["holdout"]["accuracy"] > 0.9


def test_without_the_digit_check_read_answers_503_and_predict_still_works(
    make_client, untrained_weights, tmp_path
):
    missing = tmp_path / "digit-check.safetensors"
    with make_client(weights=untrained_weights, digit_check=missing) as client:
        check = client.get("/model").json()["digit_check"]
        read = client.post("/read", content=b"\x89PNG", headers={"Content-Type": "image/png"})
        seven = client.post("/predict", files={"file": ("7.png", PNG_SEVEN, "image/png")})
    assert check["loaded"] is False and str(missing) in check["error"]
    assert read.status_code == 503 and "digit check" in read.json()["detail"]
    assert seven.status_code == 200


def test_docs_render_and_every_endpoint_is_described(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        docs = client.get("/docs")
        schema = client.get("/openapi.json").json()
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            assert operation.get("description"), f"{method.upper()} {path} has no description"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_a_gpu_is_not_ready_and_says_so(make_client, untrained_weights):
    with make_client(weights=untrained_weights, device="cuda") as client:
        ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["detail"].startswith("S4_DEVICE=cuda: cuda was asked for")

"""Several weight versions side by side: explicit choice, the canary's share, metrics, admin.

The second version is genuinely different weights, from a short training run; a third is a
tampered copy whose bytes no longer match its card. HTTP runs in process; gRPC against a real
`python -m app` with tritonclient[grpc].
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from app.artifacts.weights import card_path_for, load_weights
from app.protocols.open_inference import model_version
from bench.servers import running_server
from training.__main__ import main as train

TOKEN = "versions-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUESTS = 2000
CANARY_PERCENT = 10


def copy_version(weights: Path, repository: Path, version: str) -> Path:
    target = repository / "versions" / version / "s4net.safetensors"
    target.parent.mkdir(parents=True)
    shutil.copy(weights, target)
    shutil.copy(card_path_for(weights), card_path_for(target))
    return target


@pytest.fixture(scope="module")
def repository(tmp_path_factory, reading_weights, mnist_dir) -> dict:
    """weights/ with the committed version as S4_WEIGHTS, a trained one and a tampered one."""
    root = tmp_path_factory.mktemp("repository")
    weights = root / "weights" / "s4net.safetensors"
    weights.parent.mkdir()
    shutil.copy(reading_weights, weights)
    shutil.copy(card_path_for(reading_weights), card_path_for(weights))
    argv = ["--data-dir", str(mnist_dir), "--out-dir", str(root / "run"), "--epochs", "1"]
    train([*argv, "--train-limit", "500", "--test-limit", "100", "--batch-size", "50"])
    trained = load_weights(root / "run" / "weights" / "s4net.safetensors")
    canary = model_version(trained.sha256)
    copy_version(trained.path, weights.parent, canary)
    tampered = copy_version(trained.path, weights.parent, "0123456789ab")
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    primary = model_version(load_weights(weights).sha256)
    assert primary != canary
    return {"weights": weights, "primary": primary, "canary": canary, "tampered": "0123456789ab"}


def infer_body() -> dict:
    pixels = np.zeros((1, 28, 28), np.uint8)
    pixels[0, 8:20, 13:15] = 255
    return {
        "inputs": [
            {
                "name": "images",
                "datatype": "UINT8",
                "shape": [1, 28, 28],
                "data": pixels.ravel().tolist(),
            }
        ]
    }


@pytest.fixture(scope="module")
def client(repository):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(
        weights=repository["weights"],
        served_versions=[repository["primary"], repository["canary"], repository["tampered"]],
        canary=f"{repository['canary']}:{CANARY_PERCENT}",
        admin_token=TOKEN,
        cpu_threads=1,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_model_lists_the_served_versions_and_refuses_the_tampered_one(client, repository):
    metadata = client.get("/v2/models/s4net").json()
    assert metadata["versions"] == [repository["primary"], repository["canary"]]
    state = client.get("/admin/versions", headers=AUTH).json()
    assert state["primary"] == repository["primary"]
    assert state["canary"] == {"version": repository["canary"], "percent": CANARY_PERCENT}
    assert "sha256" in state["refused"][repository["tampered"]]
    assert client.get("/ready").status_code == 200
    path = f"/v2/models/s4net/versions/{repository['tampered']}"
    assert client.get(path).status_code == 404


def test_requests_pick_a_version_over_http(client, repository, encode_image, mnist_test_set):
    for version in (repository["primary"], repository["canary"]):
        answer = client.post(f"/v2/models/s4net/versions/{version}/infer", json=infer_body())
        assert answer.status_code == 200 and answer.json()["model_version"] == version
        png = encode_image(mnist_test_set[0][0])
        predicted = client.post(
            "/predict",
            params={"version": version},
            content=png,
            headers={"Content-Type": "image/png"},
        )
        assert predicted.status_code == 200, predicted.text
        assert predicted.headers["X-Model-Version"] == version
        assert predicted.json()["weights_sha256"].startswith(version)
    unknown = client.post("/predict", params={"version": "ffffffffffff"}, content=b"x")
    assert unknown.status_code == 404 and "has no version" in unknown.json()["detail"]


def test_a_10_percent_canary_gets_10_percent_of_http_requests(client, repository):
    versions = [
        client.post("/v2/models/s4net/infer", json=infer_body()).json()["model_version"]
        for _ in range(REQUESTS)
    ]
    share = versions.count(repository["canary"]) / REQUESTS * 100
    assert CANARY_PERCENT - 3 <= share <= CANARY_PERCENT + 3
    assert set(versions) == {repository["primary"], repository["canary"]}
    # The same X-Request-Id always goes to the same version.
    for request_id in ("a", "b", "c", "d"):
        answers = {
            client.post(
                "/v2/models/s4net/infer", json=infer_body(), headers={"X-Request-Id": request_id}
            ).json()["model_version"]
            for _ in range(5)
        }
        assert len(answers) == 1
    metrics = client.get("/metrics").text
    for version in (repository["primary"], repository["canary"]):
        assert f's4_version_requests_total{{protocol="http",version="{version}"}}' in metrics
        assert f's4_version_request_duration_seconds_count{{version="{version}"}}' in metrics
        assert f's4_version_predictions_total{{digit="1",version="{version}"}}' in metrics


def test_admin_loads_unloads_and_sets_the_canary_while_serving(client, repository):
    canary = repository["canary"]
    refused = client.post("/admin/versions", json={"unload": [canary]}, headers=AUTH)
    assert refused.status_code == 422 and "is the canary" in refused.json()["detail"]
    state = client.post("/admin/versions", json={"canary": "", "unload": [canary]}, headers=AUTH)
    assert state.status_code == 200, state.text
    assert state.json()["versions"] == [repository["primary"]] and state.json()["canary"] is None
    assert (
        client.post(f"/v2/models/s4net/versions/{canary}/infer", json=infer_body()).status_code
        == 404
    )
    tampered = client.post("/admin/versions", json={"load": [repository["tampered"]]}, headers=AUTH)
    assert tampered.status_code == 422 and "sha256" in tampered.json()["detail"]
    assert client.post("/v2/models/s4net/infer", json=infer_body()).status_code == 200
    state = client.post(
        "/admin/versions", json={"load": [canary], "canary": f"{canary}:100"}, headers=AUTH
    )
    assert state.status_code == 200, state.text
    assert (
        client.post("/v2/models/s4net/infer", json=infer_body()).json()["model_version"] == canary
    )
    bad = client.post("/admin/versions", json={"canary": "ffffffffffff:5"}, headers=AUTH)
    assert bad.status_code == 422 and "not served" in bad.json()["detail"]
    restored = client.post(
        "/admin/versions", json={"canary": f"{canary}:{CANARY_PERCENT}"}, headers=AUTH
    )
    assert restored.status_code == 200
    assert (
        client.post(
            "/admin/versions", json={"unload": [repository["primary"]]}, headers=AUTH
        ).status_code
        == 422
    )


def test_versions_and_the_canary_over_grpc(repository):
    env = {
        "S4_WEIGHTS": str(repository["weights"]),
        "S4_SERVED_VERSIONS": f"{repository['primary']},{repository['canary']}",
        "S4_CANARY": f"{repository['canary']}:{CANARY_PERCENT}",
        "S4_GRPC": "true",
        "WEB_CONCURRENCY": "1",
        "S4_CPU_THREADS": "1",
    }
    with running_server(env, (sys.executable, "-m", "app")) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        metadata = client.get_model_metadata("s4net")
        assert list(metadata.versions) == [repository["primary"], repository["canary"]]
        pixels = np.zeros((1, 28, 28), np.uint8)
        tensor = triton.InferInput("images", [1, 28, 28], "UINT8")
        tensor.set_data_from_numpy(pixels)
        for version in (repository["primary"], repository["canary"]):
            result = client.infer("s4net", [tensor], model_version=version)
            assert result.get_response().model_version == version
        versions = [
            client.infer("s4net", [tensor]).get_response().model_version for _ in range(REQUESTS)
        ]
        share = versions.count(repository["canary"]) / REQUESTS * 100
        assert CANARY_PERCENT - 3 <= share <= CANARY_PERCENT + 3
        stable = {
            client.infer("s4net", [tensor], headers={"x-request-id": "same"})
            .get_response()
            .model_version
            for _ in range(5)
        }
        assert len(stable) == 1
        with pytest.raises(InferenceServerException) as unknown:
            client.infer("s4net", [tensor], model_version="ffffffffffff")
        assert unknown.value.status() == "StatusCode.NOT_FOUND"
        client.close()

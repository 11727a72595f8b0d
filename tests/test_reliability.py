"""Reliability and security in process: weight reloads, request timeouts, CORS, no tracebacks.

The same against a real uvicorn process (slow clients, load, reloads under load, bad weights):
tests/test_reliability_server.py. Fuzzing: tests/test_fuzz_predict.py.
"""

import asyncio
import json
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.artifacts.weights import card_path_for, save_weights
from app.inference import Predictor
from app.main import RequestMiddleware, create_app
from app.metrics import Metrics
from app.model import S4Net
from app.settings import Settings

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def other_weights(tmp_path):
    """A second valid weights file (another random net): a different SHA-256 to reload to."""
    torch.manual_seed(1)
    path = tmp_path / "other" / "s4net.safetensors"
    save_weights(S4Net(), path, {"note": "the other weights"})
    return path


def card_sha(weights_path) -> str:
    return json.loads(card_path_for(weights_path).read_text())["weights_sha256"]


def tamper(weights_path) -> None:
    data = bytearray(weights_path.read_bytes())
    data[-1] ^= 0xFF
    weights_path.write_bytes(bytes(data))


def served_sha(client: TestClient, mnist_image_png: bytes) -> str:
    response = client.post(
        "/predict", content=mnist_image_png, headers={"content-type": "image/png"}
    )
    assert response.status_code == 200, response.text
    return response.json()["weights_sha256"]


@pytest.fixture
def digit_png(mnist_test_set, encode_image) -> bytes:
    return encode_image(mnist_test_set[0][0])


# Reloading weights -----------------------------------------------------------------------


def test_admin_endpoints_do_not_exist_without_a_token(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        assert client.post("/admin/reload", headers=AUTH).status_code == 404
        assert "/admin/reload" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Bearer nope"}, 403),
    ],
)
def test_reload_refuses_a_missing_or_wrong_token(make_client, untrained_weights, headers, status):
    with make_client(weights=untrained_weights, admin_token=TOKEN) as client:
        response = client.post("/admin/reload", headers=headers)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


def test_reload_serves_the_new_weights(make_client, untrained_weights, other_weights, digit_png):
    with make_client(weights=untrained_weights, admin_token=TOKEN, cpu_threads=1) as client:
        assert served_sha(client, digit_png) == card_sha(untrained_weights)
        response = client.post("/admin/reload", headers=AUTH, json={"weights": str(other_weights)})
        assert response.status_code == 200, response.text
        assert response.json()["sha256"] == card_sha(other_weights)
        assert response.json()["file"] == str(other_weights)
        assert served_sha(client, digit_png) == card_sha(other_weights)
        assert client.get("/model").json()["weights"]["sha256"] == card_sha(other_weights)


@pytest.mark.parametrize("problem", ["tampered", "missing"])
def test_bad_new_weights_leave_the_old_ones_serving(
    make_client, untrained_weights, other_weights, digit_png, problem
):
    if problem == "tampered":
        tamper(other_weights)
    else:
        other_weights.unlink()
    with make_client(weights=untrained_weights, admin_token=TOKEN, cpu_threads=1) as client:
        response = client.post("/admin/reload", headers=AUTH, json={"weights": str(other_weights)})
        assert response.status_code == 422
        assert str(other_weights) in response.json()["detail"]
        assert f"still serving {card_sha(untrained_weights)}" in response.json()["detail"]
        assert served_sha(client, digit_png) == card_sha(untrained_weights)
        assert client.get("/ready").status_code == 200


def test_reload_after_fixing_the_file_makes_an_unready_service_ready(
    make_client, untrained_weights, tmp_path
):
    good = untrained_weights.read_bytes()
    tamper(untrained_weights)
    with make_client(weights=untrained_weights, admin_token=TOKEN) as client:
        assert client.get("/ready").status_code == 503
        untrained_weights.write_bytes(good)  # the operator puts the right file back
        assert client.post("/admin/reload", headers=AUTH).status_code == 200
        assert client.get("/ready").status_code == 200


def test_forward_passes_during_reloads_all_use_one_whole_model(untrained_weights, other_weights):
    """Threads predicting while another reloads back and forth: no pass fails, and each answer is
    exactly one model's (never a mix of the two) and names that model's weights."""
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    predictor = Predictor(Settings(weights=untrained_weights, cpu_threads=1))
    predictor.load()
    expected = {}
    for path in (untrained_weights, other_weights):
        predictor.reload(path)
        expected[card_sha(path)] = predictor.forward(images).probabilities
    stop, failures, answers = threading.Event(), [], []

    def predict_until_stopped() -> None:
        while not stop.is_set():
            try:
                answers.append(predictor.forward(images))
            except Exception as exc:  # any failure is the test's failure
                failures.append(exc)

    threads = [threading.Thread(target=predict_until_stopped) for _ in range(3)]
    for thread in threads:
        thread.start()
    for round_ in range(20):
        predictor.reload((untrained_weights, other_weights)[round_ % 2])
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert answers
    for answer in answers:  # one model's answer, labelled with that model's SHA-256
        assert np.array_equal(answer.probabilities, expected[answer.weights_sha256])


# Request timeouts ------------------------------------------------------------------------


async def call_asgi(app, body_chunks: list[bytes], chunk_delay_s: float) -> list[dict]:
    """Run one HTTP request through an ASGI app; the body arrives chunk by chunk, slowly."""
    sent: list[dict] = []
    chunks = list(body_chunks)

    async def receive() -> dict:
        if not chunks:
            await asyncio.sleep(3600)  # nothing more: a client that went quiet
        await asyncio.sleep(chunk_delay_s)
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    await app(scope, receive, send)
    return sent


async def read_body_then(delay_s: float, scope, receive, send) -> None:
    """A stand-in app: reads the whole body, waits ``delay_s`` (the model), then answers 200."""
    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(delay_s)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


def answer(sent: list[dict]) -> tuple[int, dict, dict]:
    start, body = sent[0], sent[1]
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    return start["status"], headers, json.loads(body["body"]) if start["status"] != 200 else {}


def test_a_body_trickling_in_is_cut_off_with_408_and_connection_close():
    app = RequestMiddleware(
        lambda *args: read_body_then(0, *args), metrics=Metrics(), timeout_s=0.2
    )
    sent = asyncio.run(call_asgi(app, [b"x"] * 100, chunk_delay_s=0.05))
    status, headers, body = answer(sent)
    assert status == 408 and headers["connection"] == "close"
    assert "S4_REQUEST_TIMEOUT_S" in body["detail"]


def test_waiting_too_long_for_the_model_is_503_with_retry_after():
    metrics = Metrics()
    app = RequestMiddleware(lambda *args: read_body_then(5, *args), metrics=metrics, timeout_s=0.2)
    status, headers, body = answer(asyncio.run(call_asgi(app, [b"x"], chunk_delay_s=0)))
    assert status == 503 and headers["retry-after"] == "1"
    assert "S4_REQUEST_TIMEOUT_S" in body["detail"]
    labels = {"method": "POST", "path": "<unmatched>", "status": "503"}
    assert metrics.registry.get_sample_value("s4_http_requests_total", labels) == 1


def test_a_request_within_the_limit_is_untouched():
    app = RequestMiddleware(
        lambda *args: read_body_then(0.05, *args), metrics=Metrics(), timeout_s=1
    )
    sent = asyncio.run(call_asgi(app, [b"x", b"y"], chunk_delay_s=0.01))
    assert answer(sent)[0] == 200 and sent[1]["body"] == b"done"


def test_a_timed_out_forward_pass_leaves_the_service_working(
    make_client, untrained_weights, digit_png, monkeypatch
):
    """The request waiting for a slow pass gets 503; the batcher is not wedged by the cancel."""
    with make_client(weights=untrained_weights, cpu_threads=1, request_timeout_s=0.3) as client:
        original = Predictor.forward
        slow_pass_started, slow_pass_done = threading.Event(), threading.Event()

        def slow_forward(self, images):
            if not slow_pass_started.is_set():
                slow_pass_started.set()
                slow_pass_done.wait(1.0)  # a pass that takes longer than the request limit
                slow_pass_done.set()
            return original(self, images)

        monkeypatch.setattr(Predictor, "forward", slow_forward)
        response = client.post("/predict", content=digit_png, headers={"content-type": "image/png"})
        assert response.status_code == 503 and "S4_REQUEST_TIMEOUT_S" in response.json()["detail"]
        assert slow_pass_done.wait(5)
        again = client.post("/predict", content=digit_png, headers={"content-type": "image/png"})
        assert again.status_code == 200, again.text


# Security --------------------------------------------------------------------------------


def test_an_internal_error_answers_500_without_a_traceback(
    make_client, untrained_weights, digit_png, monkeypatch
):
    def broken_forward(self, images):
        raise RuntimeError("secret internal state at /srv/s4digits/app/inference.py")

    monkeypatch.setattr(Predictor, "forward", broken_forward)
    app = create_app(Settings(weights=untrained_weights, cpu_threads=1))
    assert app.debug is False
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/predict", content=digit_png, headers={"content-type": "image/png"})
        assert client.get("/health").status_code == 200
    assert response.status_code == 500
    assert response.text == "Internal Server Error"


def test_cors_is_off_by_default(make_client, untrained_weights):
    with make_client(weights=untrained_weights) as client:
        response = client.get("/health", headers={"Origin": "https://elsewhere.example"})
        preflight = client.options(
            "/predict",
            headers={
                "Origin": "https://elsewhere.example",
                "Access-Control-Request-Method": "POST",
            },
        )
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins(make_client, untrained_weights):
    allowed = "https://digits.example"
    with make_client(weights=untrained_weights, cors_origins=allowed) as client:
        preflight = client.options(
            "/predict",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        other = client.get("/health", headers={"Origin": "https://evil.example"})
        ok = client.get("/health", headers={"Origin": allowed})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert "access-control-allow-origin" not in other.headers
    assert ok.headers["access-control-allow-origin"] == allowed


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", []),
        ("https://a.example", ["https://a.example"]),
        ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
        ('["https://a.example", "https://b.example"]', ["https://a.example", "https://b.example"]),
    ],
)
def test_cors_origins_from_the_environment(monkeypatch, value, origins):
    monkeypatch.setenv("S4_CORS_ORIGINS", value)
    assert Settings().cors_origins == origins


def test_the_admin_token_never_shows_in_settings_output(monkeypatch):
    monkeypatch.setenv("S4_ADMIN_TOKEN", TOKEN)
    settings = Settings()
    assert settings.admin_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())

"""GET /metrics (Prometheus) and the structured request log."""

import ast
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import PngImagePlugin
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def client(make_client, untrained_weights):
    with make_client(weights=untrained_weights, cpu_threads=1) as client:
        yield client


def test_metrics_count_requests_images_digits_and_batches(client, mnist_test_set, encode_image):
    files = [
        ("file", (f"{i}.png", encode_image(p), "image/png"))
        for i, p in enumerate(mnist_test_set[0][:3])
    ]
    digits = [p["digit"] for p in client.post("/predict", files=files).json()["predictions"]]
    client.post("/predict", content=b"not an image", headers={"content-type": "image/png"})
    client.get("/no/such/page")

    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    post = (("method", "POST"), ("path", "/predict"))
    assert found["s4_http_requests_total", (*post, ("status", "200"))] == 1
    assert found["s4_http_requests_total", (*post, ("status", "415"))] == 1
    unmatched = (("method", "GET"), ("path", "<unmatched>"), ("status", "404"))
    assert found["s4_http_requests_total", unmatched] == 1
    assert found["s4_http_request_duration_seconds_count", (*post, ("status", "200"))] == 1
    assert found["s4_images_predicted_total", ()] == 3
    for digit in range(10):
        count = found["s4_predictions_total", (("digit", str(digit)),)]
        assert count == digits.count(digit)
    assert found["s4_request_images_sum", ()] == 3
    assert found["s4_forward_batch_images_sum", ()] == 3
    assert found["s4_forward_seconds_count", ()] == 1
    assert found["s4_model_load_seconds", ()] > 0


def test_request_log_is_one_json_line_without_image_bytes(client, caplog, encode_image):
    marker = "SECRET-PIXELS-0123456789"
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", marker)
    image = encode_image(np.eye(28, dtype=np.uint8) * 255, pnginfo=text)
    with caplog.at_level(logging.INFO, logger="s4.requests"):
        client.post("/predict?top_k=2", files=[("file", ("eye.png", image, "image/png"))])
    (record,) = [r for r in caplog.records if r.name == "s4.requests"]
    entry = json.loads(record.getMessage())
    assert entry["method"] == "POST" and entry["path"] == "/predict"
    assert entry["status"] == 200 and entry["duration_ms"] > 0
    assert marker not in caplog.text


OPENTELEMETRY_PROBE = """
import sys
from fastapi.testclient import TestClient
from opentelemetry import trace

started = []

class RecordingTracer(trace.NoOpTracer):
    def start_span(self, name, *args, **kwargs):
        started.append(name)
        return super().start_span(name, *args, **kwargs)

class RecordingProvider(trace.TracerProvider):  # a configured provider, as an SDK's would be
    def get_tracer(self, *args, **kwargs):
        return RecordingTracer()

trace.set_tracer_provider(RecordingProvider())
from app.main import create_app
from app.settings import Settings

with TestClient(create_app(Settings(weights=sys.argv[1], cpu_threads=1))) as client:
    assert client.get("/health").status_code == 200
print(started)
"""


@pytest.mark.parametrize(("setting", "spans"), [("true", ["GET"]), ("false", []), (None, [])])
def test_fastapi_opentelemetry_spans_only_when_asked(untrained_weights, setting, spans):
    """S4_OPENTELEMETRY=true sends FastAPI's request spans to the process's tracer provider;
    by default there are none, even with a provider set up. (A process of its own: the tracer
    provider is global and can be set once.)"""
    env = {key: value for key, value in os.environ.items() if key != "S4_OPENTELEMETRY"}
    if setting is not None:
        env["S4_OPENTELEMETRY"] = setting
    result = subprocess.run(
        [sys.executable, "-c", OPENTELEMETRY_PROBE, str(untrained_weights)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    started = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    assert started[: len(spans)] == spans and bool(started) == bool(spans)

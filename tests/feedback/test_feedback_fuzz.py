"""Fuzzed POST /feedback bodies (hypothesis): whatever arrives, the answer is never a 5xx."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.main import create_app
from app.settings import Settings


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


PICTURES = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda seed, size: png(
            np.random.default_rng(seed).integers(0, 256, (size, size), np.uint8)
        ),
        st.integers(0, 2**32 - 1),
        st.integers(1, 64),
    ),
    st.just(png(np.pad(np.full((12, 4), 255, np.uint8), 8))),  # a readable 1
)
FIELD_NAMES = st.sampled_from(["digit", "text", "predicted", "source", "file", "x", ""])
VALUES = st.one_of(
    st.text(max_size=50), st.from_regex(r"[0-9]{0,12}", fullmatch=True), st.binary(max_size=50)
)


@pytest.fixture(scope="module")
def client(reading_weights, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/feedback.db"
    settings = Settings(weights=reading_weights, cpu_threads=1, database_url=url)
    with TestClient(create_app(settings)) as client:
        yield client


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pictures=st.lists(PICTURES, max_size=2),
    fields=st.lists(st.tuples(FIELD_NAMES, VALUES), max_size=4),
)
def test_fuzzed_multipart_bodies_never_get_a_5xx(client, pictures, fields):
    files = [("file", (f"p{i}.png", data, "image/png")) for i, data in enumerate(pictures)]
    files += [(name, (None, value)) for name, value in fields]
    response = client.post("/feedback", files=files or None)
    assert response.status_code < 500, response.text
    assert response.json()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=400),
    content_type=st.sampled_from(
        [
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "image/png",
            "application/json",
            "text/plain",
            "",
        ]
    ),
)
def test_fuzzed_raw_bodies_never_get_a_5xx(client, body, content_type):
    response = client.post("/feedback", content=body, headers={"Content-Type": content_type})
    assert response.status_code < 500, response.text

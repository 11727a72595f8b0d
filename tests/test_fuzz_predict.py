"""Property-based fuzzing of POST /predict, /read and the /v2 infer route, CI-sized (a few
thousand requests in all).

The strategies are bench/fuzz.py's, whose long run sends 100,000 requests (docs/reliability.md).
The contract: every answer is a 200 or a 4xx with a JSON string detail; never a 5xx, never a hang.
tests/test_predict.py has the first, smaller properties; these add real images in every format,
colour mode and frame count, damaged files, declared decompression bombs, arbitrary Content-Types
and broken multipart bodies.
"""

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from app.settings import Settings
from bench.fuzz import (
    DECLARED_HEADERS,
    PredictRequest,
    contract_violation,
    damaged,
    declared_png,
    many_parts,
    multipart_bodies,
    raw_bodies,
    real_images,
    v2_requests,
)

# Pillow warns about these on open; the service refuses them right after (413), as tested here.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

MAX_PIXELS = Settings.model_fields["max_pixels"].default


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,  # no .hypothesis/ left behind in the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def client(reading_weights):
    app = create_app(Settings(weights=reading_weights, cpu_threads=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def post(client: TestClient, request: PredictRequest):
    """Send it to /predict and to /read (same inputs, same errors); /predict's answer."""
    for path in ("/read", "/predict"):
        response = request.send(client, path)
        assert contract_violation(response) is None, (path, contract_violation(response))
    return response


@fuzz_settings(800)
@given(request=raw_bodies())
def test_raw_bodies_with_any_content_type(client, request):
    post(client, request)


@fuzz_settings(400)
@given(request=multipart_bodies())
def test_multipart_bodies_well_formed_or_broken(client, request):
    post(client, request)


@fuzz_settings(60)
@given(request=many_parts())
def test_thousands_of_parts_are_refused_past_the_image_limit(client, request):
    response = post(client, request)
    if request.body.count(b"--b\r\n") > Settings.model_fields["max_images"].default:
        assert response.status_code == 413


@fuzz_settings(400)
@given(image=real_images())
def test_real_images_in_any_format_mode_and_frame_count_are_read_or_called_blank(client, image):
    """Animated, 16-bit, palette, 1-bit, CMYK, float...: a real image is never a 4xx but 422."""
    response = post(client, PredictRequest("real", "image/png", image))
    assert response.status_code in (200, 422), response.text


@fuzz_settings(400)
@given(image=damaged(real_images()))
def test_damaged_images(client, image):
    post(client, PredictRequest("damaged", "application/octet-stream", image))


@fuzz_settings(200)
@given(
    header=st.sampled_from(DECLARED_HEADERS),
    width=st.integers(0, 2**16 - 1),
    height=st.integers(0, 2**16 - 1),
)
def test_declared_dimensions_in_a_tiny_file(client, header, width, height):
    maker, _ = header
    post(client, PredictRequest("declared", "image/png", maker(width, height)))


@fuzz_settings(100)
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_a_png_declaring_too_many_pixels_is_413_before_decoding(client, width, height):
    response = post(client, PredictRequest("bomb", "image/png", declared_png(width, height)))
    if width * height > MAX_PIXELS:
        assert response.status_code == 413, response.text


@fuzz_settings(1500)
@given(request=v2_requests())
def test_v2_infer_requests_of_any_shape_get_200_or_a_4xx_error(client, request):
    """The Open Inference Protocol's infer route: a 200 with outputs, or a 4xx {"error": ...}."""
    response = request.send(client)
    assert request.violation(response) is None, request.violation(response)

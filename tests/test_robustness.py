"""bench/robustness.py: renderings, the service's path, calibration; a fast subset with floors."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from app.artifacts.weights import WeightsError, card_path_for
from app.inference import Predictor, apply_temperature, card_temperature
from app.settings import Settings
from bench.renderings import RENDERINGS
from bench.robustness import (
    expected_calibration_error,
    fit_temperature,
    load_predictor,
    prepare_row,
    read_row,
)

FAST_IMAGES = 300
# The fast subset: floors the committed weights meet with 1.2-3.3 points to spare on the first 300
# test digits (measured 99.67, 99.67, 95.33, 99.67, 99.00, 99.00, 97.33, 98.67, 97.33, 93.33 %;
# docs/robustness.md's table has the full 10,000).
FAST_FLOORS = {
    "MNIST as is": 99.0,
    "tight crop 28x28, aspect kept": 99.0,
    "stretched to 26x26 (aspect lost)": 93.0,
    "scan, black on white, 300 px": 99.0,
    "low resolution 8 px, enlarged": 97.5,
    "thin pen (eroded)": 97.5,
    "rotated ±25°": 95.5,
    "phone photo of paper, JPEG 50": 97.5,
    "MNIST-C impulse noise": 95.0,
    "MNIST-C zigzag": 90.0,
}


def rendering(name: str):
    (found,) = [r for r in RENDERINGS if r.name == name]
    return found


@pytest.fixture(scope="module")
def committed_predictor(reading_weights):
    return load_predictor(reading_weights)


@pytest.mark.parametrize("name", list(FAST_FLOORS))
def test_committed_weights_read_the_fast_subset(committed_predictor, mnist_test_set, name):
    images, labels = (a[:FAST_IMAGES] for a in mnist_test_set)
    row = prepare_row(rendering(name), images, seed=0)
    result = read_row(committed_predictor, row, labels)
    assert result.accuracy >= FAST_FLOORS[name], f"{name}: {result.accuracy:.2f} %"


def test_the_bench_reads_uploads_as_post_predict_does(
    make_client, reading_weights, committed_predictor, mnist_test_set
):
    """Same bytes, same probabilities: the bench's prepare + forward is the service's path."""
    images, labels = (a[:40] for a in mnist_test_set)
    for name in ("tight crop 28x28, aspect kept", "phone photo of paper, JPEG 50"):
        rng = np.random.default_rng([0, RENDERINGS.index(rendering(name))])
        uploads = [rendering(name).render(image, rng) for image in images]
        bench = read_row(committed_predictor, prepare_row(rendering(name), images, 0), labels)
        files = [
            ("file", (f"{i}", data, "application/octet-stream")) for i, data in enumerate(uploads)
        ]
        with make_client(weights=reading_weights, cpu_threads=1) as client:
            response = client.post("/predict", files=files)
        assert response.status_code == 200, response.text
        served = np.array([p["probabilities"] for p in response.json()["predictions"]])
        np.testing.assert_allclose(served, bench.probabilities, atol=1e-5)


@pytest.mark.parametrize("item", RENDERINGS, ids=lambda r: r.name)
def test_each_rendering_is_a_seeded_readable_upload(item, mnist_test_set):
    pixels = mnist_test_set[0][0]
    first = item.render(pixels, np.random.default_rng(7))
    assert first == item.render(pixels, np.random.default_rng(7))
    Image.open(io.BytesIO(first)).load()  # a real image file


def test_apply_temperature_softens_keeps_zeros_and_the_argmax():
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3]], dtype=np.float32)
    assert apply_temperature(probabilities, 1.0) is probabilities
    softened = apply_temperature(probabilities, 2.0)
    assert softened.dtype == np.float32
    np.testing.assert_allclose(softened.sum(axis=1), 1.0, atol=1e-6)
    assert softened[0, 2] == 0.0
    assert softened[0, 0] < 0.9 and (softened.argmax(1) == probabilities.argmax(1)).all()
    np.testing.assert_allclose(apply_temperature(softened, 0.5), probabilities, atol=1e-6)


@pytest.mark.parametrize("bad", [0, -1.0, "1.5", True, float("nan")])
def test_a_card_temperature_that_is_not_a_positive_number_is_refused(bad):
    with pytest.raises(WeightsError, match="temperature"):
        card_temperature({"temperature": bad})
    assert card_temperature({}) == 1.0


def test_the_served_probabilities_use_the_cards_temperature(tmp_path, reading_weights):
    card = json.loads(reading_weights.with_suffix(".json").read_text())
    predictor = Predictor(Settings(weights=reading_weights, cpu_threads=1))
    predictor.load()
    images = np.zeros((1, 28, 28), np.uint8)
    images[0, 6:22, 13:15] = 255  # a one
    served = predictor.forward(images).probabilities
    path = tmp_path / "s4net.safetensors"  # the same weights, their card with another temperature
    shutil.copyfile(reading_weights, path)
    card_path_for(path).write_text(json.dumps({**card, "temperature": 3.0}))
    hotter = Predictor(Settings(weights=path, cpu_threads=1))
    hotter.load()
    raw = apply_temperature(served, 1.0 / card_temperature(card))
    np.testing.assert_allclose(
        hotter.forward(images).probabilities, apply_temperature(raw, 3.0), atol=1e-5
    )


def test_expected_calibration_error_and_temperature_fit():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)  # the favoured class of each row
    logits = rng.normal(0, 1, (4000, 10))
    logits[np.arange(4000), labels] += 2.0
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sampled = np.array([rng.choice(10, p=p) for p in truth])  # labels that these odds describe
    calibrated = truth.astype(np.float32)
    overconfident = apply_temperature(calibrated, 0.4)
    assert expected_calibration_error(calibrated, sampled) < 2.0
    assert expected_calibration_error(overconfident, sampled) > 5.0
    assert fit_temperature(overconfident, sampled) == pytest.approx(2.5, rel=0.15)

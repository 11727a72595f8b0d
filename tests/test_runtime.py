"""The two runtimes (app/runtime.py) read digits identically; the service picks the right one."""

import numpy as np
import pytest
import torch

from app.inference import Predictor
from app.runtime import OnnxRuntime, RuntimeUnavailable, TorchRuntime, make_runtime
from app.settings import Settings
from app.weights import load_weights


def read_all(runtime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime(batch) for batch in np.array_split(images, 10)])


def test_onnxruntime_reads_every_test_image_as_torch_does(reading_weights, mnist_test_set):
    images, labels = mnist_test_set
    net = load_weights(reading_weights, torch.device("cpu")).model
    by_torch = read_all(TorchRuntime(net, torch.device("cpu")), images)
    by_onnx = read_all(OnnxRuntime(net, threads=1), images)
    assert by_onnx.dtype == np.float32 and by_onnx.shape == (10_000, 10)
    assert np.array_equal(by_onnx.argmax(1), by_torch.argmax(1))  # the same 10,000 digits
    assert np.abs(by_onnx - by_torch).max() < 1e-5
    assert (by_onnx.argmax(1) == labels).mean() > 0.99  # and they are right


def test_one_image_and_a_batch_agree(reading_weights, mnist_test_set):
    """Batching must not change an answer: the row for an image is the same alone or in company."""
    images = mnist_test_set[0][:64]
    predictor = Predictor(Settings(weights=reading_weights, cpu_threads=1))
    predictor.load()
    together = predictor.forward(images).probabilities
    alone = np.concatenate([predictor.forward(images[i : i + 1]).probabilities for i in range(64)])
    np.testing.assert_allclose(alone, together, atol=1e-6)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [("auto", "onnxruntime"), ("onnxruntime", "onnxruntime"), ("torch", "torch")],
)
def test_runtime_setting_on_the_cpu(untrained_weights, requested, expected):
    predictor = Predictor(Settings(weights=untrained_weights, cpu_threads=1, runtime=requested))
    predictor.load()
    assert predictor.ready and predictor.runtime_name == expected
    assert predictor.forward(np.zeros((3, 28, 28), np.uint8)).probabilities.shape == (3, 10)


def test_onnxruntime_is_refused_on_a_gpu(untrained_weights):
    net = load_weights(untrained_weights, torch.device("cpu")).model
    with pytest.raises(RuntimeUnavailable, match="S4_RUNTIME=torch"):
        make_runtime("onnxruntime", net, torch.device("cuda"), threads=1)

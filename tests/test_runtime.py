"""The two runtimes (app/runtime/runtimes.py) read digits identically; the right one is picked."""

import numpy as np
import onnx
import pytest
import torch

from app.artifacts.weights import load_weights
from app.inference import Predictor, apply_temperature
from app.model import net_from_tensors
from app.runtime.onnx_graph import build_onnx_graph
from app.runtime.runtimes import LARGEST_PASS, OnnxRuntime, RuntimeUnavailable, make_runtime
from app.runtime.torch_runtime import TorchRuntime
from app.settings import Settings


def read_all(runtime, images: np.ndarray) -> np.ndarray:
    return np.concatenate([runtime(batch) for batch in np.array_split(images, 10)])


def test_onnxruntime_reads_every_test_image_as_torch_does(reading_weights, mnist_test_set):
    images, labels = mnist_test_set
    tensors = load_weights(reading_weights).tensors
    by_torch = read_all(TorchRuntime(net_from_tensors(tensors), torch.device("cpu")), images)
    by_onnx = read_all(OnnxRuntime(tensors, threads=1), images)
    assert by_onnx.dtype == np.float32 and by_onnx.shape == (10_000, 10)
    assert np.array_equal(by_onnx.argmax(1), by_torch.argmax(1))  # the same 10,000 digits
    assert np.abs(by_onnx - by_torch).max() < 1e-5
    assert (by_onnx.argmax(1) == labels).mean() > 0.99  # and they are right


@pytest.mark.parametrize("temperature", [0.7, 1.7])
def test_both_runtimes_calibrate_with_the_temperature(reading_weights, mnist_test_set, temperature):
    """The temperature inside each runtime's graph is apply_temperature's, to float32 rounding."""
    images = mnist_test_set[0][:500]
    tensors = load_weights(reading_weights).tensors
    net = net_from_tensors(tensors)
    expected = apply_temperature(OnnxRuntime(tensors, threads=1)(images), temperature)
    tempered_onnx = OnnxRuntime(tensors, threads=1, temperature=temperature)(images)
    tempered_torch = TorchRuntime(net, torch.device("cpu"), temperature=temperature)(images)
    np.testing.assert_allclose(tempered_onnx, expected, atol=1e-6)
    np.testing.assert_allclose(tempered_torch, expected, atol=1e-5)


def test_one_image_and_a_batch_agree(reading_weights, mnist_test_set):
    """Batching must not change an answer: the row for an image is the same alone or in company,
    in a batch that ONNX Runtime runs as several passes (LARGEST_PASS) as in one."""
    count = 3 * LARGEST_PASS + 5
    images = mnist_test_set[0][:count]
    predictor = Predictor(Settings(weights=reading_weights, cpu_threads=1))
    predictor.load()
    together = predictor.forward(images).probabilities
    alone = np.concatenate(
        [predictor.forward(images[i : i + 1]).probabilities for i in range(count)]
    )
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
    tensors = load_weights(untrained_weights).tensors
    with pytest.raises(RuntimeUnavailable, match="S4_RUNTIME=torch"):
        make_runtime("onnxruntime", tensors, "cuda", threads=1)


def test_the_graph_is_valid_onnx(untrained_weights):
    """The graph is written without the onnx package; onnx's own parser and checker accept it."""
    model = onnx.load_from_string(build_onnx_graph(load_weights(untrained_weights).tensors))
    onnx.checker.check_model(model, full_check=True)  # also infers every shape
    assert [i.name for i in model.graph.input] == ["images"]
    output = model.graph.output[0]
    assert output.name == "probabilities"
    assert [d.dim_param or d.dim_value for d in output.type.tensor_type.shape.dim] == ["batch", 10]


def test_tensors_that_do_not_fit_get_no_graph(untrained_weights):
    tensors = dict(load_weights(untrained_weights).tensors)
    tensors["cblock1.0.weight"] = np.zeros((16, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"cblock1\.0\.weight has shape \[16, 1, 3, 3\]"):
        build_onnx_graph(tensors)

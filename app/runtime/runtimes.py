"""How a forward pass runs: ONNX Runtime on the CPU, PyTorch on a GPU (or on request).

Both runtimes take uint8 images [N, 28, 28] in MNIST form and return float32 probabilities
[N, 10], calibrated with the weights card's temperature, as numpy arrays, so the batcher never
touches a framework type.

ONNX Runtime is the CPU default: a service this small often answers one image at a time, where
eager PyTorch pays per-operator overhead (docs/decisions.md). Its graph is built from the weights
file's tensors by app/runtime/onnx_graph.py, without torch, so the safetensors file stays the one
artifact and a CPU worker never loads torch; the tests hold its answers to the torch net's on all
10,000 MNIST test images.
"""

from collections.abc import Mapping
from typing import Protocol

import numpy as np
import onnxruntime

from app.runtime.onnx_graph import build_onnx_graph

# The most images in one ONNX Runtime pass (see OnnxRuntime).
LARGEST_PASS = 16


class RuntimeUnavailable(Exception):
    """S4_RUNTIME asks for a runtime that cannot run on the chosen device or in this install."""


class Runtime(Protocol):
    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [N, 28, 28] (white ink on black) -> float32 probabilities [N, 10]."""
        ...


class OnnxRuntime:
    """The graph in ONNX Runtime, run on at most ``LARGEST_PASS`` images at a time.

    ONNX Runtime's memory arena grows to the largest pass it has run and keeps that memory: a
    pass of 256 images left a worker 25 MiB larger than passes of 16, which were as fast per
    image (docs/decisions.md). A larger batch runs as several passes.
    """

    name = "onnxruntime"

    def __init__(self, tensors: Mapping[str, np.ndarray], threads: int, temperature: float = 1.0):
        self.session = onnx_session(build_onnx_graph(tensors, temperature=temperature), threads)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return run_in_passes(self.session, "images", images)


def onnx_session(graph: bytes, threads: int) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session of ``graph`` on the CPU with ``threads`` threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: the CPU they would burn is the other
    # requests' (and the other workers').
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def run_in_passes(session, name: str, inputs: np.ndarray) -> np.ndarray:
    """``session``'s one output for ``inputs`` (its one input, ``name``), LARGEST_PASS at a time."""
    return np.concatenate(
        [
            session.run(None, {name: inputs[start : start + LARGEST_PASS]})[0]
            for start in range(0, len(inputs), LARGEST_PASS)
        ]
    )


def make_runtime(
    requested: str,
    tensors: Mapping[str, np.ndarray],
    device: str,
    threads: int,
    dropout: float = 0.0,
    temperature: float = 1.0,
) -> Runtime:
    """``auto``: ONNX Runtime on the CPU, PyTorch on a GPU (onnxruntime here is the CPU build).

    torch is imported only for the torch runtime.
    """
    if requested == "auto":
        requested = "onnxruntime" if device == "cpu" else "torch"
    if requested == "onnxruntime":
        if device != "cpu":
            raise RuntimeUnavailable(
                f"S4_RUNTIME=onnxruntime runs on the CPU only, not {device}; "
                "set S4_RUNTIME=torch (or auto) to use the GPU"
            )
        return OnnxRuntime(tensors, threads, temperature)
    try:
        import torch

        from app.model import net_from_tensors
        from app.runtime.torch_runtime import TorchRuntime
    except ImportError:
        raise RuntimeUnavailable(
            "S4_RUNTIME=torch needs torch, which is not installed: install `s4digits[gpu]`"
        ) from None
    # torch's default, one thread per core in every worker process, oversubscribes the CPUs.
    torch.set_num_threads(threads)
    net = net_from_tensors(tensors, dropout)
    return TorchRuntime(net, torch.device(device), temperature=temperature)

"""How a forward pass runs: ONNX Runtime on the CPU, PyTorch on a GPU (or on request).

Both runtimes take uint8 images [N, 28, 28] in MNIST form and return float32 probabilities
[N, 10], as numpy arrays, so the batcher never touches a framework type.

ONNX Runtime is the CPU default because a service this small is often answering one image at a
time, and there eager PyTorch picks a slow convolution and pays per-operator overhead: on the
2-core dev box one image took 1.2-4 ms in PyTorch and 0.24-0.32 ms in ONNX Runtime over several
runs of bench/forward_pass.py, while from batch 64 up the two were on a par. Its graph is exported
from the very S4Net the weights were loaded into, when they are loaded, so there is still one
definition of the net and one weights file; the tests check that both runtimes give the same
digit for all 10,000 MNIST test images.
"""

import copy
import io
import warnings
from typing import Protocol

import numpy as np
import onnxruntime
import torch
from torch import nn

from app.model import INPUT_SHAPE, S4Net, normalize


class RuntimeUnavailable(Exception):
    """S4_RUNTIME asks for a runtime that cannot run on the chosen device."""


class Runtime(Protocol):
    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [N, 28, 28] (white ink on black) -> float32 probabilities [N, 10]."""
        ...


class ProbabilitiesNet(nn.Module):
    """The S4 net with its input and output ends attached: uint8 pixels in, probabilities out."""

    def __init__(self, net: S4Net, memory_format: torch.memory_format = torch.contiguous_format):
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=memory_format)  # the caller's stays as is
        self.memory_format = memory_format

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = normalize(images.unsqueeze(1)).contiguous(memory_format=self.memory_format)
        return self.net(batch).exp()


class TorchRuntime:
    name = "torch"

    def __init__(
        self,
        net: S4Net,
        device: torch.device,
        memory_format: torch.memory_format = torch.channels_last,
    ):
        # channels_last (NHWC) runs this net's narrow convolutions and max-pools faster on the CPU
        # than torch's default NCHW (1.4-2x at batch 64, bench/forward_pass.py), same predictions.
        # Both weights and input must be in it, or torch falls back to NCHW kernels.
        self.model = ProbabilitiesNet(net, memory_format).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images)
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # lets the copy to the GPU run asynchronously
        return self.model(batch.to(self.device, non_blocking=True)).cpu().numpy()


def export_onnx_graph(net: S4Net) -> bytes:
    """The ONNX graph the CPU runtime runs: uint8 ``images`` [batch, 28, 28] (white ink on black)
    -> float32 ``probabilities`` [batch, 10]. ``s4digits export --onnx`` writes the same one."""
    graph = io.BytesIO()
    example = torch.zeros((2, *INPUT_SHAPE[1:]), dtype=torch.uint8)
    # The TorchScript-based exporter: it takes 0.1 s. torch's newer dynamo exporter takes
    # ~9 s and needs onnxscript, for the same graph; the deprecation warning is noise here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ProbabilitiesNet(net).eval(),
            (example,),
            graph,
            dynamo=False,
            input_names=["images"],
            output_names=["probabilities"],
            dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}},
        )
    return graph.getvalue()


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, net: S4Net, threads: int):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: the CPU they would burn is the other
        # requests' (and the other workers').
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(
            export_onnx_graph(net), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": images})[0]


def make_runtime(requested: str, net: S4Net, device: torch.device, threads: int) -> Runtime:
    """``auto``: ONNX Runtime on the CPU, PyTorch on a GPU (onnxruntime here is the CPU build)."""
    if requested == "auto":
        requested = "onnxruntime" if device.type == "cpu" else "torch"
    if requested == "onnxruntime":
        if device.type != "cpu":
            raise RuntimeUnavailable(
                f"S4_RUNTIME=onnxruntime runs on the CPU only, not {device.type}; "
                "set S4_RUNTIME=torch (or auto) to use the GPU"
            )
        return OnnxRuntime(net, threads)
    return TorchRuntime(net, device)

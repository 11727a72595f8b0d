"""The PyTorch runtime: the S4 net in torch, for a GPU (or the CPU on request, S4_RUNTIME=torch).

Imported only when that runtime is asked for, so a CPU worker never loads torch.
"""

import copy

import numpy as np
import torch
from torch import nn

from app.model import S4Net, normalize


class ProbabilitiesNet(nn.Module):
    """The S4 net with its input and output ends attached: uint8 pixels in, probabilities out,
    calibrated by ``temperature`` (softmax of the log-softmax / T; app.inference.apply_temperature).
    """

    def __init__(
        self,
        net: S4Net,
        memory_format: torch.memory_format = torch.contiguous_format,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.net = copy.deepcopy(net).to(memory_format=memory_format)  # the caller's stays as is
        self.memory_format = memory_format
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = normalize(images.unsqueeze(1)).contiguous(memory_format=self.memory_format)
        log_probabilities = self.net(batch)
        if self.temperature == 1.0:
            return log_probabilities.exp()
        return (log_probabilities / self.temperature).softmax(dim=1)


class TorchRuntime:
    name = "torch"

    def __init__(
        self,
        net: S4Net,
        device: torch.device,
        memory_format: torch.memory_format = torch.channels_last,
        temperature: float = 1.0,
    ):
        # channels_last (NHWC) runs this net's narrow convolutions and max-pools faster on the CPU
        # than torch's default NCHW (1.4-2x at batch 64, bench/forward_pass.py), same predictions.
        # Both weights and input must be in it, or torch falls back to NCHW kernels.
        self.model = ProbabilitiesNet(net, memory_format, temperature).to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images)
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # lets the copy to the GPU run asynchronously
        return self.model(batch.to(self.device, non_blocking=True)).cpu().numpy()

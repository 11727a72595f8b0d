"""Which torch device serving and training run on."""

import torch


class DeviceUnavailable(RuntimeError):
    """The device asked for does not exist in this process."""


def resolve_device(requested: str) -> torch.device:
    """``auto`` means CUDA when this process can see a GPU, else the CPU. Serving and training
    both pick their device here; each says which of its settings asked for a missing one."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("cuda was asked for, but torch sees no CUDA device")
    return torch.device(requested)

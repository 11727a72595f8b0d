"""Which device serving and training run on, decided without importing torch where it can be.

torch is imported only when it could answer "cuda": it is installed (the `gpu` or `train` extra)
and the host shows an NVIDIA device node. A CPU worker therefore never loads torch.
"""

import importlib.util
from pathlib import Path


class DeviceUnavailable(RuntimeError):
    """The device asked for does not exist in this process."""


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def nvidia_gpu_present(dev: Path = Path("/dev")) -> bool:
    """Whether an NVIDIA GPU device node exists (how the driver and `docker --gpus` expose one)."""
    return any(dev.glob("nvidia[0-9]*"))


def resolve_device(requested: str) -> str:
    """``cpu`` or ``cuda``. ``auto`` means CUDA when this process can use a GPU, else the CPU.

    Serving and training both pick their device here; each says which of its settings asked for
    a missing one.
    """
    if requested == "cpu":
        return "cpu"
    if requested == "auto" and not (torch_installed() and nvidia_gpu_present()):
        return "cpu"
    if not torch_installed():
        raise DeviceUnavailable(
            "cuda was asked for, but torch is not installed: install `s4digits[gpu]`"
        )
    import torch  # only here: it takes a second and ~200 MiB

    if torch.cuda.is_available():
        return "cuda"
    if requested == "auto":
        return "cpu"
    raise DeviceUnavailable("cuda was asked for, but torch sees no CUDA device")

"""What every anchor's handler runs, so that all of them do the same work as ours per image.

    net = load_net()                       # the committed S4 weights in the torch S4Net, 1 thread
    pixels = mnist_form(png_bytes)         # app.pipeline's decode, then to_mnist_form, as ours
    digits = read_digits(net, [pixels])    # one forward pass over the batch -> [7]

Imports only what the anchors' own environments hold besides their server: torch, numpy,
Pillow, OpenCV, safetensors (versions pinned as in pyproject.toml), and this repository.
torch is imported by the first load_net, so that a process that only prepares images (Mosec's
decode stage) does not hold it.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.pipeline.decode import decode
from app.pipeline.mnist_form import to_mnist_form

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = REPO_ROOT / "weights" / "s4net.safetensors"
MAX_PIXELS = 16_000_000  # ours' default (S4_MAX_PIXELS)

if TYPE_CHECKING:
    from app.model import S4Net


def load_net(weights: Path = WEIGHTS) -> "S4Net":
    """The S4 net in eval mode, with one torch thread for this process (2 cores, 2+ processes)."""
    import torch

    from app.artifacts.weights import load_weights
    from app.model import net_from_tensors

    torch.set_num_threads(1)
    return net_from_tensors(load_weights(weights).tensors)


def mnist_form(data: bytes) -> np.ndarray:
    """An uploaded image file's bytes -> uint8 [28, 28] in MNIST form, as ours prepares one."""
    return to_mnist_form(decode(data, MAX_PIXELS))


def read_digits(net: "S4Net", images: Sequence[np.ndarray]) -> list[int]:
    """The digit in each MNIST-form image, from one forward pass over them all."""
    import torch

    from app.model import normalize

    batch = torch.from_numpy(np.stack(images))[:, None]
    with torch.inference_mode():
        return net(normalize(batch)).argmax(dim=1).tolist()

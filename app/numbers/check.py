"""The digit check: how likely a candidate digit is one whole digit, seen in its context.

The S4 net reads a candidate in MNIST form, where half an 8 or a 5 without its bar can look like
a fine digit. The check sees what the net cannot: ``view`` draws the ink around the candidate
(a square of WINDOW writing heights, centred on the candidate across and on the line of writing
down) in two channels, all the ink and the candidate's own, so a cut through a stroke, a piece
of a neighbour or a stroke off the line shows. ``DigitCheck`` is a small CNN over that view,
trained by ``python -m training.digit_check`` on numbers composed from MNIST training digits
(training/numbers.py), and run in ONNX Runtime as the S4 net is (app/runtime/onnx_graph.py).
"""

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from app.artifacts.weights import card_path_for, sha256_hex
from app.runtime.onnx_graph import build_check_graph
from app.runtime.runtimes import onnx_session, run_in_passes

# The view: a square of this many writing heights, drawn at SIDE x SIDE pixels.
WINDOW = 1.6


SIDE = 24


# The layers, as training/digit_check.py's torch module names them: three 3x3 convolutions
# (padding 1, ReLU, 2x2 max pooling) and two dense layers (app/runtime/onnx_graph.py).
CONVOLUTIONS = ("conv1", "conv2", "conv3")


DENSE = ("dense1", "dense2")


def view(
    levels: np.ndarray, ink: np.ndarray, left: int, top: int, middle: float, height: float
) -> np.ndarray:
    """uint8 [2, SIDE, SIDE]: all the ink of ``levels`` (float ink levels of the picture) and
    the candidate's ``ink`` (placed at ``left``, ``top``), in the square of WINDOW * ``height``
    centred on the candidate across and on row ``middle`` (the line of writing there) down."""
    import cv2

    size = max(2, round(WINDOW * height))
    x0 = round(left + ink.shape[1] / 2 - size / 2)
    y0 = round(middle - size / 2)
    both = np.zeros((2, size, size), dtype=np.float32)
    _paste(both[0], levels, x0, y0)
    _paste(both[1], ink, x0 - left, y0 - top)
    out = np.empty((2, SIDE, SIDE), dtype=np.uint8)
    for channel in range(2):
        small = cv2.resize(both[channel], (SIDE, SIDE), interpolation=cv2.INTER_AREA)
        out[channel] = np.clip(np.rint(small * 255.0), 0, 255)
    return out


def _paste(target: np.ndarray, source: np.ndarray, x0: int, y0: int) -> None:
    """target[y, x] = source[y0 + y, x0 + x] where that lies inside ``source``."""
    h, w = target.shape
    sy, sx = max(0, y0), max(0, x0)
    ey, ex = min(source.shape[0], y0 + h), min(source.shape[1], x0 + w)
    if sy < ey and sx < ex:
        target[sy - y0 : ey - y0, sx - x0 : ex - x0] = source[sy:ey, sx:ex]


@dataclass(frozen=True)
class DigitCheck:
    """The check, ready to run: its tensors (a state dict of training/digit_check.py's module,
    float32) in an ONNX Runtime session, and the file they came from, its SHA-256 and its card
    (what GET /model reports)."""

    tensors: dict[str, np.ndarray]
    path: Path | None = None
    sha256: str = ""
    card: dict | None = None
    session: object = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        graph = build_check_graph(self.tensors, SIDE)
        object.__setattr__(self, "session", onnx_session(graph, threads=1))

    def log_whole(self, views: np.ndarray) -> np.ndarray:
        """uint8 [N, 2, SIDE, SIDE] views -> float64 [N]: log P(one whole digit)."""
        if not len(views):
            return np.zeros(0)
        logits = run_in_passes(self.session, "views", views)[:, 0].astype(np.float64)
        return -np.logaddexp(0.0, -logits)


class CheckWeightsError(ValueError):
    """The digit check's weights file is missing or does not fit the check."""


@cache
def load_check(path: Path) -> DigitCheck:
    """The check's weights from ``path`` (S4_DIGIT_CHECK) and its card (the .json beside it),
    loaded once per process; raises CheckWeightsError, naming the file, if either cannot be read,
    the tensors do not fit, or the card is for other weights."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        data = Path(path).read_bytes()
        tensors = load(data)
        card = json.loads(card_path_for(Path(path)).read_text())
    except (OSError, SafetensorError, ValueError) as exc:
        raise CheckWeightsError(f"{path}: cannot read the digit check's weights: {exc}") from None
    expected = {f"{name}.{kind}" for name in (*CONVOLUTIONS, *DENSE) for kind in ("weight", "bias")}
    if set(tensors) != expected:
        raise CheckWeightsError(f"{path}: not the digit check's tensors: {sorted(tensors)}")
    sha256 = sha256_hex(data)
    if card.get("weights_sha256") != sha256:
        raise CheckWeightsError(f"{path}: its card is for other weights (SHA-256 differs)")
    return DigitCheck(tensors, Path(path), sha256, card)

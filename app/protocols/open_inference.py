"""The Open Inference Protocol (KServe v2, Triton's HTTP protocol) for the S4 net, without HTTP.


The protocol's model and its types, shared by every transport: the REST routes' codec is
app/protocols/open_inference_rest.py. The model ``s4net`` has two inputs, of which a request
carries one, and two outputs:

    images       UINT8  [-1, 28, 28]  digits in MNIST form (white ink on black), read as they are
    image_bytes  BYTES  [-1]          encoded image files, prepared as /predict prepares uploads
    probabilities FP32  [-1, 10]
    digit        INT64  [-1]
"""

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from app.pipeline.mnist_form import MNIST_SIZE
from app.pipeline.prepare import PreparedImage

MODEL_NAME = "s4net"
IMAGES = "images"
IMAGE_BYTES = "image_bytes"
PROBABILITIES = "probabilities"
DIGIT = "digit"
VERSION_HEX_DIGITS = 12  # a model version is this many leading hex digits of the weights' SHA-256
INPUTS = [
    {"name": IMAGES, "datatype": "UINT8", "shape": [-1, MNIST_SIZE, MNIST_SIZE]},
    {"name": IMAGE_BYTES, "datatype": "BYTES", "shape": [-1]},
]
OUTPUTS = [
    {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, 10]},
    {"name": DIGIT, "datatype": "INT64", "shape": [-1]},
]
EXTENSIONS = ["binary_tensor_data"]


class ProtocolError(Exception):
    """The request cannot be answered; the message says what to fix. 400 unless told otherwise."""

    def __init__(self, message: str, status_code: int = 400):
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool  # raw bytes after the JSON header, instead of JSON data


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    images: np.ndarray | None  # uint8 [n, 28, 28] when the input is `images`
    encoded: list[bytes] | None  # the files when the input is `image_bytes`
    outputs: tuple[RequestedOutput, ...]  # in the order to answer them

    @property
    def count(self) -> int:
        return len(self.images) if self.images is not None else len(self.encoded)


def model_version(weights_sha256: str) -> str:
    """The served weights' version: the first 12 hex digits of their SHA-256."""
    return weights_sha256[:VERSION_HEX_DIGITS]


def server_metadata() -> dict:
    try:
        server_version = version("s4digits")
    except PackageNotFoundError:  # run from a checkout that was never installed
        server_version = "unknown"
    return {"name": "s4digits", "version": server_version, "extensions": EXTENSIONS}


def model_metadata(versions: list[str], platform: str) -> dict:
    """``versions``: the served one, or none while no weights are loaded."""
    return {
        "name": MODEL_NAME,
        "versions": versions,
        "platform": platform,
        "inputs": INPUTS,
        "outputs": OUTPUTS,
    }


def as_prepared_images(images: np.ndarray) -> list[PreparedImage]:
    """`images` input, read as it is."""
    return [PreparedImage(input_size=(MNIST_SIZE, MNIST_SIZE), pixels=pixels) for pixels in images]


def digits(probabilities: np.ndarray) -> np.ndarray:
    """Each image's digit: its most probable class, as /predict answers it."""
    return probabilities.argmax(axis=1)

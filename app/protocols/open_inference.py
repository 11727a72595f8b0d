"""The Open Inference Protocol (KServe v2, Triton's protocol) for the S4 net, without a transport.

The protocol's model, its types and the checks every transport shares: the REST routes' codec
is app/protocols/open_inference_rest.py, the gRPC service's app/protocols/open_inference_grpc.py.
The model ``s4net`` has two inputs, of which a request carries one, and two outputs:

    images       UINT8  [-1, 28, 28]  digits in MNIST form (white ink on black), read as they are
    image_bytes  BYTES  [-1]          encoded image files, prepared as /predict prepares uploads
    probabilities FP32  [-1, 10]
    digit        INT64  [-1]
"""

import struct
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
BYTES_LENGTH = struct.Struct("<I")  # the length before each BYTES element in raw tensor data


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


def check_shape(
    name: str, datatype: object, shape: object, want_datatype: str, max_images: int
) -> list[int]:
    """An input's shape, checked with its datatype against its metadata; the image count (its
    first dimension) within max_images."""
    if datatype != want_datatype:
        raise ProtocolError(f"input `{name}` has datatype {datatype!r}; it must be {want_datatype}")
    expected = next(entry["shape"] for entry in INPUTS if entry["name"] == name)
    if (
        not isinstance(shape, list)
        or len(shape) != len(expected)
        or not all(type(dim) is int for dim in shape)
        or any(want != -1 and dim != want for dim, want in zip(shape, expected, strict=True))
    ):
        raise ProtocolError(
            f"input `{name}` has shape {shape!r}; it must be {expected} with -1 the number of "
            "images"
        )
    if shape[0] < 1:
        raise ProtocolError(f"input `{name}` holds no image (shape {shape}); send at least one")
    if shape[0] > max_images:
        raise ProtocolError(
            f"{shape[0]} images in one request, more than {max_images} (S4_MAX_IMAGES); split "
            "them over several requests"
        )
    return shape


def split_bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """``count`` BYTES elements in raw form: each a 4-byte little-endian length, then data."""
    elements, offset = [], 0
    for index in range(count):
        if offset + BYTES_LENGTH.size > len(raw):
            raise ProtocolError(
                f"the binary data of `{IMAGE_BYTES}` ends before element {index} of {count}"
            )
        (length,) = BYTES_LENGTH.unpack_from(raw, offset)
        offset += BYTES_LENGTH.size
        if offset + length > len(raw):
            raise ProtocolError(
                f"{IMAGE_BYTES}[{index}] claims {length:,} bytes; the binary data ends before"
            )
        elements.append(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise ProtocolError(
            f"the binary data of `{IMAGE_BYTES}` has {len(raw) - offset:,} bytes after its "
            f"{count} elements"
        )
    return elements


def check_file_sizes(files: list[bytes], max_image_bytes: int) -> list[bytes]:
    for index, file in enumerate(files):
        if len(file) > max_image_bytes:
            raise ProtocolError(
                f"{IMAGE_BYTES}[{index}] is {len(file):,} bytes, more than the "
                f"{max_image_bytes:,}-byte limit (S4_MAX_IMAGE_BYTES); send a smaller image"
            )
    return files


def check_model(model_name: str, version: str | None, served: list[str]) -> list[str]:
    """The ``served`` versions a request names: ``version`` alone, or all of them without one;
    ProtocolError 404 for another model, or a version not served."""
    if model_name != MODEL_NAME:
        raise ProtocolError(f"unknown model {model_name!r}: this server has `{MODEL_NAME}`", 404)
    if not version:
        return served
    if version not in served:
        serving = f"versions {', '.join(served)}" if served else "no version (not ready)"
        raise ProtocolError(
            f"model `{MODEL_NAME}` has no version {version!r}; serving {serving}", 404
        )
    return [version]


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
    """``versions``: those served (app/versions.py), or none while no weights are loaded."""
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

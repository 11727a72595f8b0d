"""The Open Inference Protocol's REST codec: JSON and binary-tensor request bodies in, answers out.

Pure parsing and encoding, independent of FastAPI: app/api/v2.py moves the bytes.

Tensors come as JSON ``data`` (flat or nested row-major; BYTES as UTF-8 strings, or base64 with
the input parameter ``content_type: base64``, MLServer's convention) or in the binary tensor data
extension: ``Inference-Header-Content-Length`` bytes of JSON, then each input's raw bytes
(``binary_data_size``; BYTES elements each a 4-byte little-endian length and the bytes).
Outputs are JSON ``data`` unless ``binary_data`` (per output) or ``binary_data_output`` (per
request) asks for them in binary. Request bodies may be gzip or deflate compressed
(``decode_content``). Every problem raises ProtocolError with what to fix.
"""

import base64
import binascii
import math
import zlib
from dataclasses import dataclass

import numpy as np
import orjson

from app.pipeline.mnist_form import MNIST_SIZE
from app.protocols.open_inference import (
    DIGIT,
    IMAGE_BYTES,
    IMAGES,
    MODEL_NAME,
    OUTPUTS,
    PROBABILITIES,
    InferRequest,
    ProtocolError,
    RequestedOutput,
    check_file_sizes,
    check_shape,
    digits,
    split_bytes_elements,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
PIXELS_PER_IMAGE = MNIST_SIZE * MNIST_SIZE

# Requests ----------------------------------------------------------------------------------


def parse_infer_request(
    body: bytes, header_length: str | None, max_images: int, max_image_bytes: int
) -> InferRequest:
    """An inference request's body (and its Inference-Header-Content-Length header, if any)."""
    header, binary = split_binary(body, header_length)
    try:
        request = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the request is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ProtocolError("the request must be a JSON object with `inputs`")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("`id` must be a string")
    parameters = _parameters(request, "the request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(
            f"`inputs` must hold exactly one input: `{IMAGES}` (UINT8 [n, 28, 28]) or "
            f"`{IMAGE_BYTES}` (BYTES [n])"
        )
    (tensor,) = inputs
    name = tensor.get("name")
    if name == IMAGES:
        images, encoded = _images(tensor, binary, max_images), None
    elif name == IMAGE_BYTES:
        images, encoded = None, _encoded_images(tensor, binary, max_images, max_image_bytes)
    else:
        raise ProtocolError(
            f"unknown input {name!r}: send `{IMAGES}` (UINT8 [n, 28, 28]) or `{IMAGE_BYTES}` "
            "(BYTES [n])"
        )
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise ProtocolError("the request parameter `binary_data_output` must be true or false")
    outputs = _requested_outputs(request.get("outputs"), binary_default)
    return InferRequest(request_id, images, encoded, outputs)


# Content-Encoding -> zlib's wbits: tritonclient compresses requests with either on request.
CONTENT_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body as sent before its Content-Encoding (gzip, deflate, or none), refused past
    ``max_bytes`` decompressed without inflating the rest (a decompression bomb costs nothing)."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = CONTENT_ENCODINGS.get(encoding.strip().lower())
    if wbits is None:
        raise ProtocolError(f"Content-Encoding {encoding!r} is not supported; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the body is not valid {encoding} data: {exc}") from None
    if len(data) > max_bytes:
        raise ProtocolError(f"the body inflates to more than {max_bytes:,} bytes; send less")
    if not inflater.eof:
        raise ProtocolError(f"the {encoding} body is truncated")
    return data


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON header, binary data) of a body, as its Inference-Header-Content-Length splits it."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise ProtocolError(
            f"{HEADER_LENGTH} must be the JSON header's size in bytes, at most the body's "
            f"{len(body):,} bytes; got {header_length!r}"
        )
    split = int(header_length)
    return body[:split], body[split:]


def _parameters(holder: dict, what: str) -> dict:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(f"`parameters` of {what} must be a JSON object")
    return parameters


def _shape(tensor: dict, datatype: str, max_images: int) -> list[int]:
    return check_shape(
        tensor["name"], tensor.get("datatype"), tensor.get("shape"), datatype, max_images
    )


def _tensor_source(tensor: dict, binary: bytes) -> tuple[int | None, object]:
    """(binary_data_size, None) for binary data, (None, the JSON data) otherwise."""
    name = tensor["name"]
    parameters = _parameters(tensor, f"input `{name}`")
    size = parameters.get("binary_data_size")
    if size is None:
        if binary:
            raise ProtocolError(
                f"the body has {len(binary):,} bytes of binary data, but input `{name}` gives "
                "no `binary_data_size`"
            )
        if "data" not in tensor:
            raise ProtocolError(f"input `{name}` has neither `data` nor `binary_data_size`")
        return None, tensor["data"]
    if type(size) is not int or size != len(binary):
        raise ProtocolError(
            f"input `{name}` has binary_data_size {size!r}, but the body holds {len(binary):,} "
            f"bytes after the JSON header ({HEADER_LENGTH})"
        )
    if "data" in tensor:
        raise ProtocolError(f"input `{name}` has both `data` and `binary_data_size`; send one")
    return size, None


def _images(tensor: dict, binary: bytes, max_images: int) -> np.ndarray:
    shape = _shape(tensor, "UINT8", max_images)
    size, data = _tensor_source(tensor, binary)
    count = shape[0] * PIXELS_PER_IMAGE
    if size is not None:
        if size != count:
            raise ProtocolError(
                f"input `{IMAGES}` of shape {shape} is {count:,} bytes of UINT8; the binary data "
                f"has {size:,}"
            )
        return np.frombuffer(binary, dtype=np.uint8).reshape(shape)
    flat = flatten(data, shape, IMAGES)
    if set(map(type, flat)) != {int}:
        raise ProtocolError(f"input `{IMAGES}` must hold integers from 0 to 255 (UINT8)")
    try:
        pixels = np.array(flat, dtype=np.int64)
    except OverflowError:
        pixels = None
    if pixels is None or pixels.min() < 0 or pixels.max() > 255:
        raise ProtocolError(f"input `{IMAGES}` must hold integers from 0 to 255 (UINT8)")
    return pixels.astype(np.uint8).reshape(shape)


def flatten(data: object, shape: list[int], name: str) -> list:
    """JSON tensor data, flat or nested to ``shape``, as a flat row-major list."""
    count = math.prod(shape)
    if isinstance(data, list) and len(data) == count and not (data and isinstance(data[0], list)):
        return data  # flat already; the caller checks the element types
    flat: list = []

    def walk(node: object, depth: int) -> None:
        if depth == len(shape):
            flat.append(node)
        elif isinstance(node, list) and len(node) == shape[depth]:
            for child in node:
                walk(child, depth + 1)
        else:
            raise ProtocolError(
                f"input `{name}` data must be a list of {count:,} elements, or lists nested to "
                f"its shape {shape}"
            )

    walk(data, 0)
    return flat


def _encoded_images(
    tensor: dict, binary: bytes, max_images: int, max_image_bytes: int
) -> list[bytes]:
    (count,) = _shape(tensor, "BYTES", max_images)
    size, data = _tensor_source(tensor, binary)
    if size is not None:
        files = split_bytes_elements(binary, count)
    else:
        content_type = _parameters(tensor, f"input `{IMAGE_BYTES}`").get("content_type")
        if content_type not in (None, "str", "base64"):
            raise ProtocolError(
                f"input `{IMAGE_BYTES}` content_type {content_type!r} is not supported; use "
                "base64 (or send the files as binary data)"
            )
        strings = flatten(data, [count], IMAGE_BYTES)
        if not all(isinstance(item, str) for item in strings):
            raise ProtocolError(f"input `{IMAGE_BYTES}` data must be strings (BYTES)")
        files = [_file_from_string(item, index, content_type) for index, item in enumerate(strings)]
    return check_file_sizes(files, max_image_bytes)


def _file_from_string(item: str, index: int, content_type: str | None) -> bytes:
    if content_type != "base64":
        return item.encode()
    try:
        return base64.b64decode(item, validate=True)
    except binascii.Error:
        raise ProtocolError(f"{IMAGE_BYTES}[{index}] is not valid base64") from None


def _requested_outputs(outputs: object, binary_default: bool) -> tuple[RequestedOutput, ...]:
    known = [entry["name"] for entry in OUTPUTS]
    if outputs is None:
        return tuple(RequestedOutput(name, binary_default) for name in known)
    if not isinstance(outputs, list) or not outputs:
        raise ProtocolError(f"`outputs` must be a non-empty list of outputs, from {known}")
    requested = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in known:
            raise ProtocolError(f"unknown output {name!r}: the outputs are {known}")
        if any(earlier.name == name for earlier in requested):
            raise ProtocolError(f"output `{name}` is requested twice")
        parameters = _parameters(output, f"output `{name}`")
        if "classification" in parameters:
            raise ProtocolError(f"the classification extension is not supported; read `{DIGIT}`")
        binary = parameters.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise ProtocolError(f"`binary_data` of output `{name}` must be true or false")
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)


# Responses ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    media_type: str
    headers: dict[str, str]  # Inference-Header-Content-Length when some output is binary


def encode_infer_response(
    request: InferRequest, probabilities: np.ndarray, version: str
) -> EncodedResponse:
    """The answer to ``request`` from its images' probabilities (float32 [n, 10])."""
    tensors = {
        PROBABILITIES: ("FP32", probabilities.astype("<f4", copy=False)),
        DIGIT: ("INT64", digits(probabilities).astype("<i8")),
    }
    outputs, blobs = [], []
    for output in request.outputs:
        datatype, array = tensors[output.name]
        entry: dict = {"name": output.name, "datatype": datatype, "shape": list(array.shape)}
        if output.binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel()
        outputs.append(entry)
    answer: dict = {"model_name": MODEL_NAME, "model_version": version}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = outputs
    header = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return EncodedResponse(header, "application/json", {})
    return EncodedResponse(
        header + b"".join(blobs), "application/octet-stream", {HEADER_LENGTH: str(len(header))}
    )

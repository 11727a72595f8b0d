"""The Open Inference Protocol's gRPC codec: KServe's ModelInferRequest in, ModelInferResponse out.

Pure parsing and encoding (app/api/grpc_server.py moves the messages). Tensors come in
``raw_input_contents`` as tritonclient sends them (UINT8 pixels row-major; BYTES elements each a
4-byte little-endian length and the bytes) or in the typed ``contents`` (``uint_contents`` for
UINT8, ``bytes_contents`` for BYTES). Outputs always go back in ``raw_output_contents``, in the
order of the output tensors, as Triton answers and tritonclient reads them. Every problem raises
ProtocolError with what to fix; its status_code (400/404/503) maps to a gRPC status code.
"""

import numpy as np

from app.pipeline.mnist_form import MNIST_SIZE
from app.protocols.kserve import grpc_predict_v2_pb2 as pb
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

PIXELS_PER_IMAGE = MNIST_SIZE * MNIST_SIZE


def parse_infer_request(
    request: pb.ModelInferRequest, max_images: int, max_image_bytes: int
) -> InferRequest:
    """A ModelInferRequest, checked as the REST codec checks its JSON."""
    if len(request.inputs) != 1:
        raise ProtocolError(
            f"`inputs` must hold exactly one input: `{IMAGES}` (UINT8 [n, 28, 28]) or "
            f"`{IMAGE_BYTES}` (BYTES [n]); got {len(request.inputs)}"
        )
    if len(request.raw_input_contents) not in (0, 1):
        raise ProtocolError(
            f"`raw_input_contents` holds {len(request.raw_input_contents)} entries for one input"
        )
    (tensor,) = request.inputs
    raw = request.raw_input_contents[0] if request.raw_input_contents else None
    if raw is not None and tensor.HasField("contents"):
        raise ProtocolError(f"input `{tensor.name}` has both `contents` and raw contents; send one")
    if raw is None and not tensor.HasField("contents"):
        raise ProtocolError(f"input `{tensor.name}` has neither `contents` nor raw contents")
    if tensor.name == IMAGES:
        images, encoded = _images(tensor, raw, max_images), None
    elif tensor.name == IMAGE_BYTES:
        images, encoded = None, _encoded_images(tensor, raw, max_images, max_image_bytes)
    else:
        raise ProtocolError(
            f"unknown input {tensor.name!r}: send `{IMAGES}` (UINT8 [n, 28, 28]) or "
            f"`{IMAGE_BYTES}` (BYTES [n])"
        )
    return InferRequest(request.id or None, images, encoded, _requested_outputs(request.outputs))


def _images(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, max_images: int):
    shape = check_shape(IMAGES, tensor.datatype, list(tensor.shape), "UINT8", max_images)
    count = shape[0] * PIXELS_PER_IMAGE
    if raw is not None:
        if len(raw) != count:
            raise ProtocolError(
                f"input `{IMAGES}` of shape {shape} is {count:,} bytes of UINT8; the raw contents "
                f"have {len(raw):,}"
            )
        return np.frombuffer(raw, dtype=np.uint8).reshape(shape)
    values = tensor.contents.uint_contents
    if len(values) != count:
        raise ProtocolError(
            f"input `{IMAGES}` of shape {shape} has {count:,} elements; `uint_contents` has "
            f"{len(values):,}"
        )
    pixels = np.array(values, dtype=np.uint32)
    if pixels.max() > 255:
        raise ProtocolError(f"input `{IMAGES}` must hold integers from 0 to 255 (UINT8)")
    return pixels.astype(np.uint8).reshape(shape)


def _encoded_images(
    tensor: pb.ModelInferRequest.InferInputTensor,
    raw: bytes | None,
    max_images: int,
    max_image_bytes: int,
) -> list[bytes]:
    (count,) = check_shape(IMAGE_BYTES, tensor.datatype, list(tensor.shape), "BYTES", max_images)
    if raw is not None:
        files = split_bytes_elements(raw, count)
    else:
        files = list(tensor.contents.bytes_contents)
        if len(files) != count:
            raise ProtocolError(
                f"input `{IMAGE_BYTES}` of shape [{count}] has {len(files)} `bytes_contents`"
            )
    return check_file_sizes(files, max_image_bytes)


def _requested_outputs(outputs) -> tuple[RequestedOutput, ...]:
    known = [entry["name"] for entry in OUTPUTS]
    if not outputs:
        return tuple(RequestedOutput(name, True) for name in known)
    requested: list[RequestedOutput] = []
    for output in outputs:
        if output.name not in known:
            raise ProtocolError(f"unknown output {output.name!r}: the outputs are {known}")
        if any(earlier.name == output.name for earlier in requested):
            raise ProtocolError(f"output `{output.name}` is requested twice")
        if "classification" in output.parameters:
            raise ProtocolError(f"the classification extension is not supported; read `{DIGIT}`")
        requested.append(RequestedOutput(output.name, True))
    return tuple(requested)


def encode_infer_response(
    request: InferRequest, probabilities: np.ndarray, version: str
) -> pb.ModelInferResponse:
    """The answer to ``request`` from its images' probabilities (float32 [n, 10])."""
    tensors = {
        PROBABILITIES: ("FP32", probabilities.astype("<f4", copy=False)),
        DIGIT: ("INT64", digits(probabilities).astype("<i8")),
    }
    response = pb.ModelInferResponse(
        model_name=MODEL_NAME, model_version=version, id=request.id or ""
    )
    for output in request.outputs:
        datatype, array = tensors[output.name]
        response.outputs.add(name=output.name, datatype=datatype, shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response


def model_metadata_response(metadata: dict) -> pb.ModelMetadataResponse:
    """open_inference.model_metadata's dict as the gRPC message."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensor(**entry) for entry in metadata["inputs"]],
        outputs=[tensor(**entry) for entry in metadata["outputs"]],
    )


def server_metadata_response(metadata: dict) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(**metadata)

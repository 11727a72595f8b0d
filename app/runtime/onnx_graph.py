"""The S4 net as an ONNX graph, built from a weights file's tensors without torch or onnx.

``build_onnx_graph`` is the graph the CPU worker serves (app/runtime/runtimes.py) and the one
an export writes. It writes the ONNX protobuf directly (the few message types a graph of plain
operators needs) instead of importing the onnx package, whose import costs a worker ~0.7 s of
CPU at start-up (docs/decisions.md); the tests check the bytes with onnx's own checker and hold the
graph's answers to the torch net's.
"""

import struct
from collections.abc import Iterable, Mapping

import numpy as np

from app.artifacts.architecture import (
    BATCH_NORM_EPSILON,
    INPUT_SHAPE,
    MNIST_MEAN,
    MNIST_STD,
    NUM_CLASSES,
    layers,
    tensor_problems,
)

ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version of opset 17 (ONNX 1.12)

# onnx.proto's TensorProto.DataType and AttributeProto.AttributeType values used here.
_DATA_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int64): 7}
_FLOAT_TYPE, _ATTR_FLOAT, _ATTR_INT, _ATTR_INTS = 1, 1, 2, 7


def build_onnx_graph(
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    temperature: float = 1.0,
) -> bytes:
    """The S4 net with its ends attached, as an ONNX model file's bytes (opset 17).

    Input ``images``: uint8 [N, 28, 28] (white ink on black); output ``probabilities``: float32
    [N, 10], the exp of the net's log-softmax, or with a ``temperature`` other than 1 the softmax
    of the log-softmax divided by it (app.inference.apply_temperature); eval mode (dropout is the
    identity, batch norm uses the running statistics). ``tensors`` is a weights file's state dict
    (``app.artifacts.weights.load_weights(path).tensors``); raises ValueError if it does not fit
    the net.
    ``metadata`` goes into the model's metadata_props (what an export records about the weights).
    """
    if problems := tensor_problems(tensors):
        raise ValueError(f"the tensors do not fit the S4 net: {'; '.join(problems)}")
    initializers = [
        _tensor("scale", np.float32(255.0)),
        _tensor("mean", np.float32(MNIST_MEAN)),
        _tensor("std", np.float32(MNIST_STD)),
        _tensor("channel_axis", np.array([1], np.int64)),
    ]
    # The input end, as app.model.normalize: (pixels / 255 - mean) / std in float32, [N,1,28,28].
    nodes = [
        _node("Cast", ["images"], "pixels", to=_FLOAT_TYPE),
        _node("Div", ["pixels", "scale"], "scaled"),
        _node("Sub", ["scaled", "mean"], "centred"),
        _node("Div", ["centred", "std"], "normalized"),
        _node("Unsqueeze", ["normalized", "channel_axis"], "input"),
    ]
    current = "input"
    for layer in layers():
        if layer.type == "Dropout":  # the identity at inference
            continue
        names = [
            f"{layer.key}.{name}" for name in layer.parameters if name != "num_batches_tracked"
        ]
        initializers += [_tensor(name, tensors[name]) for name in names]
        kernel = [layer.kernel] * 2
        if layer.type == "Conv2d":
            pads = [layer.kernel // 2] * 4
            node = _node("Conv", [current, *names], layer.key, kernel_shape=kernel, pads=pads)
        elif layer.type == "BatchNorm2d":
            node = _node(
                "BatchNormalization", [current, *names], layer.key, epsilon=BATCH_NORM_EPSILON
            )
        elif layer.type in ("MaxPool2d", "AvgPool2d"):
            op = "MaxPool" if layer.type == "MaxPool2d" else "AveragePool"
            node = _node(op, [current], layer.key, kernel_shape=kernel, strides=kernel)
        elif layer.type == "ReLU":
            node = _node("Relu", [current], layer.key)
        elif layer.type == "Flatten":
            node = _node("Flatten", [current], layer.key, axis=1)
        elif layer.type == "LogSoftmax":
            node = _node("LogSoftmax", [current], layer.key, axis=1)
        else:
            raise AssertionError(f"no ONNX operator for {layer.type}")
        nodes.append(node)
        current = layer.key
    # The output end, as the torch runtime's: probabilities, calibrated by the temperature.
    if temperature == 1.0:
        nodes.append(_node("Exp", [current], "probabilities"))
    else:
        initializers.append(_tensor("temperature", np.float32(temperature)))
        nodes.append(_node("Div", [current, "temperature"], "tempered"))
        nodes.append(_node("Softmax", ["tempered"], "probabilities", axis=1))
    return _model(
        "s4net",
        nodes,
        initializers,
        _value_info("images", np.uint8, ["batch", *INPUT_SHAPE[1:]]),
        _value_info("probabilities", np.float32, ["batch", NUM_CLASSES]),
        metadata,
    )


def build_check_graph(tensors: Mapping[str, np.ndarray], side: int) -> bytes:
    """The digit check (app/numbers/check.py) as an ONNX model file's bytes (opset 17).

    Input ``views``: uint8 [N, 2, side, side]; output ``logits``: float32 [N, 1], the logit of
    "one whole digit". ``tensors``: training/digit_check.py's module's state dict: conv1-conv3
    (3x3, padding 1, each followed by ReLU and 2x2 max pooling), dense1 (ReLU) and dense2.
    """
    initializers = [_tensor("scale", np.float32(255.0))]
    nodes = [
        _node("Cast", ["views"], "pixels", to=_FLOAT_TYPE),
        _node("Div", ["pixels", "scale"], "x0"),
    ]
    current = "x0"
    for name in ("conv1", "conv2", "conv3"):
        weights = [f"{name}.weight", f"{name}.bias"]
        initializers += [_tensor(w, tensors[w]) for w in weights]
        nodes += [
            _node("Conv", [current, *weights], name, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            _node("Relu", [name], f"{name}.relu"),
            _node("MaxPool", [f"{name}.relu"], f"{name}.pool", kernel_shape=[2, 2], strides=[2, 2]),
        ]
        current = f"{name}.pool"
    nodes.append(_node("Flatten", [current], "flat", axis=1))
    current = "flat"
    for name in ("dense1", "dense2"):
        weights = [f"{name}.weight", f"{name}.bias"]
        initializers += [_tensor(w, tensors[w]) for w in weights]
        output = "logits" if name == "dense2" else name
        nodes.append(_node("Gemm", [current, *weights], output, transB=1))
        if name == "dense1":
            nodes.append(_node("Relu", [name], f"{name}.relu"))
            current = f"{name}.relu"
    return _model(
        "digit_check",
        nodes,
        initializers,
        _value_info("views", np.uint8, ["batch", 2, side, side]),
        _value_info("logits", np.float32, ["batch", 1]),
    )


def _model(
    name: str,
    nodes: list[bytes],
    initializers: list[bytes],
    graph_input: bytes,
    graph_output: bytes,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """ModelProto bytes of one graph with one input and one output."""
    graph = (
        _repeated(1, nodes)
        + _string(2, name)
        + _repeated(5, initializers)
        + _message(11, graph_input)
        + _message(12, graph_output)
    )
    opset = _varint_field(2, ONNX_OPSET)
    # StringStringEntryProto: key (1), value (2).
    properties = [_string(1, key) + _string(2, value) for key, value in (metadata or {}).items()]
    return (
        _varint_field(1, ONNX_IR_VERSION)
        + _string(2, "s4digits")
        + _message(7, graph)
        + _message(8, opset)
        + _repeated(14, properties)
    )


# Protobuf wire format: a field is a key (number << 3 | wire type) and a value; wire type 0 is a
# varint, 2 a length-prefixed run of bytes (strings, bytes, sub-messages), 5 four bytes.


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are written as their two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _message(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string(number: int, text: str) -> bytes:
    return _message(number, text.encode())


def _repeated(number: int, payloads: Iterable[bytes]) -> bytes:
    return b"".join(_message(number, payload) for payload in payloads)


def _tensor(name: str, value: np.ndarray | np.generic) -> bytes:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little-endian)."""
    array = np.asarray(value)
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    dims = b"".join(_varint_field(1, dim) for dim in array.shape)
    return dims + _varint_field(2, _DATA_TYPES[array.dtype]) + _string(8, name) + _message(9, data)


def _node(op_type: str, inputs: list[str], output: str, **attributes: float | list[int]) -> bytes:
    """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5)."""
    attribute_bytes = []
    for name, value in attributes.items():  # AttributeProto: name (1), f/i/ints (2/3/8), type (20)
        if isinstance(value, list):
            body = b"".join(_varint_field(8, v) for v in value) + _varint_field(20, _ATTR_INTS)
        elif isinstance(value, int):
            body = _varint_field(3, value) + _varint_field(20, _ATTR_INT)
        else:
            body = _varint(2 << 3 | 5) + struct.pack("<f", value) + _varint_field(20, _ATTR_FLOAT)
        attribute_bytes.append(_string(1, name) + body)
    return (
        b"".join(_string(1, name) for name in inputs)
        + _string(2, output)
        + _string(3, output)
        + _string(4, op_type)
        + _repeated(5, attribute_bytes)
    )


def _value_info(name: str, dtype: type, shape: list[int | str]) -> bytes:
    """ValueInfoProto: name (1), type (2) = TypeProto.tensor_type (1): elem_type (1), shape (2)."""
    dims = b"".join(
        _message(1, _string(2, dim) if isinstance(dim, str) else _varint_field(1, dim))
        for dim in shape
    )
    tensor_type = _varint_field(1, _DATA_TYPES[np.dtype(dtype)]) + _message(2, dims)
    return _string(1, name) + _message(2, _message(1, tensor_type))

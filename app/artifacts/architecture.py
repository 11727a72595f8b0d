"""The S4 net's architecture as plain data, without torch (``shared/spec/s4-net.md``).

One table, ``BLOCKS``, drives everything that must know the net's layers without building it in
torch: the weights file's expected tensors (``parameter_shapes``), the spec's layer table for
GET /model (``layer_rows``), and the ONNX graph the CPU worker serves (app/runtime/runtimes.py). The
torch net (app/model.py) is checked against it by the tests: same state dict, same torchinfo rows,
same probabilities.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

# MNIST's pixel statistics after scaling to [0, 1]; training and serving both normalise with these.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
BATCH_NORM_EPSILON = 1e-5  # torch's default, which S4Net uses

# Block name -> its layers in order: (torch class name, argument). The argument is the output
# channels of a Conv2d (3x3 with padding 1 and no bias; 1x1 convolutions are named by kernel),
# the kernel (= stride) of a pooling layer.
BLOCKS: dict[str, tuple[tuple[str, int], ...]] = {
    "cblock1": (
        ("Conv2d", 8), ("Dropout", 0), ("ReLU", 0),
        ("BatchNorm2d", 0), ("Conv2d", 8), ("Dropout", 0), ("ReLU", 0),
    ),
    "tblock1": (("MaxPool2d", 2),),
    "cblock2": (
        ("BatchNorm2d", 0), ("Conv2d", 16), ("Dropout", 0), ("ReLU", 0),
        ("BatchNorm2d", 0), ("Conv2d", 16), ("Dropout", 0), ("ReLU", 0),
    ),
    "tblock2": (("MaxPool2d", 2),),
    "cblock3": (
        ("BatchNorm2d", 0), ("Conv2d", 32), ("Dropout", 0), ("ReLU", 0),
        ("BatchNorm2d", 0), ("Conv2d", 32), ("Dropout", 0), ("ReLU", 0),
    ),
    "outblock": (
        ("AvgPool2d", 7),
        ("BatchNorm2d", 0), ("Conv1x1", 32), ("Dropout", 0), ("ReLU", 0),
        ("BatchNorm2d", 0), ("Conv1x1Bias", NUM_CLASSES), ("Flatten", 0), ("LogSoftmax", 0),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Layer:
    """One leaf layer with the shapes around it (no batch dimension)."""

    key: str  # its state-dict prefix, e.g. "cblock1.0"
    type: str  # torch class name, e.g. "Conv2d"
    kernel: int  # convolutions and pooling; 0 otherwise
    has_bias: bool  # convolutions only
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    parameters: dict[str, tuple[int, ...]]  # state-dict suffix -> shape, in state-dict order


def layers() -> Iterator[Layer]:
    """The net's leaf layers in execution order, shapes propagated from INPUT_SHAPE."""
    shape: tuple[int, ...] = INPUT_SHAPE
    for block, block_layers in BLOCKS.items():
        for index, (kind, argument) in enumerate(block_layers):
            channels, kernel, has_bias, parameters = shape[0], 0, False, {}
            out = shape
            if kind.startswith("Conv"):
                kernel = 1 if kind.startswith("Conv1x1") else 3
                has_bias = kind.endswith("Bias")
                out = (argument, *shape[1:])  # padding keeps the size: kernel // 2
                parameters = {"weight": (argument, channels, kernel, kernel)}
                if has_bias:
                    parameters["bias"] = (argument,)
                kind = "Conv2d"
            elif kind == "BatchNorm2d":
                parameters = {
                    name: (channels,) for name in ("weight", "bias", "running_mean", "running_var")
                }
                parameters["num_batches_tracked"] = ()
            elif kind in ("MaxPool2d", "AvgPool2d"):
                kernel = argument
                out = (channels, shape[1] // kernel, shape[2] // kernel)
            elif kind == "Flatten":
                out = (int(np.prod(shape)),)
            yield Layer(f"{block}.{index}", kind, kernel, has_bias, shape, out, parameters)
            shape = out


# Tensors a layer has that training does not learn: batch norm's running statistics.
BUFFERS = frozenset({"running_mean", "running_var", "num_batches_tracked"})


def parameter_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the net's state dict (the weights file's contents) -> its shape."""
    return {
        f"{layer.key}.{name}": shape
        for layer in layers()
        for name, shape in layer.parameters.items()
    }


def tensor_problems(tensors: Mapping[str, np.ndarray]) -> list[str]:
    """What keeps these tensors from being the S4 net's weights (empty: they fit)."""
    expected = parameter_shapes()
    problems = []
    if missing := [name for name in expected if name not in tensors]:
        problems.append(f"missing tensors {', '.join(missing)}")
    if unexpected := [name for name in tensors if name not in expected]:
        problems.append(f"unexpected tensors {', '.join(unexpected)}")
    for name, shape in expected.items():
        tensor = tensors.get(name)
        if tensor is None:
            continue
        if tuple(tensor.shape) != shape:
            problems.append(f"{name} has shape {list(tensor.shape)}, the net needs {list(shape)}")
        dtype = np.int64 if name.endswith("num_batches_tracked") else np.float32
        if tensor.dtype != dtype:
            problems.append(f"{name} is {tensor.dtype}, the net needs {np.dtype(dtype)}")
    return problems


@dataclass(frozen=True)
class LayerRow:
    index: int
    name: str  # e.g. "Conv2d-1", as in the spec table
    type: str  # e.g. "Conv2d"
    output_shape: tuple[int, ...]  # batch dimension as -1
    params: int


def layer_rows() -> list[LayerRow]:
    """The spec's layer table: per leaf layer, its output shape and trainable parameters."""
    return [
        LayerRow(
            index=i,
            name=f"{layer.type}-{i}",
            type=layer.type,
            output_shape=(-1, *layer.output_shape),
            params=sum(
                int(np.prod(shape))
                for name, shape in layer.parameters.items()
                if name not in BUFFERS
            ),
        )
        for i, layer in enumerate(layers(), start=1)
    ]


def format_summary_table(rows: list[LayerRow], trainable_params: int) -> str:
    """Render the rows in the seed's table format (the torchsummary layout the spec quotes)."""
    rule, double_rule = "-" * 64, "=" * 64
    total_params = sum(row.params for row in rows)
    lines = [rule, f"{'Layer (type)':>20}  {'Output Shape':>25} {'Param #':>15}", double_rule]
    lines += [f"{row.name:>20}  {list(row.output_shape)!s:>25} {row.params:>15,}" for row in rows]
    # Sizes in MB of float32 tensors, as torchsummary estimates them (batch size -1 -> abs).
    mb = 4 / 1024**2
    input_mb = abs(-1 * _prod(INPUT_SHAPE) * mb)
    forward_backward_mb = abs(2 * sum(_prod(row.output_shape) for row in rows) * mb)
    params_mb = abs(total_params * mb)
    lines += [
        double_rule,
        f"Total params: {total_params:,}",
        f"Trainable params: {trainable_params:,}",
        f"Non-trainable params: {total_params - trainable_params:,}",
        rule,
        f"Input size (MB): {input_mb:0.2f}",
        f"Forward/backward pass size (MB): {forward_backward_mb:0.2f}",
        f"Params size (MB): {params_mb:0.2f}",
        f"Estimated Total Size (MB): {input_mb + forward_backward_mb + params_mb:0.2f}",
        rule,
    ]
    return "\n".join(lines) + "\n"


def _prod(shape) -> int:
    result = 1
    for dim in shape:
        result *= dim
    return result

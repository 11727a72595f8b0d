"""The S4 net's layer summary (GET /model, the spec's table): rows, and the table as text."""

from dataclasses import dataclass

from torch import nn

from app.model import INPUT_SHAPE


@dataclass(frozen=True)
class LayerRow:
    index: int
    name: str  # e.g. "Conv2d-1", as in the spec table
    type: str  # e.g. "Conv2d"
    output_shape: tuple[int, ...]  # batch dimension as -1
    params: int


def layer_summary(model: nn.Module) -> list[LayerRow]:
    """Per-leaf-layer output shapes and parameter counts, in execution order.

    torchinfo runs a forward pass on a dummy batch and records every module; the leaf modules are
    the rows of the spec table. The batch dimension is reported as -1, as the spec does.
    """
    from torchinfo import summary  # imported lazily: only /model and tests need it

    device = next(model.parameters()).device
    stats = summary(
        model,
        input_size=(2, *INPUT_SHAPE),  # batch of 2 so BatchNorm in train mode would still work
        device=device,
        mode="eval",
        verbose=0,
    )
    leaves = [layer for layer in stats.summary_list if layer.is_leaf_layer]
    return [
        LayerRow(
            index=i,
            name=f"{layer.class_name}-{i}",
            type=layer.class_name,
            output_shape=(-1, *layer.output_size[1:]),
            params=layer.num_params,
        )
        for i, layer in enumerate(leaves, start=1)
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

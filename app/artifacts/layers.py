"""The torch net's layer summary as torchinfo records it, in the rows of GET /model.

GET /model serves app.artifacts.architecture's torch-free table; the tests hold it to this
summary of the real S4Net, so the two definitions of the net cannot drift apart. Needs torch
and torchinfo (the ``train`` extra).
"""

from torch import nn

from app.artifacts.architecture import INPUT_SHAPE, LayerRow


def layer_summary(model: nn.Module) -> list[LayerRow]:
    """Per-leaf-layer output shapes and parameter counts, in execution order.

    torchinfo runs a forward pass on a dummy batch and records every module; the leaf modules are
    the rows of the spec table. The batch dimension is reported as -1, as the spec does.
    """
    from torchinfo import summary

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

"""The S4 net against its contract: the spec's layer table, row for row and byte for byte."""

import re

import pytest
import torch

from app.artifacts.architecture import format_summary_table, layer_rows, parameter_shapes
from app.artifacts.layers import layer_summary
from app.model import S4Net, normalize
from app.runtime.device import DeviceUnavailable, resolve_device
from tests.conftest import SPEC_PATH

ROW = re.compile(r"^\s+(\w+)-(\d+)\s+(\[[-\d, ]+\])\s+([\d,]+)$")


def spec_table() -> str:
    """The fenced summary block of the spec, exactly as written there."""
    match = re.search(r"```\n(.*?)```", SPEC_PATH.read_text(), re.DOTALL)
    assert match, f"no summary table found in {SPEC_PATH}"
    return match.group(1)


def spec_rows() -> list[tuple[str, int, list[int], int]]:
    rows = []
    for line in spec_table().splitlines():
        if match := ROW.match(line):
            name, index, shape, params = match.groups()
            rows.append((name, int(index), eval_shape(shape), int(params.replace(",", ""))))
    return rows


def eval_shape(text: str) -> list[int]:
    return [int(dim) for dim in text.strip("[]").split(",")]


@pytest.fixture(scope="module")
def net() -> S4Net:
    return S4Net()


def test_spec_has_34_rows():
    assert len(spec_rows()) == 34


def test_every_layer_matches_its_spec_row(net):
    rows = layer_summary(net)
    assert len(rows) == len(spec_rows())
    for row, (name, index, shape, params) in zip(rows, spec_rows(), strict=True):
        assert (row.type, row.index, list(row.output_shape), row.params) == (
            name,
            index,
            shape,
            params,
        ), f"row {index} differs from the spec"
        assert row.name == f"{name}-{index}"


def test_text_summary_is_the_spec_table_byte_for_byte(net):
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert format_summary_table(layer_summary(net), trainable) == spec_table()


def test_the_architecture_table_gives_torchinfos_rows(net):
    """GET /model's rows come from app.artifacts.architecture, without torch: torchinfo's rows."""
    assert layer_rows() == layer_summary(net)


def test_the_architecture_table_names_every_tensor_of_the_state_dict(net):
    expected = {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}
    assert parameter_shapes() == expected  # same names, shapes and order


def test_a_wrong_row_would_fail_the_comparison(net):
    """Guard against a vacuous comparison: change one layer and the table must differ."""
    altered = S4Net()
    altered.outblock[6] = torch.nn.Conv2d(32, 10, kernel_size=1, bias=False)  # drop the bias
    trainable = sum(p.numel() for p in altered.parameters())
    assert format_summary_table(layer_summary(altered), trainable) != spec_table()


def test_blocks_are_named_as_in_the_spec(net):
    names = [name for name, _ in net.named_children()]
    assert names == ["cblock1", "tblock1", "cblock2", "tblock2", "cblock3", "outblock"]


def test_total_parameters(net):
    assert sum(p.numel() for p in net.parameters()) == 19_570


def test_forward_maps_images_to_log_probabilities(net):
    net.eval()
    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    with torch.inference_mode():
        log_probs = net(normalize(images))
    assert log_probs.shape == (5, 10)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(5))


def test_dropout_rate_is_a_constructor_argument():
    rates = {m.p for m in S4Net(dropout=0.25).modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {0.25}


def test_normalize_uses_mnist_statistics():
    pixels = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    expected = torch.tensor([(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081]).view(2, 1, 1, 1)
    torch.testing.assert_close(normalize(pixels), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_missing_gpu_is_named_not_faked():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceUnavailable, match="no CUDA device"):
        resolve_device("cuda")

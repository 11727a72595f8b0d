"""Weights files: written atomically, verified against their card, refused with a clear reason."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from app.artifacts.weights import (
    WeightsError,
    card_path_for,
    load_weights,
    save_weights,
    sha256_hex,
)
from app.model import S4Net


def test_round_trip_keeps_every_tensor(untrained_weights):
    torch.manual_seed(0)  # the fixture saved the net initialised from this seed
    original = S4Net()
    reloaded = load_weights(untrained_weights)
    for name, tensor in original.state_dict().items():
        assert np.array_equal(reloaded.tensors[name], tensor.numpy()), name
    assert reloaded.tensors.keys() == original.state_dict().keys()
    assert reloaded.sha256 == sha256_hex(untrained_weights.read_bytes())


def test_save_leaves_no_temp_files(tmp_path):
    path = tmp_path / "s4net.safetensors"
    card = save_weights(S4Net(dropout=0.1), path, {"epochs": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s4net.json", "s4net.safetensors"]
    assert card == json.loads(card_path_for(path).read_text())
    assert card["dropout"] == 0.1
    assert card["epochs"] == 3


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "s4net.safetensors")


def test_missing_card(untrained_weights):
    card_path_for(untrained_weights).unlink()
    with pytest.raises(WeightsError, match=r"card .*s4net\.json does not exist"):
        load_weights(untrained_weights)


def test_truncated_file_is_refused_by_checksum(untrained_weights):
    data = untrained_weights.read_bytes()
    untrained_weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated, corrupted or was replaced"):
        load_weights(untrained_weights)


def test_tampered_file_is_refused_by_checksum(untrained_weights):
    data = bytearray(untrained_weights.read_bytes())
    data[-1] ^= 0xFF
    untrained_weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=str(untrained_weights)):
        load_weights(untrained_weights)


def test_wrong_tensor_shapes_are_refused_even_with_a_matching_card(untrained_weights):
    state = S4Net().state_dict()
    state["cblock1.0.weight"] = torch.zeros(16, 1, 3, 3)
    data = save_safetensors(state)
    untrained_weights.write_bytes(data)
    card_path = card_path_for(untrained_weights)
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "weights_sha256": sha256_hex(data)}))
    with pytest.raises(WeightsError, match=r"does not fit the S4 net.*cblock1\.0\.weight"):
        load_weights(untrained_weights)


def test_not_safetensors_at_all(untrained_weights):
    data = b"\x80\x04 this is a pickle, which we never load"
    untrained_weights.write_bytes(data)
    card_path = card_path_for(untrained_weights)
    card_path.write_text(json.dumps({"weights_sha256": sha256_hex(data)}))
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        load_weights(untrained_weights)

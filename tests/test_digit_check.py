"""The digit check (app/numbers/check.py) and its training (training/digit_check.py).

The ONNX graph the service runs is held to the torch module it was trained as; the
committed weights are held to telling whole digits from cut ones on numbers composed from the
holdout's digits; a short training run writes weights the service can load; and a missing or
wrong weights file is refused with a message naming it.
"""

import json

import numpy as np
import pytest
import torch

from app.numbers.check import SIDE, CheckWeightsError, DigitCheck, load_check, view
from bench.serve import COMMITTED_CHECK, MNIST_DIR
from training import digit_check
from training.numbers import STRAY_OWNER, compose, compose_realistic


def test_the_served_onnx_graph_is_the_torch_module():
    torch.manual_seed(0)
    net = digit_check.build_net().eval()
    views = np.random.default_rng(0).integers(0, 256, size=(7, 2, SIDE, SIDE), dtype=np.uint8)
    with torch.no_grad():
        logits = net(torch.from_numpy(views).float() / 255.0).numpy()
    tensors = {name: t.numpy() for name, t in net.state_dict().items()}
    expected = -np.logaddexp(0.0, -logits.astype(np.float64))
    np.testing.assert_allclose(DigitCheck(tensors).log_whole(views), expected, atol=1e-5)


def test_the_view_centres_the_candidate_on_the_line_at_the_writings_scale():
    levels = np.zeros((60, 200), dtype=np.float32)
    levels[20:40, 50:60] = 1.0  # the candidate: a bar 20 px tall
    levels[20:40, 70:80] = 1.0  # its neighbour, 10 px to the right
    seen = view(levels, levels[20:40, 50:60], 50, 20, middle=30.0, height=20.0)
    assert seen.shape == (2, SIDE, SIDE) and seen.dtype == np.uint8
    # The window is 1.6 writing heights (32 px) centred on the bar: both channels hold the bar in
    # the middle, only the first holds the neighbour.
    middle = SIDE // 2
    assert seen[0, middle, middle - 1] == seen[1, middle, middle - 1] == 255
    assert seen[0, middle, SIDE - 1] > 0 and seen[1, middle, SIDE - 1] == 0


@pytest.fixture(scope="module")
def holdout():
    return digit_check.load(MNIST_DIR, "holdout")


@pytest.mark.parametrize("composer", [compose, compose_realistic])
def test_a_composed_number_knows_which_digit_owns_each_pixel(holdout, composer):
    images, labels = holdout
    sample = composer(images, labels, 4, "wide", np.random.default_rng(3), stray_mark=True)
    assert sample.owners.shape == sample.picture.shape
    middles = [np.flatnonzero((sample.owners == k).any(axis=0)).mean() for k in (1, 2, 3, 4)]
    assert middles == sorted(middles)  # digit k is the k-th from the left
    assert (sample.owners == STRAY_OWNER).any()
    # Only ink is owned: the picture is darker (paper) or lighter (black) there than around it.
    owned = sample.owners > 0
    background = np.median(sample.picture)
    contrast = np.abs(sample.picture.astype(int) - background)
    assert contrast[owned].mean() > 4 * contrast[~owned].mean()


def test_the_committed_check_tells_whole_digits_from_cut_ones(holdout):
    images, labels = holdout
    check = load_check(COMMITTED_CHECK)
    rng = np.random.default_rng(11)
    scores, truth = [], []
    for gap in ("normal", "touching", "overlap 2px"):
        for composer in (compose, compose_realistic):
            for _ in range(6):
                views, whole = digit_check.labelled_candidates(
                    composer(images, labels, 4, gap, rng)
                )
                scores.append(check.log_whole(views))
                truth.append(whole)
    scores, truth = np.concatenate(scores), np.concatenate(truth)
    assert 0.05 < truth.mean() < 0.6  # both kinds are there to tell apart
    accuracy = np.mean((scores >= np.log(0.5)) == truth)
    assert accuracy >= 0.9, accuracy


def test_a_short_training_run_writes_weights_the_service_loads(tmp_path):
    digit_check.main(
        ["--data-dir", str(MNIST_DIR), "--out-dir", str(tmp_path), "--numbers", "40",
         "--holdout-numbers", "10", "--epochs", "1", "--workers", "1"]
    )  # fmt: skip
    path = tmp_path / "weights" / "digit-check.safetensors"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["weights_file"] == path.name and card["holdout"]["candidates"] > 0
    check = load_check(path)
    assert check.log_whole(np.zeros((1, 2, SIDE, SIDE), np.uint8)).shape == (1,)
    assert not list(path.parent.glob(".*.tmp"))  # written whole, then renamed


def test_a_missing_or_foreign_weights_file_is_refused_by_name(tmp_path):
    from safetensors.numpy import save_file

    with pytest.raises(CheckWeightsError, match=r"nothing-here\.safetensors"):
        load_check(tmp_path / "nothing-here.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": np.zeros(3, np.float32)}, foreign)
    foreign.with_suffix(".json").write_text("{}")
    with pytest.raises(CheckWeightsError, match="not the digit check's tensors"):
        load_check(foreign)

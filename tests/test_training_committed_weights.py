"""CI gate: the committed weights read the full official test set at >= 99.5 %.

Loaded through app.artifacts.weights.load_weights, exactly as the service loads them, so this
also checks that the committed file matches its card's checksum.
"""

from pathlib import Path

import torch

from app.artifacts.weights import load_weights
from app.model import net_from_tensors, normalize
from training.mnist import TEST_IMAGES, TEST_LABELS, read_idx

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "s4net.safetensors"
REQUIRED_ACCURACY = 99.5


def test_committed_weights_reach_the_target_on_the_full_test_set(mnist_dir: Path) -> None:
    loaded = load_weights(WEIGHTS)
    net = net_from_tensors(loaded.tensors)
    images = read_idx(mnist_dir / TEST_IMAGES.name, TEST_IMAGES).unsqueeze(1)
    labels = read_idx(mnist_dir / TEST_LABELS.name, TEST_LABELS).long()
    with torch.inference_mode():
        predictions = torch.cat([net(normalize(b)).argmax(1) for b in images.split(2000)])
    accuracy = 100.0 * (predictions == labels).double().mean().item()
    assert accuracy >= REQUIRED_ACCURACY, f"{WEIGHTS}: {accuracy:.2f}% on the 10,000 test images"
    # The card reports what the weights actually do.
    assert abs(loaded.card["test_accuracy"] - accuracy) < 0.005
    assert loaded.card["eval_images"] == 10_000

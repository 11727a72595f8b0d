"""The training pipeline end to end on tiny slices: outputs load, and a killed run resumes exactly.

Tiny runs (a few hundred images, a few epochs) keep this file fast on 2 CPU cores; what they
check (outputs, checkpoint round trip, bitwise resume) does not depend on the run's size.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from app.artifacts.weights import load_weights
from app.model import MNIST_MEAN, MNIST_STD, normalize
from training.__main__ import main
from training.augment import AugmentConfig, augment_batch
from training.mnist import load_mnist

REPO_ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_augmentation_is_seeded_batched_and_off_when_zero() -> None:
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    config = AugmentConfig(degrees=15, shift=2, scale=0.1)
    first = augment_batch(images, config, torch.Generator().manual_seed(1))
    again = augment_batch(images, config, torch.Generator().manual_seed(1))
    assert first.shape == (8, 1, 28, 28) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.allclose(first, normalize(images))
    off = AugmentConfig(**dict.fromkeys(vars(AugmentConfig()), 0.0))
    assert torch.equal(augment_batch(images, off, torch.Generator()), normalize(images))


@pytest.mark.parametrize(
    "knob",
    [
        "degrees",
        "shift",
        "scale",
        "aspect",
        "shear",
        "perspective",
        "elastic",
        "thickness",
        "blur",
        "low_res",
    ],
)
def test_each_augmentation_alone_is_seeded_and_keeps_levels_in_range(knob: str, mnist_dir) -> None:
    images = load_mnist(mnist_dir).test.images[:64]
    off = dict.fromkeys(vars(AugmentConfig()), 0.0)
    strength = {"degrees": 20.0, "shift": 2.0, "elastic": 2.0}.get(
        knob, 1.0 if knob in {"thickness", "blur", "low_res"} else 0.3
    )
    config = AugmentConfig(**{**off, knob: strength})
    first = augment_batch(images, config, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment_batch(images, config, torch.Generator().manual_seed(3)))
    pixels = first * MNIST_STD + MNIST_MEAN
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert (pixels - images / 255.0).abs().amax(dim=(1, 2, 3)).min() > 0.01  # every image altered


def test_thickness_makes_strokes_thicker_or_thinner() -> None:
    images = torch.zeros((200, 1, 28, 28), dtype=torch.uint8)
    images[:, :, 4:24, 12:16] = 255
    config = AugmentConfig(**{**dict.fromkeys(vars(AugmentConfig()), 0.0), "thickness": 1.0})
    pixels = (
        augment_batch(images, config, torch.Generator().manual_seed(0)) * MNIST_STD + MNIST_MEAN
    )
    ink = pixels.sum(dim=(1, 2, 3))
    assert (ink > 80 * 1.2).any() and (ink < 80 * 0.8).any()  # 80 = the bar's ink


def test_smoke_run_writes_loadable_weights_card_and_plots(mnist_dir: Path, tmp_path: Path) -> None:
    argv = ["--data-dir", str(mnist_dir), "--out-dir", str(tmp_path), "--epochs", "1"]
    argv += ["--train-limit", "2000", "--test-limit", "1000", "--batch-size", "100"]
    main(argv)

    loaded = load_weights(tmp_path / "weights" / "s4net.safetensors")
    card = loaded.card
    assert card["weights_sha256"] == loaded.sha256
    assert card["parameters"] == 19_570
    assert card["eval_images"] == 1000
    assert 10 < card["test_accuracy"] <= 100
    assert sum(map(sum, card["confusion_matrix"])) == 1000
    assert set(card["per_class_accuracy"]) == {str(d) for d in range(10)}
    assert card["command"].startswith("python -m training --data-dir")
    assert card["dataset"]["sha256_decompressed"]["t10k-images-idx3-ubyte.gz"].startswith("0fa7")
    for key in ("epochs", "seed", "hyperparameters", "dropout", "training_seconds", "device"):
        assert key in card
    assert card["torch_version"] == torch.__version__
    for png in ("training_curves.png", "misclassified.png"):
        assert (tmp_path / "reports" / png).read_bytes().startswith(PNG_MAGIC)


def _run(out_dir: Path, mnist_dir: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "training", "--data-dir", str(mnist_dir)]
    argv += ["--out-dir", str(out_dir), "--epochs", "3", "--batch-size", "50", "--seed", "7"]
    argv += ["--train-limit", "600", "--test-limit", "300", *extra]
    return subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


@pytest.mark.slow
def test_killed_run_resumes_to_bitwise_identical_weights(mnist_dir: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    _finish(_run(tmp_path / "straight", mnist_dir))
    straight_seconds = time.monotonic() - started
    expected = load_file(tmp_path / "straight" / "weights" / "s4net.safetensors")

    # SIGKILL at a random moment after the first checkpoint exists (so --resume has something to
    # resume): during an epoch, a checkpoint write or the final outputs. Then resume to the end.
    victim = _run(tmp_path / "killed", mnist_dir)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.safetensors"
    while not checkpoint.exists():
        assert victim.poll() is None, victim.communicate()[0]
        time.sleep(0.01)
    moment = random.uniform(0, 0.5 * straight_seconds)
    time.sleep(moment)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    output = _finish(_run(tmp_path / "killed", mnist_dir, "--resume"))
    assert "resumed from" in output

    # Tensors, not file bytes: safetensors writes its metadata map in a per-process random order.
    resumed = load_file(tmp_path / "killed" / "weights" / "s4net.safetensors")
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        assert resumed[name].dtype == tensor.dtype
        assert torch.equal(resumed[name], tensor), (
            f"{name} differs; killed {moment:.2f}s after epoch 1:\n{output}"
        )
    leftovers = [p for p in (tmp_path / "killed").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    card = json.loads((tmp_path / "killed" / "weights" / "s4net.json").read_text())
    assert [row["epoch"] for row in card["history"]] == [1, 2, 3]


def test_resume_refuses_a_checkpoint_with_other_settings(mnist_dir: Path, tmp_path: Path) -> None:
    argv = ["--data-dir", str(mnist_dir), "--out-dir", str(tmp_path), "--epochs", "1"]
    argv += ["--train-limit", "200", "--test-limit", "100", "--batch-size", "50"]
    main(argv)
    with pytest.raises(SystemExit, match=r"different settings.*lr"):
        main([*argv, "--resume", "--lr", "0.01"])

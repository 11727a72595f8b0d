"""Training speed on this machine: the real loop vs a plain eager PyTorch baseline, same net.

    python bench/train_speed.py [--data-dir ../shared/data/mnist] [--images 10240] [--rounds 2]

Baseline: what a textbook MNIST script does. A DataLoader over a TensorDataset (uint8 images) with
shuffling, per-batch normalisation, batch size 128, no augmentation, the net in the default NCHW
layout. Ours: training/train.py's model and epoch loop (dataset as one tensor, whole-batch affine
augmentation, channels_last, the configured batch size). Both train the same S4 net with the same
optimiser and schedule on the same slice of MNIST. Rounds alternate
baseline/ours so a neighbour's load on a shared machine hits both alike; the fastest round of each
is reported, scaled to a 60,000-image epoch.
"""

import os

# The same OpenMP setting as `python -m training` (see training/__main__.py), for both loops.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.model import S4Net, normalize
from training.config import TrainConfig
from training.mnist import load_mnist, resolve_data_dir
from training.train import build_model, build_optimizer, train_one_epoch

EPOCH_IMAGES = 60_000


def baseline_seconds(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    config = TrainConfig()
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=True)
    model = S4Net(config.dropout).train()
    optimizer, scheduler = build_optimizer(model, config, len(loader))
    started = time.perf_counter()
    for x, y in loader:
        loss = F.nll_loss(model(normalize(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - started


def ours_seconds(images: torch.Tensor, labels: torch.Tensor) -> float:
    config = TrainConfig(epochs=1)
    model = build_model(config, torch.device("cpu"))
    optimizer, scheduler = build_optimizer(model, config, len(labels) // config.batch_size)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    train_one_epoch(model, optimizer, scheduler, generator, images, labels, config, epoch=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--images", type=int, default=10_240, help="training images per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-batch-size", type=int, default=128)
    args = parser.parse_args()

    torch.manual_seed(0)
    train = load_mnist(resolve_data_dir(args.data_dir)).train
    images, labels = train.images[: args.images], train.labels[: args.images]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images")
    ours_seconds(images[:1024], labels[:1024])  # warm-up: first-call allocations, kernels
    baseline_times, ours_times = [], []
    for round_index in range(1, args.rounds + 1):
        baseline_times.append(baseline_seconds(images, labels, args.baseline_batch_size))
        ours_times.append(ours_seconds(images, labels))
        print(
            f"round {round_index}: baseline {baseline_times[-1]:.1f}s  ours {ours_times[-1]:.1f}s"
        )
    scale = EPOCH_IMAGES / args.images
    baseline, ours = min(baseline_times) * scale, min(ours_times) * scale
    print(
        f"baseline (DataLoader, batch {args.baseline_batch_size}, no augmentation): "
        f"{baseline:.1f} s/epoch\n"
        f"ours (tensor on device, batch {TrainConfig().batch_size}, augmented): "
        f"{ours:.1f} s/epoch\n"
        f"speed-up: {baseline / ours:.2f}x\n"
        f"full training, default settings ({TrainConfig().epochs} epochs of {EPOCH_IMAGES} images, "
        f"evaluation not counted): {ours * TrainConfig().epochs / 60:.1f} min"
    )


if __name__ == "__main__":
    main()

"""`python -m training`: train the S4 net, then write its weights, card and plots.

Outputs (under --out-dir, default the current directory, i.e. the repo root):
  weights/s4net.safetensors + weights/s4net.json   the weights and their card (app.weights)
  reports/training_curves.png, reports/misclassified.png
  checkpoints/last.safetensors                      resumable state, rewritten every epoch
"""

import os

# Idle OpenMP threads sleep instead of spinning. On a small shared machine spinning threads fight
# every other process for the cores, and one descheduled thread stalls every parallel op of the
# step: measured here with another job running, 2 threads took 302 ms per 256-image step with
# PASSIVE and 969 ms without. It must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shlex
import sys
from pathlib import Path

from app.weights import atomic_write_bytes, card_path_for, save_weights
from training.augment import AugmentConfig
from training.card import build_card
from training.config import TrainConfig
from training.mnist import MnistError, load_mnist, resolve_data_dir
from training.report import misclassified_png, training_curves_png
from training.train import train


def parse_args(argv: list[str]) -> argparse.Namespace:
    defaults, aug = TrainConfig(), AugmentConfig()
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the S4 net on MNIST; write its weights, card and plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, help="MNIST .gz files (else $S4_DATA_DIR, else cache)")
    p.add_argument("--cache-dir", type=Path, help="download cache (default ~/.cache/s4digits)")
    p.add_argument("--out-dir", type=Path, default=Path("."), help="where outputs go")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr, help="OneCycle peak learning rate")
    p.add_argument("--max-momentum", type=float, default=defaults.max_momentum)
    p.add_argument("--base-momentum", type=float, default=defaults.base_momentum)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    p.add_argument("--dropout", type=float, default=defaults.dropout)
    p.add_argument("--degrees", type=float, default=aug.degrees, help="max rotation")
    p.add_argument("--shift", type=float, default=aug.shift, help="max shift in pixels")
    p.add_argument("--scale", type=float, default=aug.scale, help="max zoom in/out fraction")
    p.add_argument("--aspect", type=float, default=aug.aspect, help="max aspect change fraction")
    p.add_argument("--shear", type=float, default=aug.shear, help="max horizontal shear factor")
    p.add_argument("--perspective", type=float, default=aug.perspective, help="max tilt")
    p.add_argument("--elastic", type=float, default=aug.elastic, help="max elastic shift, px")
    p.add_argument("--thickness", type=float, default=aug.thickness, help="P(thicker/thinner)")
    p.add_argument("--blur", type=float, default=aug.blur, help="P(Gaussian blur)")
    p.add_argument("--low-res", type=float, default=aug.low_res, help="P(low-res round trip)")
    p.add_argument("--clutter", type=float, default=aug.clutter, help="P(stray specks or line)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--holdout", type=int, default=0, help="tune on N held-out train images")
    p.add_argument("--train-limit", type=int, help="train on only the first N images")
    p.add_argument("--test-limit", type=int, help="evaluate on only the first N images")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=defaults.device)
    return p.parse_args(argv)


def remove_stale_temp_files(outputs: list[Path]) -> None:
    """Delete temp files that a killed atomic_write_bytes left beside our outputs.

    The write itself is atomic (the real file is whole, old or new), but SIGKILL between mkstemp
    and the rename leaves the temp file behind; a rerun cleans those up.
    """
    for path in outputs:
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        max_momentum=args.max_momentum,
        base_momentum=args.base_momentum,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        dropout=args.dropout,
        augment=AugmentConfig(
            degrees=args.degrees,
            shift=args.shift,
            scale=args.scale,
            aspect=args.aspect,
            shear=args.shear,
            perspective=args.perspective,
            elastic=args.elastic,
            thickness=args.thickness,
            blur=args.blur,
            low_res=args.low_res,
            clutter=args.clutter,
        ),
        seed=args.seed,
        holdout=args.holdout,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        device=args.device,
    )
    try:
        data = load_mnist(resolve_data_dir(args.data_dir, args.cache_dir))
    except MnistError as exc:
        sys.exit(f"MNIST: {exc}")

    out = args.out_dir
    checkpoint_path = out / "checkpoints" / "last.safetensors"
    weights_path = out / "weights" / "s4net.safetensors"
    curves_path = out / "reports" / "training_curves.png"
    misclassified_path = out / "reports" / "misclassified.png"
    outputs = [checkpoint_path, weights_path, card_path_for(weights_path)]
    remove_stale_temp_files([*outputs, curves_path, misclassified_path])
    result = train(config, data, checkpoint_path, resume=args.resume)

    command = shlex.join(["python", "-m", "training", *argv])
    card = save_weights(result.model, weights_path, build_card(config, data, result, command))
    final = result.final
    atomic_write_bytes(curves_path, training_curves_png(result.history, result.evaluated_on))
    atomic_write_bytes(
        misclassified_path, misclassified_png(final.images, final.labels, final.predictions)
    )
    print(
        f"final {result.evaluated_on} accuracy {final.accuracy:.2f}% "
        f"({config.epochs} epochs, {card['training_seconds']:.0f}s on {card['device']}); "
        f"weights {weights_path} sha256 {card['weights_sha256'][:12]}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

"""`python -m training`: train the S4 net, then write its weights, card and plots.

Outputs (under --out-dir, default the current directory, i.e. the repo root):
  weights/s4net.safetensors + weights/s4net.json   the weights and their card
                                                    (app.artifacts.weights)
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
import dataclasses
import shlex
import sys
from pathlib import Path

from app.artifacts.weights import (
    WeightsError,
    atomic_write_bytes,
    card_path_for,
    load_weights,
    save_weights,
)
from training.augment import AugmentConfig
from training.card import build_card
from training.config import TrainConfig
from training.feedback import load_feedback
from training.mnist import MnistError, load_mnist, resolve_data_dir
from training.report import misclassified_png, training_curves_png
from training.train import evaluate, train

# Help for the TrainConfig and AugmentConfig fields that need more than their flag's name.
OPTION_HELP = {
    "lr": "OneCycle peak learning rate",
    "degrees": "max rotation",
    "shift": "max shift in pixels",
    "scale": "max zoom in/out fraction",
    "aspect": "max aspect change fraction",
    "shear": "max horizontal shear factor",
    "perspective": "max tilt",
    "elastic": "max elastic shift, px",
    "thickness": "P(thicker/thinner)",
    "blur": "P(Gaussian blur)",
    "low_res": "P(low-res round trip)",
    "clutter": "P(stray specks or line)",
    "holdout": "tune on N held-out train images",
    "train_limit": "train on only the first N images",
    "test_limit": "evaluate on only the first N images",
}
OPTION_CHOICES = {"device": ("auto", "cpu", "cuda")}


def config_fields() -> list[tuple[type, dataclasses.Field]]:
    """Every knob of a run, as (its dataclass, its field): one command-line flag each."""
    knobs = [(TrainConfig, f) for f in dataclasses.fields(TrainConfig) if f.name != "augment"]
    return knobs + [(AugmentConfig, f) for f in dataclasses.fields(AugmentConfig)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the S4 net on MNIST; write its weights, card and plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, help="MNIST .gz files (else $S4_DATA_DIR, else cache)")
    p.add_argument("--cache-dir", type=Path, help="download cache (default ~/.cache/s4digits)")
    p.add_argument("--out-dir", type=Path, default=Path("."), help="where outputs go")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--feedback",
        metavar="DATABASE_URL",
        help="also train on the corrections stored there (a seeded fifth held out to judge)",
    )
    p.add_argument(
        "--init-weights",
        type=Path,
        metavar="PATH",
        help="start from these weights (e.g. weights/s4net.safetensors) instead of random ones",
    )
    defaults = {TrainConfig: TrainConfig(), AugmentConfig: AugmentConfig()}
    for owner, field in config_fields():
        default = getattr(defaults[owner], field.name)
        p.add_argument(
            "--" + field.name.replace("_", "-"),
            type=int if default is None else type(default),  # None: the optional limits
            default=default,
            choices=OPTION_CHOICES.get(field.name),
            help=OPTION_HELP.get(field.name, field.name.replace("_", " ")),
        )
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {owner: {} for owner in (TrainConfig, AugmentConfig)}
    for owner, field in config_fields():
        values[owner][field.name] = getattr(args, field.name)
    return TrainConfig(**values[TrainConfig], augment=AugmentConfig(**values[AugmentConfig]))


def remove_stale_temp_files(outputs: list[Path]) -> None:
    """Delete temp files that a killed atomic_write_bytes left beside our outputs.

    The write itself is atomic (the real file is whole, old or new), but SIGKILL between mkstemp
    and the rename leaves the temp file behind; a rerun cleans those up.
    """
    for path in outputs:
        for leftover in path.parent.glob(f".{path.name}.*.tmp"):
            leftover.unlink(missing_ok=True)


def load_init_weights(path: Path) -> tuple[dict, str]:
    """(state dict as torch tensors, SHA-256) of a verified weights file (app.artifacts.weights)."""
    import torch

    try:
        weights = load_weights(path)
    except WeightsError as exc:
        sys.exit(f"--init-weights: {exc}")
    state = {name: torch.from_numpy(array.copy()) for name, array in weights.tensors.items()}
    return state, weights.sha256


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    config = config_from_args(args)
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
    feedback = load_feedback(args.feedback, config.seed) if args.feedback else None
    init_weights, init_sha256 = None, None
    if args.init_weights:
        init_weights, init_sha256 = load_init_weights(args.init_weights)
    result = train(
        config,
        data,
        checkpoint_path,
        resume=args.resume,
        feedback=feedback.train if feedback else None,
        init_weights=init_weights,
    )

    command = shlex.join(["python", "-m", "training", *argv])
    card = build_card(config, data, result, command)
    if init_weights is not None:
        card["init_weights"] = {"file": str(args.init_weights), "sha256": init_sha256}
    if feedback is not None:
        held_out = evaluate(result.model, *feedback.held_out)
        card["feedback"] = feedback.card | {"held_out_accuracy": round(held_out.accuracy, 4)}
        print(f"held-out corrections: {held_out.accuracy:.2f}% of {len(held_out.labels)}")
    card = save_weights(result.model, weights_path, card)
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

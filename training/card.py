"""The weights card: everything needed to judge and reproduce the weights, saved beside them.

GET /model shows it. The accuracy it reports is the final epoch's, on the evaluation set the run
used (the official test set unless --holdout was given); the best epoch is never picked.
"""

import platform
from dataclasses import asdict
from datetime import UTC, datetime

import torch

from training.config import TrainConfig
from training.mnist import Mnist
from training.train import TrainResult


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """[10, 10] counts: row = true digit, column = predicted digit."""
    return torch.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10)


def build_card(config: TrainConfig, data: Mnist, result: TrainResult, command: str) -> dict:
    final = result.final
    matrix = confusion_matrix(final.labels, final.predictions)
    per_class = matrix.diag().double() / matrix.sum(dim=1).clamp(min=1).double()
    seconds = sum(row["seconds"] for row in result.history)
    eval_set = (
        "official MNIST test set"
        if result.evaluated_on == "test"
        else "held-out slice of the MNIST training set"
    )
    hyperparameters = asdict(config)
    for not_hyper in ("seed", "device", "epochs"):
        hyperparameters.pop(not_hyper)
    return {
        "model": "S4Net",
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "evaluated_on": eval_set,
        "eval_images": len(final.labels),
        "test_accuracy" if result.evaluated_on == "test" else "holdout_accuracy": round(
            final.accuracy, 4
        ),
        "accuracy_is": "final epoch's weights (no best-epoch selection)",
        "per_class_accuracy": {str(d): round(100 * float(a), 4) for d, a in enumerate(per_class)},
        "confusion_matrix": matrix.tolist(),
        "epochs": config.epochs,
        "seed": config.seed,
        "hyperparameters": hyperparameters,
        "optimizer": "SGD (nesterov) + OneCycleLR per step",
        "training_seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / max(1, len(result.history)), 1),
        "history": result.history,
        "device": str(result.device),
        "device_name": (
            torch.cuda.get_device_name(result.device)
            if result.device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "dataset": {"name": "MNIST", "sha256_decompressed": data.checksums},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
    }

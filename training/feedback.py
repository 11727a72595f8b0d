"""--feedback: the stored corrections as training data, a seeded fifth held out to judge the run.

The split is app.feedback.split's, so `s4digits promote` later finds exactly the same held-out
digits; the card records how many digits trained and were held out, and a hash of exactly which.
"""

import sys
from dataclasses import dataclass

import torch

from app.feedback.split import as_arrays, digits_sha256, split_feedback
from app.feedback.store import DatabaseError, display_url, stored_digits


@dataclass(frozen=True)
class Feedback:
    train: tuple[torch.Tensor, torch.Tensor]  # uint8 [N, 1, 28, 28], int64 [N]
    held_out: tuple[torch.Tensor, torch.Tensor]
    card: dict  # what the weights card records about them


def tensors(arrays: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = arrays
    return torch.from_numpy(pixels.copy()).unsqueeze(1), torch.from_numpy(labels)


def load_feedback(database_url: str, seed: int) -> Feedback:
    """Every correction stored so far, split by ``seed``; exits saying why if there are none."""
    try:
        digits = stored_digits(database_url)
    except DatabaseError as exc:
        sys.exit(f"--feedback: {exc}")
    split = split_feedback(digits, seed)
    if not split.train or not split.held_out:
        sys.exit(
            f"--feedback {display_url(database_url)}: {len(digits)} corrections stored; too few "
            "to train on some and hold out a fifth"
        )
    card = {
        "database": display_url(database_url),
        "up_to_id": split.up_to_id,
        "seed": seed,
        "held_out": "a picture's digits are held out when sha256(f'{seed}:{picture sha256}') "
        "is 0 mod 5 (app/feedback/split.py)",
        "train_digits": len(split.train),
        "held_out_digits": len(split.held_out),
        "train_sha256": digits_sha256(split.train),
        "held_out_sha256": digits_sha256(split.held_out),
    }
    return Feedback(tensors(as_arrays(split.train)), tensors(as_arrays(split.held_out)), card)

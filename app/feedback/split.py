"""Which stored corrections train and which are held out to judge weights: a seeded fifth.

A picture's digits all fall on one side (by the hash of the seed and the picture's SHA-256), so
no held-out digit has a twin in training, and a digit keeps its side as the database grows: the
promotion gate (app.feedback.promote) finds exactly the digits a run held out.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from app.feedback.store import StoredDigit

HELD_OUT_ONE_IN = 5


def is_held_out(picture_sha256: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{picture_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_ONE_IN == 0


def digits_sha256(digits: list[StoredDigit]) -> str:
    """Names exactly which digits these are (picture, position, label), in any order."""
    keys = sorted(f"{d.sha256}:{d.position}:{d.label}" for d in digits)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


@dataclass(frozen=True)
class FeedbackSplit:
    train: list[StoredDigit]
    held_out: list[StoredDigit]
    up_to_id: int | None  # the newest record taken: later ones are not part of this split


def split_feedback(digits: list[StoredDigit], seed: int) -> FeedbackSplit:
    """Each side in the order of its digits' keys, not of their ids: concurrent writers store
    the same corrections in any order, and training on them must not depend on it."""
    digits = sorted(digits, key=lambda d: (d.sha256, d.position, d.label))
    held_out = [d for d in digits if is_held_out(d.sha256, seed)]
    train = [d for d in digits if not is_held_out(d.sha256, seed)]
    return FeedbackSplit(train, held_out, max((d.id for d in digits), default=None))


def as_arrays(digits: list[StoredDigit]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 28, 28] pixels, int64 [N] labels)."""
    pixels = np.frombuffer(b"".join(d.pixels for d in digits), np.uint8).reshape(-1, 28, 28)
    return pixels, np.array([d.label for d in digits], dtype=np.int64)

"""The gate in front of weights/: a candidate is served only if it reads the MNIST test set no
more than MNIST_TOLERANCE points worse than the served weights and the corrections its training
run held out strictly better. Both are measured here, through the service's own Predictor.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.artifacts.weights import WeightsError, atomic_write_bytes, card_path_for, load_weights
from app.feedback.split import as_arrays, digits_sha256, split_feedback
from app.feedback.store import stored_digits

MNIST_TOLERANCE = 0.05  # percentage points
WEIGHTS_FILE = "s4net.safetensors"


class PromotionError(Exception):
    """The candidate cannot even be judged (missing files, no feedback record, changed data)."""


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    report: list[str]  # what was measured and why it was (not) promoted, one line each


def find_candidate(path: Path) -> Path:
    """The weights file in ``path``: python -m training's --out-dir, its weights/, or the file."""
    for candidate in (path, path / WEIGHTS_FILE, path / "weights" / WEIGHTS_FILE):
        if candidate.is_file():
            return candidate
    raise PromotionError(
        f"{path} holds no {WEIGHTS_FILE}: give the --out-dir of a `python -m training --feedback` "
        "run, or its weights file"
    )


def accuracy(weights: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Percent of ``images`` (uint8 [N, 28, 28], MNIST form) the weights read as ``labels``."""
    from app.inference import Predictor
    from app.settings import Settings

    predictor = Predictor(Settings(weights=weights, device="cpu", batch_max_images=2000))
    predictor.load()
    if not predictor.ready:
        raise PromotionError(f"cannot load {weights}: {predictor.error}")
    correct = 0
    for start in range(0, len(labels), 2000):
        probabilities = predictor.forward(images[start : start + 2000]).probabilities
        correct += int((probabilities.argmax(axis=1) == labels[start : start + 2000]).sum())
    return 100.0 * correct / max(1, len(labels))


def held_out_feedback(card: dict, database_url: str) -> tuple[np.ndarray, np.ndarray]:
    """The corrections the candidate's training run held out, re-found in the database."""
    record = card.get("feedback")
    if not record:
        raise PromotionError(
            "the candidate was not trained with --feedback: nothing shows that it reads the "
            "corrections better; train with `python -m training --feedback DATABASE_URL`"
        )
    digits = stored_digits(database_url, up_to_id=record["up_to_id"])
    held_out = split_feedback(digits, record["seed"]).held_out
    if not held_out or digits_sha256(held_out) != record["held_out_sha256"]:
        raise PromotionError(
            f"the database no longer holds the {record['held_out_digits']} corrections the "
            "candidate's run held out (another database, or records deleted since): retrain"
        )
    return as_arrays(held_out)


def promote(
    candidate_path: Path, served: Path, database_url: str, mnist: tuple[np.ndarray, np.ndarray]
) -> Verdict:
    """Judge the candidate against the served weights; replace them (atomically) if it wins."""
    candidate = find_candidate(candidate_path)
    try:
        candidate_card = load_weights(candidate).card
        load_weights(served)
    except WeightsError as exc:
        raise PromotionError(str(exc)) from None
    feedback = held_out_feedback(candidate_card, database_url)
    rows = {
        "MNIST test set": [accuracy(w, *mnist) for w in (served, candidate)],
        f"held-out corrections ({len(feedback[1])})": [
            accuracy(w, *feedback) for w in (served, candidate)
        ],
    }
    (mnist_served, mnist_candidate), (fb_served, fb_candidate) = rows.values()
    report = [f"{'':32} {'served':>8} {'candidate':>10}"] + [
        f"{name:32} {old:7.2f}% {new:9.2f}%" for name, (old, new) in rows.items()
    ]
    reasons = []
    if mnist_candidate < mnist_served - MNIST_TOLERANCE:
        reasons.append(
            f"it reads the MNIST test set {mnist_served - mnist_candidate:.2f} points worse "
            f"(at most {MNIST_TOLERANCE} allowed)"
        )
    if fb_candidate <= fb_served:
        reasons.append("it reads the held-out corrections no better than the served weights")
    if reasons:
        return Verdict(False, [*report, f"not promoted: {'; '.join(reasons)}; {served} untouched"])
    replace_weights(candidate, served)
    return Verdict(True, [*report, f"promoted: {candidate} now in {served}"])


def replace_weights(candidate: Path, served: Path) -> None:
    """Copy the candidate's weights, then its card, each by an atomic rename. Between the two a
    loader finds a card whose checksum does not match and refuses them (never mixes them)."""
    weights, card = candidate.read_bytes(), card_path_for(candidate).read_bytes()
    atomic_write_bytes(served, weights)
    atomic_write_bytes(card_path_for(served), card)

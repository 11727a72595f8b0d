"""`python -m training --feedback` mixes stored corrections into training and records which;
`s4digits promote` replaces the served weights only when the candidate is better, atomically."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from app.artifacts.weights import card_path_for, load_weights, save_weights
from app.feedback.promote import MNIST_TOLERANCE, PromotionError, promote
from app.feedback.split import digits_sha256, split_feedback
from app.feedback.store import TABLE, FeedbackStore, NewCorrection
from app.model import S4Net
from training.__main__ import main as train_main
from training.mnist import TRAIN_IMAGES, TRAIN_LABELS, read_idx

S4DIGITS = Path(sys.executable).with_name("s4digits")
CORRECTIONS = 120


@pytest.fixture(scope="module")
def database(tmp_path_factory, mnist_dir) -> str:
    """A SQLite database holding CORRECTIONS real MNIST training digits as corrections."""
    images = read_idx(mnist_dir / TRAIN_IMAGES.name, TRAIN_IMAGES).numpy()
    labels = read_idx(mnist_dir / TRAIN_LABELS.name, TRAIN_LABELS).numpy()
    url = f"sqlite:///{tmp_path_factory.mktemp('db')}/feedback.db"
    store = FeedbackStore(url)
    store.upgrade()
    for image, label in zip(images[-CORRECTIONS:], labels[-CORRECTIONS:], strict=True):
        sha = hashlib.sha256(image.tobytes()).hexdigest()
        pixels = image.tobytes()
        store.add([NewCorrection(sha, 0, int(label), 0, None, "w" * 64, None, pixels, None)])
    store.close()
    return url


@pytest.fixture(scope="module")
def candidate(tmp_path_factory, database, mnist_dir, reading_weights) -> Path:
    """A short fine-tuning run of the committed weights with --feedback: its --out-dir."""
    out = tmp_path_factory.mktemp("candidate")
    train_main(
        [
            *("--data-dir", str(mnist_dir), "--out-dir", str(out), "--feedback", database),
            *("--init-weights", str(reading_weights), "--epochs", "1", "--lr", "0.01"),
            *("--train-limit", "512", "--test-limit", "500", "--device", "cpu"),
        ]
    )
    return out


def served_copy(weights: Path, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, directory / weights.name)
    shutil.copy(card_path_for(weights), directory / card_path_for(weights).name)
    return directory / weights.name


def untrained(directory: Path, card: dict) -> Path:
    torch.manual_seed(0)
    path = directory / "s4net.safetensors"
    save_weights(S4Net(), path, card)
    return path


def test_the_card_records_how_many_corrections_and_exactly_which(candidate, database):
    card = load_weights(candidate / "weights" / "s4net.safetensors").card
    store = FeedbackStore(database)
    split = split_feedback(store.digits(), seed=0)
    store.close()
    record = card["feedback"]
    assert record["train_digits"] + record["held_out_digits"] == CORRECTIONS
    assert record["held_out_digits"] == len(split.held_out) > 0
    assert record["train_sha256"] == digits_sha256(split.train)
    assert record["held_out_sha256"] == digits_sha256(split.held_out)
    assert record["up_to_id"] == CORRECTIONS and 0 <= record["held_out_accuracy"] <= 100
    assert card["hyperparameters"]["feedback_oversample"] == 8
    assert card["init_weights"]["sha256"] == load_weights(Path("weights/s4net.safetensors")).sha256


def test_better_weights_are_promoted(candidate, database, mnist_test_set, tmp_path):
    served = untrained(tmp_path / "served", {"note": "worse weights being served"})
    verdict = promote(candidate, served, database, mnist_test_set)
    assert verdict.promoted, verdict.report
    new = candidate / "weights" / "s4net.safetensors"
    assert served.read_bytes() == new.read_bytes()
    assert card_path_for(served).read_bytes() == card_path_for(new).read_bytes()
    assert load_weights(served).card["feedback"]  # loads: weights and card match
    assert list(served.parent.glob(".*.tmp")) == []


def test_weights_worse_on_mnist_are_refused_and_the_served_ones_untouched(
    candidate, database, reading_weights, tmp_path, mnist_dir
):
    served = served_copy(reading_weights, tmp_path / "served")
    before = served.read_bytes(), card_path_for(served).read_bytes()
    feedback_card = load_weights(candidate / "weights" / "s4net.safetensors").card["feedback"]
    worse = untrained(tmp_path / "worse", {"feedback": feedback_card})
    result = subprocess.run(
        [
            *(S4DIGITS, "promote", worse.parent, "--weights", served),
            *("--database-url", database, "--data-dir", mnist_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "not promoted: it reads the MNIST test set" in result.stdout
    assert f"at most {MNIST_TOLERANCE} allowed" in result.stdout
    assert (served.read_bytes(), card_path_for(served).read_bytes()) == before


def test_equal_weights_are_not_promoted(
    candidate, database, reading_weights, tmp_path, mnist_test_set
):
    served = served_copy(reading_weights, tmp_path / "served")
    same = served_copy(reading_weights, tmp_path / "same")
    feedback_card = load_weights(candidate / "weights" / "s4net.safetensors").card["feedback"]
    card_path_for(same).write_text(
        json.dumps(load_weights(same).card | {"feedback": feedback_card})
    )
    images, labels = mnist_test_set
    verdict = promote(same.parent, served, database, (images[:500], labels[:500]))
    assert not verdict.promoted
    assert "no better than the served weights" in verdict.report[-1]


def test_a_candidate_that_cannot_be_judged_is_refused_saying_why(
    candidate, database, reading_weights, tmp_path, mnist_test_set
):
    served = served_copy(reading_weights, tmp_path / "served")
    with pytest.raises(PromotionError, match="not trained with --feedback"):
        promote(served.parent, served, database, mnist_test_set)
    with pytest.raises(PromotionError, match=r"holds no s4net\.safetensors"):
        promote(tmp_path / "nothing", served, database, mnist_test_set)
    copy = tmp_path / "copy.db"
    shutil.copy(database.removeprefix("sqlite:///"), copy)
    store = FeedbackStore(f"sqlite:///{copy}")
    with store.engine.begin() as connection:
        connection.execute(sa.delete(TABLE))
    store.close()
    with pytest.raises(PromotionError, match="no longer holds"):
        promote(candidate, served, f"sqlite:///{copy}", mnist_test_set)

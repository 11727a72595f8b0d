"""Accuracy and calibration on MNIST digits rendered as people send them (bench/renderings.py).

    .venv/bin/python -m bench.robustness --data-dir ../shared/data/mnist            # test set
    .venv/bin/python -m bench.robustness --split holdout --fit-temperature \
        --committed /tmp/a/weights/s4net.safetensors --weights /tmp/b/weights/s4net.safetensors
    .venv/bin/python -m bench.robustness --limit 500                                # a quick look

Each rendering of each digit is encoded as a file (PNG, or JPEG for photos) and read through the
service's own path: app.pipeline.prepare decodes it and brings it to MNIST form, exactly as
POST /predict does for each uploaded file; the prepared images are stacked in batches of 64 (what
the batcher does) and run through app.inference.Predictor.forward with the service's default
settings (ONNX Runtime on the CPU, the card's temperature applied). tests/test_robustness.py
checks that this gives the same probabilities as POST /predict. An upload the service refuses
counts as wrong.

Prints a Markdown table: one row per rendering, one accuracy column per weights file (the
committed weights first, then those given with --weights), and the expected calibration error
(15 bins) of the committed weights' served probabilities, with and without the card's temperature.
--split holdout reads the held-out slice of the training set that `python -m training --holdout N
--seed S` holds out, for tuning; --fit-temperature then fits a temperature there. --write-card
stores the figures in the committed weights' card (test split, all images only).
"""

import argparse
import io
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.artifacts.weights import atomic_write_bytes, card_path_for
from app.inference import Predictor, apply_temperature, card_temperature
from app.pipeline.errors import ImageRejected
from app.pipeline.prepare import prepare
from app.pipeline.uploads import Upload
from app.settings import Settings
from bench.renderings import RENDERINGS, Rendering
from training.config import TrainConfig
from training.mnist import load_mnist, resolve_data_dir
from training.train import split_data

COMMITTED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "s4net.safetensors"
REQUEST_IMAGES = 64  # the service's default max_images per /predict request
ECE_BINS = 15
MAX_PIXELS = Settings().max_pixels


@dataclass(frozen=True)
class PreparedRow:
    rendering: Rendering
    pixels: np.ndarray  # uint8 [N, 28, 28]; a refused upload's entry is zeros
    refused: np.ndarray  # bool [N]


@dataclass(frozen=True)
class RowResult:
    accuracy: float  # percent; refused uploads count as wrong
    ece: float  # percent, of the served (calibrated) probabilities
    ece_uncalibrated: float  # percent, with the card's temperature undone
    probabilities: np.ndarray  # float32 [N, 10], as served


def load_split(data_dir: Path | None, split: str, holdout: int, seed: int, limit: int | None):
    """(images uint8 [N, 28, 28], labels int [N]) of the test set or the training holdout."""
    data = load_mnist(resolve_data_dir(data_dir, None))
    if split == "test":
        images, labels = data.test.images, data.test.labels
    else:
        _, _, images, labels, _ = split_data(data, TrainConfig(holdout=holdout, seed=seed))
    images, labels = images[:, 0].numpy(), labels.numpy()
    return (images[:limit], labels[:limit]) if limit else (images, labels)


def prepare_row(rendering: Rendering, images: np.ndarray, seed: int) -> PreparedRow:
    """Render every image (one seeded generator per row), then prepare it as the service does."""
    rng = np.random.default_rng([seed, RENDERINGS.index(rendering)])
    pixels = np.zeros((len(images), 28, 28), dtype=np.uint8)
    refused = np.zeros(len(images), dtype=bool)
    for i, image in enumerate(images):
        try:
            pixels[i] = prepare(Upload(i, None, rendering.render(image, rng)), MAX_PIXELS).pixels
        except ImageRejected:
            refused[i] = True
    return PreparedRow(rendering, pixels, refused)


def cached_row(cache: Path | None, rendering: Rendering, images: np.ndarray, args) -> PreparedRow:
    """prepare_row, kept in ``cache`` (if given) to compare other weights without re-rendering."""
    if cache is None:
        return prepare_row(rendering, images, args.seed)
    key = f"{args.split}-{args.holdout}-{args.holdout_seed}-{len(images)}-{args.seed}"
    path = cache / f"{key}-{RENDERINGS.index(rendering)}.npz"
    if path.exists():
        saved = np.load(path)
        return PreparedRow(rendering, saved["pixels"], saved["refused"])
    row = prepare_row(rendering, images, args.seed)
    cache.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, pixels=row.pixels, refused=row.refused)
    atomic_write_bytes(path, buffer.getvalue())
    return row


def load_predictor(weights: Path) -> Predictor:
    predictor = Predictor(Settings(weights=weights))
    predictor.load()
    if not predictor.ready:
        sys.exit(f"{weights}: {predictor.error}")
    return predictor


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ECE in percent: |accuracy - confidence| per equal-width confidence bin, weighted by count."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in range(ECE_BINS):
        members = bins == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return 100.0 * total / len(labels)


def read_row(predictor: Predictor, row: PreparedRow, labels: np.ndarray) -> RowResult:
    chunks = [
        predictor.forward(row.pixels[start : start + REQUEST_IMAGES]).probabilities
        for start in range(0, len(labels), REQUEST_IMAGES)
    ]
    served = np.concatenate(chunks)
    correct = (served.argmax(axis=1) == labels) & ~row.refused
    temperature = predictor.served.temperature
    raw = apply_temperature(served, 1.0 / temperature)  # softmax(log p * T): the runtime's output
    return RowResult(
        accuracy=100.0 * correct.mean(),
        ece=expected_calibration_error(served[~row.refused], labels[~row.refused]),
        ece_uncalibrated=expected_calibration_error(raw[~row.refused], labels[~row.refused]),
        probabilities=served,
    )


def fit_temperature(raw: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the mean negative log-likelihood (golden-section on log T)."""

    def nll(log_t: float) -> float:
        p = apply_temperature(raw, float(np.exp(log_t))).astype(np.float64)
        return -np.mean(np.log(np.maximum(p[np.arange(len(labels)), labels], 1e-12)))

    low, high = np.log(0.25), np.log(8.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return round(float(np.exp((low + high) / 2)), 4)


def markdown_table(names: list[str], rows: list[PreparedRow], results: list[list[RowResult]]):
    header = ["rendering", *names, "ECE before", "ECE after"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def line(label: str, accuracies: list[float], ece: tuple[float, float]) -> str:
        cells = [f"{a:.2f} %" for a in accuracies] + [f"{e:.2f} %" for e in ece]
        return f"| {label} | " + " | ".join(cells) + " |"

    for index, row in enumerate(rows):
        committed = results[0][index]
        accuracies = [per_weights[index].accuracy for per_weights in results]
        lines.append(
            line(row.rendering.name, accuracies, (committed.ece_uncalibrated, committed.ece))
        )
    for label, members in summary_groups(rows).items():
        accuracies = [float(np.mean([r[i].accuracy for i in members])) for r in results]
        ece = tuple(
            float(np.mean([getattr(results[0][i], key) for i in members]))
            for key in ("ece_uncalibrated", "ece")
        )
        lines.append(line(f"**{label}**", accuracies, ece))
    return "\n".join(lines)


def summary_groups(rows: list[PreparedRow]) -> dict[str, list[int]]:
    plain = [i for i, row in enumerate(rows) if not row.rendering.mnist_c]
    corrupted = [i for i, row in enumerate(rows) if row.rendering.mnist_c]
    groups = {"mean, uploads": plain, "mean, MNIST-C": corrupted}
    return {label: members for label, members in groups.items() if members}


def card_figures(rows: list[PreparedRow], results: list[RowResult], command: str) -> dict:
    """What --write-card stores: accuracy and ECE (before/after the temperature) per rendering."""
    per_row = {
        row.rendering.name: {
            "accuracy": round(r.accuracy, 2),
            "ece": round(r.ece, 2),
            "ece_uncalibrated": round(r.ece_uncalibrated, 2),
        }
        for row, r in zip(rows, results, strict=True)
    }
    means = {
        label: round(float(np.mean([results[i].accuracy for i in members])), 2)
        for label, members in summary_groups(rows).items()
    }
    mnist = results[0] if rows[0].rendering is RENDERINGS[0] else None
    calibration = {
        "ece_bins": ECE_BINS,
        "mnist_ece_before": round(mnist.ece_uncalibrated, 2) if mnist else None,
        "mnist_ece_after": round(mnist.ece, 2) if mnist else None,
        "renderings_mean_ece_before": round(
            float(np.mean([r.ece_uncalibrated for r in results])), 2
        ),
        "renderings_mean_ece_after": round(float(np.mean([r.ece for r in results])), 2),
    }
    return {
        "split": "test",
        "images": len(rows[0].pixels),
        "rows": per_row,
        "means": means,
        "calibration": calibration,
        "command": command,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.robustness", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data-dir", type=Path, help="MNIST .gz files (else $S4_DATA_DIR, else cache)")
    p.add_argument("--weights", type=Path, nargs="*", default=[], help="more weights to compare")
    p.add_argument("--committed", type=Path, default=COMMITTED_WEIGHTS, help="the first column")
    p.add_argument("--split", choices=("test", "holdout"), default="test")
    p.add_argument("--holdout", type=int, default=5000, help="size of the training holdout")
    p.add_argument("--holdout-seed", type=int, default=0, help="the training run's --seed")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--only", nargs="*", help="only renderings whose name contains one of these")
    p.add_argument("--seed", type=int, default=0, help="seed of the renderings")
    p.add_argument("--fit-temperature", action="store_true", help="fit T per weights (holdout)")
    p.add_argument("--write-card", action="store_true", help="store the figures in the card")
    p.add_argument("--json", type=Path, help="also write every figure here")
    p.add_argument("--cache", type=Path, help="keep the prepared renderings here, for reruns")
    p.add_argument(
        "--set-temperature",
        type=float,
        help="with --write-card: first store this temperature (fitted on the holdout) in the card",
    )
    p.add_argument("--temperature-source", default="", help="how --set-temperature was fitted")
    return p.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.fit_temperature and args.split != "holdout":
        sys.exit("--fit-temperature fits on the holdout only: never tune on the test set")
    if args.write_card and (args.split != "test" or args.limit or args.only):
        sys.exit("--write-card needs the full test set: no --split holdout, --limit or --only")
    images, labels = load_split(
        args.data_dir, args.split, args.holdout, args.holdout_seed, args.limit
    )
    renderings = [
        r for r in RENDERINGS if not args.only or any(word in r.name for word in args.only)
    ]
    if args.set_temperature is not None:
        if not args.write_card:
            sys.exit("--set-temperature goes with --write-card")
        update_card(
            args.committed,
            temperature=args.set_temperature,
            temperature_fitted_on=args.temperature_source,
        )
    started = time.perf_counter()
    rows = [cached_row(args.cache, r, images, args) for r in renderings]
    prepared_s = time.perf_counter() - started
    weights = [args.committed, *args.weights]
    results = []
    for path in weights:
        predictor = load_predictor(path)
        results.append([read_row(predictor, row, labels) for row in rows])
    names = [
        f"{p.parent.parent.name or p.name}/{p.name}" if p != args.committed else "committed"
        for p in weights
    ]
    print(
        f"{len(labels)} {args.split} images x {len(rows)} renderings (seed {args.seed}); "
        f"rendering + preprocessing {prepared_s:.0f}s; ECE columns: {names[0]}, before/after "
        "its card's temperature"
    )
    print(markdown_table(names, rows, results))
    figures = {"split": args.split, "images": len(labels), "weights": {}}
    for path, per_weights in zip(weights, results, strict=True):
        entry = {
            r.rendering.name: round(x.accuracy, 2) for r, x in zip(rows, per_weights, strict=True)
        }
        figures["weights"][str(path)] = {"accuracy": entry}
        if args.fit_temperature:
            temperature = card_temperature(json.loads(card_path_for(path).read_text()))
            raw = np.concatenate(
                [apply_temperature(x.probabilities, 1.0 / temperature) for x in per_weights]
            )
            pooled = np.concatenate([labels] * len(rows))
            fitted = fit_temperature(raw, pooled)
            fitted_mnist = (
                fit_temperature(raw[: len(labels)], labels)
                if rows[0].rendering is RENDERINGS[0]
                else None
            )
            figures["weights"][str(path)]["temperature"] = fitted
            print(f"{path}: temperature {fitted} (all renderings), {fitted_mnist} (MNIST as is)")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(figures, indent=2).encode())
    if args.write_card:
        command = shlex.join(["python", "-m", "bench.robustness", *argv])
        update_card(args.committed, robustness=card_figures(rows, results[0], command))
        print(f"wrote the robustness figures into {card_path_for(args.committed)}")


def update_card(weights: Path, **entries) -> None:
    """Add or replace top-level entries of a weights card (atomically; the checksum still holds:
    it covers the weights file, not the card)."""
    card_path = card_path_for(weights)
    card = json.loads(card_path.read_text())
    card.update(entries)
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode())


if __name__ == "__main__":
    main(sys.argv[1:])

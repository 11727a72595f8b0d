"""Whole-number reading (app.numbers.segmentation) on numbers composed from real MNIST digits.

    .venv/bin/python -m bench.numbers                      # MNIST test digits: the figures
    .venv/bin/python -m bench.numbers --source holdout     # the last 5,000 training digits: tuning
    .venv/bin/python -m bench.numbers --failures reports/number-failures.png   # and some misreads

Each number has 1-10 digits, all from the chosen source (the test set's digits are never used to
tune; the holdout's are the training set's last 5,000, as `python -m training --holdout 5000`
holds them out). Each digit is cropped to its ink, scaled by +-15 % and moved up or down by
+-15 % of its height; the gap between neighbours' ink is one of GAPS (negative: they overlap);
the whole number is slanted slightly; half are black ink on white paper, half white on black;
a few get a stray pen mark (a short line) above or below the digits. The picture goes through
app.numbers.segmentation.read_number with the committed weights (ONNX Runtime on the CPU, as
served).

Prints whole-number accuracy by length and by gap, digit accuracy (over numbers read with the
right number of digits), and the issue's targets at 4 digits.
"""

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.artifacts.weights import load_weights
from app.numbers.segmentation import read_number
from app.pipeline.mnist_form import crop_to_ink
from app.runtime.runtimes import OnnxRuntime
from bench.serve import COMMITTED_WEIGHTS, MNIST_DIR
from training.mnist import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_idx

HOLDOUT = 5000  # the training set's last images, as `python -m training --holdout 5000`

GAPS = {"wide": 8, "normal": 3, "touching": 0, "overlap 2px": -2}  # px between inks, at 28 px
LENGTHS = range(1, 11)
JITTER = 0.15  # size and baseline, of the digit's height
MAX_SLANT = 0.15  # horizontal shear, px per px of height (about 8.5 degrees)
STRAY_MARK_SHARE = 0.1  # of the numbers get a stray pen mark
MARGIN = 12  # px of background around the number


@dataclass(frozen=True)
class Sample:
    picture: np.ndarray  # uint8 gray levels, as a client would upload them
    text: str
    gap: str
    stray_mark: bool


def load_digits(source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "test":
        images = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES).numpy()
        labels = read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS).numpy()
        return images, labels
    images = read_idx(MNIST_DIR / TRAIN_IMAGES.name, TRAIN_IMAGES).numpy()[-HOLDOUT:]
    labels = read_idx(MNIST_DIR / TRAIN_LABELS.name, TRAIN_LABELS).numpy()[-HOLDOUT:]
    return images, labels


def jittered(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ink = crop_to_ink(digit)
    scale = 1.0 + rng.uniform(-JITTER, JITTER)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    return np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BILINEAR))


def compose(
    images: np.ndarray,
    labels: np.ndarray,
    length: int,
    gap: str,
    rng: np.random.Generator,
    stray_mark: bool = False,
) -> Sample:
    """One number: ``length`` random digits of ``images`` side by side, white ink on black, then
    slanted, marked and (half the time) turned into black ink on white paper."""
    picks = rng.integers(0, len(images), size=length)
    digits = [jittered(images[index], rng) for index in picks]
    shifts = [round(rng.uniform(-JITTER, JITTER) * digit.shape[0]) for digit in digits]
    height = max(d.shape[0] + 2 * abs(s) for d, s in zip(digits, shifts, strict=True))
    width = sum(d.shape[1] for d in digits) + GAPS[gap] * (length - 1) + 2 * MARGIN
    canvas = np.zeros((height + 2 * MARGIN, max(width, 1)), dtype=np.uint8)
    x = MARGIN
    for digit, shift in zip(digits, shifts, strict=True):
        top = (canvas.shape[0] - digit.shape[0]) // 2 + shift
        region = canvas[top : top + digit.shape[0], x : x + digit.shape[1]]
        np.maximum(region, digit, out=region)
        x += digit.shape[1] + GAPS[gap]
    if stray_mark:
        add_stray_mark(canvas, rng)
    slant = rng.uniform(-MAX_SLANT, MAX_SLANT)
    picture = Image.fromarray(canvas).transform(
        canvas.shape[::-1],
        Image.Transform.AFFINE,
        (1, slant, -slant * canvas.shape[0] / 2, 0, 1, 0),
        Image.Resampling.BILINEAR,
    )
    pixels = np.asarray(picture)
    if rng.random() < 0.5:
        pixels = 255 - pixels
    return Sample(pixels, "".join(str(int(labels[i])) for i in picks), gap, stray_mark)


def add_stray_mark(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A short, thin, straight stroke in the margin above or below the digits."""
    length = rng.uniform(6, 12)
    angle = rng.uniform(0, np.pi)
    cx = rng.uniform(MARGIN, canvas.shape[1] - MARGIN)
    cy = rng.choice([MARGIN * 0.8, canvas.shape[0] - MARGIN * 0.8])
    for t in np.linspace(-0.5, 0.5, 40):
        x, y = cx + t * length * np.cos(angle), cy + t * length * np.sin(angle) * 0.5
        canvas[int(y) : int(y) + 2, int(x) : int(x) + 2] = 255


def samples(source: str, count_per_cell: int, seed: int) -> list[Sample]:
    images, labels = load_digits(source)
    rng = np.random.default_rng(seed)
    return [
        compose(images, labels, length, gap, rng, stray_mark=rng.random() < STRAY_MARK_SHARE)
        for length in LENGTHS
        for gap in GAPS
        for _ in range(count_per_cell)
    ]


def committed_forward():
    return OnnxRuntime(load_weights(COMMITTED_WEIGHTS).tensors, threads=1)


@dataclass
class Tally:
    right: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.right += ok
        self.total += 1

    def __str__(self) -> str:
        return f"{100.0 * self.right / max(1, self.total):5.1f} % ({self.right}/{self.total})"


def evaluate(cases: list[Sample], forward) -> dict:
    by_length, by_gap = defaultdict(Tally), defaultdict(Tally)
    four_by_gap, digits, stray = defaultdict(Tally), Tally(), Tally()
    failures = []
    for case in cases:
        text = read_number(case.picture, forward).text
        ok = text == case.text
        by_length[len(case.text)].add(ok)
        by_gap[case.gap].add(ok)
        if len(case.text) == 4:
            four_by_gap[case.gap].add(ok)
        if case.stray_mark:
            stray.add(ok)
        if len(text) == len(case.text):
            for read, true in zip(text, case.text, strict=True):
                digits.add(read == true)
        if not ok:
            failures.append((case, text))
    return {"by_length": by_length, "by_gap": by_gap, "four_by_gap": four_by_gap,
            "digits": digits, "stray": stray, "failures": failures}  # fmt: skip


def draw_failures(failures: list[tuple[Sample, str]], path: Path, per_gap: int = 4) -> None:
    """The first few misread numbers of each gap, each titled with what it shows and what was
    read, into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    shown = [[(case, text) for case, text in failures if case.gap == gap][:per_gap] for gap in GAPS]
    figure, axes = pyplot.subplots(len(GAPS), per_gap, figsize=(3.2 * per_gap, 1.6 * len(GAPS)))
    for row, (gap, cases) in enumerate(zip(GAPS, shown, strict=True)):
        for column in range(per_gap):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(cases):
                case, text = cases[column]
                axis.imshow(case.picture, cmap="gray", vmin=0, vmax=255)
                axis.set_title(f"{gap}: {case.text} read {text or '(nothing)'}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


TARGETS = {"wide": 98.0, "normal": 98.0, "touching": 90.0, "overlap 2px": 80.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=["test", "holdout"], default="test")
    parser.add_argument("--per-cell", type=int, default=50, help="numbers per length and gap")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failures", type=Path, help="draw some misread numbers into this PNG")
    args = parser.parse_args()
    cases = samples(args.source, args.per_cell, args.seed)
    started = time.perf_counter()
    result = evaluate(cases, committed_forward())
    if args.failures:
        draw_failures(result["failures"], args.failures)
    seconds = time.perf_counter() - started
    print(f"{len(cases)} numbers from MNIST {args.source} digits, seed {args.seed}, "
          f"{1000 * seconds / len(cases):.1f} ms each")  # fmt: skip
    print("\n| digits | exact |\n|---|---|")
    for length, tally in sorted(result["by_length"].items()):
        print(f"| {length} | {tally} |")
    print("\n| gap | exact, all lengths | exact, 4 digits | target (4 digits) |\n|---|---|---|---|")
    for gap, tally in result["by_gap"].items():
        print(f"| {gap} ({GAPS[gap]} px) | {tally} | {result['four_by_gap'][gap]} | "
              f"≥ {TARGETS[gap]:.0f} % |")  # fmt: skip
    print(f"\ndigit accuracy (numbers with the right digit count): {result['digits']}")
    print(f"numbers with a stray pen mark, exact: {result['stray']}")


if __name__ == "__main__":
    main()

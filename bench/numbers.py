"""Whole-number reading (app.numbers.segmentation) on numbers composed from real MNIST digits.

    .venv/bin/python -m bench.numbers                          # MNIST test digits: the figures
    .venv/bin/python -m bench.numbers --lengths 4 --per-cell 20   # a quick look while iterating
    .venv/bin/python -m bench.numbers --source holdout --calibrate   # tuning, and the calibration
    .venv/bin/python -m bench.numbers --failures reports/number-failures.png   # and some misreads

Each number has 1-10 digits, all from the chosen source (the test set's digits are never used to
tune; the holdout's are the training set's last 5,000), composed by training/numbers.py in two
styles (clean, and realistic: on paper, photographed, JPEG) with one of its GAPS between digits.

A few numbers of each style get a stray pen stroke above or below the digits. The pictures go
through app.numbers.reading.read_number with the committed weights and digit check (ONNX Runtime
on the CPU, as served). When `tesseract` is on the PATH, Tesseract reads the same 4-digit pictures
(`--psm 7`, digits only) for comparison.

Prints whole-number accuracy by length and by gap and style, the issue's targets at 4 digits
beside the ceiling (the same numbers with each digit cut out by the composer's own map of which
digit owns each pixel, read by the net one by one: what a segmenter that never cut wrong would
reach), and how well each number's `probability` and `needs_review` work, with the trade-off of
flagging fewer; `--calibrate` fits them.
"""

import argparse
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.artifacts.weights import load_weights
from app.numbers.check import DigitCheck, load_check
from app.numbers.reading import fit_calibration, read_number
from app.pipeline.mnist_form import MNIST_SIZE, ink_levels, ink_to_mnist_form
from app.runtime.runtimes import OnnxRuntime
from bench.serve import COMMITTED_CHECK, COMMITTED_WEIGHTS, MNIST_DIR
from training.mnist import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_idx
from training.numbers import COMPOSERS, GAPS, HOLDOUT, LENGTHS, STRAY_MARK_SHARE, STYLES, Sample


def load_digits(source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "test":
        images = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES).numpy()
        labels = read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS).numpy()
        return images, labels
    images = read_idx(MNIST_DIR / TRAIN_IMAGES.name, TRAIN_IMAGES).numpy()[-HOLDOUT:]
    labels = read_idx(MNIST_DIR / TRAIN_LABELS.name, TRAIN_LABELS).numpy()[-HOLDOUT:]
    return images, labels


def samples(
    source: str,
    count_per_cell: int,
    seed: int,
    lengths=LENGTHS,
    styles=STYLES,
    gaps=tuple(GAPS),
) -> list[Sample]:
    images, labels = load_digits(source)
    rng = np.random.default_rng(seed)
    return [
        COMPOSERS[style](
            images, labels, length, gap, rng, stray_mark=rng.random() < STRAY_MARK_SHARE
        )
        for style in styles
        for length in lengths
        for gap in gaps
        for _ in range(count_per_cell)
    ]


def committed_forward():
    return OnnxRuntime(load_weights(COMMITTED_WEIGHTS).tensors, threads=1)


def committed_check() -> DigitCheck:
    return load_check(COMMITTED_CHECK)


@dataclass
class Tally:
    right: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.right += ok
        self.total += 1

    @property
    def share(self) -> float:
        return self.right / max(1, self.total)

    def __str__(self) -> str:
        return f"{100.0 * self.share:5.1f} % ({self.right}/{self.total})"


@dataclass(frozen=True)
class Outcome:
    sample: Sample
    text: str
    probability: float
    needs_review: bool
    features: np.ndarray  # what the calibration reads (NumberReading.features)
    alone: str  # the digits read one by one, cut out with the composer's owners (cut_perfectly)

    @property
    def ok(self) -> bool:
        return self.text == self.sample.text


def cut_perfectly(case: Sample) -> np.ndarray:
    """Each digit of ``case`` alone in MNIST form (uint8 [N, 28, 28]), cut out with the map of
    which digit owns each pixel: what a segmenter that never cut wrong would give the net. The
    picture's ink levels where the digit owns the pixel, or where no one does within 1 px of it
    (its antialiased edge); a pixel two digits share goes to the stronger one's ink."""
    levels = ink_levels(case.picture)
    around = np.ones((3, 3), np.uint8)
    digits = []
    for owner in range(1, len(case.text) + 1):
        own = (case.owners == owner).view(np.uint8)
        edge = cv2.dilate(own, around).view(bool) & (case.owners == 0)
        digit = np.where(own.view(bool) | edge, levels, 0.0)
        blank = np.zeros((MNIST_SIZE, MNIST_SIZE), np.uint8)
        digits.append(ink_to_mnist_form(digit) if digit.any() else blank)
    return np.stack(digits)


def evaluate(cases: list[Sample], forward, check: DigitCheck) -> list[Outcome]:
    outcomes = []
    for case in cases:
        reading = read_number(case.picture, forward, check)
        alone = "".join(str(d) for d in forward(cut_perfectly(case)).argmax(axis=1))
        outcomes.append(
            Outcome(case, reading.text, reading.probability, reading.needs_review,
                    reading.features, alone)
        )  # fmt: skip
    return outcomes


def tallies(outcomes: list[Outcome]) -> dict:
    """Exact numbers by length, by (style, gap) and by (style, gap) at 4 digits, and at 4 digits
    with the digits cut perfectly (``alone``: the net's own ceiling on these digits); digit
    accuracy over the numbers read with the right digit count; stray-marked numbers."""
    by_length, by_cell, four, four_alone, digits, stray = (
        defaultdict(Tally), defaultdict(Tally), defaultdict(Tally), defaultdict(Tally), Tally(),
        Tally(),
    )  # fmt: skip
    for outcome in outcomes:
        case, text = outcome.sample, outcome.text
        by_length[len(case.text)].add(outcome.ok)
        by_cell[case.style, case.gap].add(outcome.ok)
        if len(case.text) == 4:
            four[case.style, case.gap].add(outcome.ok)
            four_alone[case.style, case.gap].add(outcome.alone == case.text)
        if case.stray_mark:
            stray.add(outcome.ok)
        if len(text) == len(case.text):
            for read, true in zip(text, case.text, strict=True):
                digits.add(read == true)
    return {"by_length": by_length, "by_cell": by_cell, "four": four, "four_alone": four_alone,
            "digits": digits, "stray": stray}  # fmt: skip


def tesseract_reads(cases: list[Sample]) -> dict[tuple[str, str], Tally] | None:
    """Tesseract's exact reads of ``cases`` by (style, gap): one line (--psm 7), digits only;
    None when `tesseract` is not on the PATH."""
    if shutil.which("tesseract") is None:
        return None
    result = defaultdict(Tally)
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        for index, case in enumerate(cases):
            path = Path(scratch) / f"{index}.png"
            if case.upload is not None:
                path = path.with_suffix(".jpg")
                path.write_bytes(case.upload)
            else:
                Image.fromarray(case.picture).save(path)
            command = ["tesseract", str(path), "stdout", "--psm", "7",
                       "-c", "tessedit_char_whitelist=0123456789"]  # fmt: skip
            run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
            text = "".join(ch for ch in run.stdout if ch.isdigit())
            result[case.style, case.gap].add(text == case.text)
    return result


def review_figures(outcomes: list[Outcome]) -> dict:
    """How needs_review sorts the numbers: the exact share of those not flagged, and the share
    flagged, over all and per (style, gap); and the trade-off of flagging fewer: the probability
    below which lies the tenth of clean normal-gap numbers it is least sure of, and the exact
    share of the numbers at or above it, among the normal-gap ones and among all."""
    kept, flagged = Tally(), defaultdict(Tally)
    for outcome in outcomes:
        if not outcome.needs_review:
            kept.add(outcome.ok)
        flagged[outcome.sample.style, outcome.sample.gap].add(outcome.needs_review)
        flagged["all"].add(outcome.needs_review)
    normal = [o for o in outcomes if (o.sample.style, o.sample.gap) == ("clean", "normal")]
    tenth = float(np.quantile([o.probability for o in normal], 0.1)) if normal else 1.0
    above = {
        name: Tally(sum(o.ok for o in group if o.probability >= tenth),
                    sum(o.probability >= tenth for o in group))
        for name, group in (("normal", normal), ("all", outcomes))
    }  # fmt: skip
    return {"kept": kept, "flagged": flagged, "tenth": tenth, "above": above}


def reliability(outcomes: list[Outcome]) -> list[tuple[str, Tally, float]]:
    """Calibration: per bin of the stated probability, the exact share and the mean stated."""
    edges = [0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0001]
    rows = []
    for low, high in itertools.pairwise(edges):
        inside = [o for o in outcomes if low <= o.probability < high]
        tally = Tally(sum(o.ok for o in inside), len(inside))
        mean = float(np.mean([o.probability for o in inside])) if inside else float("nan")
        rows.append((f"{low:g}-{min(high, 1):g}", tally, mean))
    return rows


def draw_failures(outcomes: list[Outcome], path: Path, per_row: int = 4) -> None:
    """The first few misread numbers of each gap and style, each titled with what it shows and
    what was read, into one PNG (written whole, then renamed into place)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    cells = [(style, gap) for style in STYLES for gap in GAPS]
    failures = [o for o in outcomes if not o.ok]
    shown = [[o for o in failures if (o.sample.style, o.sample.gap) == c][:per_row] for c in cells]
    figure, axes = pyplot.subplots(len(cells), per_row, figsize=(3.2 * per_row, 1.6 * len(cells)))
    for row, ((style, gap), cases) in enumerate(zip(cells, shown, strict=True)):
        for column in range(per_row):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(cases):
                case, text = cases[column].sample, cases[column].text
                axis.imshow(case.picture, cmap="gray", vmin=0, vmax=255)
                axis.set_title(f"{style} {gap}: {case.text} read {text or '(nothing)'}",
                               fontsize=7)  # fmt: skip
    figure.tight_layout()
    partial = path.with_name(f".{path.name}.partial.png")
    figure.savefig(partial, dpi=100)
    partial.replace(path)


# The targets: exact 4-digit numbers, per (style, gap).
TARGETS = {
    ("clean", "wide"): 98.0,
    ("clean", "normal"): 98.0,
    ("realistic", "normal"): 97.0,
    ("clean", "touching"): 92.0,
    ("clean", "overlap 2px"): 85.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=["test", "holdout"], default="test")
    parser.add_argument("--per-cell", type=int, default=50, help="numbers per length, gap, style")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--styles", nargs="+", choices=STYLES, default=list(STYLES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failures", type=Path, help="draw some misread numbers into this PNG")
    parser.add_argument(
        "--tesseract", type=int, default=50, metavar="N",
        help="Tesseract reads the first N 4-digit numbers of each gap and style (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--calibrate", action="store_true",
        help="fit the probability's calibration and the review threshold (holdout only)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.calibrate and args.source != "holdout":
        parser.error("--calibrate tunes: use it with --source holdout, never the test digits")
    cases = samples(args.source, args.per_cell, args.seed, args.lengths, args.styles)
    started = time.perf_counter()
    outcomes = evaluate(cases, committed_forward(), committed_check())
    seconds = time.perf_counter() - started
    if args.failures:
        draw_failures(outcomes, args.failures)
    result = tallies(outcomes)
    print(f"{len(cases)} numbers from MNIST {args.source} digits, seed {args.seed}, "
          f"{1000 * seconds / len(cases):.1f} ms each")  # fmt: skip
    print("\n| digits | exact |\n|---|---|")
    for length, tally in sorted(result["by_length"].items()):
        print(f"| {length} | {tally} |")
    print("\n| style | gap | exact, all lengths | exact, 4 digits | 4 digits cut perfectly "
          "| target (4 digits) |\n|---|---|---|---|---|---|")  # fmt: skip
    for (style, gap), tally in result["by_cell"].items():
        target = TARGETS.get((style, gap))
        print(f"| {style} | {gap} ({GAPS[gap]} px) | {tally} | {result['four'][style, gap]} | "
              f"{result['four_alone'][style, gap]} | "
              f"{'' if target is None else f'≥ {target:.0f} %'} |")  # fmt: skip
    print(f"\ndigit accuracy (numbers with the right digit count): {result['digits']}")
    print(f"numbers with a stray pen mark, exact: {result['stray']}")
    review = review_figures(outcomes)
    print(f"\nnot flagged needs_review, exact: {review['kept']} (target ≥ 99.5 %)")
    print("flagged needs_review: " + ", ".join(
        f"{' '.join(key) if isinstance(key, tuple) else key} {tally}"
        for key, tally in review["flagged"].items()
    ) + " (target ≤ 10 % of normal gaps)")  # fmt: skip
    print(f"flagged below {review['tenth']:.4f} instead (a tenth of clean normal-gap numbers): "
          f"the other normal-gap numbers {review['above']['normal']} exact, all numbers "
          f"{review['above']['all']}")  # fmt: skip
    print("\n| probability | numbers | exact | mean probability |\n|---|---|---|---|")
    for label, tally, mean in reliability(outcomes):
        print(f"| {label} | {tally.total} | {tally} | {mean:.4f} |")
    if args.tesseract and 4 in args.lengths:
        four = [o.sample for o in outcomes if len(o.sample.text) == 4]
        picked = [
            case
            for style in args.styles
            for gap in GAPS
            for case in [c for c in four if (c.style, c.gap) == (style, gap)][: args.tesseract]
        ]
        tesseract = tesseract_reads(picked)
        if tesseract is None:
            print("\nTesseract: skipped, `tesseract` is not on the PATH (Debian: tesseract-ocr)")
        else:
            version = subprocess.run(["tesseract", "--version"], capture_output=True, text=True)
            print(f"\nTesseract ({version.stdout.split()[1]}, --psm 7, digits only), "
                  "exact 4-digit numbers:")  # fmt: skip
            for (style, gap), tally in tesseract.items():
                print(f"| {style} | {gap} | {tally} |")
    if args.calibrate:
        print("\ncalibration (paste into app/numbers/reading.py):")
        print(fit_calibration([o.features for o in outcomes], [o.ok for o in outcomes]))


if __name__ == "__main__":
    main()

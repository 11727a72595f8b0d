"""Whole-number reading (app.numbers.segmentation) on numbers composed from real MNIST digits.

    .venv/bin/python -m bench.numbers                          # MNIST test digits: the figures
    .venv/bin/python -m bench.numbers --lengths 4 --per-cell 20   # a quick look while iterating
    .venv/bin/python -m bench.numbers --source holdout --calibrate   # tuning, and the calibration
    .venv/bin/python -m bench.numbers --failures reports/number-failures.png   # and some misreads

Each number has 1-10 digits, all from the chosen source (the test set's digits are never used to
tune; the holdout's are the training set's last 5,000). Each digit is cropped to its ink; the gap
between neighbours' ink is one of GAPS (negative: they overlap). Two styles:

- clean: each digit scaled by +-15 % and moved up or down by +-15 % of its height, the number
  slanted slightly, half black ink on white paper and half white on black, given as gray levels;
- realistic: the number drawn 1-2.5x MNIST's size, digit heights varying +-25 % within it, sat
  on a baseline that wanders by up to a third of a digit, rotated up to +-6 degrees, then put on
  paper as a phone or scanner would see it (dark ink on grey paper with uneven light and noise,
  pencil-grey ink, or blue ink on white), saved as JPEG at quality 70-90 and decoded as the
  service decodes uploads (app.pipeline.decode).

A few numbers of each style get a stray pen stroke above or below the digits. The pictures go
through app.numbers.reading.read_number with the committed weights (ONNX Runtime on the
CPU, as served). When `tesseract` is on the PATH, Tesseract reads the same 4-digit pictures
(`--psm 7`, digits only) for comparison.

Prints whole-number accuracy by length and by gap and style, the issue's targets at 4 digits,
and how well each number's `probability` and `needs_review` work; `--calibrate` fits them.
"""

import argparse
import io
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.artifacts.weights import load_weights
from app.numbers.reading import fit_calibration, read_number
from app.pipeline.decode import decode
from app.pipeline.mnist_form import crop_to_ink
from app.runtime.runtimes import OnnxRuntime
from bench.serve import COMMITTED_WEIGHTS, MNIST_DIR
from training.mnist import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_idx

HOLDOUT = 5000  # the training set's last images

GAPS = {"wide": 8, "normal": 3, "touching": 0, "overlap 2px": -2}  # px between inks, at 28 px
STYLES = ("clean", "realistic")
LENGTHS = range(1, 11)
JITTER = 0.15  # clean: size and baseline, of the digit's height
MAX_SLANT = 0.15  # clean: horizontal shear, px per px of height (about 8.5 degrees)
HEIGHT_SPREAD = 0.25  # realistic: digit heights within a number, +-
BASELINE_WANDER = 1 / 3  # realistic: the baseline's rise and fall, of the digits' height
MAX_ROTATION = 6.0  # realistic: degrees, either way
STRAY_MARK_SHARE = 0.1  # of the numbers get a stray pen mark
MARGIN = 12  # px of background around the number, at MNIST's size
MAX_PIXELS = 10_000_000


@dataclass(frozen=True)
class Sample:
    picture: np.ndarray  # uint8 gray levels, as the service sees the upload
    text: str
    gap: str
    style: str
    stray_mark: bool
    upload: bytes | None = None  # the file a user would send (realistic); None: the gray levels


def load_digits(source: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "test":
        images = read_idx(MNIST_DIR / TEST_IMAGES.name, TEST_IMAGES).numpy()
        labels = read_idx(MNIST_DIR / TEST_LABELS.name, TEST_LABELS).numpy()
        return images, labels
    images = read_idx(MNIST_DIR / TRAIN_IMAGES.name, TRAIN_IMAGES).numpy()[-HOLDOUT:]
    labels = read_idx(MNIST_DIR / TRAIN_LABELS.name, TRAIN_LABELS).numpy()[-HOLDOUT:]
    return images, labels


def resized(ink: np.ndarray, scale: float) -> np.ndarray:
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
    """One clean number: ``length`` random digits of ``images`` side by side, white ink on black,
    then slanted, marked and (half the time) turned into black ink on white paper."""
    picks = rng.integers(0, len(images), size=length)
    digits = [
        resized(crop_to_ink(images[index]), 1.0 + rng.uniform(-JITTER, JITTER)) for index in picks
    ]
    shifts = [round(rng.uniform(-JITTER, JITTER) * digit.shape[0]) for digit in digits]
    height = max(d.shape[0] + 2 * abs(s) for d, s in zip(digits, shifts, strict=True))
    tops = [(height - d.shape[0]) // 2 + s for d, s in zip(digits, shifts, strict=True)]
    canvas = side_by_side(digits, tops, height, GAPS[gap], MARGIN)
    if stray_mark:
        add_stray_mark(canvas, rng, MARGIN, 1.0)
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
    return Sample(pixels, text_of(labels, picks), gap, "clean", stray_mark)


def compose_realistic(
    images: np.ndarray,
    labels: np.ndarray,
    length: int,
    gap: str,
    rng: np.random.Generator,
    stray_mark: bool = False,
) -> Sample:
    """One realistic number: digits of unequal height on a wandering baseline, rotated, on paper
    (``on_paper``), saved as JPEG and decoded as the service decodes it."""
    picks = rng.integers(0, len(images), size=length)
    scale = rng.uniform(1.0, 2.5)
    heights = scale * (1.0 + rng.uniform(-HEIGHT_SPREAD, HEIGHT_SPREAD, size=length))
    digits = [
        resized(crop_to_ink(images[index]), h) for index, h in zip(picks, heights, strict=True)
    ]
    tall = 20 * scale  # MNIST's ink is 20 px tall
    # The baseline: a slow wave whose rise and fall spans up to BASELINE_WANDER of a digit.
    wander = rng.uniform(0, BASELINE_WANDER) * tall / 2
    phase, pace = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.5)
    baselines = [wander * np.sin(phase + pace * i) for i in range(length)]
    bottom = max(d.shape[0] for d in digits) + wander
    tops = [round(bottom + b - d.shape[0]) for d, b in zip(digits, baselines, strict=True)]
    lowest = min(tops)
    tops = [top - lowest for top in tops]
    height = max(top + d.shape[0] for top, d in zip(tops, digits, strict=True))
    margin = round(MARGIN * scale)
    canvas = side_by_side(digits, tops, height, round(GAPS[gap] * scale), margin)
    if stray_mark:
        add_stray_mark(canvas, rng, margin, scale)
    angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    ink = np.asarray(Image.fromarray(canvas).rotate(angle, Image.Resampling.BICUBIC, expand=True))
    upload = on_paper(ink, rng)
    return Sample(decode(upload, MAX_PIXELS), text_of(labels, picks), gap, "realistic",
                  stray_mark, upload)  # fmt: skip


def side_by_side(
    digits: list[np.ndarray], tops: list[int], height: int, gap: int, margin: int
) -> np.ndarray:
    """White-on-black digits left to right, ``gap`` px between inks, each at its top row."""
    width = sum(d.shape[1] for d in digits) + gap * (len(digits) - 1) + 2 * margin
    canvas = np.zeros((height + 2 * margin, max(width, 1)), dtype=np.uint8)
    x = margin
    for digit, top in zip(digits, tops, strict=True):
        region = canvas[margin + top : margin + top + digit.shape[0], x : x + digit.shape[1]]
        np.maximum(region, digit, out=region)
        x += digit.shape[1] + gap
    return canvas


def text_of(labels: np.ndarray, picks: np.ndarray) -> str:
    return "".join(str(int(labels[i])) for i in picks)


def on_paper(ink: np.ndarray, rng: np.random.Generator) -> bytes:
    """White-on-black ink levels -> a JPEG (quality 70-90) of one of three kinds of writing:
    dark ink on grey paper lit unevenly, with sensor noise; pencil-grey ink with grain; or blue
    ink on white paper (RGB)."""
    level = ink.astype(np.float64)[..., None] / 255.0
    h, w = ink.shape
    ys, xs = np.mgrid[0:h, 0:w]
    kind = rng.integers(3)
    if kind == 0:  # dark ink, grey paper, light falling off across the picture, noise
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xs / w + np.sin(angle) * ys / h + 1) / 2
        light = (1.0 - rng.uniform(0.1, 0.3) * ramp)[..., None]
        paper = rng.uniform(185, 225) * light * np.ones(3)
        pen = rng.uniform(20, 60) * light * np.ones(3)
        noise = rng.normal(0.0, rng.uniform(2, 6), size=(h, w, 3))
    elif kind == 1:  # pencil: grey, grainy strokes on white paper
        level = level * rng.uniform(0.6, 1.0, size=level.shape)
        paper = rng.uniform(225, 250) * np.ones((h, w, 3))
        pen = rng.uniform(90, 140) * np.ones(3)
        noise = rng.normal(0.0, 2.0, size=(h, w, 3))
    else:  # blue ballpoint on white paper
        paper = np.full((h, w, 3), rng.uniform(235, 252))
        pen = np.array([rng.uniform(20, 50), rng.uniform(30, 70), rng.uniform(120, 170)])
        noise = rng.normal(0.0, 2.0, size=(h, w, 3))
    rgb = paper + level * (pen - paper) + noise
    out = io.BytesIO()
    picture = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")
    picture.save(out, format="JPEG", quality=int(rng.integers(70, 91)))
    return out.getvalue()


def add_stray_mark(canvas: np.ndarray, rng: np.random.Generator, margin: int, scale: float):
    """A short, thin, straight stroke in the margin above or below the digits."""
    length = rng.uniform(6, 12) * scale
    angle = rng.uniform(0, np.pi)
    cx = rng.uniform(margin, canvas.shape[1] - margin)
    cy = rng.choice([margin * 0.8, canvas.shape[0] - margin * 0.8])
    thick = max(2, round(2 * scale))
    for t in np.linspace(-0.5, 0.5, 40):
        x, y = cx + t * length * np.cos(angle), cy + t * length * np.sin(angle) * 0.5
        canvas[int(y) : int(y) + thick, int(x) : int(x) + thick] = 255


COMPOSERS = {"clean": compose, "realistic": compose_realistic}


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

    @property
    def ok(self) -> bool:
        return self.text == self.sample.text


def evaluate(cases: list[Sample], forward) -> list[Outcome]:
    outcomes = []
    for case in cases:
        reading = read_number(case.picture, forward)
        outcomes.append(
            Outcome(case, reading.text, reading.probability, reading.needs_review, reading.features)
        )
    return outcomes


def tallies(outcomes: list[Outcome]) -> dict:
    """Exact numbers by length, by (style, gap) and by (style, gap) at 4 digits; digit accuracy
    over the numbers read with the right digit count; stray-marked numbers."""
    by_length, by_cell, four, digits, stray = (
        defaultdict(Tally), defaultdict(Tally), defaultdict(Tally), Tally(), Tally()
    )  # fmt: skip
    for outcome in outcomes:
        case, text = outcome.sample, outcome.text
        by_length[len(case.text)].add(outcome.ok)
        by_cell[case.style, case.gap].add(outcome.ok)
        if len(case.text) == 4:
            four[case.style, case.gap].add(outcome.ok)
        if case.stray_mark:
            stray.add(outcome.ok)
        if len(text) == len(case.text):
            for read, true in zip(text, case.text, strict=True):
                digits.add(read == true)
    return {"by_length": by_length, "by_cell": by_cell, "four": four, "digits": digits,
            "stray": stray}  # fmt: skip


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
    flagged, over all and per (style, gap)."""
    kept, flagged = Tally(), defaultdict(Tally)
    for outcome in outcomes:
        if not outcome.needs_review:
            kept.add(outcome.ok)
        flagged[outcome.sample.style, outcome.sample.gap].add(outcome.needs_review)
        flagged["all"].add(outcome.needs_review)
    return {"kept": kept, "flagged": flagged}


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
    outcomes = evaluate(cases, committed_forward())
    seconds = time.perf_counter() - started
    if args.failures:
        draw_failures(outcomes, args.failures)
    result = tallies(outcomes)
    print(f"{len(cases)} numbers from MNIST {args.source} digits, seed {args.seed}, "
          f"{1000 * seconds / len(cases):.1f} ms each")  # fmt: skip
    print("\n| digits | exact |\n|---|---|")
    for length, tally in sorted(result["by_length"].items()):
        print(f"| {length} | {tally} |")
    print("\n| style | gap | exact, all lengths | exact, 4 digits | target (4 digits) |")
    print("|---|---|---|---|---|")
    for (style, gap), tally in result["by_cell"].items():
        target = TARGETS.get((style, gap))
        print(f"| {style} | {gap} ({GAPS[gap]} px) | {tally} | {result['four'][style, gap]} | "
              f"{'' if target is None else f'≥ {target:.0f} %'} |")  # fmt: skip
    print(f"\ndigit accuracy (numbers with the right digit count): {result['digits']}")
    print(f"numbers with a stray pen mark, exact: {result['stray']}")
    review = review_figures(outcomes)
    print(f"\nnot flagged needs_review, exact: {review['kept']} (target ≥ 99.5 %)")
    print("flagged needs_review: " + ", ".join(
        f"{' '.join(key) if isinstance(key, tuple) else key} {tally}"
        for key, tally in review["flagged"].items()
    ) + " (target ≤ 10 % of normal gaps)")  # fmt: skip
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
